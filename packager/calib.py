"""Calibration / parity texts: a user file or the built-in English sample."""
from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import EdgepackError

TEXT_COLUMNS = ("text", "sentence", "utterance", "query", "content")


def builtin_sample() -> list[str]:
    """~110 varied English sentences shipped with the package (written for edgepack)."""
    text = (resources.files("packager") / "data" / "sample_texts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_texts(path: Path | str, column: str | None = None) -> list[str]:
    """Read texts from .txt (one per line), .csv/.tsv, .json (list or list of objects) or .jsonl."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepackError(f"--calib {path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            rows = list(csv.DictReader(raw.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
            texts = _column(rows, column, path)
        elif suffix == ".jsonl":
            texts = _column([json.loads(line) for line in raw.splitlines() if line.strip()], column, path)
        elif suffix == ".json":
            data = json.loads(raw)
            if isinstance(data, dict):  # {"train": [...]} style: take the first list
                data = next((v for v in data.values() if isinstance(v, list)), [])
            texts = [d if isinstance(d, str) else d[0] if isinstance(d, list) else None for d in data]
            if any(t is None for t in texts):
                texts = _column(data, column, path)
        else:
            texts = raw.splitlines()
    except (json.JSONDecodeError, csv.Error) as exc:
        raise EdgepackError(f"--calib {path}: not valid {suffix.lstrip('.') or 'text'} ({exc})") from None
    texts = [str(t).strip() for t in texts if t is not None and str(t).strip()]
    if not texts:
        raise EdgepackError(f"--calib {path}: no texts found")
    return texts


def _column(rows: list, column: str | None, path: Path) -> list[str]:
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise EdgepackError(f"--calib {path}: expected records with a text column")
    keys = rows[0].keys()
    name = column or next((c for c in TEXT_COLUMNS if c in keys), None)
    if name is None or name not in keys:
        raise EdgepackError(f"--calib {path}: no text column (looked for {column or ', '.join(TEXT_COLUMNS)}; has {', '.join(keys)})")
    return [r.get(name) for r in rows]


def tokenize(tokenizer, texts: list[str], seq_len: int) -> dict[str, np.ndarray]:
    """Static-shape int32 inputs: right-padded / truncated to ``seq_len``."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {
        "input_ids": enc["input_ids"].astype(np.int32),
        "attention_mask": enc["attention_mask"].astype(np.int32),
    }


def token_counts(tokenizer, texts: list[str]) -> np.ndarray:
    """Real token count of each text (special tokens included, before any truncation)."""
    enc = tokenizer(texts, truncation=False, padding=False)
    return np.asarray([len(ids) for ids in enc["input_ids"]], dtype=np.int64)
