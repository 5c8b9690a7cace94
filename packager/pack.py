"""Pack: export every requested target, verify it against the fp32 reference, write the bundle.

A failing target never loses the others: it is recorded in the manifest as
failed and the pack's exit status reports it.
"""
from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from device_bench.manifest import (
    SAMPLES_NAME,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PARITY_FAILED,
    InputSpec,
    LengthParity,
    Manifest,
    ModelInfo,
    Parity,
    ParityGroup,
    TargetEntry,
    TensorSpec,
    TokenLengths,
    sha256_file,
)
from device_bench.fingerprint import int8_kernel_family
from device_bench.parity import (
    MAX_CALIBRATION_ROWS,
    length_applies,
    length_record,
    run_rows,
    save_parity_inputs,
)

from . import __version__
from .bundle import check_destination, publish, staging_dir, write_archive
from .calib import token_counts, tokenize
from .declarations import parse_runtime_declarations  # noqa: F401  (re-exported: pack's TARGET=SPEC parser)
from .errors import EdgepackError
from .families import check_support
from .isa_parity import check_isas, resolve_isas
from .compute import count_macs
from .models import LoadedModel, max_seq_len, model_info
from .native_output import native_output_silenced
from .progress import rounded, substep, timing
from .target_options import resolve_target_options
from .tasks import INPUT_NAMES
from .usage import write_usage

TOOL_DISTRIBUTIONS = ("torch", "transformers", "tokenizers", "litert-torch", "ai-edge-quantizer", "ai-edge-litert",
                      "onnx", "onnxruntime", "executorch", "mediapipe", "numpy")
TOKENIZER_DIR = "tokenizer"
Progress = Callable[[str], None]


@dataclass
class PackResult:
    manifest: Manifest
    bundle_dir: Path
    archive: Path | None = None
    failed: list[str] = field(default_factory=list)  # targets that failed to export or verify

    @property
    def ok(self) -> bool:
        return not self.failed


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "edgepack": __version__}
    for dist in TOOL_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def validate_request(targets: list[str], seq_len: int, loaded: LoadedModel | None = None) -> None:
    from targets import TARGETS

    if not targets:
        raise EdgepackError("--targets: no target given")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise EdgepackError(f"--targets: unknown target {unknown[0]!r} (known: {', '.join(sorted(TARGETS))})")
    if len(set(targets)) != len(targets):
        raise EdgepackError("--targets: a target is listed twice")
    if seq_len < 2:
        raise EdgepackError(f"--seq-len {seq_len}: must be at least 2")
    if loaded is not None and seq_len > max_seq_len(loaded):
        raise EdgepackError(f"--seq-len {seq_len}: the model allows at most {max_seq_len(loaded)} tokens")


AUTO_BUCKETS = "auto"
MIN_BUCKET = 8
BULK_PERCENTILE = 90  # half-octave buckets up to the length this share of the calibration texts fits in
PARITY_PER_LENGTH = 12  # texts per length group checked against the fp32 reference
DYNAMIC_SPOT_LENGTHS = (9, 17)  # odd lengths a dynamic artifact is also checked at. Not 3: a one-word input
# loses more to int8 (MiniLM mean cosine 0.987 at 3 tokens, the same for the static-128 artifact): not a shape problem


def parse_buckets(text: str | None, seq_len: int) -> list[int] | str | None:
    """``--buckets``: "auto" (default), "none" (one static shape) or ascending lengths ≤ seq_len."""
    if text is None or text.strip().lower() == AUTO_BUCKETS:
        return AUTO_BUCKETS
    if text.strip().lower() == "none":
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EdgepackError(f"--buckets {text!r}: expected comma-separated lengths (e.g. 16,32,64), auto or none") from None
    if not values:
        raise EdgepackError(f"--buckets {text!r}: no length given")
    if any(v < 1 for v in values):
        raise EdgepackError(f"--buckets {text!r}: lengths must be positive")
    if len(set(values)) != len(values):
        raise EdgepackError(f"--buckets {text!r}: a length is listed twice")
    if values != sorted(values):
        raise EdgepackError(f"--buckets {text!r}: lengths must be in ascending order")
    if values[-1] > seq_len:
        raise EdgepackError(f"--buckets {text!r}: {values[-1]} is above --seq-len {seq_len} (the maximum length)")
    if values[-1] != seq_len:
        values.append(seq_len)  # --seq-len stays the maximum: the largest bucket holds it
    return values


def default_buckets(counts: np.ndarray, seq_len: int) -> tuple[list[int], str]:
    """Half-octave lengths (8, 12, 16, 24, 32, …) up to the one holding 90% of the calibration texts, then powers of
    two up to seq_len (always included). Why: a static shape costs a fixed part plus a part per token, so a text
    pays for its padding; a half-octave step pads by at most a third, a power of two by up to half. Each extra
    signature costs about 1% of MiniLM's int8 file (its tensors' quantization tables are per signature)."""
    capped = np.minimum(counts, seq_len)
    bulk = int(np.percentile(capped, BULK_PERCENTILE, method="inverted_cdf")) if len(counts) else MIN_BUCKET
    buckets = []
    length = MIN_BUCKET
    while length < seq_len:
        buckets.append(length)
        power = 1 << (length.bit_length() - 1)  # the power of two at or below length
        length = power * 3 // 2 if length < bulk and length == power else power * 2
    buckets.append(seq_len)
    fine = next((b for b in buckets if b >= bulk), buckets[-1])  # where the half-octave steps end
    why = (f"auto: half-octave steps from {MIN_BUCKET} to {fine} (holding {BULK_PERCENTILE}% of the calibration "
           f"texts, up to {bulk} tokens), then powers of two up to seq_len {seq_len}")
    return buckets, why


def length_stats(counts: np.ndarray, seq_len: int) -> TokenLengths:
    real = np.minimum(counts, seq_len)
    return TokenLengths(n_texts=int(len(counts)), mean=round(float(real.mean()), 2), p50=int(np.percentile(real, 50)),
                        p90=int(np.percentile(real, 90)), max=int(real.max()), truncated=int((counts > seq_len).sum()))


def validate_runtimes(runtimes: dict[str, str], targets: list[str]) -> None:
    """Declared device runtimes must name a packed target and parse, before any export starts."""
    from targets import get_target
    from targets.compat import CompatibilityError, parse_declared

    for name, spec in runtimes.items():
        if name not in targets:
            raise EdgepackError(f"--runtime {name}={spec}: that target is not being packed")
        try:
            parse_declared(get_target(name).runtime, spec)
        except CompatibilityError as exc:
            raise EdgepackError(f"{exc} (declared for target {name})") from None


def run_reference(wrapper, inputs: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """fp32 PyTorch outputs of the export wrapper: the reference every artifact is checked against."""
    import torch

    outs = []
    n = len(inputs["input_ids"])
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            args = [torch.from_numpy(inputs[name][i : i + batch_size]) for name in INPUT_NAMES]
            outs.append(wrapper(*args).float().numpy())
    return np.concatenate(outs, axis=0)


def takes_text(runner) -> bool:
    """Whether the runner tokenizes raw text itself (MediaPipe Tasks): its parity is then measured on the texts."""
    return bool(getattr(runner, "takes_text", False))


def run_texts(runner, texts: list[str]) -> np.ndarray:
    return runner.run_texts(list(texts))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def pack_model(
    loaded: LoadedModel,
    out_dir: Path,
    targets: list[str],
    seq_len: int,
    calib_texts: list[str],
    *,
    labelled: tuple[list[str], list[int]] | None = None,
    recipe: dict[str, Any] | None = None,
    stages: list[dict[str, Any]] | None = None,
    runtimes: dict[str, str] | None = None,
    force: bool = False,
    archive: bool = False,
    min_cosine: float = 0.99,
    min_agreement: float = 0.98,
    allow_parity_failure: bool = False,
    fallback: bool = True,
    target_options: dict[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
    buckets: list[int] | str | None = AUTO_BUCKETS,
    finalize: Callable[[Manifest], None] | None = None,
    sample_texts: list[str] | None = None,
    threads: int | None = None,
    verify_isa: list[str] | None = None,
) -> PackResult:
    """Export, verify and bundle ``loaded`` for each target; see the module docstring.

    ``buckets``: "auto" (from the calibration texts' token lengths), None (one static shape, seq_len), or
    ascending lengths ending at seq_len. Dynamic targets (ONNX, ExecuTorch) take any length up to seq_len.
    ``finalize`` completes the manifest (a recipe's target rows and gate) before the bundle is published,
    so the folder is final when it appears. ``sample_texts``: the texts of samples.npz, the device benchmark's
    inputs at their real lengths (default: the calibration texts). ``fallback``: an int8 artifact below its
    parity gate keeps its worst op groups in float until it passes (False, ``--no-fallback``: it fails).
    ``threads``: the runtime sessions' threads while verifying (default ``threads.pool_threads()``: this
    process's CPUs, not the host's). ``verify_isa``: ``edgepack isa-mask`` profiles (or "all") whose kernels every
    artifact's gates are recomputed with too (``packager.isa_parity``)."""
    from targets import ExportContext, TargetError, get_target

    out_dir = Path(out_dir)
    validate_request(targets, seq_len, loaded)
    check_destination(out_dir, force)
    if not calib_texts:
        raise EdgepackError("no calibration texts")
    runtimes = runtimes or {}
    validate_runtimes(runtimes, targets)
    isas = resolve_isas(verify_isa)
    options = resolve_target_options(target_options or {}, targets)
    step = progress or (lambda _msg: None)
    from .threads import pool_threads

    threads = pool_threads(threads)
    task = loaded.task
    check_support(str(getattr(loaded.config, "model_type", "")), task.name, targets)
    wrapper = task.make_wrapper(loaded.model)

    calib = tokenize(loaded.tokenizer, task.prepare_texts(calib_texts), seq_len)
    counts = token_counts(loaded.tokenizer, task.prepare_texts(calib_texts))
    if buckets == AUTO_BUCKETS:
        bucket_list, bucket_choice = default_buckets(counts, seq_len)
    elif buckets is None:
        bucket_list, bucket_choice = [seq_len], "--buckets none: one static shape"
    else:
        bucket_list = parse_buckets(",".join(map(str, buckets)), seq_len)
        bucket_choice = "--buckets"
    step("fp32 reference")
    with substep("fp32 reference"):
        reference, reference_name = task.reference(run_reference(wrapper, calib), calib_texts, seq_len)
    thresholds = task.thresholds(min_cosine, min_agreement)

    eval_inputs = eval_labels = None
    accuracy = None
    if labelled is not None:
        eval_inputs = tokenize(loaded.tokenizer, task.prepare_texts(labelled[0]), seq_len)
        eval_labels = np.asarray(labelled[1])
        ref_pred = task.predictions(run_reference(wrapper, eval_inputs))
        if ref_pred is None:
            raise EdgepackError(f"task {task.name} has no class predictions: labelled data cannot be scored")
        accuracy = {"reference": float((ref_pred == eval_labels).mean()), "n_samples": int(len(eval_labels))}

    entries: list[TargetEntry] = []
    with staging_dir(out_dir) as stage:
        work = stage / ".work"
        work.mkdir()
        loaded.tokenizer.save_pretrained(str(stage / TOKENIZER_DIR))
        # lengths: real tokens per row (after truncation), so the device feeds real-length inputs
        samples, sample_counts, sample_texts = calib, counts, sample_texts or calib_texts
        if sample_texts is not calib_texts:
            samples = tokenize(loaded.tokenizer, task.prepare_texts(sample_texts), seq_len)
            sample_counts = token_counts(loaded.tokenizer, task.prepare_texts(sample_texts))
        np.savez(stage / SAMPLES_NAME, **samples, lengths=samples["attention_mask"].sum(1).astype(np.int32),
                 token_counts=sample_counts.astype(np.int32))
        (stage / "samples.txt").write_text("\n".join(t.replace("\n", " ") for t in sample_texts) + "\n")
        ctx = ExportContext(
            wrapper=wrapper, hf_model=loaded.model, task=task, seq_len=seq_len, input_names=list(INPUT_NAMES),
            example_inputs={k: v[:1] for k, v in calib.items()}, calibration=calib, workdir=work,
            output_name=task.output_name, buckets=list(bucket_list) if buckets is not None else [],
            tokenizer=loaded.tokenizer, texts=task.prepare_texts(calib_texts),
        )
        checks = length_checks(loaded.tokenizer, wrapper, task.prepare_texts(calib_texts), counts, seq_len,
                               bucket_list)
        parity_inputs = save_parity_inputs(stage, parity_groups(calib, reference, checks))
        for name in targets:
            step(f"{name}: export + verify")
            target_ctx = dataclasses.replace(ctx, options=options[name])
            entries.append(_export_one(get_target(name), target_ctx, stage, reference, calib, thresholds, task,
                                       eval_inputs, eval_labels, runtimes.get(name), allow_parity_failure,
                                       TargetError, checks, fallback=fallback, progress=step, threads=threads))
        shutil.rmtree(work, ignore_errors=True)
        manifest = Manifest(
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            edgepack_version=__version__,
            tool_versions=tool_versions(),
            model=ModelInfo(**model_info(loaded), macs=count_macs(wrapper, list(INPUT_NAMES), seq_len)),
            task=task.name,
            input_spec=InputSpec(
                seq_len=seq_len,
                inputs=[TensorSpec(n, "int32", [1, seq_len]) for n in INPUT_NAMES],
                outputs=[TensorSpec(task.output_name, "float32", task.output_shape(loaded.model, seq_len))],
                padding_side=getattr(loaded.tokenizer, "padding_side", "right"),
                **task.spec(),
                buckets=list(bucket_list) if buckets is not None else None,
                bucket_choice=bucket_choice,
                token_lengths=length_stats(counts, seq_len),
            ),
            tokenizer=TOKENIZER_DIR,
            labels=loaded.labels,
            label_thresholds=task.label_thresholds(),
            parity_reference=reference_name,
            targets=entries,
            recipe=recipe,
            stages=list(stages or []),
            accuracy=accuracy,
            parity_inputs=parity_inputs,
        )
        if finalize is not None:
            finalize(manifest)
        manifest.write(stage)
        if isas:
            check_isas(stage, manifest, isas, step)
            manifest.write(stage)
        write_usage(manifest, stage)
        step("publish bundle")
        publish(stage, out_dir)
    archive_path = write_archive(out_dir) if archive else None
    failed = [e.name for e in entries if e.status == STATUS_FAILED]
    return PackResult(manifest=manifest, bundle_dir=out_dir, archive=archive_path, failed=failed)


def _export_one(target, ctx, stage: Path, reference: np.ndarray, calib: dict[str, np.ndarray],
                thresholds: dict[str, float], task, eval_inputs, eval_labels, declared_runtime: str | None,
                allow_parity_failure: bool, target_error: type[Exception],
                checks: list["LengthCheck"] | None = None, fallback: bool = True,
                progress: Progress | None = None, threads: int | None = None) -> TargetEntry:
    """Export and verify one target; any failure is captured in the returned entry. An int8 artifact below its
    parity gate gets the precision fallback (``fallback``): its worst op groups kept in float until it passes."""
    missing = target.missing_requirements()
    if missing:
        entry = TargetEntry(name=target.name, status=STATUS_FAILED, runtime=target.runtime,
                            runtime_requirement=declared_runtime or target.runtime_requirement)
        entry.error = f"not available on this host: needs {', '.join(missing)} (pip install 'edgepack[pack]')"
        return entry
    path = stage / (target.name.replace("-", "_") + target.suffix)

    def attempt(attempt_ctx) -> tuple[TargetEntry, list[str] | None]:
        return _export_verified(target, attempt_ctx, path, reference, calib, thresholds, task, eval_inputs,
                                eval_labels, declared_runtime, target_error, checks, threads)

    with timing() as seconds:  # export and parity wall times, summed over the fallback's attempts
        entry, shortfalls = attempt(ctx)
        if shortfalls and fallback:
            entry, shortfalls = _parity_fallback(target, ctx, entry, shortfalls, attempt, progress or (lambda _m: None))
    entry.details["step_seconds"] = rounded(seconds)
    if shortfalls is None:  # failed outright: the entry says why, the artifact is gone
        return entry
    if not shortfalls:
        entry.status = STATUS_OK
        return entry
    entry.error = f"parity below threshold: {'; '.join(shortfalls)}"
    if allow_parity_failure:
        entry.status = STATUS_PARITY_FAILED
        entry.notes.append("kept despite failing parity (--allow-parity-failure)")
    else:
        _drop_artifact(entry, path)
    return entry


def _export_verified(target, ctx, path: Path, reference: np.ndarray, calib: dict[str, np.ndarray],
                     thresholds: dict[str, float], task, eval_inputs, eval_labels, declared_runtime: str | None,
                     target_error: type[Exception], checks: list["LengthCheck"] | None,
                     threads: int | None = None) -> tuple[TargetEntry, list[str] | None]:
    """One export of ``target`` to ``path`` and its checks: (entry, parity shortfalls), or (failed entry, None)
    when it did not export, run or fit the declared runtime (its artifact then removed)."""
    entry = TargetEntry(name=target.name, status=STATUS_FAILED, runtime=target.runtime,
                        runtime_requirement=declared_runtime or target.runtime_requirement)
    started = time.perf_counter()
    try:
        with substep(f"{target.name}: export"), native_output_silenced():
            result = target.export(ctx, path)
    except target_error as exc:
        entry.error = str(exc)
        return entry, None
    except Exception as exc:  # a converter bug must not lose the other targets
        entry.error = f"export failed: {_first_line(exc)}"
        return entry, None
    finally:
        entry.export_seconds = round(time.perf_counter() - started, 2)
    entry.precision, entry.notes, entry.details = result.precision, result.notes, result.details
    entry.shapes = result.shapes
    if result.runtime_requirement and not declared_runtime:
        entry.runtime_requirement = result.runtime_requirement
    if ctx.options:
        entry.details["options"] = dict(ctx.options)
    entry.file, entry.size_bytes, entry.sha256 = path.name, path.stat().st_size, sha256_file(path)
    try:
        with substep(f"{target.name}: parity"):
            with native_output_silenced():
                runner = target.load(path, threads=threads, shapes=entry.shapes)
            outputs = run_texts(runner, ctx.texts) if takes_text(runner) else run_rows(runner, calib)
            by_length = [check.score(runner, task, thresholds) for check in checks or [] if check.applies_to(runner)]
            accuracy = None
            if eval_inputs is not None:
                accuracy = float((task.predictions(run_rows(runner, eval_inputs)) == eval_labels).mean())
    except Exception as exc:
        entry.error = f"artifact does not run: {_first_line(exc)}"
        _drop_artifact(entry, path)
        return entry, None
    metrics = task.parity(reference, outputs, calib)
    shortfalls = task.shortfalls(metrics, thresholds)
    shortfalls += [f"length {p.length}: {'; '.join(p.shortfalls)}" for p in by_length if not p.passed and p.gates]
    entry.parity_by_length = [p.record for p in by_length]
    entry.parity = Parity(n_samples=len(reference), passed=not shortfalls, thresholds=thresholds, accuracy=accuracy,
                          **{k: v for k, v in metrics.items() if k in Parity.__dataclass_fields__})
    compat = target.compatibility(path, declared_runtime)
    if compat is not None:
        entry.details["compatibility"] = compat
        if compat.get("compatible") is False:
            remedy = f" — remedy: {compat['remedy']}" if compat.get("remedy") else ""
            entry.error = f"incompatible with {declared_runtime}: {_first_problems(compat.get('problems', []))}{remedy}"
            _drop_artifact(entry, path)
            return entry, None
    return entry, shortfalls


def _parity_fallback(target, ctx, entry: TargetEntry, shortfalls: list[str],
                     attempt: Callable[[Any], tuple[TargetEntry, list[str] | None]],
                     step: Progress) -> tuple[TargetEntry, list[str] | None]:
    """An int8 artifact below its parity gate on this host's kernels: rank its op groups by the output error each
    adds, keep the worst in float one group at a time (re-exported and re-verified each time) until every gate
    holds. The entry records what stayed float and why; when nothing mends it, the all-int8 result stands."""
    from device_bench.fingerprint import cpu_isa
    from targets.fallback import FLOAT_OPS, FloatFallback, exact_patterns

    from .precision_fallback import RANK_SAMPLES, rank_group_errors, run_fallback

    if not isinstance(target, FloatFallback):
        return entry, shortfalls
    isa = cpu_isa()
    where = f"{target.name}: precision fallback"
    step(f"{where}: {shortfalls[0]} on this host ({int8_kernel_family(isa)}); rank its int8 op groups")
    try:
        with native_output_silenced():
            ranking = rank_group_errors(target.group_errors(ctx, RANK_SAMPLES), ctx.options.get(FLOAT_OPS))
    except Exception as exc:  # ranking is best effort: the all-int8 verdict stands
        entry.notes.append(f"precision fallback could not rank the op groups: {_first_line(exc)}")
        return entry, shortfalls
    own = list(ctx.options.get(FLOAT_OPS) or ())
    int8_ops = entry.details.get("int8_op_count")

    def score(float_ops: list[str]) -> tuple[None, tuple[TargetEntry, list[str] | None]]:
        options = {**ctx.options, FLOAT_OPS: [*own, *exact_patterns(float_ops)]}
        return None, attempt(dataclasses.replace(ctx, options=options))

    outcome = run_fallback(ranking, score, None, None, start_passed=False, passed=lambda a: a[1] == [],
                           progress=lambda message: step(f"{where}: {message}"))
    record = {
        "why": f"parity below threshold with every quantizable op int8: {'; '.join(shortfalls)}",
        "host_isa": isa,
        "ranking": [{"group": g.group, "ops": len(g.ops), "output_mse": g.error} for g in ranking],
        "method": ranking[0].method if ranking else None,
        "float_groups": outcome.float_groups,
        "float_ops": len(outcome.float_ops),
        "steps": [{"group": s.group, "ops": s.ops, "output_mse": s.error, "passed": s.passed} for s in outcome.steps],
        "passed": outcome.met,
    }
    if outcome.met:
        final, final_shortfalls = outcome.artifact
        final.details["precision_fallback"] = record
        of = f" of {int8_ops}" if isinstance(int8_ops, int) else ""  # the all-int8 artifact's count: every one
        final.notes.append(f"precision fallback: {', '.join(outcome.float_groups)} kept in float "
                           f"({len(outcome.float_ops)}{of} quantizable ops) to pass parity on this host's kernels "
                           f"({int8_kernel_family(isa)}); all-int8 missed it: {shortfalls[0]}")
        return final, final_shortfalls
    if outcome.artifact is None:  # nothing to revert: the all-int8 artifact stands
        entry.details["precision_fallback"] = record
        return entry, shortfalls
    last, last_shortfalls = outcome.artifact  # the file holds the last attempt (or is gone if it failed outright)
    last.details["precision_fallback"] = record
    last.notes.append(f"precision fallback: still below parity with {len(outcome.float_ops)} ops in float")
    return last, last_shortfalls


def _first_problems(problems: list[str], budget: int = 600) -> str:
    """Whole problems up to ``budget`` characters, then how many more the manifest holds (never a cut word)."""
    shown: list[str] = []
    for problem in problems:
        if shown and sum(len(p) + 2 for p in shown) + len(problem) > budget:
            break
        shown.append(problem)
    rest = len(problems) - len(shown)
    return "; ".join(shown) + (f" (+{rest} more in details.compatibility)" if rest else "")


def _drop_artifact(entry: TargetEntry, path: Path) -> None:
    """A failed artifact does not enter the bundle; its entry keeps the measurements and the reason."""
    path.unlink(missing_ok=True)
    entry.status = STATUS_FAILED
    entry.file = entry.sha256 = entry.size_bytes = None


@dataclass
class ScoredLength:
    record: LengthParity
    shortfalls: list[str]
    gates: bool = True  # a bucket's failure fails the artifact; a spot length's is recorded only

    @property
    def passed(self) -> bool:
        return not self.shortfalls

    @property
    def length(self) -> int:
        return self.record.length


@dataclass
class LengthCheck:
    """Parity inputs of one length group: real-length rows (right-padded to seq_len) and their fp32 reference."""

    length: int
    inputs: dict[str, np.ndarray]
    reference: np.ndarray
    source: str
    dynamic_only: bool = False  # a spot length between buckets: only dynamic artifacts are checked there
    #: the texts the rows were tokenized from (joined texts uncut: a runner that takes text truncates them itself)
    texts: list[str] = field(default_factory=list)

    def applies_to(self, runner) -> bool:
        return length_applies(runner, self.length, self.dynamic_only)

    def score(self, runner, task, thresholds: dict[str, float]) -> ScoredLength:
        outputs = run_texts(runner, self.texts) if takes_text(runner) else run_rows(runner, self.inputs)
        metrics = task.parity(self.reference, outputs, self.inputs)
        shortfalls = task.shortfalls(metrics, thresholds)
        record = length_record(task.name, self.length, metrics, not shortfalls, len(self.reference), self.source)
        return ScoredLength(record, shortfalls, gates=not self.dynamic_only)


def length_checks(tokenizer, wrapper, texts: list[str], counts: np.ndarray, seq_len: int,
                  buckets: list[int]) -> list[LengthCheck]:
    """One group per bucket (the texts whose real length falls in it, topped up with texts joined and cut to
    exactly the bucket's length), plus spot lengths for dynamic artifacts."""
    checks = []
    lower = 0
    real = np.minimum(counts, seq_len)
    for length in buckets:
        fitting = [t for t, n in zip(texts, real) if lower < n <= length][:PARITY_PER_LENGTH]
        joined = _joined_texts(texts, PARITY_PER_LENGTH - len(fitting)) if len(fitting) < PARITY_PER_LENGTH else []
        inputs = _concat(tokenize(tokenizer, fitting, seq_len) if fitting else None,
                         _cut(tokenize(tokenizer, joined, length), seq_len) if joined else None)
        source = (f"{len(fitting)} texts of {lower + 1}-{length} tokens"
                  + (f", {len(joined)} texts joined and cut to {length}" if joined else ""))
        checks.append(LengthCheck(length, inputs, run_reference(wrapper, inputs), source, texts=fitting + joined))
        lower = length
    for length in sorted({n for n in DYNAMIC_SPOT_LENGTHS if n < seq_len} - set(buckets)):
        joined = _joined_texts(texts, min(PARITY_PER_LENGTH, 4))
        inputs = _cut(tokenize(tokenizer, joined, length), seq_len)
        checks.append(LengthCheck(length, inputs, run_reference(wrapper, inputs),
                                  f"{len(joined)} texts joined and cut to {length} (spot check: recorded, does not "
                                  "gate; the buckets do)", dynamic_only=True, texts=joined))
    return checks


def parity_groups(calib: dict[str, np.ndarray], reference: np.ndarray,
                  checks: list[LengthCheck]) -> list[tuple[ParityGroup, dict[str, np.ndarray], np.ndarray]]:
    """What the bundle carries for the device's own parity check: the first calibration rows (at most
    MAX_CALIBRATION_ROWS) and every length group, each with its fp32 reference outputs."""
    rows = min(len(reference), MAX_CALIBRATION_ROWS)
    calibration = (ParityGroup(length=None, source=f"the first {rows} of the {len(reference)} calibration texts"),
                   {k: v[:rows] for k, v in calib.items()}, reference[:rows])
    return [calibration] + [(ParityGroup(length=c.length, gates=not c.dynamic_only, dynamic_only=c.dynamic_only,
                                         source=c.source), c.inputs, c.reference) for c in checks]


def _joined_texts(texts: list[str], n: int) -> list[str]:
    """``n`` long inputs built from the texts (each starts at another text), to fill a length exactly."""
    if n <= 0 or not texts:
        return []
    return [" ".join(texts[i:] + texts[:i]) for i in range(0, len(texts), max(1, len(texts) // n))][:n]


def _cut(inputs: dict[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    """Right-pad [N, length] inputs to [N, seq_len] (zeros, masked out)."""
    width = next(iter(inputs.values())).shape[1]
    return {k: np.pad(v, ((0, 0), (0, seq_len - width))) for k, v in inputs.items()}


def _concat(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    if a is None or b is None:
        return a if b is None else b  # type: ignore[return-value]
    return {k: np.concatenate([a[k], b[k]]) for k in a}
