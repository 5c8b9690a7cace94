"""Knowledge distillation: a smaller student learns the teacher's softened predictions.

Loss (Hinton et al. 2015, as in DistilBERT):
``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``,
optionally plus MSE matching of hidden states / attention maps. When nothing but
logits is matched, the teacher runs once over the transfer set and its logits are
cached in the dataset, so each epoch costs only the student's forward/backward.

The teacher scores *raw text* with its own tokenizer, so the student may be any
pretrained model with its own tokenizer (an MPNet or RoBERTa teacher, a MiniLM
student): the student trains on its own tokenization of the same texts and the
stage hands back the student's tokenizer, which the later stages and the bundle
use. Hidden-state / attention matching compares positions, so it needs the
teacher's tokenization and equal shapes; it is refused otherwise.

The transfer set is the training split plus ``data.unlabeled`` and ``augment``
variants, splices and word strings of the training texts; the teacher labels those (its argmax is their
hard label, its logits their soft one). With ``sentence_weight`` the same pass
also keeps the teacher's mean-pooled vector of every transfer text (its own
tokenizer), which the student's projected vector regresses: the objective that
crosses tokenizers at the sentence level (``training.distillation``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


from ...errors import EdgepackError
from ...labelled_data import LabelledData, LabelledSplit
from ...progress import substep
from ...records import record_key
from ...training.common import (
    encoder_layers,
    run_info,
    seed_all,
    to_cpu,
    training_record,
)
from ...training.distillation import SentenceTarget, train_student
from ...training.evaluate import gather_logits, gather_outputs
from .augment import copy_texts, splice_texts, word_strings
from .search import rounded, search
from .spec import DistillSpec
from .student import check_matching, layer_map, make_student, tokenization_mismatch


def transfer_set(teacher, teacher_tokenizer, data: LabelledData, spec: DistillSpec, seq_len: int,
                 seed: int, vectors: bool = False) -> tuple[LabelledSplit, Any, Any, dict[str, int]]:
    """The texts the student learns the teacher from, the teacher's logits on them (and with ``vectors`` its
    pooled sentence vectors, from the same pass), and how many of each kind.

    Training texts keep their labels; unlabeled texts and augmented variants take the teacher's argmax. In a
    distributed run each rank scores a share of the texts and all get every logit (a collective)."""
    import numpy as np

    from ...training.common import eval_device

    augment, train = spec.augment, data.train.texts
    made = {"augmented": copy_texts(train, augment, seed) if augment is not None and augment.copies else [],
            "spliced": splice_texts(train, augment.splice, seed) if augment is not None and augment.splice else [],
            "word strings": word_strings(train, augment.words, seed) if augment is not None and augment.words else []}
    texts = list(train) + list(data.unlabeled) + [text for kind in made.values() for text in kind]
    pooled = None
    with substep(f"label the transfer set ({len(texts)} texts) with the teacher"):
        device = eval_device()  # a base-size teacher over a 5x transfer set: the GPU's job when there is one
        try:
            if device != "cpu":
                teacher.to(device)
            if vectors:
                logits, pooled = gather_outputs(teacher, teacher_tokenizer, texts, seq_len)
            else:
                logits = gather_logits(teacher, teacher_tokenizer, texts, seq_len)
        finally:
            to_cpu(teacher)
    labels = list(data.train.labels) + [int(i) for i in np.argmax(logits[len(data.train):], axis=1)]
    # (kinds after the copies are counted only when present: records written before they existed stay equal)
    counts = {"train": len(data.train), "unlabeled": len(data.unlabeled), "augmented": len(made["augmented"])}
    counts.update({kind: len(made[kind]) for kind in ("spliced", "word strings") if made[kind]})
    return LabelledSplit(texts, labels), logits, pooled, counts


def _shared(shared: tuple[dict, str] | None, what: tuple, compute):
    """``compute()``, once per (shared key, ``what``) when a memo is shared."""
    if shared is None:
        return compute()
    memo, key = shared
    full = ("transfer_set", key, *what)
    if full not in memo:
        memo[full] = compute()
    return memo[full]


def distill(teacher, tokenizer, data: LabelledData, spec: DistillSpec, *, seq_len: int, work_dir: Path,
            seed: int = 42, shared_transfer: tuple[dict, str] | None = None,
            resume: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """Build the student named by ``spec.student`` and distil ``teacher`` into it.

    Returns (student, the student's tokenizer, details); ``tokenizer`` is the teacher's. ``shared_transfer``
    (a memo, a key naming the teacher and data): the transfer set and the teacher's logits are computed once
    per key and reused (a tune's trials distil the same teacher many times). ``resume``: the student's training
    checkpoints under ``work_dir`` and continues from the last one (``work_dir`` must belong to this configuration
    alone); the transfer set is labelled again, the same seed making it the same."""
    teacher.eval()
    seed_all(seed)
    probe, student_tokenizer = make_student(teacher, tokenizer, spec.student)
    limit = getattr(probe.config, "max_position_embeddings", seq_len)
    if seq_len > limit:
        raise EdgepackError(f"recipe distill.student: the student takes at most {limit} positions (recipe seq_len {seq_len})")
    mismatch = tokenization_mismatch(tokenizer, student_tokenizer, data.train.texts)
    check_matching(teacher, probe, spec, mismatch)
    live = spec.hidden_weight > 0 or spec.attention_weight > 0
    with_vectors = spec.sentence_weight > 0
    if data.unlabeled or spec.augment is not None or not live or with_vectors:
        transfer, logits, vectors, counts = _shared(
            shared_transfer, (record_key(spec.augment), seq_len, seed, with_vectors),
            lambda: transfer_set(teacher, tokenizer, data, spec, seq_len, seed, vectors=with_vectors))
    else:
        transfer, logits, vectors = data.train, None, None
        counts = {"train": len(data.train), "unlabeled": 0, "augmented": 0}
    taught = dataclasses.replace(data, train=transfer)
    teacher_logits = None if live else logits
    sentence = SentenceTarget(spec.sentence_weight, spec.sentence_loss, vectors) if with_vectors else None
    params = {"alpha": spec.alpha, "temperature": spec.temperature, "epochs": spec.epochs, "lr": spec.lr}
    details: dict[str, Any] = {}
    if spec.search is not None:
        if data.validation is None:
            raise EdgepackError("recipe distill.search: needs data.validation")
        best, details, winner = search(teacher, tokenizer, taught, spec, seq_len, work_dir / "search", seed,
                                        teacher_logits, sentence)
        params.update(best)
    else:
        winner = None
    n_teacher = len(encoder_layers(teacher))
    mapped = layer_map(spec.student, probe.config.num_hidden_layers, n_teacher)
    if winner is not None:  # the best trial ran with exactly the final settings (same seed, data, parameters)
        student, student_tokenizer = winner.student, winner.tokenizer
        best_metric, run, training = winner.best_metric, winner.run, winner.training
        if "search" in details:  # rank 0 (the other ranks of a distributed run keep no summary)
            details["search"]["final"] = "the best trial's student (not trained again)"
    else:
        seed_all(seed)
        if spec.search is not None:  # the probe's head was drawn before the search's students: draw it again
            probe, student_tokenizer = make_student(teacher, tokenizer, spec.student)
        student, trainer = train_student(
            teacher, probe, student_tokenizer, taught, seq_len=seq_len, work_dir=work_dir / "student", seed=seed,
            batch_size=spec.batch_size, weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio,
            hidden_weight=spec.hidden_weight, attention_weight=spec.attention_weight, teacher_layers=mapped,
            teacher_logits=teacher_logits, sentence=sentence, resume=resume, **params)
        best_metric, run, training = trainer.state.best_metric, run_info(trainer.args), training_record(trainer)
    details.update({k: rounded(k, v) for k, v in params.items()})
    details.update(student_layers=probe.config.num_hidden_layers, teacher_layers=n_teacher, layer_map=mapped,
                   teacher_logits_cached=teacher_logits is not None, transfer_set=counts,
                   student_tokenizer="the teacher's" if mismatch is None else f"its own ({mismatch})", **run)
    if spec.augment is not None:
        details["augment"] = dataclasses.asdict(spec.augment)
    if spec.hidden_weight:
        details["hidden_weight"] = spec.hidden_weight
    if spec.attention_weight:
        details["attention_weight"] = spec.attention_weight
    if sentence is not None:
        details["sentence"] = {"weight": spec.sentence_weight, "loss": spec.sentence_loss,
                               "teacher_dim": int(vectors.shape[1]), "texts": int(vectors.shape[0]),
                               "projection": "trained with the student, not saved"}
    if best_metric is not None:
        details["best_val_accuracy"] = round(float(best_metric), 4)
    details["training"] = training
    return student, student_tokenizer, details


def train_alone(teacher, tokenizer, data: LabelledData, spec: DistillSpec, *, epochs: float, lr: float,
                seq_len: int, work_dir: Path, seed: int = 42) -> tuple[Any, Any, dict[str, Any]]:
    """The same student fine-tuned on the labelled training split alone, with the distilled run's epochs and lr.

    Its row next to the distilled one shows what the teacher (and the transfer set) bought."""
    seed_all(seed)
    student, student_tokenizer = make_student(teacher, tokenizer, spec.student)
    student, trainer = train_student(None, student, student_tokenizer, data, alpha=1.0, temperature=1.0,
                                     epochs=epochs, lr=lr, batch_size=spec.batch_size, seq_len=seq_len,
                                     work_dir=work_dir, seed=seed, weight_decay=spec.weight_decay,
                                     warmup_ratio=spec.warmup_ratio)
    details: dict[str, Any] = {"epochs": epochs, "lr": lr, "train": len(data.train), **run_info(trainer.args)}
    if trainer.state.best_metric is not None:
        details["best_val_accuracy"] = round(float(trainer.state.best_metric), 4)
    return student, student_tokenizer, details
