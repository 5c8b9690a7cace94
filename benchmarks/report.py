"""The tail every single-file benchmark report shares: the command that made it, written under ``--out`` and
printed."""
from __future__ import annotations

import sys
from pathlib import Path


def publish(out: Path, name: str, lines: list[str], script: str, argv: list[str] | None) -> Path:
    """Append the command line (``script`` with ``argv``, else this process's arguments) to ``lines``, write them
    to ``out/name`` and print them."""
    command = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([*lines, "", "```", command, "```", ""])
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(text)
    print(text)
    return path
