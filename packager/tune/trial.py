"""How a tune scores one trial's model on the primary target: export it (scored on the validation split), fall
back to float op groups when its int8 artifact misses the budget, and benchmark it here or on an agent."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import EdgepackError
from ..recipe.buckets import recipe_buckets
from ..recipe.spec import Recipe
from .options import Progress, TuneOptions
from .records import TrialFailed


class TrialScoring:
    """The tuner's export, fallback and benchmark of a trial's primary artifact (a part of ``search.Tuner``)."""

    recipe: Recipe
    options: TuneOptions
    data: Any
    primary: str
    teacher: Any
    step: Progress

    def export_primary(self, final: Any, bundle: Path, float_ops: tuple[str, ...] | list[str] = (),
                       layout: Any = None) -> tuple[Any, list[int] | None]:
        """Pack the primary target of ``final`` to ``bundle`` (scored on the validation split), ``float_ops`` kept
        in float; returns its manifest entry (kept when it misses parity: the fallback may mend it, ``fallback``
        fails the trial otherwise) and the bundle's buckets."""
        from ..pack import pack_model
        from ..precision_fallback import float_ops_option
        from ..recipe.run import calibration_texts

        recipe, data, primary = self.recipe, self.data, self.primary
        options = float_ops_option(primary, recipe.target_options.get(primary), list(float_ops))
        result = pack_model(final, bundle, [primary], recipe.seq_len,
                            calibration_texts(data, recipe.calib_samples, recipe.seed),
                            labelled=(data.validation.texts, data.validation.labels),
                            sample_texts=list(data.validation.texts),
                            target_options={primary: options} if options else {},
                            runtimes={k: v for k, v in recipe.runtimes.items() if k == primary},
                            min_cosine=recipe.parity.min_cosine, min_agreement=recipe.parity.min_agreement,
                            allow_parity_failure=True, fallback=False, force=True,  # tune's own fallback decides
                            buckets=recipe_buckets(recipe.buckets if layout is None else layout, recipe.seq_len,
                                                   "buckets"))
        (entry,) = result.manifest.targets
        if entry.status not in ("ok", "parity-failed") or entry.parity is None or entry.parity.accuracy is None:
            raise TrialFailed(f"{primary}: {entry.error or entry.status}")
        return entry, result.manifest.input_spec.buckets

    def fallback(self, final: Any, bundle: Path, number: int, entry: Any, buckets: list[int] | None,
                 fp32_accuracy: float | None = None, layout: Any = None) -> tuple[Any, dict[str, Any]]:
        """Precision fallback of an int8 primary artifact over the budget (or below the recipe's parity): its op
        groups ranked by the output error each adds, reverted to float worst first (re-exported to ``bundle`` and
        re-scored each time) until the validation accuracy is within the budget and parity passes, or every group
        is float. Returns the final entry and the trial's fallback attributes (none when the artifact was within
        the budget or cannot fall back); an artifact still below parity fails the trial. A model whose fp32
        validation accuracy (``fp32_accuracy``) already misses the budget gets no fallback: int8 is not the cause,
        and float ops would only make it slower."""
        from ..precision_fallback import rank_groups, run_fallback, supports_fallback
        from ..recipe.run import calibration_texts

        recipe, primary = self.recipe, self.primary
        needed = self.teacher.val_accuracy - self.options.max_accuracy_drop
        accuracy = float(entry.parity.accuracy)
        passed = lambda e: e.status == "ok"
        fp32_misses = fp32_accuracy is not None and fp32_accuracy < needed - 1e-9
        if (not self.options.fallback or (accuracy >= needed - 1e-9 and passed(entry))
                or not supports_fallback(primary) or (fp32_misses and passed(entry))):
            if not passed(entry):
                raise TrialFailed(f"{primary}: {entry.error or entry.status}")
            if fp32_misses and self.options.fallback and supports_fallback(primary):
                self.step(f"trial {number}: no precision fallback: the fp32 model already misses the budget "
                          f"(val {fp32_accuracy * 100:.2f}%, needs {needed * 100:.2f}%)")
            return entry, {}
        where = f"trial {number}: precision fallback"
        miss = (f"misses the budget ({needed * 100:.2f}%)" if accuracy < needed - 1e-9
                else f"misses parity ({entry.error})")
        self.step(f"{where}: {primary} val {accuracy * 100:.2f}% {miss}; rank its int8 op groups")
        try:
            ranking = rank_groups(final, primary, recipe.seq_len,
                                  calibration_texts(self.data, recipe.calib_samples, recipe.seed), buckets=buckets,
                                  options=recipe.target_options.get(primary))
        except EdgepackError as exc:
            raise TrialFailed(f"precision fallback: {exc}") from None
        self.step(f"{where}: " + ", ".join(f"{g.group} {g.error:.3g}" for g in ranking) + f" ({ranking[0].method})"
                  if ranking else f"{where}: no int8 op left to revert")

        def score(float_ops: list[str]) -> tuple[float, Any]:
            new_entry, _ = self.export_primary(final, bundle, float_ops, layout=layout)
            return float(new_entry.parity.accuracy), new_entry

        outcome = run_fallback(ranking, score, accuracy, needed, start_passed=passed(entry), passed=passed,
                               progress=lambda message: self.step(f"{where}: {message}"))
        final_entry = outcome.artifact if outcome.artifact is not None else entry
        if not passed(final_entry):
            raise TrialFailed(f"{primary}: {final_entry.error or final_entry.status} (with every op group the "
                              f"precision fallback could revert in float)")
        return final_entry, {
            "float_ops": outcome.float_ops, "float_groups": outcome.float_groups,
            "fallback_steps": [dataclasses.asdict(s) for s in outcome.steps], "int8_val_accuracy": accuracy}

    def bench_options(self):
        from device_bench.bench import BenchOptions

        return BenchOptions(targets=[self.primary], runs=self.options.bench_runs, min_seconds=self.options.bench_seconds,
                            warmup=self.options.bench_warmup, threads=[self.recipe.threads])

    def bench(self, bundle: Path):
        """``device_bench`` on the primary target of a trial's bundle: here, or on the agent (upload, job, report)."""
        from device_bench.bench import BenchError, bench_bundle
        from device_bench.client import AgentError

        opts, device = self.bench_options(), self.options.device
        try:
            if device is None:
                report = bench_bundle(bundle, targets=opts.targets, runs=opts.runs, min_seconds=opts.min_seconds,
                                      warmup=opts.warmup, threads=opts.threads)
            else:
                report = device.client().bench(bundle, opts.to_remote())
        except (BenchError, AgentError) as exc:
            raise TrialFailed(f"benchmark{'' if device is None else ' on ' + device.name}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        res = next((r for r in report.results if r.target == self.primary), None)
        if res is None:
            raise TrialFailed(f"benchmark: the report has no {self.primary} result")
        return res

    def check_device(self) -> None:
        """Before any training: the agent answers and accepts the token (its runtimes are listed)."""
        from device_bench.client import AgentError

        device = self.options.device
        if device is None:
            return
        try:
            info = device.client(timeout_s=15.0).info()
        except AgentError as exc:
            raise EdgepackError(f"--device {device.name}: {str(exc).strip().splitlines()[0]}") from None
        agent = info.get("agent") if isinstance(info.get("agent"), dict) else {}
        runtimes = [k for k, v in (info.get("runtimes") or {}).items() if v] if isinstance(info.get("runtimes"), dict) else []
        self.step(f"benchmark device {device.name}: agent {agent.get('name') or '?'} {agent.get('version') or ''} at "
                  f"{device.url}; runtimes {', '.join(runtimes) or 'none'}")
