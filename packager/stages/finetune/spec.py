"""The finetune stage's options: the shared training options as they are (see ``training.options``)."""
from __future__ import annotations

from dataclasses import dataclass

from ...training.options import TrainingOptions


@dataclass
class FinetuneSpec(TrainingOptions):
    """Fine-tune with the HF Trainer; the checkpoint with the best validation accuracy wins."""
