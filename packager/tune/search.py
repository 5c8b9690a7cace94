"""The tuner: the reference stages once, then optuna trials that sample the stages' knobs, run the stages not yet
cached, export and benchmark the primary target, and fall back to float op groups when int8 misses the budget."""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import EdgepackError
from ..precision_fallback import FallbackStep
from ..recipe.search_space import (
    BUCKETS_PARAM,
    TunedKnob,
    bucket_choices,
    decode_buckets,
    describe,
    encode_buckets,
    first_tuned_stage,
    resolve,
)
from ..recipe.spec import Recipe
from ..stages import Stage, StageContext
from ..studies import open_storage
from .cache import StageCache, input_key
from .options import Progress, TuneOptions
from .records import TrialFailed, TrialRecord, pareto_front, signed_points
from .trial import TrialScoring

log = logging.getLogger(__name__)


#: a study shared through a database: a trial silent this long (its process died) is failed on the next start
HEARTBEAT_S = 10


GRACE_S = 60


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the ones done: a third of the budget, at least 3 — optuna's default of
    10 would leave a 10- or 16-trial tune (the usual size: each trial trains) all or mostly random."""
    return max(3, min(10, trials // 3))


def open_study(optuna, storage_url: str, name: str, seed: int, trials: int):
    """The tune's study in its database (created, or loaded to resume), minimising the objective under the
    accuracy-budget constraint (a trial's ``constraint`` <= 0: within the budget)."""
    # a trial whose process died is run again with the same knobs (its finished stages come from the cache)
    storage = open_storage(optuna, storage_url, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S, flag="--storage")
    with warnings.catch_warnings():  # constraints are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(trials),
                                             constraints_func=lambda t: t.user_attrs.get("constraint", [1.0]))
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=sampler,
                                    load_if_exists=True)
        optuna.storages.fail_stale_trials(study)  # trials of a process that died: failed, and queued again
    return study


class Tuner(TrialScoring):
    """One tune: the recipe, its data and teacher, the stage cache and the study."""

    def __init__(self, recipe: Recipe, options: TuneOptions, work_dir: Path, *, step: Progress) -> None:
        self.recipe, self.options, self.work_dir, self.step = recipe, options, work_dir, step
        self.cache = StageCache(work_dir / "stages")
        self.memo: dict[Any, Any] = {}  # the teacher's logits on the transfer set, shared by the trials
        self.space: list[TunedKnob] = resolve(recipe.search_space, recipe.stages)
        #: the bucket layouts the primary artifact chooses among (encoded; None: the recipe's own ``buckets``)
        self.bucket_choices: list[str] | None = bucket_choices(recipe.search_space, recipe.seq_len)
        self.start = first_tuned_stage(recipe.stages)
        self.trained: list[str] = []  # every stage trained in this process, in order (for the log)
        self.primary = ""  # the target each trial exports and benchmarks (the recipe's first)
        # set by ``prepare``: the data, the input model, the cache keys of the reference stages, the teacher's row
        self.data: Any = None
        self.loaded: Any = None
        self.task: Any = None
        self.prefix_keys: list[str] = []
        self.teacher: Any = None

    # -- stages --------------------------------------------------------------------------------------------

    def advance(self, key: str, stage: Stage, index: int, current: tuple | None) -> tuple[str, tuple | None, bool]:
        """Run ``stage`` on the output cached under ``key`` unless its own output is cached.

        ``current``: that input already in memory (model, tokenizer), or None. Returns (the output's key, the
        output in memory or None when it came from the cache, whether it trained)."""
        from ..stages.run import run_stage

        out_key = self.cache.key(key, stage)
        if self.cache.has(out_key):
            return out_key, None, False
        model, tokenizer = current if current is not None else self.cache.load(key, self.task, self.data.labels)
        where = f"stages[{index}].{stage.kind}"
        self.step(f"{where}: run")
        with tempfile.TemporaryDirectory(prefix="edgepack-tune-") as tmp:
            ctx = StageContext(data=self.data, seq_len=self.recipe.seq_len, seed=self.recipe.seed, work_dir=Path(tmp),
                               step=lambda message: self.step(f"{where}: {message}"), rows=[self.cache.row(key)],
                               memo=self.memo, input_key=key)
            model, tokenizer, row = run_stage(stage, model, tokenizer, ctx, explain=False)
        self.cache.save(out_key, model, tokenizer, row)
        self.trained.append(stage.kind)
        return out_key, (model, tokenizer), True

    def prepare(self, targets: list[str]) -> None:
        """Data, the input model (cached as the chain's root), preflight checks, and the reference stages."""
        from ..models import load_model
        from ..recipe.run import check_recipe_support, load_recipe_data, model_source
        from ..training.common import seed_all
        from ..training.evaluate import measure

        recipe = self.recipe
        self.step("load data")
        self.data = load_recipe_data(recipe)
        if self.data.validation is None:
            raise EdgepackError("recipe data.validation: tune scores every trial on the validation split")
        self.step("load model")
        seed_all(recipe.seed)  # a checkpoint without a task head gets a random one here: same seed, same head
        check_recipe_support(recipe, targets)
        self.loaded = load_model(model_source(recipe), recipe.task, labels=self.data.labels)
        self.task = self.loaded.task
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        if recipe.seq_len > (limit := getattr(model.config, "max_position_embeddings", recipe.seq_len)):
            raise EdgepackError(f"recipe seq_len: {recipe.seq_len} exceeds the model's {limit} positions")
        for stage in recipe.stages:
            stage.preflight(model, tokenizer, self.data, recipe.seq_len)
        root = input_key(recipe, self.loaded.source)
        if not self.cache.has(root):
            self.step("measure input model")
            row = measure("input", self.loaded.source, model, tokenizer, recipe.seq_len,
                          validation=self.data.validation, test=self.data.test)
            self.cache.save(root, model, tokenizer, row)
        self.prefix_keys = [root]
        current: tuple | None = (model, tokenizer)
        for index, stage in enumerate(recipe.stages[: self.start]):
            key, current, _ = self.advance(self.prefix_keys[-1], stage, index, current)
            self.prefix_keys.append(key)
        self.teacher = self.cache.row(self.prefix_keys[-1])
        if self.teacher.val_accuracy is None:
            raise EdgepackError("tune: the reference model has no validation accuracy")

    def trial_stages(self, trial: Any, key: str) -> tuple[list[Stage], list[str], list[str], list[str], dict]:
        """Sample this trial's knobs stage by stage (define-by-run: a student's depth range needs its input's
        depth), running each stage that is not cached. Returns (stages, row keys, trained, cached, sampled)."""
        from ..errors import RecipeError

        stages, keys, trained, cached, sampled = [], [], [], [], {}
        current = None
        depth = self.cache.meta(key).get("num_layers")
        for index in range(self.start, len(self.recipe.stages)):
            stage = self.recipe.stages[index]
            values = dict(stage.tune_fixed)
            for t in (t for t in self.space if t.stage_index == index):
                if t.fixed:
                    if t.value is not None:
                        values[t.knob.option] = stage.knob_option(t.knob, t.value, depth)
                    continue
                value = t.knob.suggest(trial, t.name, input_depth=depth)
                sampled[t.name] = value
                values[t.knob.option] = stage.knob_option(t.knob, value, depth)
            try:
                tuned = stage.with_options(values, f"stages[{index}].{stage.kind}")
            except RecipeError as exc:
                raise TrialFailed(str(exc)) from None
            try:
                key, current, ran = self.advance(key, tuned, index, current)
            except EdgepackError as exc:
                raise TrialFailed(f"stages[{index}].{stage.kind}: {exc}") from None
            (trained if ran else cached).append(stage.kind)
            stages.append(tuned)
            keys.append(key)
            depth = self.cache.meta(key).get("num_layers")
        if self.bucket_choices:  # the exported artifact's shapes: sampled after the stages, applied at export
            sampled[BUCKETS_PARAM] = trial.suggest_categorical(BUCKETS_PARAM, self.bucket_choices)
        return stages, keys, trained, cached, sampled

    # -- scoring -------------------------------------------------------------------------------------------

    def score(self, key: str, number: int, layout: Any = None) -> dict[str, Any]:
        """Export the primary target of the model cached under ``key`` (bucket ``layout``: the recipe's
        ``buckets`` form; None: the recipe's own) and benchmark it."""
        from ..models import LoadedModel

        data, primary = self.data, self.primary
        model, tokenizer = self.cache.load(key, self.task, data.labels)
        final = LoadedModel(model=model.eval(), tokenizer=tokenizer, source=self.loaded.source, task=self.task,
                            labels=data.labels)
        bundle = self.work_dir / "trials" / str(number)
        shutil.rmtree(bundle, ignore_errors=True)
        try:
            self.step(f"trial {number}: export {primary}")
            entry, buckets = self.export_primary(final, bundle, layout=layout)
            entry, fallback = self.fallback(final, bundle, number, entry, buckets,
                                            fp32_accuracy=self.cache.row(key).val_accuracy, layout=layout)
            where = "here" if self.options.device is None else f"on {self.options.device_name}"
            self.step(f"trial {number}: benchmark {primary} {where} (validation texts at their real lengths)")
            res = self.bench(bundle)
            if res.status != "ok" or res.latency_ms is None:
                raise TrialFailed(f"benchmark of {primary}: {res.error or res.status}")
            energy = res.energy
            return {"val_accuracy": float(entry.parity.accuracy), "latency_ms": float(res.latency_ms.p50),
                    "size_bytes": int(entry.size_bytes or 0), "peak_rss_mb": res.peak_rss_mb,
                    "energy_mj": None if energy is None else float(energy.mj_per_inference),
                    "energy_kind": None if energy is None else energy.kind, **fallback}
        finally:
            shutil.rmtree(bundle, ignore_errors=True)

    def cost(self, record: "TrialRecord | dict[str, Any]") -> float | None:
        """What the winner minimises: p50 latency, file size, or energy per inference."""
        get = record.get if isinstance(record, dict) else lambda name: getattr(record, name)
        return get({"latency": "latency_ms", "size": "size_bytes", "energy": "energy_mj"}[self.options.objective])

    def objective(self, trial: Any) -> float:
        started = time.perf_counter()
        try:
            stages, keys, trained, cached, sampled = self.trial_stages(trial, self.prefix_keys[-1])
            trial.set_user_attr("stages", [s.to_dict() for s in stages])
            trial.set_user_attr("trained", trained)
            trial.set_user_attr("cached", cached)
            layout = decode_buckets(sampled[BUCKETS_PARAM]) if BUCKETS_PARAM in sampled else None
            scores = self.score(keys[-1], trial.number, layout)
        except Exception as exc:  # recorded in the study and the table; a failing trial never stops the others
            if not isinstance(exc, (TrialFailed, EdgepackError)):
                log.warning("tune trial %d failed", trial.number, exc_info=True)
                exc = TrialFailed(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
            trial.set_user_attr("error", str(exc))
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
            self.step(f"trial {trial.number}: failed: {exc}")
            raise TrialFailed(str(exc)) from None
        drop = self.teacher.val_accuracy - scores["val_accuracy"]
        for name, value in scores.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("accuracy_drop", round(drop, 6))
        trial.set_user_attr("constraint", [drop - self.options.max_accuracy_drop])
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        cost = self.cost(scores)
        if cost is None:
            trial.set_user_attr("error", f"the benchmark gave no {self.options.objective} figure")
            raise TrialFailed(f"the benchmark gave no {self.options.objective} figure")
        return float(cost)

    # -- the study -----------------------------------------------------------------------------------------

    def describe_space(self) -> list[str]:
        """One line per searched or fixed knob, the bucket layouts last."""
        layouts = (f"buckets: one of {', '.join(self.bucket_choices)}" if self.bucket_choices
                   else f"buckets: the recipe's own ({encode_buckets(self.recipe.buckets)})")
        return [*describe(self.space), layouts]

    def own_values(self) -> dict[str, Any]:
        """The recipe's own values of the searched knobs (those in range): the first trial of a new study."""
        from ..stages.base import in_range

        depth = self.cache.meta(self.prefix_keys[-1]).get("num_layers")
        values = {}
        for t in self.space:
            if t.fixed:
                continue
            value = self.recipe.stages[t.stage_index].knob_value(t.knob)
            if t.knob.kind in ("int", "depth") and isinstance(value, float) and value.is_integer():
                value = int(value)  # epochs: 3.0 in the spec, an integer knob
            if in_range(t.knob, value, depth if t.knob.kind == "depth" else None):
                values[t.name] = value
        if self.bucket_choices and encode_buckets(self.recipe.buckets) in self.bucket_choices:
            values[BUCKETS_PARAM] = encode_buckets(self.recipe.buckets)
        return values

    def records(self, study: Any) -> list[TrialRecord]:
        import optuna

        states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.FAIL: "failed",
                  optuna.trial.TrialState.RUNNING: "running", optuna.trial.TrialState.PRUNED: "pruned",
                  optuna.trial.TrialState.WAITING: "waiting"}
        out = []
        budget = self.options.max_accuracy_drop
        retried = _retried(study)
        for t in study.trials:
            if t.state == optuna.trial.TrialState.WAITING:
                continue
            a = dict(t.user_attrs)
            if t.number in retried and "error" not in a:
                a["error"] = f"its process stopped; run again as trial {retried[t.number]}"
            complete = t.state == optuna.trial.TrialState.COMPLETE
            drop = a.get("accuracy_drop") if complete else None
            out.append(TrialRecord(
                number=t.number, state=states.get(t.state, str(t.state)), knobs=dict(t.params),
                val_accuracy=a.get("val_accuracy") if complete else None, accuracy_drop=drop,
                latency_ms=a.get("latency_ms") if complete else None, size_bytes=a.get("size_bytes") if complete else None,
                peak_rss_mb=a.get("peak_rss_mb") if complete else None,
                energy_mj=a.get("energy_mj") if complete else None, energy_kind=a.get("energy_kind") if complete else None,
                within_budget=complete and drop is not None and drop <= budget + 1e-9,
                trained=list(a.get("trained", [])), cached=list(a.get("cached", [])), seconds=a.get("seconds"),
                error=a.get("error"), float_ops=list(a.get("float_ops", [])) if complete else [],
                float_groups=list(a.get("float_groups", [])) if complete else [],
                fallback_steps=[FallbackStep(**s) for s in a.get("fallback_steps", [])] if complete else [],
                int8_val_accuracy=a.get("int8_val_accuracy") if complete else None))
        front = pareto_front({r.number: (r.val_accuracy, self.cost(r)) for r in out if r.state == "complete"})
        for r in out:
            r.pareto = r.number in front
        return out

    def winner(self, records: list[TrialRecord]) -> TrialRecord | None:
        within = [r for r in records if r.within_budget]
        return min(within, key=lambda r: (self.cost(r), -r.val_accuracy, r.number)) if within else None

    def progress_line(self, record: TrialRecord, best: TrialRecord | None, done: int) -> str:
        knobs = ", ".join(f"{k.split('.', 1)[1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                          for k, v in record.knobs.items())
        if record.state != "complete":
            text = f"trial {record.number} ({done}/{self.options.trials}) {record.state}: {record.error or '-'}"
        else:
            mark = "within budget" if record.within_budget else "over budget"
            text = (f"trial {record.number} ({done}/{self.options.trials}): {knobs} → val "
                    f"{record.val_accuracy * 100:.2f}% ({signed_points(-record.accuracy_drop)} pt, {mark}), "
                    f"{record.latency_ms:.3f} ms, {record.size_bytes / 1e6:.2f} MB{_energy_text(record)}")
        best_text = (f"#{best.number} {best.latency_ms:.3f} ms, {best.size_bytes / 1e6:.2f} MB{_energy_text(best)}, "
                     f"val {best.val_accuracy * 100:.2f}%") if best else "none within the budget yet"
        return f"{text} · best so far: {best_text}"

    def search(self, study: Any) -> None:
        import optuna

        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
        # a trial whose process died and that is queued again counts once: as its retry
        done = lambda: len([t for t in study.get_trials(deepcopy=False, states=finished)
                            if t.number not in _retried(study)])
        if not study.trials and (own := self.own_values()):
            study.enqueue_trial(own, skip_if_exists=True)  # the recipe as written is the first trial
        if done() >= self.options.trials:
            self.step(f"the study already holds {done()} finished trials (--trials {self.options.trials}): "
                      "nothing to run")
        deadline = None if self.options.timeout_s is None else time.monotonic() + self.options.timeout_s
        while done() < self.options.trials:
            if deadline is not None and time.monotonic() >= deadline:
                self.step(f"--timeout reached after {done()} trials")
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(self.objective, n_trials=1, catch=(TrialFailed,))
            records = self.records(study)
            self.step(self.progress_line(records[-1] if records else None, self.winner(records), done()))


def _retried(study: Any) -> dict[int, int]:
    """Trials failed because their process died, and the trial that runs each again (optuna's retry callback
    names the first attempt in the system attribute ``failed_trial``)."""
    return {t.system_attrs["failed_trial"]: t.number for t in study.get_trials(deepcopy=False)
            if "failed_trial" in t.system_attrs}


def _energy_text(record: TrialRecord) -> str:
    if record.energy_mj is None:
        return ""
    return f", {record.energy_mj:.2f} mJ ({record.energy_kind or '?'})"
