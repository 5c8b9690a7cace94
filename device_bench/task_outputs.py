"""Turning an artifact's raw output into a prediction on the device (numpy only, no torch).

Token classification: per-token logits -> words (word pieces merged, with character
offsets into the original text from the tokenizer's offset mapping) -> entities
(BIO / IOB2 tags, or plain tags whose neighbouring words merge), each with a score.
Multi-label classification: every label whose sigmoid score reaches its threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Word:
    """One word of the text with the tag its pieces agree on."""

    text: str
    start: int  # character offsets into the original text, end exclusive
    end: int
    label: str
    score: float  # mean probability of ``label`` over the word's pieces


@dataclass(frozen=True)
class Entity:
    label: str  # the entity type: "PER" for B-PER/I-PER
    text: str
    start: int
    end: int
    score: float  # mean of its words' scores


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def words_from_tokens(text: str, logits: np.ndarray, offsets: Sequence[tuple[int, int]],
                      word_ids: Sequence[int | None], labels: Sequence[str],
                      attention_mask: Sequence[int] | None = None) -> list[Word]:
    """Merge word pieces: a word's probabilities are the mean over its pieces, its tag their argmax.

    ``logits`` is [seq_len, n_labels] for one text; ``offsets``/``word_ids`` come from the
    tokenizer (``tokenizers.Encoding.offsets`` / ``.word_ids``); special tokens (word id None)
    and padding (mask 0) are skipped.
    """
    probs = softmax(np.asarray(logits, dtype=np.float64))
    groups: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids[: len(probs)]):
        if word is None or (attention_mask is not None and not attention_mask[position]):
            continue
        start, end = offsets[position]
        if end <= start:
            continue
        groups.setdefault(int(word), []).append(position)
    words = []
    for positions in groups.values():
        mean = probs[positions].mean(axis=0)
        best = int(mean.argmax())
        start, end = int(offsets[positions[0]][0]), int(offsets[positions[-1]][1])
        words.append(Word(text=text[start:end], start=start, end=end, label=str(labels[best]),
                          score=float(mean[best])))
    return sorted(words, key=lambda w: w.start)


def _split_tag(label: str) -> tuple[str, str]:
    """("B", "PER") for B-PER, ("I", "LOC") for I-LOC, ("O", "") for O, ("", "PER") for a plain tag."""
    if label in ("O", "0", ""):
        return "O", ""
    prefix, sep, kind = label.partition("-")
    if sep and prefix in ("B", "I", "E", "S", "L", "U"):
        return prefix, kind
    return "", label


def entities_from_words(text: str, words: Sequence[Word]) -> list[Entity]:
    """Group tagged words into entities: B- (or S-/U-) starts one, I-/E-/L- of the same type continues it,
    anything else ends it; words with a plain tag merge with a neighbour of the same tag."""
    entities: list[Entity] = []
    current: list[Word] = []
    kind = ""

    def close() -> None:
        if current:
            start, end = current[0].start, current[-1].end
            entities.append(Entity(label=kind, text=text[start:end], start=start, end=end,
                                   score=float(np.mean([w.score for w in current]))))
            current.clear()

    for word in words:
        prefix, word_kind = _split_tag(word.label)
        if prefix == "O":
            close()
            kind = ""
            continue
        continues = current and word_kind == kind and prefix in ("I", "E", "L", "")
        if not continues:
            close()
            kind = word_kind
        current.append(word)
        if prefix in ("E", "L", "S", "U"):  # these end their entity
            close()
    close()
    return entities


def token_classification(text: str, logits: np.ndarray, offsets: Sequence[tuple[int, int]],
                         word_ids: Sequence[int | None], labels: Sequence[str],
                         attention_mask: Sequence[int] | None = None) -> tuple[list[Word], list[Entity]]:
    """Words and entities of one text from the artifact's [seq_len, n_labels] (or [1, seq_len, n_labels]) output."""
    logits = np.asarray(logits)
    if logits.ndim == 3:
        logits = logits[0]
    words = words_from_tokens(text, logits, offsets, word_ids, labels, attention_mask)
    return words, entities_from_words(text, words)


def labels_above_threshold(scores: np.ndarray, labels: Sequence[str],
                           thresholds: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Every label whose score reaches its threshold (0.5 when none is given), highest score first."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    limits = np.full(len(scores), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if len(limits) != len(scores):
        raise ValueError(f"{len(limits)} thresholds for {len(labels)} labels")
    chosen = [(str(labels[i]), float(scores[i])) for i in range(len(scores)) if scores[i] >= limits[i]]
    return sorted(chosen, key=lambda item: -item[1])
