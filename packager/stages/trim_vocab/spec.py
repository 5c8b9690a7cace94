"""The trim_vocab stage's options: which splits' tokens are kept, and what else is kept besides."""
from __future__ import annotations

from dataclasses import dataclass, field

#: the texts whose tokens may be kept: the labelled splits, and the unlabeled texts a distillation learned from
SPLITS = ("train", "validation", "test", "unlabeled")


@dataclass
class TrimVocabSpec:
    #: splits whose tokens are kept ("unlabeled": the recipe's data.unlabeled texts, which a distill stage's
    #: student learned from)
    splits: list[str] = field(default_factory=lambda: ["train"])
    #: also keep single ASCII characters (and their ## forms): unseen words are then spelled out instead of
    #: becoming [UNK]. Off by default: on CLINC150 the spelled-out words cost more accuracy than [UNK] did.
    keep_ascii_chars: bool = False
    #: also keep the first N regular ids of the original vocabulary (BERT's WordPiece vocabulary is roughly
    #: frequency-ordered), so common words absent from the training data are not lost; 0 keeps only what is seen
    keep_top: int = 0
