"""Rebuild this folder's data files from the full CLINC150 release (``data_oos_plus.json``).

    python examples/clinc10/make_slice.py /path/to/data_oos_plus.json

The first 10 intents in alphabetical order plus ``oos``; the first N utterances of
each label in each split, in file order (N below), so the slice is deterministic.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

INTENTS = 10
PER_LABEL = {"train": (50, 100), "validation": (20, 40), "test": (30, 100)}  # (per intent, oos)
SOURCE = {"train": ("train", "oos_train"), "validation": ("val", "oos_val"), "test": ("test", "oos_test")}


def main(path: str) -> None:
    raw = json.loads(Path(path).read_text())
    keep = sorted({label for _, label in raw["train"]})[:INTENTS]
    here = Path(__file__).resolve().parent
    for split, (intent_key, oos_key) in SOURCE.items():
        per_intent, per_oos = PER_LABEL[split]
        rows, counts = [], {}
        for text, label in raw[intent_key] + raw[oos_key]:
            limit = per_oos if label == "oos" else per_intent
            if (label in keep or label == "oos") and counts.get(label, 0) < limit:
                counts[label] = counts.get(label, 0) + 1
                rows.append({"text": text, "label": label})
        (here / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{split}: {len(rows)} utterances, {len(counts)} labels")


if __name__ == "__main__":
    main(sys.argv[1])
