"""Variants of the training texts for the teacher to label: more of its knowledge for a small student.

A labelled set of a few thousand utterances shows the student only a sliver of what the
teacher knows; the teacher's soft predictions on perturbed texts (a word dropped, two
neighbours swapped, a word replaced by another word of the same data) show it how the
teacher's decision changes near the data (as in TinyBERT's and DistilBERT's task-specific
augmentation, without any outside resource). Splices (the start of one text, the end of
another) lie between the labelled texts, where a model with an out-of-scope class decides
"none of these"; labelled ones show the student that decision. Word strings (words of the
data in random order, as many as a training text has) lie further off the data still, where
a small student agrees least with its teacher. Everything is drawn from seeded
``random.Random`` streams (one per kind, so adding one kind leaves the others as they
were), and a seed gives the same texts on any machine.
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


def splice_texts(texts: list[str], per_text: int, seed: int) -> list[str]:
    """``per_text`` splices of each text, in order: its first words, then the last words of another text (each
    part at least one word; a splice equal to either source is drawn again)."""
    rng = random.Random(f"splice-{seed}")
    split = [text.split() for text in texts]
    if len(split) < 2:
        return []
    out = []
    for i, words in enumerate(split):
        for _ in range(per_text):
            spliced = texts[i]
            for _ in range(ATTEMPTS):
                j = rng.randrange(len(split) - 1)
                other = split[j + (j >= i)]  # any text but this one
                head = words[:rng.randint(1, max(1, len(words) - 1))]
                tail = other[rng.randint(1, len(other) - 1):] if len(other) > 1 else other
                spliced = " ".join(head + tail)
                if spliced not in (texts[i], " ".join(other)):
                    break
            out.append(spliced)
    return out


def copy_texts(texts: list[str], spec: AugmentSpec, seed: int) -> list[str]:
    """``spec.copies`` perturbed variants of each text, in order."""
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


def word_strings(texts: list[str], per_text: int, seed: int) -> list[str]:
    """``per_text`` strings per text, in order, each as many words as its text, drawn from every text's words by
    corpus frequency (``data_words``); a string equal to a text is drawn again."""
    rng = random.Random(f"words-{seed}")
    pool = data_words(texts)
    known = set(texts)
    out = []
    for text in texts:
        length = max(1, len(text.split()))
        for _ in range(per_text):
            drawn = text
            for _ in range(ATTEMPTS):
                drawn = " ".join(rng.choice(pool) for _ in range(length))
                if drawn not in known:
                    break
            out.append(drawn)
    return out
