"""The bundle's own tokenizer on the device: HF `tokenizers` (Rust, wheels for aarch64/armv7/x86), no transformers.

It reproduces what the packing side fed the artifacts (``transformers``' fast tokenizer with
``truncation=True, max_length=N``, special tokens added), but pads each text only to the length the
caller asks for, so an artifact with several input shapes gets the smallest one that fits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


class TokenizerError(ValueError):
    """The bundle's tokenizer cannot be loaded here; the message says why in one line."""


@dataclass
class TokenizedText:
    """One text as token ids, before padding (what output decoders may need: offsets, word ids)."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    special_tokens_mask: list[int]
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


class BundleTokenizer:
    """Tokenizes and pads texts the way the bundle's artifacts were verified with."""

    def __init__(self, backend: Any, pad_id: int, padding_side: str = "right", truncation_side: str = "right") -> None:
        if padding_side not in ("left", "right") or truncation_side not in ("left", "right"):
            raise TokenizerError(f"padding side {padding_side!r} / truncation side {truncation_side!r}: "
                                 "expected 'left' or 'right'")
        self.backend = backend
        self.pad_id = int(pad_id)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.backend.no_padding()  # tokenizer.json may carry the pack-time padding; padding is done per shape here
        self._truncation: int | None = None  # the max_tokens the backend truncates to now (set once, not per call)

    @classmethod
    def from_dir(cls, folder: Path | str, padding_side: str | None = None) -> "BundleTokenizer":
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json`` for the pad token and sides) from ``folder``."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenizerError("running a bundle on text needs the tokenizers package "
                                 "(pip install 'tokenizers>=0.21,<1')") from None
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"{folder}: no {TOKENIZER_FILE} (the bundle was packed with a slow tokenizer; "
                                 "repack it with a model that has a fast tokenizer)")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on a malformed file
            raise TokenizerError(f"{path}: cannot load ({str(exc).splitlines()[0][:200]})") from None
        config = {**_read_json(folder / SPECIAL_TOKENS_FILE), **_read_json(folder / CONFIG_FILE)}
        pad_id = _pad_id(backend, config, path)
        return cls(backend, pad_id, padding_side=padding_side or config.get("padding_side") or "right",
                   truncation_side=config.get("truncation_side") or "right")

    def tokenize(self, texts: list[str], max_tokens: int) -> list[TokenizedText]:
        """Special tokens added, truncated to ``max_tokens`` (as the packing side's ``truncation=True``)."""
        if self._truncation != int(max_tokens):
            self.backend.enable_truncation(max_length=int(max_tokens), direction=self.truncation_side)
            self._truncation = int(max_tokens)
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=True)
        return [TokenizedText(text=text, ids=list(enc.ids), offsets=[tuple(o) for o in enc.offsets],
                              word_ids=list(enc.word_ids), special_tokens_mask=list(enc.special_tokens_mask),
                              truncated=bool(enc.overflowing))
                for text, enc in zip(texts, encodings)]

    def pad(self, tokens: TokenizedText, length: int) -> dict[str, np.ndarray]:
        """int32 ``input_ids`` / ``attention_mask`` of shape [1, length], padded on the tokenizer's side."""
        n = tokens.n_tokens
        if n > length:
            raise TokenizerError(f"{n} tokens do not fit an input of {length}")
        ids = np.full((1, length), self.pad_id, dtype=np.int32)
        mask = np.zeros((1, length), dtype=np.int32)
        window = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
        ids[0, window] = tokens.ids
        mask[0, window] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path}: unreadable ({exc})") from None
    return data if isinstance(data, dict) else {}


def _pad_id(backend: Any, config: dict[str, Any], path: Path) -> int:
    """The pad token's id: the tokenizer config's ``pad_token``, else the padding saved in tokenizer.json."""
    token = config.get("pad_token")
    if isinstance(token, dict):  # AddedToken serialised as {"content": "[PAD]", ...}
        token = token.get("content")
    if isinstance(token, str) and backend.token_to_id(token) is not None:
        return int(backend.token_to_id(token))
    if backend.padding is not None:
        return int(backend.padding["pad_id"])
    raise TokenizerError(f"{path}: the tokenizer has no pad token")
