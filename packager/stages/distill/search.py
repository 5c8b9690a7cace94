"""The distil stage's optuna search over its training knobs (alpha, temperature, epochs, lr), in one process, in a
torchrun job, or shared by several workers through a study database."""
from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import distributed
from ...errors import EdgepackError
from ...labelled_data import LabelledData
from ...studies import beyond_budget, open_storage, public_url
from ...training.common import run_info, seed_all, training_record
from ...training.distillation import train_student
from ...training.evaluate import accuracy
from .spec import DistillSpec
from .student import make_student

log = logging.getLogger(__name__)


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


def rounded(name: str, value: Any) -> Any:
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


def search(teacher, teacher_tokenizer, data: LabelledData, spec: DistillSpec, seq_len: int, work_dir: Path,
            seed: int, teacher_logits, sentence=None) -> tuple[dict[str, Any], dict[str, Any], _Trained | None]:
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
                                         teacher_logits=teacher_logits, sentence=sentence,
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
              **{k: rounded(k, v) for k, v in t.params.items()},
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
