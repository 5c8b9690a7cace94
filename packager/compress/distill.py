"""Knowledge distillation: a smaller student learns the teacher's softened predictions.

Loss (Hinton et al. 2015, as in DistilBERT):
``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``,
optionally plus MSE matching of hidden states / attention maps. When nothing but
logits is matched, the teacher runs once over the training set and its logits are
cached in the dataset, so each epoch costs only the student's forward/backward.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import EdgepackError
from ..labelled_data import LabelledData
from ..recipe import DistillSpec, StudentSpec
from .common import (PadCollator, accuracy_metric, encode, encoder_layers, pad_id, seed_all, training_args,
                     training_record)
from .evaluate import accuracy, gather_logits

log = logging.getLogger(__name__)

#: config attributes holding one value per encoder layer (see ``pruned_bert``)
PER_LAYER_CONFIG = ("layer_heads",)


def _subset_config(config, layers: list[int]):
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = len(layers)
    for name in PER_LAYER_CONFIG:
        values = getattr(cfg, name, None)
        if values:
            setattr(cfg, name, [values[i] for i in layers])
    return cfg


def student_from_layers(teacher, layers: list[int]):
    """DistilBERT-style init: the teacher's embeddings, head and the chosen encoder blocks, in order."""
    n_teacher = len(encoder_layers(teacher))
    bad = [l for l in layers if l >= n_teacher]
    if bad:
        raise EdgepackError(f"recipe distill.student.layers: layer {bad[0]} does not exist (the teacher has {n_teacher})")
    student = type(teacher)(_subset_config(teacher.config, layers))
    state = teacher.state_dict()
    prefix = f"{teacher.base_model_prefix}.encoder.layer."
    remapped = {}
    for key, value in state.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in layers:
                remapped[f"{prefix}{layers.index(int(index))}.{rest}"] = value
        else:
            remapped[key] = value
    missing, unexpected = student.load_state_dict(remapped, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise EdgepackError(f"student init: state mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student


def student_from_config(teacher, overrides: dict[str, Any]):
    """A fresh student from the teacher's config with ``overrides``; tensors whose name and shape match are copied."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(teacher.config)
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise EdgepackError(f"recipe distill.student.config.{key}: not an attribute of {type(cfg).__name__}")
        setattr(cfg, key, value)
    student = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager")
    own = student.state_dict()
    shared = {k: v for k, v in teacher.state_dict().items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(shared, strict=False)
    return student


def student_from_model(teacher, source: str):
    from transformers import AutoModelForSequenceClassification

    cfg = teacher.config
    try:
        student = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=cfg.num_labels, id2label=cfg.id2label, label2id=cfg.label2id,
            ignore_mismatched_sizes=True, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise EdgepackError(f"recipe distill.student.model: cannot load {source!r} ({str(exc).splitlines()[0]})") from None
    if student.config.vocab_size != cfg.vocab_size:
        raise EdgepackError(f"recipe distill.student.model: vocabulary size {student.config.vocab_size} differs from "
                            f"the teacher's {cfg.vocab_size} (the student must share the teacher's tokenizer)")
    return student


def make_student(teacher, spec: StudentSpec):
    if spec.layers is not None:
        return student_from_layers(teacher, spec.layers)
    if spec.config is not None:
        return student_from_config(teacher, spec.config)
    return student_from_model(teacher, str(spec.model))


def layer_map(spec: StudentSpec, n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer matched by each student layer: the copied one, else evenly spaced."""
    if spec.layers is not None:
        return list(spec.layers)
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
            temperature: float) -> torch.Tensor:
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.log_softmax(teacher_logits / temperature, dim=-1), log_target=True, reduction="batchmean")
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def _make_trainer_class():
    from transformers import Trainer

    class DistillTrainer(Trainer):
        """Trainer whose training loss is the distillation loss; evaluation scores plain CE/accuracy."""

        def __init__(self, *args, teacher=None, alpha: float, temperature: float, hidden_weight: float = 0.0,
                     attention_weight: float = 0.0, teacher_layers: list[int] | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.to(self.args.device).eval() if teacher is not None else None
            self.alpha, self.temperature = alpha, temperature
            self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
            self.teacher_layers = teacher_layers or []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            cached = inputs.pop("teacher_logits", None)
            labels = inputs["labels"]
            matching = model.training and (self.hidden_weight > 0 or self.attention_weight > 0)
            outputs = model(**inputs, output_hidden_states=matching, output_attentions=matching and self.attention_weight > 0)
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


def _check_matching(teacher, student, spec: DistillSpec) -> None:
    if spec.hidden_weight > 0 and teacher.config.hidden_size != student.config.hidden_size:
        raise EdgepackError("recipe distill.hidden_weight: hidden-state matching needs the same hidden size "
                            f"(teacher {teacher.config.hidden_size}, student {student.config.hidden_size})")
    if spec.attention_weight > 0:
        heads = lambda m: getattr(m.config, "layer_heads", None) or [m.config.num_attention_heads] * m.config.num_hidden_layers
        t_heads, s_heads = heads(teacher), heads(student)
        mapped = layer_map(spec.student, len(s_heads), len(t_heads))
        if any(s_heads[i] != t_heads[t] for i, t in enumerate(mapped)):
            raise EdgepackError("recipe distill.attention_weight: attention matching needs the same head count "
                                "in the matched layers")


def train_student(teacher, student, tokenizer, data: LabelledData, *, alpha: float, temperature: float,
                  epochs: float, lr: float, batch_size: int, seq_len: int, work_dir: Path, seed: int,
                  weight_decay: float = 0.01, warmup_ratio: float = 0.1, hidden_weight: float = 0.0,
                  attention_weight: float = 0.0, teacher_layers: list[int] | None = None,
                  teacher_logits=None, best_by_accuracy: bool = True, **trainer_kwargs):
    """Distil ``teacher`` into ``student`` (trained in place); returns the student and the Trainer.

    ``trainer_kwargs`` (``optimizers``, ``callbacks``) go to the Trainer: movement pruning needs both.
    """
    seed_all(seed)
    live = hidden_weight > 0 or attention_weight > 0
    train = encode(tokenizer, data.train, seq_len, None if live else teacher_logits)
    val = encode(tokenizer, data.validation, seq_len) if data.validation is not None else None
    args = training_args(work_dir, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         weight_decay=weight_decay, warmup_ratio=warmup_ratio, evaluate=val is not None,
                         best_by_accuracy=best_by_accuracy, n_train=len(train))
    student.train()
    trainer = _make_trainer_class()(
        model=student, args=args, train_dataset=train, eval_dataset=val, data_collator=PadCollator(pad_id(tokenizer)),
        compute_metrics=accuracy_metric, teacher=teacher if live or teacher_logits is None else None,
        alpha=alpha, temperature=temperature, hidden_weight=hidden_weight, attention_weight=attention_weight,
        teacher_layers=teacher_layers, **trainer_kwargs)
    trainer.train()
    return trainer.model.eval(), trainer


#: a shared study's workers beat this often; a trial silent for the grace period (its worker died) is failed
#: and run again by the next worker that asks (optuna's heartbeat + RetryFailedTrialCallback)
SEARCH_HEARTBEAT_S = 10
SEARCH_GRACE_S = 60


def _open_study(optuna, s, seed: int):
    """The search's study: in memory (seeded, repeatable), or shared through ``s.storage`` under ``s.study``."""
    if s.storage is None:
        return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    engine = {"connect_args": {"timeout": 60}} if s.storage.startswith("sqlite") else {}  # wait out others' writes
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9's name
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry_kwarg = {"heartbeat_stale_trial_callback": retry(max_retry=2)} if retry else \
                    {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}
                storage = optuna.storages.RDBStorage(s.storage, engine_kwargs=engine, grace_period=SEARCH_GRACE_S,
                                                     heartbeat_interval=SEARCH_HEARTBEAT_S, **retry_kwarg)
            break
        except Exception as exc:  # a bad URL, a missing driver, an unreachable database
            if attempt < 4 and "IntegrityError" in type(exc).__name__:  # another worker created the tables meanwhile
                time.sleep(1 + attempt)
                continue
            raise EdgepackError(f"recipe distill.search.storage: cannot open {_public_url(s.storage)} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    # workers share trials, not a random stream: an unseeded sampler, and running trials count as told
    sampler = optuna.samplers.TPESampler(constant_liar=True)
    return optuna.create_study(study_name=s.study, storage=storage, direction="maximize", sampler=sampler,
                               load_if_exists=True)


def _public_url(url: str) -> str:
    """A storage URL without its password (it goes to the manifest and the console)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _search(teacher, tokenizer, data: LabelledData, spec: DistillSpec, seq_len: int, work_dir: Path, seed: int,
            teacher_logits) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna search of alpha / temperature / epochs on validation accuracy; returns (best params, details).

    With ``search.storage`` several workers (each maybe a whole torchrun job) share one study: each runs
    trials until the study holds ``trials`` completed ones, then waits for the others' running trials,
    so every worker picks the same best parameters; a worker started later resumes the study. Inside a
    distributed job rank 0 asks the study and broadcasts each trial's parameters; every rank trains it.
    """
    try:
        import optuna
    except ModuleNotFoundError:
        msg = "skipped: optuna is not installed (pip install optuna); used the recipe's alpha/temperature/epochs"
        log.warning("distill.search %s", msg)
        return {}, {"search": msg}
    s = spec.search

    def run_trial(number: int, params: dict[str, Any]) -> float:
        student = make_student(teacher, spec.student)
        student, _ = train_student(teacher, student, tokenizer, data, lr=spec.lr, batch_size=spec.batch_size,
                                   seq_len=seq_len, work_dir=work_dir / f"trial-{number}", seed=seed,
                                   teacher_logits=teacher_logits, **params)
        return accuracy(student, tokenizer, data.validation, seq_len)

    if not distributed.current().is_main:  # follow rank 0's trials until it says stop
        while (order := distributed.broadcast_object(None, publish_wait=True)) is not None:
            run_trial(*order)
        return distributed.broadcast_object(None), {}
    ran_here: list[int] = []

    def objective(trial) -> float:
        params = {"alpha": trial.suggest_float("alpha", *s.alpha), "temperature": trial.suggest_float("temperature", *s.temperature),
                  "epochs": trial.suggest_int("epochs", *s.epochs)}
        distributed.broadcast_object((trial.number, params), publish_wait=True)
        ran_here.append(trial.number)
        return run_trial(trial.number, params)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(optuna, s, seed)
    complete = lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    running = lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    while complete() < s.trials:
        if complete() + running() >= s.trials:  # the rest is running on other workers: wait for it
            time.sleep(SEARCH_HEARTBEAT_S / 5)
            optuna.storages.fail_stale_trials(study)
            continue
        study.optimize(objective, n_trials=1)
    distributed.broadcast_object(None, publish_wait=True)
    info: dict[str, Any] = {"trials": s.trials, "best_params": study.best_params,
                            "best_val_accuracy": round(float(study.best_value), 4), "trials_run_here": ran_here}
    if s.storage is not None:
        info.update(study=s.study, storage=_public_url(s.storage), completed_trials=complete())
    best = distributed.broadcast_object(dict(study.best_params))
    return best, {"search": info}


def distill(teacher, tokenizer, data: LabelledData, spec: DistillSpec, *, seq_len: int, work_dir: Path,
            seed: int = 42) -> tuple[Any, dict[str, Any]]:
    """Build the student named by ``spec.student`` and distil ``teacher`` into it."""
    teacher.eval()
    probe = make_student(teacher, spec.student)
    _check_matching(teacher, probe, spec)
    live = spec.hidden_weight > 0 or spec.attention_weight > 0
    teacher_logits = None if live else gather_logits(teacher, tokenizer, data.train.texts, seq_len)
    params = {"alpha": spec.alpha, "temperature": spec.temperature, "epochs": spec.epochs}
    details: dict[str, Any] = {}
    if spec.search is not None:
        if data.validation is None:
            raise EdgepackError("recipe distill.search: needs data.validation")
        best, details = _search(teacher, tokenizer, data, spec, seq_len, work_dir / "search", seed, teacher_logits)
        params.update(best)
    n_teacher = len(encoder_layers(teacher))
    mapped = layer_map(spec.student, probe.config.num_hidden_layers, n_teacher)
    student, trainer = train_student(
        teacher, probe, tokenizer, data, seq_len=seq_len, work_dir=work_dir / "student", seed=seed, lr=spec.lr,
        batch_size=spec.batch_size, weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio,
        hidden_weight=spec.hidden_weight, attention_weight=spec.attention_weight, teacher_layers=mapped,
        teacher_logits=teacher_logits, **params)
    details.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in params.items()})
    details.update(student_layers=probe.config.num_hidden_layers, teacher_layers=n_teacher, layer_map=mapped,
                   teacher_logits_cached=teacher_logits is not None, lr=spec.lr)
    if spec.hidden_weight:
        details["hidden_weight"] = spec.hidden_weight
    if spec.attention_weight:
        details["attention_weight"] = spec.attention_weight
    if trainer.state.best_metric is not None:
        details["best_val_accuracy"] = round(float(trainer.state.best_metric), 4)
    details["training"] = training_record(trainer)
    return student, details
