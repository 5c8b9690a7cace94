"""Run a recipe: stages in order, a measured row after each, the accuracy gate, then the pack.

The reference for the gate is the *fine-tuned teacher*: the model as it stands
before the first compressing stage (distill / prune / trim_vocab). Every row
carries validation and test accuracy, so a failing gate shows where accuracy was
lost. A distill stage adds the teacher's row and the student trained on the labels
alone next to the distilled one, so the table shows what distillation bought.

Under ``torchrun`` or ``accelerate launch`` every rank runs the stages (see ``distributed``); rank 0
alone builds the fp32 reference, exports, verifies and publishes the bundle, once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import distributed
from ..errors import EdgepackError
from ..labelled_data import LabelledData, load_labelled, read_texts
from ..progress import prefixed, reporting, rounded, timing
from ..stages import StageContext
from ..stages.run import run_record, run_stage
from ..training.common import PROGRESS_BARS, TRAIN_PRECISION, seed_all, set_threads
from ..training.evaluate import StageRow, measure
from .buckets import recipe_buckets
from .spec import Recipe

Progress = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass
class GateResult:
    reference_accuracy: float
    max_accuracy_drop: float
    #: "name: accuracy (drop)" for every measured model/artifact below the line
    failures: list[str] = field(default_factory=list)
    #: teacher / student-alone / distilled test accuracy, when the recipe distils
    distillation: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_row(self, params: int) -> StageRow:
        text = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        if self.distillation:
            text += " — " + distillation_note(self.distillation)
        details = {"reference": "fine-tuned teacher", "reference_accuracy": self.reference_accuracy,
                   "max_accuracy_drop": self.max_accuracy_drop, "passed": self.passed, "failures": self.failures}
        if self.distillation:
            details["distillation"] = self.distillation
        return StageRow(stage="gate", description=text, params=params, fp32_mb=0.0,
                        test_accuracy=self.reference_accuracy, details=details)


def distillation_note(acc: dict[str, float]) -> str:
    """'teacher 87.00%, student alone 84.10%, distilled 86.20% (distillation +2.10 pt)'."""
    parts = [f"{name} {value * 100:.2f}%" for name, value in acc.items()]
    if "student alone" in acc and "distilled" in acc:
        parts[-1] += f" (distillation {(acc['distilled'] - acc['student alone']) * 100:+.2f} pt)"
    return ", ".join(parts)


def distillation_accuracies(rows: list[StageRow]) -> dict[str, float]:
    """Test accuracy of the last distill stage's teacher, student-alone and distilled rows."""
    names = {"teacher": "teacher", "student alone": "student alone", "distill": "distilled"}
    found: dict[str, float] = {}
    for r in rows:
        if r.stage in names and r.test_accuracy is not None:
            found[names[r.stage]] = r.test_accuracy
    return found if "distilled" in found else {}


@dataclass
class RecipeOutcome:
    rows: list[StageRow]
    reference_accuracy: float | None
    gate: GateResult | None
    bundle_dir: Path | None
    failed_targets: list[str]
    exit_code: int
    message: str
    manifest: Any = None  # device_bench.manifest.Manifest of the bundle, when one was written


def load_recipe_data(recipe: Recipe) -> LabelledData:
    paths = {split: recipe.data_path(split) for split in ("train", "validation", "test")}
    data = load_labelled(paths, recipe.data.text_column, recipe.data.label_column, recipe.data.labels)
    unlabeled = recipe.data_path("unlabeled")
    if unlabeled is not None:
        data.unlabeled = read_texts(unlabeled, recipe.data.unlabeled_column or recipe.data.text_column)
    return data


def model_source(recipe: Recipe) -> str | None:
    """``model:`` as a folder relative to the recipe when one exists there, else as given (a Hub id)."""
    if recipe.model is None:
        return None
    local = Path(recipe.base_dir) / Path(recipe.model).expanduser()
    return str(local) if not Path(recipe.model).is_absolute() and local.is_dir() else recipe.model


def check_recipe_support(recipe: Recipe, targets: list[str]) -> None:
    """Each model of the recipe against its family, before any training.

    The stages up to one that swaps in a pretrained model of its own (a distill with a pretrained student) act on
    the teacher; that stage only asks the teacher for logits (any HF model of the task will do), and what follows,
    the targets included, acts on the new model.
    """
    from ..families import check_support, model_type_of
    from ..models import resolve_source

    def check(source: str, where: str, stages: list[str], targets: list[str]) -> None:
        try:
            check_support(model_type_of(source), recipe.task, targets, stages)
        except EdgepackError as exc:
            raise EdgepackError(f"{where}: {exc}") from None

    holder, where, pending = resolve_source(model_source(recipe)), "recipe model", []
    for index, stage in enumerate(recipe.stages):
        own = stage.pretrained_source()
        if own is None:
            pending.append(stage.kind)
            continue
        if pending:
            check(holder, where, pending, [])
        source, key = own
        holder, where, pending = source, f"recipe stages[{index}].{stage.kind}.{key}", []
    check(holder, where, pending, targets)


def calibration_texts(data: LabelledData, n: int, seed: int) -> list[str]:
    """A seeded sample of training texts: what the targets calibrate on and check parity with."""
    texts = list(data.train.texts)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def check_gate(reference: float, max_drop: float, measured: dict[str, float]) -> GateResult:
    gate = GateResult(reference_accuracy=reference, max_accuracy_drop=max_drop)
    for name, acc in measured.items():
        if reference - acc > max_drop + 1e-9:
            gate.failures.append(f"{name} {acc:.4f} ({(acc - reference) * 100:+.2f} pt)")
    return gate


@contextlib.contextmanager
def _work_dir(ranks: "distributed.Ranks") -> Iterator[Path]:
    """Checkpoints of the training stages: one folder for the ranks of a node (rank 0's, so every rank
    loads the best checkpoint rank 0 saved); a rank on another node gets its own and rank 0's weights by
    broadcast after each stage."""
    path = tempfile.mkdtemp(prefix="edgepack-recipe-") if ranks.is_main else None
    path = distributed.broadcast_object(path)
    own = ranks.is_main or not os.path.isdir(path)
    if own and not ranks.is_main:
        path = tempfile.mkdtemp(prefix="edgepack-recipe-")
    try:
        yield Path(path)
    finally:
        if own:
            shutil.rmtree(path, ignore_errors=True)


def recipe_targets(recipe: Recipe) -> list[str]:
    """The recipe's targets (default: the pack defaults), checked with its seq_len; errors name the recipe keys."""
    from targets import DEFAULT_TARGETS

    from ..pack import validate_request

    targets = list(recipe.targets or DEFAULT_TARGETS)
    try:
        validate_request(targets, recipe.seq_len)
    except EdgepackError as exc:  # name the recipe key, not the CLI flag
        message = str(exc).replace("--targets", "recipe targets").replace("--seq-len", "recipe seq_len")
        raise EdgepackError(message) from None
    return targets


def run_recipe(recipe: Recipe, out_dir: Path, *, force: bool = False, archive: bool = False,
               progress: Progress | None = None, on_row: Callable[[StageRow], None] | None = None,
               show_bars: bool = True) -> RecipeOutcome:
    """Execute ``recipe`` and pack the result to ``out_dir``; see the module docstring.

    Under ``torchrun`` / ``accelerate launch`` every rank runs this: all train and measure (sharded),
    rank 0 alone packs and publishes, the others return rank 0's exit code and message."""
    from .. import pruned_bert  # noqa: F401  (registers the pruned-BERT config for from_pretrained)
    from ..bundle import check_destination
    from ..isa_parity import resolve_isas

    out_dir = Path(out_dir)
    targets = recipe_targets(recipe)
    check_destination(out_dir, force)  # before hours of training, not after
    resolve_isas(recipe.parity.isas, "recipe parity.isas")  # likewise: a host that cannot emulate one
    import torch

    ranks = distributed.setup()
    step = (progress or (lambda _msg: None)) if ranks.is_main else (lambda _msg: None)
    emit = (on_row or (lambda _row: None)) if ranks.is_main else (lambda _row: None)
    threads_before = torch.get_num_threads()
    threads = set_threads(recipe.threads)
    token = PROGRESS_BARS.set(show_bars and ranks.is_main)
    precision_token = TRAIN_PRECISION.set(recipe.precision)
    with reporting(step):
        try:
            return _run(recipe, out_dir, targets, ranks, threads, force=force, archive=archive, step=step, emit=emit)
        finally:
            PROGRESS_BARS.reset(token)
            TRAIN_PRECISION.reset(precision_token)
            torch.set_num_threads(threads_before)


def _run(recipe: Recipe, out_dir: Path, targets: list[str], ranks: "distributed.Ranks", threads: int, *,
         force: bool, archive: bool, step: Progress, emit: Callable[[StageRow], None]) -> RecipeOutcome:
    from ..models import load_model

    trains = any(stage.trains() for stage in recipe.stages)
    if ranks.distributed:
        step(f"{distributed.describe(ranks)}: every rank trains, rank 0 packs")
    elif trains:
        step(f"{distributed.describe(ranks)} trains (start it under torchrun or accelerate launch --multi_gpu for more)")
    step(f"{threads} threads per pool (this process's CPUs; --threads / recipe threads / EDGEPACK_THREADS "
         "set it), latency on a fixed few")
    step("load data")
    data = load_recipe_data(recipe)
    step("load model")
    seed_all(recipe.seed)  # a checkpoint without a task head gets a random one here: same seed, same head
    check_recipe_support(recipe, targets)  # before any training
    loaded = load_model(model_source(recipe), recipe.task, labels=data.labels)
    model, tokenizer = loaded.model, loaded.tokenizer
    if recipe.seq_len > (limit := getattr(model.config, "max_position_embeddings", recipe.seq_len)):
        raise EdgepackError(f"recipe seq_len: {recipe.seq_len} exceeds the model's {limit} positions")

    for stage in recipe.stages:  # a request that cannot work fails now, not after hours of training
        stage.preflight(model, tokenizer, data, recipe.seq_len)
    step("measure input model")
    rows: list[StageRow] = []

    def keep(r: StageRow) -> None:
        rows.append(r)
        emit(r)

    with timing() as steps:
        first = measure("input", loaded.source, model, tokenizer, recipe.seq_len, validation=data.validation,
                        test=data.test)
    first.run = run_record(ranks, None)
    first.step_seconds = rounded(steps)
    keep(first)
    reference = rows[0].test_accuracy
    compressed = False
    with _work_dir(ranks) as tmp:
        for i, stage in enumerate(recipe.stages):
            where = f"stage {i + 1}/{len(recipe.stages)}"
            step(f"{where}: {stage.kind}")
            ctx = StageContext(data=data, seq_len=recipe.seq_len, seed=recipe.seed,
                               work_dir=Path(tmp) / f"{i}-{stage.kind}", rows=rows,
                               step=lambda message, where=where: step(f"{where}: {message}"))
            with prefixed(f"{where}: {stage.kind}: "):
                model, tokenizer, r = run_stage(stage, model, tokenizer, ctx, emit=keep)
            if stage.compresses:
                compressed = True
            elif not compressed:
                reference = r.test_accuracy
    if not ranks.distributed:
        outcome = pack_and_gate(recipe, out_dir, targets, loaded, model, tokenizer, data, rows, reference,
                                force=force, archive=archive, step=step, emit=emit, threads=threads)
        if trains:
            outcome.message += f" · trained on {distributed.describe(ranks)}"
        return outcome
    if not ranks.is_main:  # rank 0 packs; wait for its verdict (bounded by EDGEPACK_PUBLISH_TIMEOUT)
        code, message = distributed.broadcast_object(None, publish_wait=True)
        distributed.teardown()
        return RecipeOutcome(rows, reference, None, None, [], code, message)
    try:
        outcome = pack_and_gate(recipe, out_dir, targets, loaded, model, tokenizer, data, rows, reference,
                                force=force, archive=archive, step=step, emit=emit, threads=threads)
    except BaseException as exc:
        _tell_ranks(2 if isinstance(exc, EdgepackError) else 1, f"rank 0 failed: {exc}")
        raise
    outcome.message += f" · trained on {distributed.describe(ranks)}"
    _tell_ranks(outcome.exit_code, outcome.message)
    distributed.teardown()
    return outcome


def _tell_ranks(code: int, message: str) -> None:
    """Rank 0's exit code and message to the waiting ranks (never masks rank 0's own failure)."""
    try:
        distributed.broadcast_object((code, message), publish_wait=True)
    except Exception as exc:  # the others may be gone already
        log.warning("could not tell the other ranks the outcome: %s", exc)


def pack_and_gate(recipe: Recipe, out_dir: Path, targets: list[str], loaded, model, tokenizer, data: LabelledData,
                  rows: list[StageRow], reference: float | None, *, force: bool, archive: bool, step: Progress,
                  emit: Callable[[StageRow], None], threads: int | None = None) -> RecipeOutcome:
    """The gate on the final fp32 model, then export, verify and publish once (target rows and the gate
    are in the manifest before the bundle appears)."""
    from ..models import LoadedModel
    from ..pack import pack_model

    final_params = rows[-1].params
    max_drop = recipe.gate.max_accuracy_drop
    if max_drop is not None and reference is not None:
        gate = check_gate(reference, max_drop, {"final fp32": rows[-1].test_accuracy})
        gate.distillation = distillation_accuracies(rows)
        if not gate.passed:  # no point converting a model that already misses the line
            rows.append(gate.to_row(final_params))
            emit(rows[-1])
            return RecipeOutcome(rows, reference, gate, None, [], 1,
                                 f"accuracy gate failed before packing: {'; '.join(gate.failures)} "
                                 f"vs the fine-tuned teacher's {reference:.4f} (max drop {max_drop})")
    final = LoadedModel(model=model.eval(), tokenizer=tokenizer, source=loaded.source, task=loaded.task,
                        labels=data.labels)
    labelled = (data.test.texts, data.test.labels) if data.test is not None else None
    verdict: dict[str, GateResult | None] = {"gate": None}

    def finalize(manifest) -> None:
        for entry in manifest.targets:
            acc = entry.parity.accuracy if entry.parity is not None else None
            target_row = StageRow(stage=f"target {entry.name}", description=f"{entry.precision or '-'} · {entry.status}",
                                  params=final_params, fp32_mb=rows[-1].fp32_mb, test_accuracy=acc,
                                  artifact_mb=round(entry.size_bytes / 1e6, 2) if entry.size_bytes else None,
                                  details={"status": entry.status, "error": entry.error} if entry.error else {"status": entry.status},
                                  step_seconds=dict(entry.details.get("step_seconds") or {}))
            rows.append(target_row)
            emit(target_row)
        if max_drop is not None and reference is not None:
            measured = {f"target {e.name}": e.parity.accuracy for e in manifest.targets
                        if e.status == "ok" and e.parity is not None and e.parity.accuracy is not None}
            verdict["gate"] = check_gate(reference, max_drop, measured)
            verdict["gate"].distillation = distillation_accuracies(rows)
            rows.append(verdict["gate"].to_row(final_params))
            emit(rows[-1])
        manifest.stages = [r.to_dict() for r in rows]

    step("pack")
    result = pack_model(final, out_dir, targets, recipe.seq_len, calibration_texts(data, recipe.calib_samples, recipe.seed),
                        labelled=labelled, recipe=recipe.to_dict(), stages=[r.to_dict() for r in rows],
                        force=force, archive=archive, min_cosine=recipe.parity.min_cosine,
                        min_agreement=recipe.parity.min_agreement, fallback=recipe.parity.fallback,
                        target_options=recipe.target_options, runtimes=recipe.runtimes, progress=step, finalize=finalize,
                        buckets=recipe_buckets(recipe.buckets, recipe.seq_len, "buckets"), threads=threads,
                        verify_isa=recipe.parity.isas)
    gate = verdict["gate"]
    failed = list(result.failed)
    if gate is not None and not gate.passed:
        return RecipeOutcome(rows, reference, gate, out_dir, failed, 1,
                             f"accuracy gate failed: {'; '.join(gate.failures)} vs the fine-tuned teacher's "
                             f"{reference:.4f} (max drop {max_drop}); bundle kept at {out_dir} for inspection", result.manifest)
    if failed:
        return RecipeOutcome(rows, reference, gate, out_dir, failed, 1, f"targets failed: {', '.join(failed)}", result.manifest)
    return RecipeOutcome(rows, reference, gate, out_dir, failed, 0, f"bundle written to {out_dir}", result.manifest)
