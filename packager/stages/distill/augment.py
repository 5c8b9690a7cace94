"""Variants of the training texts for the teacher to label: more of its knowledge for a small student.

A labelled set of a few thousand utterances shows the student only a sliver of what the
teacher knows; the teacher's soft predictions on perturbed texts (a word dropped, two
neighbours swapped, a word replaced by another word of the same data) show it how the
teacher's decision changes near the data (as in TinyBERT's and DistilBERT's task-specific
augmentation, without any outside resource). Everything is drawn from one seeded
``random.Random``, so a seed gives the same variants on any machine.
"""
from __future__ import annotations

import random

from .spec import AugmentSpec

#: draws per copy before a copy equal to its source is accepted (very short texts)
ATTEMPTS = 8


def data_words(texts: list[str]) -> list[str]:
    """Every whitespace-separated word of ``texts``, repeats kept: a replacement is drawn by corpus frequency."""
    return [word for text in texts for word in text.split()]


def perturb(words: list[str], rng: random.Random, spec: AugmentSpec, pool: list[str]) -> list[str]:
    """One variant of ``words``: dropout, replacement (per word), then swaps of right-hand neighbours."""
    out = []
    for word in words:
        if rng.random() < spec.word_dropout:
            continue
        out.append(rng.choice(pool) if rng.random() < spec.replace else word)
    i = 0
    while i < len(out) - 1:
        if rng.random() < spec.swap:
            out[i], out[i + 1] = out[i + 1], out[i]
            i += 2
        else:
            i += 1
    return out or [rng.choice(words)]


def augment_texts(texts: list[str], spec: AugmentSpec, seed: int) -> list[str]:
    """``spec.copies`` variants of each text, in order (text 0's copies first); deterministic under ``seed``."""
    rng = random.Random(seed)
    pool = data_words(texts)
    variants = []
    for text in texts:
        words = text.split()
        for _ in range(spec.copies):
            variant = text
            for _ in range(ATTEMPTS):
                variant = " ".join(perturb(words, rng, spec, pool))
                if variant != text:
                    break
            variants.append(variant)
    return variants
