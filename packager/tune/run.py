"""`edgepack tune`: the fastest (or smallest) bundle whose validation accuracy stays within a budget of the teacher's.

Each optuna trial samples the knobs the recipe's stages declare (``search_space``), runs the stages, exports the
recipe's primary (first) target and scores it: the artifact's accuracy on the **validation** split, and
``device_bench`` here (p50 latency over the validation texts at their real lengths, peak RSS, file size). The
stages before the first compressing one are the reference (the fine-tuned teacher): they run once, and the
budget is measured against their validation accuracy. An int8 primary artifact that misses the budget falls back
(``precision_fallback``): its op groups that add the most output error are kept in float, one group at a time,
until it is within the budget or nothing is left; the trial records which ops stayed float. The winner is the
fastest trial within the budget; it is packed to every requested target through the normal pack path (test
split, the normal gate), the primary with the ops its fallback kept in float.

Every stage's output is cached on disk under a key made of the stage's options and its input's key, so trials
share the teacher, its logits (in memory) and any common prefix of stages, and a rerun (a resumed study) trains
nothing that is already there. The optuna study lives in a database (default: sqlite in the work folder):
running the same command again continues it; finished trials are not repeated.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import EdgepackError
from ..progress import reporting
from ..recipe.search_space import (
    BUCKETS_PARAM,
    decode_buckets,
    describe,
    first_tuned_stage,
)
from ..recipe.spec import GateSpec, Recipe
from ..stages import STAGES
from ..studies import public_url
from .cache import digest
from .options import Progress, TuneOptions
from .records import TrialRecord, TuneOutcome, TuneSummary, signed_points
from .search import Tuner, open_study


def run_tune(recipe: Recipe, out_dir: Path, options: TuneOptions, *, force: bool = False, archive: bool = False,
             progress: Progress | None = None, on_row: Callable[[Any], None] | None = None,
             show_bars: bool = False) -> TuneOutcome:
    """Tune ``recipe`` and pack the winner to ``out_dir``; see the module docstring."""
    from ..bundle import check_destination
    from ..recipe.run import recipe_targets

    options.validate()
    out_dir = Path(out_dir)
    targets = recipe_targets(recipe)
    check_destination(out_dir, force)  # before hours of training, not after
    if first_tuned_stage(recipe.stages) == len(recipe.stages):
        kinds = ", ".join(k for k, cls in STAGES.items() if cls.compresses)
        raise EdgepackError(f"recipe stages: nothing to tune (no compressing stage: {kinds})")
    step = progress or (lambda _message: None)
    emit = on_row or (lambda _row: None)
    with reporting(step):  # each trial's sub-steps (labelling, training, evaluation, export, parity) say so too
        return _tune(recipe, out_dir, options, targets, force=force, archive=archive, step=step, emit=emit,
                     show_bars=show_bars)


def _tune(recipe: Recipe, out_dir: Path, options: TuneOptions, targets: list[str], *, force: bool, archive: bool,
          step: Progress, emit: Callable[[Any], None], show_bars: bool) -> TuneOutcome:
    try:
        import optuna
    except ModuleNotFoundError:
        raise EdgepackError("edgepack tune needs optuna (pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work_dir = Path(options.work_dir) if options.work_dir else out_dir.with_name(out_dir.name + ".tune")
    work_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage or f"sqlite:///{(work_dir / 'study.db').resolve()}"
    study_name = options.study or "tune"
    tuner = Tuner(recipe, options, work_dir, step=step)
    if not any(not t.fixed for t in tuner.space) and len(tuner.bucket_choices or []) < 2:
        raise EdgepackError("recipe search_space: every knob is fixed (nothing to tune)")
    tuner.primary = targets[0]
    tuner.check_device()
    with _training_context(recipe, show_bars):
        tuner.prepare(targets)
        study = open_study(optuna, storage, study_name, recipe.seed, options.trials)
        _check_same_tune(study, study_name, tuner, options)
        searched = sum(not t.fixed for t in tuner.space) + bool(tuner.bucket_choices)
        step(f"tune: {searched} knobs searched, {len(tuner.space) + 1 - searched} fixed; study {study_name!r} in "
             f"{public_url(storage)}; teacher val {tuner.teacher.val_accuracy * 100:.2f}%; "
             f"{options.objective} measured {'here' if options.device is None else 'on ' + options.device_name}")
        for line in tuner.describe_space():
            step(f"  {line}")
        for i, stage in enumerate(recipe.stages):
            for caveat in stage.tuning_caveats():
                step(f"warning: stages[{i}].{stage.kind}: {caveat}")
        if options.pack_trial is None:
            tuner.search(study)
        records = tuner.records(study)
        best = tuner.winner(records)
        summary = TuneSummary(objective=options.objective, max_accuracy_drop=options.max_accuracy_drop,
                              teacher_val_accuracy=tuner.teacher.val_accuracy, primary_target=tuner.primary,
                              study=study_name, storage=public_url(storage), space=tuner.describe_space(),
                              trials=records, winner=best.number if best else None, device=options.device_name)
        summary.plot = _plot(summary, work_dir / plot_name(study_name), step)
        prefix_rows = [tuner.cache.row(k) for k in tuner.prefix_keys]
        reference = prefix_rows[-1].test_accuracy
        if options.pack_trial is not None:
            chosen = next((r for r in records if r.number == options.pack_trial and r.state == "complete"), None)
            if chosen is None:
                scored = ", ".join(str(r.number) for r in records if r.state == "complete") or "none"
                raise EdgepackError(f"--pack-trial {options.pack_trial}: not a scored trial of study {study_name!r} "
                                    f"(scored trials: {scored})")
            summary.packed = chosen.number
            return _pack_winner(tuner, study, summary, chosen, prefix_rows, reference, out_dir, targets, force=force,
                                archive=archive, step=step, emit=emit)
        if best is None:
            complete = [r for r in records if r.state == "complete"]
            if not complete:
                return TuneOutcome(summary, prefix_rows, reference, None, 1,
                                   "tune: no trial completed (see the failed trials' errors)")
            top = max(complete, key=lambda r: (r.val_accuracy, -r.number))
            return TuneOutcome(summary, prefix_rows, reference, None, 1,
                               f"tune: no trial within the budget (max drop {options.max_accuracy_drop} of the "
                               f"teacher's validation {tuner.teacher.val_accuracy:.4f}): the best trial #{top.number} "
                               f"reached {top.val_accuracy:.4f} ({signed_points(-top.accuracy_drop)} pt), "
                               f"{top.latency_ms:.3f} ms; no bundle written")
        summary.packed = best.number
        return _pack_winner(tuner, study, summary, best, prefix_rows, reference, out_dir, targets, force=force,
                            archive=archive, step=step, emit=emit)


def _check_same_tune(study: Any, name: str, tuner: Tuner, options: TuneOptions) -> None:
    """A resumed study must be the same search: same reference, stages, knobs, objective and target (the budget
    may change: each trial's accuracy is kept, and whether it is within the budget is judged again)."""
    recipe = tuner.recipe
    identity = digest({"reference": tuner.prefix_keys[-1], "stages": [s.to_dict() for s in recipe.stages],
                        # the bucket line only when it is not the default (studies made before it stay valid)
                        "space": tuner.describe_space() if tuner.bucket_choices or recipe.buckets != "auto"
                        else describe(tuner.space), "objective": options.objective, "target": tuner.primary,
                        "device": options.device_name, "threads": recipe.threads,
                        "target_options": recipe.target_options.get(tuner.primary), "calib": recipe.calib_samples,
                        # parity.fallback is pack's (tune runs its own fallback): studies made before it stay valid
                        "parity": {k: v for k, v in dataclasses.asdict(recipe.parity).items() if k != "fallback"},
                        **({} if options.fallback else {"fallback": False})})
    held = study.user_attrs.get("tune")
    if held is None:
        study.set_user_attr("tune", identity)
    elif held != identity:
        raise EdgepackError(f"--study {name}: holds the trials of another tune (the recipe, its search space, "
                            "--objective, the benchmark device or the primary target changed); name a new --study "
                            "or --work")


def plot_name(study: str) -> str:
    """The study's plot file: studies sharing a --work folder (and its stage cache) keep a plot each."""
    return "tune-trials.png" if study == "tune" else f"tune-trials-{re.sub(r'[^A-Za-z0-9_.-]+', '_', study)}.png"


def _plot(summary: TuneSummary, path: Path, step: Progress) -> str | None:
    """The trials' accuracy against the objective, front marked; a missing matplotlib is said, not fatal."""
    try:
        from .plot import plot_trials
    except ModuleNotFoundError as exc:
        step(f"no plot: {exc.name} is not installed")
        return None
    if not any(r.state == "complete" for r in summary.trials):
        return None
    plot_trials(summary, path)
    step(f"plot: {path}")
    return str(path)


@contextlib.contextmanager
def _training_context(recipe: Recipe, show_bars: bool):
    """Threads, progress bars and training precision as the recipe asks, restored afterwards."""
    import torch

    from ..training.common import PROGRESS_BARS, TRAIN_PRECISION, set_threads

    threads_before = torch.get_num_threads()
    set_threads(recipe.threads)
    bars = PROGRESS_BARS.set(show_bars)
    precision = TRAIN_PRECISION.set(recipe.precision)
    try:
        yield
    finally:
        PROGRESS_BARS.reset(bars)
        TRAIN_PRECISION.reset(precision)
        torch.set_num_threads(threads_before)


def tune_row(summary: TuneSummary, best: TrialRecord, final_row: Any):
    from ..training.evaluate import StageRow

    completed = sum(r.state == "complete" for r in summary.trials)
    chosen = "" if best.number == summary.winner else \
        f" (chosen with --pack-trial; the winner is #{summary.winner if summary.winner is not None else 'none'})"
    text = (f"{len(summary.trials)} trials ({completed} scored) for the {summary.objective} of "
            f"{summary.primary_target} within {summary.max_accuracy_drop * 100:g} pt of the teacher's validation "
            f"accuracy: trial #{best.number}{chosen}, val {best.val_accuracy * 100:.2f}% "
            f"({signed_points(-best.accuracy_drop)} pt), {best.latency_ms:.3f} ms, {best.size_bytes / 1e6:.2f} MB"
            + (f"; kept in float by the precision fallback: {', '.join(best.float_groups)}" if best.float_ops else ""))
    # latency_ms stays empty: the table's column is the PyTorch figure of the stage rows, not device_bench's
    return StageRow(stage="tune", description=text, params=final_row.params, fp32_mb=final_row.fp32_mb,
                    val_accuracy=best.val_accuracy, details=summary.to_dict())


def _winner_target_options(recipe: Recipe, primary: str, best: TrialRecord) -> dict[str, dict[str, Any]]:
    """The recipe's target options, plus the ops the winner's precision fallback kept in float on the primary
    target: the bundle holds the artifact that was scored."""
    from ..precision_fallback import float_ops_option

    if not best.float_ops:
        return recipe.target_options
    return {**recipe.target_options,
            primary: float_ops_option(primary, recipe.target_options.get(primary), best.float_ops)}


def _pack_winner(tuner: Tuner, study: Any, summary: TuneSummary, best: TrialRecord, prefix_rows: list, reference,
                 out_dir: Path, targets: list[str], *, force: bool, archive: bool, step: Progress,
                 emit: Callable[[Any], None]) -> TuneOutcome:
    """The winner's stages (from the cache; run again if the cache lost them) packed to every target with the
    recipe's pack path: test-split accuracy and the gate (the recipe's, else the tune's budget on test)."""
    from ..recipe.run import pack_and_gate

    recipe = tuner.recipe
    trial = study.trials[best.number]
    step(f"{'winner' if best.number == summary.winner else 'chosen'}: trial #{best.number}; pack {', '.join(targets)}")
    stages = [STAGES[kind].parse(options, f"trial {best.number} stages[{i}].{kind}")
              for i, raw in enumerate(trial.user_attrs["stages"], start=tuner.start) for kind, options in raw.items()]
    key, keys = tuner.prefix_keys[-1], []
    for index, stage in zip(range(tuner.start, len(recipe.stages)), stages):
        key, _, _ = tuner.advance(key, stage, index, None)
        keys.append(key)
    stage_rows = [tuner.cache.row(k) for k in keys]
    rows = [*prefix_rows, tune_row(summary, best, stage_rows[-1]), *stage_rows]
    for row in rows:
        emit(row)
    model, tokenizer = tuner.cache.load(keys[-1], tuner.task, tuner.data.labels)
    max_drop = recipe.gate.max_accuracy_drop
    if max_drop is None and recipe.data.test is not None:
        max_drop = tuner.options.max_accuracy_drop
    tuned = dataclasses.replace(recipe, stages=[*recipe.stages[: tuner.start], *stages], gate=GateSpec(max_drop),
                                target_options=_winner_target_options(recipe, tuner.primary, best),
                                buckets=decode_buckets(trial.params[BUCKETS_PARAM]) if BUCKETS_PARAM in trial.params
                                else recipe.buckets)
    outcome = pack_and_gate(tuned, out_dir, targets, tuner.loaded, model, tokenizer, tuner.data, rows, reference,
                            force=force, archive=archive, step=step, emit=emit)
    return TuneOutcome(summary, outcome.rows, reference, outcome.bundle_dir, outcome.exit_code,
                       f"tune: trial #{best.number} " + ("won" if best.number == summary.winner else "packed (--pack-trial)")
                       + f"; {outcome.message}", outcome.manifest)
