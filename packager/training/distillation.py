"""The distillation loss and trainer every student-training stage shares (distil, and prune's recovery).

Loss (Hinton et al. 2015, as in DistilBERT):
``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``,
optionally plus MSE matching of hidden states / attention maps. With neither a teacher nor cached logits
the trainer is plain fine-tuning on the labels.

The sentence-level objective works across tokenizers (as sentence-transformers distils one model into another
with a different vocabulary): the student's mean-pooled last hidden state, through a learned linear projection
(student width -> teacher width), regresses the teacher's pooled vector of the same text (MSE, or 1 - cosine),
``sentence_weight`` times, beside the logit loss. The teacher's vectors come cached per text, computed with its
own tokenizer; the projection trains with the student (its own optimizer group) and is never part of the student,
so neither a checkpoint nor the saved student carries it. Two consequences: a resumed run (``resume``) starts a
fresh projection (its optimizer moments come back, its weights do not), and under DDP each rank's projection
learns from that rank's batches alone (the student's gradients are still averaged, so the student stays one).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..labelled_data import LabelledData
from ..progress import substep
from .common import (
    PadCollator,
    accuracy_metric,
    encode,
    last_checkpoint,
    mean_pooled,
    pad_id,
    resume_callbacks,
    seed_all,
    to_cpu,
    trained_model,
    training_args,
)

log = logging.getLogger(__name__)

SENTENCE_LOSSES = ("mse", "cosine")


@dataclass
class SentenceTarget:
    """The sentence-level objective of a distillation: ``vectors`` (the teacher's pooled vector of each training
    row, in ``data.train``'s order) regressed by the projected student's, ``weight`` times, with ``loss``."""

    weight: float
    loss: str
    vectors: np.ndarray
    #: the projection to train (student width -> teacher width); None: a fresh ``nn.Linear``
    projection: torch.nn.Module | None = None


def sentence_loss(projected: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """MSE between the projected student vectors and the teacher's, or 1 - their mean cosine similarity."""
    projected, target = projected.float(), target.float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(projected, target, dim=-1)).mean()
    return F.mse_loss(projected, target)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
            temperature: float) -> torch.Tensor:
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()  # bf16 autocast: loss in fp32
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.log_softmax(teacher_logits / temperature, dim=-1), log_target=True, reduction="batchmean")
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def _make_trainer_class():
    from transformers import Trainer

    class DistillTrainer(Trainer):
        """Trainer whose training loss is the distillation loss; evaluation scores plain CE/accuracy."""

        def __init__(self, *args, teacher=None, alpha: float, temperature: float, hidden_weight: float = 0.0,
                     attention_weight: float = 0.0, teacher_layers: list[int] | None = None,
                     sentence: SentenceTarget | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.to(self.args.device).eval() if teacher is not None else None
            self.alpha, self.temperature = alpha, temperature
            self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
            self.teacher_layers = teacher_layers or []
            self.sentence = sentence if sentence is not None and sentence.weight > 0 else None
            self.projection = None
            if self.sentence is not None:  # trained beside the student, never part of it
                self.projection = (sentence.projection if sentence.projection is not None else torch.nn.Linear(
                    self.model.config.hidden_size, sentence.vectors.shape[1])).to(self.args.device)
            self.sentence_losses: list[float] = []

        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            if self.projection is not None:
                params = list(self.projection.parameters())
                held = {id(p) for group in optimizer.param_groups for p in group["params"]}
                if not any(id(p) in held for p in params):
                    optimizer.add_param_group({"params": params, "weight_decay": 0.0})
            return optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            cached = inputs.pop("teacher_logits", None)
            teacher_vectors = inputs.pop("teacher_vectors", None)
            labels = inputs["labels"]
            matching = model.training and (self.hidden_weight > 0 or self.attention_weight > 0)
            sentence = model.training and self.projection is not None and teacher_vectors is not None
            outputs = model(**inputs, output_hidden_states=matching or sentence,
                            output_attentions=matching and self.attention_weight > 0)
            if not model.training or (cached is None and self.teacher is None):
                loss = outputs.loss
                return (loss, outputs) if return_outputs else loss
            teacher_out = None
            if cached is None or matching:
                with torch.no_grad():
                    teacher_out = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                               output_hidden_states=matching,
                                               output_attentions=matching and self.attention_weight > 0)
            t_logits = cached if cached is not None else teacher_out.logits
            loss = kd_loss(outputs.logits, t_logits, labels, self.alpha, self.temperature)
            if matching:
                loss = loss + self._matching_loss(outputs, teacher_out, inputs["attention_mask"])
            if sentence:
                vectors = self.projection(mean_pooled(outputs.hidden_states[-1], inputs["attention_mask"]))
                term = sentence_loss(vectors, teacher_vectors, self.sentence.loss)
                self.sentence_losses.append(float(term.detach()))
                loss = loss + self.sentence.weight * term
            return (loss, outputs) if return_outputs else loss

        def _matching_loss(self, outputs, teacher_out, mask: torch.Tensor) -> torch.Tensor:
            m = mask.unsqueeze(-1).to(outputs.logits.dtype)
            total = outputs.logits.new_zeros(())
            pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.teacher_layers)]
            if self.hidden_weight > 0:
                for s, t in pairs:
                    diff = (outputs.hidden_states[s] - teacher_out.hidden_states[t]) ** 2 * m
                    total = total + self.hidden_weight * diff.sum() / (m.sum() * diff.shape[-1])
            if self.attention_weight > 0:
                for i, t in enumerate(self.teacher_layers):
                    total = total + self.attention_weight * F.mse_loss(outputs.attentions[i], teacher_out.attentions[t])
            return total

    return DistillTrainer


def train_student(teacher, student, tokenizer, data: LabelledData, *, alpha: float, temperature: float,
                  epochs: float, lr: float, batch_size: int, seq_len: int, work_dir: Path, seed: int,
                  weight_decay: float = 0.01, warmup_ratio: float = 0.1, hidden_weight: float = 0.0,
                  attention_weight: float = 0.0, teacher_layers: list[int] | None = None,
                  teacher_logits=None, sentence: SentenceTarget | None = None, best_by_accuracy: bool = True,
                  resume: bool = False, **trainer_kwargs):
    """Distil ``teacher`` into ``student`` (trained in place); returns the student and the Trainer.

    ``tokenizer`` is the student's; the teacher's logits come cached (``teacher_logits``, rows of
    ``data.train``) unless states are matched live. With neither a teacher nor logits this is plain
    fine-tuning on the labels. ``trainer_kwargs`` (``optimizers``, ``callbacks``) go to the Trainer:
    movement pruning needs both. ``resume``: checkpoint every epoch whole and continue from the last one
    ``work_dir`` holds (``work_dir`` must then belong to this run's configuration alone). ``sentence``: the
    sentence-level objective (its projection is trained here and dropped; the trainer's ``projection`` and
    ``sentence_losses`` show it after the run).
    """
    seed_all(seed)
    live = hidden_weight > 0 or attention_weight > 0
    vectors = sentence.vectors if sentence is not None and sentence.weight > 0 else None
    train = encode(tokenizer, data.train, seq_len, None if live else teacher_logits, vectors)
    val = encode(tokenizer, data.validation, seq_len) if data.validation is not None else None
    args = training_args(work_dir, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         weight_decay=weight_decay, warmup_ratio=warmup_ratio, evaluate=val is not None,
                         best_by_accuracy=best_by_accuracy, n_train=len(train), resumable=resume)
    student.train()
    live_teacher = teacher if live or teacher_logits is None else None
    trainer = _make_trainer_class()(
        model=student, args=args, train_dataset=train, eval_dataset=val, data_collator=PadCollator(pad_id(tokenizer)),
        compute_metrics=accuracy_metric, teacher=live_teacher,
        alpha=alpha, temperature=temperature, hidden_weight=hidden_weight, attention_weight=attention_weight,
        teacher_layers=teacher_layers, sentence=sentence,
        **{**trainer_kwargs, "callbacks": [*(trainer_kwargs.get("callbacks") or []), *resume_callbacks(resume)]})
    start = last_checkpoint(work_dir) if resume else None
    if start is not None:
        log.info("distill: continuing %s from %s", work_dir, Path(start).name)
    try:
        with substep("train" if teacher_logits is not None or live_teacher is not None else "train on labels"):
            trainer.train(resume_from_checkpoint=start)
    finally:
        if live_teacher is not None:
            to_cpu(live_teacher)
        if trainer.projection is not None:
            trainer.projection.to("cpu")
    return trained_model(trainer), trainer
