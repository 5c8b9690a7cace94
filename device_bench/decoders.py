"""From an artifact's output to what an application wants: one decoder class per task, keyed by the manifest's
``task`` name. Adding a task = one ``@register``-ed class here (its pure maths may live elsewhere).

A decoder turns the float32 output of one text (batch 1) into a typed prediction that renders as one line
of text (``summary``) and as a JSON object (``to_dict``: ``text`` plus the task's fields).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .registry import Registry
from .task_outputs import Entity, labels_above_threshold, token_classification
from .tokenizer import TokenizedText


class DecoderError(ValueError):
    """No decoder for the bundle's task, or an output of the wrong shape."""


@dataclass
class Prediction(ABC):
    """What every task's prediction carries: the text and how much of it the model saw."""

    text: str
    n_tokens: int
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @abstractmethod
    def summary(self) -> str:
        """One line for the console."""


@dataclass
class LabelScore:
    label: str
    score: float


@dataclass
class ClassPrediction(Prediction):
    label: str = ""
    score: float = 0.0
    top_k: list[LabelScore] = field(default_factory=list)

    def summary(self) -> str:
        ranked = ", ".join(f"{item.label} {item.score:.4f}" for item in self.top_k)
        return f"{self.label}  p={self.score:.4f}  top-{len(self.top_k)}: {ranked}"


@dataclass
class EmbeddingPrediction(Prediction):
    embedding: list[float] = field(default_factory=list)

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(np.asarray(self.embedding, dtype=np.float64)))

    def summary(self) -> str:
        head = ", ".join(f"{v:+.4f}" for v in self.embedding[:4])
        return f"embedding  {len(self.embedding)} dims  norm {self.norm:.4f}  [{head}, ...]"


class OutputDecoder(ABC):
    """Decodes the output of one text for one task."""

    task: ClassVar[str]
    #: the manifest's parity field holding this task's decision agreement (shown by ``inspect``)
    agreement_metric: ClassVar[str] = "top1_agreement"

    def __init__(self, labels: list[str] | None = None, top_k: int = 3,
                 thresholds: list[float] | None = None) -> None:
        self.labels = labels
        self.top_k = top_k
        self.thresholds = thresholds  # multi-label: the manifest's per-label thresholds

    def label_names(self, n: int) -> list[str]:
        """The manifest's labels when they fit the output, else LABEL_0…"""
        return list(self.labels) if self.labels and len(self.labels) == n else [f"LABEL_{i}" for i in range(n)]

    @abstractmethod
    def decode(self, output: np.ndarray, tokens: TokenizedText, attention_mask: np.ndarray) -> Prediction:
        """``output``: the artifact's float32 output for this one text (leading batch axis of 1).
        ``attention_mask`` ([1, L], the padded input): per-token outputs (``[1, L, ...]``) belong to the text's
        tokens (``tokens.ids``, ``tokens.offsets``) where it is 1, in order, whichever side was padded."""


DECODERS: Registry[type[OutputDecoder]] = Registry("output decoder")
register = DECODERS.decorator(lambda cls: cls.task)


def decoder_for(task: str, labels: list[str] | None = None, top_k: int = 3,
                thresholds: list[float] | None = None) -> OutputDecoder:
    try:
        cls = DECODERS[task]
    except KeyError:
        raise DecoderError(f"task {task!r}: this edgepack cannot decode its outputs "
                           f"(it knows: {', '.join(sorted(DECODERS))})") from None
    return cls(labels=labels, top_k=top_k, thresholds=thresholds)


def _single_row(output: np.ndarray, task: str) -> np.ndarray:
    row = np.asarray(output, dtype=np.float32)
    if row.ndim == 2 and row.shape[0] == 1:
        row = row[0]
    if row.ndim != 1:
        raise DecoderError(f"{task}: expected one output vector per text, got shape {tuple(np.shape(output))}")
    return row


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


@register
class SequenceClassificationDecoder(OutputDecoder):
    """Logits → softmax probabilities; the label of the largest and the ``top_k`` best."""

    task = "sequence-classification"

    def decode(self, output: np.ndarray, tokens: TokenizedText, attention_mask: np.ndarray) -> ClassPrediction:
        logits = _single_row(output, self.task)
        names = self.label_names(len(logits))
        probs = softmax(logits)
        order = np.argsort(-probs, kind="stable")[: max(1, min(self.top_k, len(probs)))]
        ranked = [LabelScore(names[i], float(probs[i])) for i in order]
        return ClassPrediction(text=tokens.text, n_tokens=tokens.n_tokens, truncated=tokens.truncated,
                               label=ranked[0].label, score=ranked[0].score, top_k=ranked)


@register
class FeatureExtractionDecoder(OutputDecoder):
    """The sentence embedding as the artifact computes it (the model's own pooling, Dense and Normalize, fixed at pack time)."""

    task = "feature-extraction"

    def decode(self, output: np.ndarray, tokens: TokenizedText, attention_mask: np.ndarray) -> EmbeddingPrediction:
        vector = _single_row(output, self.task)
        return EmbeddingPrediction(text=tokens.text, n_tokens=tokens.n_tokens, truncated=tokens.truncated,
                                   embedding=vector.tolist())  # Python floats in one call, not one per value


@dataclass
class LabelsPrediction(Prediction):
    """Multi-label: every label whose sigmoid score reaches its threshold, highest first."""

    labels: list[LabelScore] = field(default_factory=list)

    def summary(self) -> str:
        if not self.labels:
            return "no label above its threshold"
        return "labels: " + ", ".join(f"{item.label} {item.score:.4f}" for item in self.labels)


@dataclass
class EntitiesPrediction(Prediction):
    """Token classification: the entities found, with character spans into the text."""

    entities: list[Entity] = field(default_factory=list)

    def summary(self) -> str:
        if not self.entities:
            return "no entity"
        return "entities: " + ", ".join(f"{e.text!r} {e.label} [{e.start}:{e.end}] {e.score:.4f}"
                                        for e in self.entities)


@register
class MultiLabelDecoder(OutputDecoder):
    """Sigmoid scores → the labels at or above their thresholds (0.5 where the manifest gives none)."""

    task = "multi-label-classification"
    agreement_metric = "label_agreement"

    def decode(self, output: np.ndarray, tokens: TokenizedText, attention_mask: np.ndarray) -> LabelsPrediction:
        scores = _single_row(output, self.task)
        thresholds = self.thresholds if self.thresholds and len(self.thresholds) == len(scores) else None
        chosen = labels_above_threshold(scores, self.label_names(len(scores)), thresholds)
        return LabelsPrediction(text=tokens.text, n_tokens=tokens.n_tokens, truncated=tokens.truncated,
                                labels=[LabelScore(label, score) for label, score in chosen])


@register
class TokenClassificationDecoder(OutputDecoder):
    """Per-token logits of the real tokens → words (pieces merged) → entities with character offsets."""

    task = "token-classification"
    agreement_metric = "token_agreement"

    def decode(self, output: np.ndarray, tokens: TokenizedText, attention_mask: np.ndarray) -> EntitiesPrediction:
        logits = np.asarray(output, dtype=np.float32)
        if logits.ndim == 3 and logits.shape[0] == 1:
            logits = logits[0]
        mask = np.asarray(attention_mask).reshape(-1)
        if logits.ndim != 2 or logits.shape[0] != mask.shape[0]:
            raise DecoderError(f"{self.task}: expected [1, {mask.shape[0]}, labels] per text, "
                               f"got shape {tuple(np.shape(output))}")
        real = logits[mask.astype(bool)][: tokens.n_tokens]  # the text's tokens, in order, whichever side padded
        _, entities = token_classification(tokens.text, real, tokens.offsets, tokens.word_ids,
                                           self.label_names(logits.shape[1]))
        return EntitiesPrediction(text=tokens.text, n_tokens=tokens.n_tokens, truncated=tokens.truncated,
                                  entities=entities)
