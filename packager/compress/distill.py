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
variants of the training texts; the teacher labels those (its argmax is their
hard label, its logits their soft one).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import EdgepackError
from ..labelled_data import LabelledData, LabelledSplit
from ..studies import beyond_budget, open_storage, public_url
from .augment import augment_texts
from .common import (PadCollator, accuracy_metric, encode, encoder_layer_prefix, encoder_layers, last_checkpoint, pad_id,
                     run_info, seed_all, to_cpu, trained_model, training_args, training_record)
from .evaluate import accuracy, gather_logits

# ``spec`` arguments are the options of ``stages.distill`` (that stage calls this module; importing its spec here
# would be an import cycle), read by attribute.

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
    prefix = encoder_layer_prefix(teacher)
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


#: names under which ``distill.student.model`` means the built-in all-MiniLM-L6-v2 (no download)
BUILTIN_STUDENT_NAMES = ("builtin", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
#: training texts whose tokenization is compared to decide whether teacher and student tokenize alike
TOKENIZATION_PROBE = 64


def student_source(source: str) -> str:
    """A student folder: the built-in MiniLM for its names, else as given (folder or Hub id in the local cache)."""
    if source in BUILTIN_STUDENT_NAMES:
        from ..models import default_model_path

        return str(default_model_path())
    return str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source


def student_from_model(teacher, source: str):
    """A pretrained student with its own tokenizer; the teacher's labels, a fresh classification head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = teacher.config
    folder = student_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        student = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=cfg.num_labels, id2label=cfg.id2label, label2id=cfg.label2id,
            ignore_mismatched_sizes=True, attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepackError(f"recipe distill.student.model: cannot load {source!r} ({first})") from None
    return student, tokenizer


def make_student(teacher, tokenizer, spec: Any):
    """(student, its tokenizer): cut from the teacher (the teacher's tokenizer) or a pretrained model (its own)."""
    if spec.layers is not None:
        return student_from_layers(teacher, spec.layers), tokenizer
    if spec.config is not None:
        return student_from_config(teacher, spec.config), tokenizer
    return student_from_model(teacher, str(spec.model))


def tokenization_mismatch(teacher_tokenizer, student_tokenizer, texts: list[str]) -> str | None:
    """Why teacher and student do not see the same token positions, or None when they tokenize alike."""
    if teacher_tokenizer is student_tokenizer:
        return None
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if len(t_vocab) != len(s_vocab):
        return f"teacher vocabulary {len(t_vocab)}, student {len(s_vocab)}"
    if t_vocab != s_vocab:
        return "their vocabularies differ"
    probe = texts[:TOKENIZATION_PROBE]
    if teacher_tokenizer(probe)["input_ids"] != student_tokenizer(probe)["input_ids"]:
        return "they split the training texts differently"
    return None


def layer_map(spec: Any, n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer matched by each student layer: the copied one, else evenly spaced."""
    if spec.layers is not None:
        return list(spec.layers)
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


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


def _check_matching(teacher, student, spec: Any, mismatch: str | None) -> None:
    """Refuse, in one line, a hidden-state / attention matching request that cannot line up."""
    for key, weight, what in (("hidden_weight", spec.hidden_weight, "hidden-state"),
                              ("attention_weight", spec.attention_weight, "attention")):
        if weight > 0 and mismatch is not None:
            raise EdgepackError(f"recipe distill.{key}: {what} matching compares token positions, but the student "
                                f"tokenizes differently from the teacher ({mismatch}); distil from logits only "
                                f"({key}: 0)")
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


def preflight(teacher, tokenizer, spec: Any, texts: list[str], seq_len: int) -> None:
    """Checks of a pretrained student that need only its config and tokenizer: run before any training.

    (Earlier stages keep the hidden size and the tokenizer's kind, so these verdicts still hold at the distill
    stage; students cut from the teacher are checked when they are built.)"""
    if spec.student.model is None:
        return
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoTokenizer

    folder = student_source(str(spec.student.model))
    try:
        config = AutoConfig.from_pretrained(folder)
        student_tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepackError(f"recipe distill.student.model: cannot load {spec.student.model!r} ({first})") from None
    limit = getattr(config, "max_position_embeddings", seq_len)
    if seq_len > limit:
        raise EdgepackError(f"recipe distill.student: the student takes at most {limit} positions (recipe seq_len {seq_len})")
    _check_matching(teacher, SimpleNamespace(config=config), spec,
                    tokenization_mismatch(tokenizer, student_tokenizer, texts))


def train_student(teacher, student, tokenizer, data: LabelledData, *, alpha: float, temperature: float,
                  epochs: float, lr: float, batch_size: int, seq_len: int, work_dir: Path, seed: int,
                  weight_decay: float = 0.01, warmup_ratio: float = 0.1, hidden_weight: float = 0.0,
                  attention_weight: float = 0.0, teacher_layers: list[int] | None = None,
                  teacher_logits=None, best_by_accuracy: bool = True, resume: bool = False, **trainer_kwargs):
    """Distil ``teacher`` into ``student`` (trained in place); returns the student and the Trainer.

    ``tokenizer`` is the student's; the teacher's logits come cached (``teacher_logits``, rows of
    ``data.train``) unless states are matched live. With neither a teacher nor logits this is plain
    fine-tuning on the labels. ``trainer_kwargs`` (``optimizers``, ``callbacks``) go to the Trainer:
    movement pruning needs both. ``resume``: checkpoint every epoch whole and continue from the last one
    ``work_dir`` holds (``work_dir`` must then belong to this run's configuration alone).
    """
    seed_all(seed)
    live = hidden_weight > 0 or attention_weight > 0
    train = encode(tokenizer, data.train, seq_len, None if live else teacher_logits)
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
        teacher_layers=teacher_layers, **trainer_kwargs)
    start = last_checkpoint(work_dir) if resume else None
    if start is not None:
        log.info("distill: continuing %s from %s", work_dir, Path(start).name)
    try:
        trainer.train(resume_from_checkpoint=start)
    finally:
        if live_teacher is not None:
            to_cpu(live_teacher)
    return trained_model(trainer), trainer


def transfer_set(teacher, teacher_tokenizer, data: LabelledData, spec: Any, seq_len: int,
                 seed: int) -> tuple[LabelledSplit, Any, dict[str, int]]:
    """The texts the student learns the teacher from, the teacher's logits on them, and how many of each kind.

    Training texts keep their labels; unlabeled texts and augmented variants take the teacher's argmax. In a
    distributed run each rank scores a share of the texts and all get every logit (a collective)."""
    import numpy as np

    extra = list(data.unlabeled)
    augmented = augment_texts(data.train.texts, spec.augment, seed) if spec.augment is not None else []
    extra += augmented
    texts = list(data.train.texts) + extra
    if torch.cuda.is_available():  # a base-size teacher over a 5x transfer set: the GPU's job when there is one
        try:
            logits = gather_logits(teacher.to("cuda"), teacher_tokenizer, texts, seq_len)
        finally:
            to_cpu(teacher)
    else:
        logits = gather_logits(teacher, teacher_tokenizer, texts, seq_len)
    labels = list(data.train.labels) + [int(i) for i in np.argmax(logits[len(data.train):], axis=1)]
    counts = {"train": len(data.train), "unlabeled": len(data.unlabeled), "augmented": len(augmented)}
    return LabelledSplit(texts, labels), logits, counts


def _shared(shared: tuple[dict, str] | None, what: tuple, compute):
    """``compute()``, once per (shared key, ``what``) when a memo is shared."""
    if shared is None:
        return compute()
    memo, key = shared
    full = ("transfer_set", key, *what)
    if full not in memo:
        memo[full] = compute()
    return memo[full]


class _ReportToTrial:
    """Trainer callback: each epoch's validation accuracy goes to the optuna trial, which may stop it early."""

    def __init__(self, trial) -> None:
        self.trial, self.pruned, self.epochs_run = trial, False, 0

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class Callback(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                accuracy_now = (metrics or {}).get("eval_accuracy")
                if accuracy_now is None:
                    return
                outer.epochs_run = int(round(state.epoch or 0))
                outer.trial.report(float(accuracy_now), step=outer.epochs_run)
                if outer.trial.should_prune():
                    outer.pruned = True
                    control.should_training_stop = True

        return Callback()


def _rounded(name: str, value: Any) -> Any:
    """Stage-table precision: 4 decimals, a learning rate to 4 significant digits."""
    if not isinstance(value, float):
        return value
    return float(f"{value:.4g}") if name == "lr" else round(value, 4)


def _pruner(optuna, name: str):
    if name == "median":  # two complete trials first, then judge each epoch against the median at that epoch
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


@dataclass
class _Trained:
    """A trial's trained student, kept while it is the best so far: the final student need not be trained again."""

    student: Any
    tokenizer: Any
    best_metric: float | None
    run: dict[str, str]
    #: ``training_record`` of the trial's Trainer (processes, batch sizes) for the stage row
    training: dict[str, Any]


#: a shared study's workers beat this often; a trial silent for the grace period (its worker died) is failed
#: and run again by the next worker that asks (optuna's heartbeat + RetryFailedTrialCallback)
SEARCH_HEARTBEAT_S = 10
SEARCH_GRACE_S = 60


class _BeyondBudget(Exception):
    """A trial started by this worker when the others had already taken the study's last place."""


@contextlib.contextmanager
def _quiet_optuna(optuna):
    """Optuna logs every caught exception as a failed trial; a trial that gave way is not a failure."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _open_study(optuna, s, seed: int, pruner):
    """The search's study: in memory (seeded, repeatable), or shared through ``s.storage`` under ``s.study``."""
    if s.storage is None:
        return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    storage = open_storage(optuna, s.storage, heartbeat_s=SEARCH_HEARTBEAT_S, grace_s=SEARCH_GRACE_S,
                           flag="recipe distill.search.storage")
    # workers share trials, not a random stream: an unseeded sampler, and running trials count as told
    sampler = optuna.samplers.TPESampler(constant_liar=True)
    return optuna.create_study(study_name=s.study, storage=storage, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _search(teacher, teacher_tokenizer, data: LabelledData, spec: Any, seq_len: int, work_dir: Path,
            seed: int, teacher_logits) -> tuple[dict[str, Any], dict[str, Any], _Trained | None]:
    """Optuna search of alpha / temperature / epochs (/ lr) on validation accuracy.

    ``data.train`` is the transfer set and ``teacher_logits`` its cached logits; every trial shares them.
    Returns (best params, details, the best trial's student when this process trained it).

    With ``search.storage`` several workers (each maybe a whole torchrun job) share one study: each runs
    trials until the study holds ``trials`` completed ones, then waits for the others' running trials,
    so every worker picks the same best parameters; a worker started later resumes the study. Inside a
    distributed job rank 0 asks the study and broadcasts each trial's parameters; every rank trains it
    (the pruner is off there: stopping a trial early on rank 0 alone would desynchronise the ranks)."""
    try:
        import optuna
    except ModuleNotFoundError:
        msg = "skipped: optuna is not installed (pip install optuna); used the recipe's alpha/temperature/epochs"
        log.warning("distill.search %s", msg)
        return {}, {"search": msg}, None
    s = spec.search
    kept: dict[int, _Trained] = {}
    best_so_far = [0.0]
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    ranks = distributed.current()

    # a study kept in a database outlives the process: its trials checkpoint each epoch, and a trial run again
    # after its worker died (optuna's retry, same parameters) continues in the first attempt's folder
    resumable = s.storage is not None
    # under the study's name: another study's checkpoints are never continued
    trials_dir = work_dir / re.sub(r"[^A-Za-z0-9._-]", "_", s.study) if resumable else work_dir

    def run_trial(number: int, params: dict[str, Any], trial=None, folder: int | None = None) -> float | None:
        """Train one trial's student on every rank; None when the pruner stopped it."""
        folder = number if folder is None else folder
        params = dict(params)
        lr = params.pop("lr", spec.lr)
        seed_all(seed)  # the same fresh head in every trial: trials differ by their parameters alone
        student, student_tokenizer = make_student(teacher, teacher_tokenizer, spec.student)
        reporter = _ReportToTrial(trial) if trial is not None and not ranks.distributed else None
        student, trainer = train_student(teacher, student, student_tokenizer, data, lr=lr, batch_size=spec.batch_size,
                                         seq_len=seq_len, work_dir=trials_dir / f"trial-{folder}", seed=seed,
                                         resume=resumable,
                                         weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio,
                                         teacher_logits=teacher_logits,
                                         callbacks=[reporter.callback()] if reporter else None, **params)
        if trial is not None:
            trial.set_user_attr("epochs_run", reporter.epochs_run if reporter else int(round(trainer.state.epoch or 0)))
        if reporter is not None and reporter.pruned:
            return None
        record = training_record(trainer)  # a collective: before anything that differs between ranks
        value = accuracy(student, student_tokenizer, data.validation, seq_len)
        if not kept or value > best_so_far[0]:  # strictly better: on a tie optuna's best trial is the earlier one
            best_so_far[0] = value
            kept.clear()
            kept[number] = _Trained(student, student_tokenizer, trainer.state.best_metric, run_info(trainer.args),
                                    record)
        return value

    if not ranks.is_main:  # follow rank 0's trials until it says stop
        while (order := distributed.broadcast_object(None, publish_wait=True)) is not None:
            run_trial(*order)
        best, best_number = distributed.broadcast_object(None)
        if best_number is None:
            raise EdgepackError("recipe distill.search: no trial completed")
        return best, {}, kept.get(best_number)  # rank 0's manifest holds the summary
    ran_here: list[int] = []

    def objective(trial) -> float:
        if beyond_budget(optuna, study, trial.number, s.trials):  # another worker took the last place meanwhile
            trial.set_user_attr("beyond_budget", True)
            raise _BeyondBudget
        # the stage's declared knobs, with the recipe's ranges (``SearchSpec.searched``)
        params = {knob.option: knob.suggest(trial, knob.option, bounds=bounds) for knob, bounds in s.searched()}
        # optuna's retry callbacks name the first attempt in the system attribute "failed_trial"
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        folder = frozen.system_attrs.get("failed_trial", trial.number)  # the first attempt's checkpoints
        distributed.broadcast_object((trial.number, params, None, folder), publish_wait=True)
        ran_here.append(trial.number)
        value = run_trial(trial.number, params, trial, folder)
        if value is None:
            raise optuna.TrialPruned()
        return value

    study = _open_study(optuna, s, seed, optuna.pruners.NopPruner() if ranks.distributed else _pruner(optuna, s.pruner))
    done = lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED)))
    running = lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    while done() < s.trials:
        if done() + running() >= s.trials:  # the rest is running on other workers: wait for it
            time.sleep(SEARCH_HEARTBEAT_S / 5)
            with warnings.catch_warnings():  # marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            continue
        with _quiet_optuna(optuna):  # a trial beyond the budget is recorded as failed without a warning
            study.optimize(objective, n_trials=1, catch=(_BeyondBudget,))
    distributed.broadcast_object(None, publish_wait=True)
    trials = [t for t in study.trials if not t.user_attrs.get("beyond_budget")]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        distributed.broadcast_object(({}, None))
        raise EdgepackError("recipe distill.search: no trial completed")
    tried = [{"trial": t.number, "state": t.state.name.lower(),
              **{k: _rounded(k, v) for k, v in t.params.items()},
              "epochs_run": t.user_attrs.get("epochs_run"),
              "val_accuracy": round(float(t.value), 4) if t.value is not None else
              (round(float(max(t.intermediate_values.values())), 4) if t.intermediate_values else None)}
             for t in trials]
    summary = {"trials": s.trials, "pruner": "none (distributed run)" if ranks.distributed else s.pruner,
               "pruned": sum(t["state"] == "pruned" for t in tried),
               "best_trial": study.best_trial.number, "best_params": study.best_params,
               "best_val_accuracy": round(float(study.best_value), 4),
               "tried": tried, "trials_run_here": ran_here}
    if s.storage is not None:
        summary.update(study=s.study, storage=public_url(s.storage), completed_trials=len(complete))
    best, best_number = distributed.broadcast_object((dict(study.best_params), study.best_trial.number))
    return best, {"search": summary}, kept.get(best_number)


def distill(teacher, tokenizer, data: LabelledData, spec: Any, *, seq_len: int, work_dir: Path,
            seed: int = 42, shared_transfer: tuple[dict, str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Build the student named by ``spec.student`` and distil ``teacher`` into it.

    Returns (student, the student's tokenizer, details); ``tokenizer`` is the teacher's. ``shared_transfer``
    (a memo, a key naming the teacher and data): the transfer set and the teacher's logits are computed once
    per key and reused (a tune's trials distil the same teacher many times)."""
    teacher.eval()
    seed_all(seed)
    probe, student_tokenizer = make_student(teacher, tokenizer, spec.student)
    limit = getattr(probe.config, "max_position_embeddings", seq_len)
    if seq_len > limit:
        raise EdgepackError(f"recipe distill.student: the student takes at most {limit} positions (recipe seq_len {seq_len})")
    mismatch = tokenization_mismatch(tokenizer, student_tokenizer, data.train.texts)
    _check_matching(teacher, probe, spec, mismatch)
    live = spec.hidden_weight > 0 or spec.attention_weight > 0
    if data.unlabeled or spec.augment is not None or not live:
        transfer, logits, counts = _shared(shared_transfer, (repr(spec.augment), seq_len, seed),
                                           lambda: transfer_set(teacher, tokenizer, data, spec, seq_len, seed))
    else:
        transfer, logits, counts = data.train, None, {"train": len(data.train), "unlabeled": 0, "augmented": 0}
    taught = dataclasses.replace(data, train=transfer)
    teacher_logits = None if live else logits
    params = {"alpha": spec.alpha, "temperature": spec.temperature, "epochs": spec.epochs, "lr": spec.lr}
    details: dict[str, Any] = {}
    if spec.search is not None:
        if data.validation is None:
            raise EdgepackError("recipe distill.search: needs data.validation")
        best, details, winner = _search(teacher, tokenizer, taught, spec, seq_len, work_dir / "search", seed,
                                        teacher_logits)
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
            teacher_logits=teacher_logits, **params)
        best_metric, run, training = trainer.state.best_metric, run_info(trainer.args), training_record(trainer)
    details.update({k: _rounded(k, v) for k, v in params.items()})
    details.update(student_layers=probe.config.num_hidden_layers, teacher_layers=n_teacher, layer_map=mapped,
                   teacher_logits_cached=teacher_logits is not None, transfer_set=counts,
                   student_tokenizer="the teacher's" if mismatch is None else f"its own ({mismatch})", **run)
    if spec.augment is not None:
        details["augment"] = dataclasses.asdict(spec.augment)
    if spec.hidden_weight:
        details["hidden_weight"] = spec.hidden_weight
    if spec.attention_weight:
        details["attention_weight"] = spec.attention_weight
    if best_metric is not None:
        details["best_val_accuracy"] = round(float(best_metric), 4)
    details["training"] = training
    return student, student_tokenizer, details


def train_alone(teacher, tokenizer, data: LabelledData, spec: Any, *, epochs: float, lr: float,
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
