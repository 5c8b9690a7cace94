"""``edgepack bench --texts FILE``: the user's own texts as benchmark inputs, tokenized with the bundle's tokenizer.

Tokenized on the host (``tokenizers``, no transformers needed), so a remote
device gets ready token ids. The bench then runs on a view of the bundle whose
``samples.npz`` holds those texts at their real length; the artifacts are hard
links to the originals (copies where links are impossible), so their sha256
still checks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .manifest import SAMPLES_NAME, Manifest, TokenLengths


class TextsError(ValueError):
    """The texts file or the bundle's tokenizer cannot be used; one-line message."""


def read_lines(path: Path) -> list[str]:
    try:
        texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise TextsError(f"--texts {path}: cannot read ({exc.__class__.__name__})") from None
    if not texts:
        raise TextsError(f"--texts {path}: no texts (one per line)")
    return texts


def tokenize(bundle: Path, manifest: Manifest, texts: list[str]) -> dict[str, np.ndarray]:
    """Right-padded [N, seq_len] inputs plus ``lengths`` (real tokens) and ``token_counts`` (before truncation)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TextsError("--texts needs the tokenizers package on this machine (pip install tokenizers)") from None
    path = Path(bundle) / str(manifest.tokenizer or "") / "tokenizer.json"
    if not manifest.tokenizer or not path.is_file():
        raise TextsError(f"--texts: the bundle has no fast tokenizer ({path.name} not found)")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    counts = np.asarray([len(e.ids) for e in tokenizer.encode_batch(texts)], dtype=np.int32)
    seq_len = manifest.input_spec.seq_len
    tokenizer.enable_truncation(max_length=seq_len)
    encoded = tokenizer.encode_batch(texts)
    names = [t.name for t in manifest.input_spec.inputs]
    arrays = {n: np.zeros((len(texts), seq_len), dtype=np.int32) for n in names}
    for i, e in enumerate(encoded):
        k = len(e.ids)
        for name, values in (("input_ids", e.ids), ("attention_mask", e.attention_mask), ("token_type_ids", e.type_ids)):
            if name in arrays:
                arrays[name][i, :k] = values
    unknown = [n for n in names if n not in ("input_ids", "attention_mask", "token_type_ids")]
    if unknown:
        raise TextsError(f"--texts: cannot build the input {unknown[0]!r} from text")
    arrays["lengths"] = np.minimum(counts, seq_len).astype(np.int32)
    arrays["token_counts"] = counts
    return arrays


@contextlib.contextmanager
def bundle_with_texts(bundle: Path, texts_path: Path) -> Iterator[Path]:
    """A temporary view of ``bundle`` whose samples are the texts of ``texts_path``."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise TextsError(f"--texts: {bundle} must be a bundle folder (not an archive)")
    manifest = Manifest.load(bundle)
    arrays = tokenize(bundle, manifest, read_lines(texts_path))
    with tempfile.TemporaryDirectory(prefix="edgepack-texts-") as tmp:
        view = Path(tmp) / bundle.name
        for src in bundle.rglob("*"):
            dst = view / src.relative_to(bundle)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        (view / SAMPLES_NAME).unlink(missing_ok=True)
        np.savez(view / SAMPLES_NAME, **arrays)
        counts = arrays["token_counts"]
        real = arrays["lengths"]
        spec = dataclasses.replace(manifest.input_spec, token_lengths=TokenLengths(
            n_texts=len(counts), mean=round(float(real.mean()), 2), p50=int(np.percentile(real, 50)),
            p90=int(np.percentile(real, 90)), max=int(real.max()),
            truncated=int((counts > manifest.input_spec.seq_len).sum())))
        (view / "manifest.json").unlink()
        dataclasses.replace(manifest, input_spec=spec, samples=SAMPLES_NAME).write(view)
        yield view
