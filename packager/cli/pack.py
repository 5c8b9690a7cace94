"""`edgepack pack` and `edgepack targets`: the packing side of the command line.

Importing this module is light (click and the manifest): torch, transformers and the converters are
imported only once `pack` runs, after `_require_pack_extra` has said which extra is missing.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import EdgepackError, MissingExtraError
from .common import EXIT_TARGET_FAILED, stderr_console as _stderr_console, stdout_console as _stdout_console
from .inspect import print_manifest as _print_manifest


def _require_pack_extra() -> None:
    import importlib.util

    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module)


def _quiet_libraries() -> None:
    """Converters and transformers log at import; the CLI keeps stderr for its own progress."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    for name in ("torchao", "torch.utils._pytree", "torch._dynamo", "absl", "litert_torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.disable_progress_bar()


# ---------------------------------------------------------------- targets
def _targets_table() -> list[dict[str, Any]]:
    from targets import DEFAULT_TARGETS, TARGETS

    rows = []
    for name in sorted(TARGETS):
        target = TARGETS[name]()
        missing = target.missing_requirements()
        options = {key: {"type": spec.kind.__name__, "default": spec.default, "choices": list(spec.choices),
                         "help": spec.help} for key, spec in sorted(target.options.items())}
        rows.append({"name": name, "runtime": target.runtime, "file": target.suffix, "default": name in DEFAULT_TARGETS,
                     "available": not missing, "missing": missing, "description": target.description,
                     "options": options})
    return rows


def _print_targets(as_json: bool, with_options: bool = False) -> None:
    rows = _targets_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if with_options:
        for r in rows:
            for key, spec in r["options"].items():
                choices = f" ({'|'.join(map(str, spec['choices']))})" if spec["choices"] else ""
                click.echo(f"{r['name']}.{key}={spec['default']!s}{choices}  [{spec['type']}] {spec['help']}")
        return
    from rich.table import Table

    table = Table(title="edgepack targets")
    for col in ("target", "runtime", "file", "on this host", "description"):
        table.add_column(col)
    for r in rows:
        status = "yes" if r["available"] else f"no (needs {', '.join(r['missing'])})"
        table.add_row(r["name"] + (" *" if r["default"] else ""), r["runtime"], r["file"], status, r["description"])
    _stdout_console().print(table)
    click.echo("* default targets")


def _print_models(as_json: bool) -> None:
    """The model families and what each supports (``packager.families``)."""
    from targets import TARGETS

    from ..families import support_matrix
    from ..stages import STAGES
    from ..tasks import TASKS

    rows = support_matrix(list(TASKS), sorted(TARGETS), tuple(STAGES))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="edgepack model families")
    for col in ("family", "model types", "encoder blocks", "mask", "tasks", "recipe stages", "targets"):
        table.add_column(col)

    def listed(flags: dict[str, bool]) -> str:
        return "all" if all(flags.values()) else ", ".join(k for k, ok in flags.items() if ok) or "none"

    for r in rows:
        table.add_row(r["family"], ", ".join(r["model_types"]), r["layers"], r["mask_form"], listed(r["tasks"]),
                      listed(r["stages"]), listed(r["targets"]))
    _stdout_console().print(table)
    for r in rows:
        for cell, reason in r["not_supported"].items():
            click.echo(f"{r['family']} / {cell}: {reason}")
    click.echo("tasks: " + "; ".join(f"{name}: {cls.summary}" for name, cls in TASKS.items()))


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--options", "with_options", is_flag=True, help="List each target's --option keys with defaults.")
@click.option("--models", "with_models", is_flag=True,
              help="The model families and which tasks, recipe stages and targets each supports.")
def targets_cmd(as_json: bool, with_options: bool, with_models: bool) -> None:
    """List the conversion targets."""
    if with_models:
        _require_pack_extra()
        _print_models(as_json)
        return
    _print_targets(as_json, with_options)


# ---------------------------------------------------------------- pack
def _parse_runtimes(values: tuple[str, ...]) -> dict[str, str]:
    from ..declarations import parse_runtime_declarations

    return dict(parse_runtime_declarations(values))


@click.command("pack")
@click.option("--model", "model", default=None, metavar="ID_OR_DIR",
              help="Hugging Face model id or local folder [default: built-in all-MiniLM-L6-v2].")
@click.option("--task", default="feature-extraction", show_default=True, metavar="TASK",
              help="feature-extraction (the model's own sentence-transformers pooling/Dense/Normalize, else mean + "
                   "L2 normalize), sequence-classification (logits), token-classification (per-token logits) or "
                   "multi-label-classification (sigmoid scores; also chosen for a problem_type "
                   "multi_label_classification model).")
@click.option("--pooling", default=None, metavar="MODE",
              help="feature-extraction: override the model's pooling (cls, mean, max, mean-sqrt-len, weighted-mean, "
                   "last-token; several joined by +).")
@click.option("--targets", "target_list", default=None, metavar="A,B",
              help="Comma list of targets (see `edgepack targets`) [default: torchscript-mobile,tflite-int8].")
@click.option("--seq-len", type=int, default=128, show_default=True,
              help="Maximum sequence length (longer texts are truncated).")
@click.option("--buckets", "buckets_text", default="auto", show_default=True, metavar="N,M|auto|none",
              help="Static lengths for static-shape targets (one TFLite signature each; inputs are padded to the "
                   "smallest that holds them); auto: from the calibration texts' token lengths; none: one static "
                   "shape, seq_len, on every target.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Texts for parity/calibration: .txt (one per line), .csv/.tsv, .json, .jsonl [default: built-in sample].")
@click.option("--calib-column", default=None, help="Text column in a CSV/JSON calibration file.")
@click.option("--calib-limit", type=int, default=200, show_default=True, help="Use at most this many calibration texts.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Bundle directory to write.")
@click.option("--force", is_flag=True, help="Replace an existing non-empty output directory.")
@click.option("--archive", is_flag=True, help="Also write <out>.tar.gz.")
@click.option("--min-cosine", type=float, default=0.99, show_default=True, help="Parity gate for embeddings.")
@click.option("--min-agreement", type=float, default=0.98, show_default=True, help="Parity gate for logits (top-1).")
@click.option("--allow-parity-failure", is_flag=True, help="Keep artifacts below the parity gate, marked.")
@click.option("--fallback/--no-fallback", default=True, show_default=True,
              help="An int8 artifact below the parity gate on this host's kernels keeps its worst op groups in float "
                   "until it passes (recorded in the manifest); --no-fallback: it fails instead.")
@click.option("--verify-isa", "verify_isa_text", default=None, metavar="PROFILE,…|all",
              help="Also recompute every artifact's parity gates with the kernels of other x86 CPUs (avx2, "
                   "avx512_vnni; all: every one this host can emulate), emulated here (see `edgepack isa-mask`); "
                   "recorded in the manifest, reported, never dropped.")
@click.option("--runtime", "runtime_specs", multiple=True, metavar="TARGET=SPEC",
              help="Declared device runtime for a target, checked at pack time (e.g. tflite-int8=tflite-runtime==2.14).")
@click.option("-O", "--option", "option_values", multiple=True, metavar="TARGET.KEY=VALUE",
              help="A target option, e.g. tflite-int8-full.io=int8 (`edgepack targets --options` lists them).")
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="A YAML compression recipe (see `edgepack recipe show`).")
@click.option("--search", "search_trials", type=int, default=None, metavar="TRIALS",
              help="With --recipe: optuna search of the distill stages' alpha/temperature/epochs, TRIALS trials each.")
@click.option("--stage", "stage_specs", multiple=True, metavar="KIND[={k: v}]",
              help="A recipe stage, in order (replaces the recipe's stages), e.g. --stage 'finetune={epochs: 3}' "
                   "--stage 'prune={method: structured, heads: 0.25}' --stage trim_vocab.")
@click.option("--train", "train_path", type=click.Path(path_type=Path), default=None,
              help="Recipe data.train: labelled training split (CSV/JSON/JSONL/parquet).")
@click.option("--validation", "validation_path", type=click.Path(path_type=Path), default=None,
              help="Recipe data.validation.")
@click.option("--test", "test_path", type=click.Path(path_type=Path), default=None, help="Recipe data.test.")
@click.option("--text-column", default=None, help="Recipe data.text_column [default: text].")
@click.option("--label-column", default=None, help="Recipe data.label_column [default: label].")
@click.option("--gate-max-drop", type=float, default=None,
              help="Recipe gate.max_accuracy_drop: fail if a target loses more test accuracy than this (0.01 = 1 pt).")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
              help="Any recipe key (dotted path, YAML value), e.g. --set stages.1.distill.temperature=7.")
@click.option("--list-targets", is_flag=True, help="List the targets and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads of each pool (torch, runtime sessions) [default: $EDGEPACK_THREADS, else the CPUs this "
                   "process may run on]; a recipe's `threads` key.")
@click.pass_context
def pack_cmd(ctx, model, task, pooling, target_list, seq_len, buckets_text, calib, calib_column, calib_limit, out_dir,
             force, archive,
             min_cosine, min_agreement, allow_parity_failure, fallback, verify_isa_text, runtime_specs, option_values, recipe,
             search_trials, stage_specs, train_path, validation_path, test_path, text_column, label_column, gate_max_drop,
             set_values, list_targets, as_json, threads) -> None:
    """Convert a model for each target, verify every artifact, and write a bundle.

    With --recipe FILE (or recipe flags: --stage, --train/--validation/--test, --gate-max-drop, --set) the
    model is compressed first; explicit pack flags (--model, --targets, --seq-len, --runtime, -O …) then
    override the recipe's keys of the same meaning."""
    if list_targets:
        _print_targets(as_json)
        return
    if out_dir is None:
        raise EdgepackError("-o/--out is required (the bundle directory to write)")
    recipe_flags = any((stage_specs, train_path, validation_path, test_path, text_column, label_column,
                        gate_max_drop is not None, set_values))
    if search_trials is not None and recipe is None and not recipe_flags:
        raise EdgepackError("--search needs --recipe (it searches the recipe's distill stages)")
    _require_pack_extra()
    from ..threads import limit_native_pools

    limit_native_pools(threads)  # before torch and the converters start their pools
    _quiet_libraries()
    if (recipe is not None or recipe_flags) and pooling is not None:
        raise EdgepackError("--pooling: not a recipe key (recipes pack sequence-classification models)")
    if recipe is not None or recipe_flags:
        from ..target_options import parse_option_assignments
        from .recipe import pack_from_recipe
        from ..recipe.flags import cli_overrides

        given = {name for name in ("model", "task", "target_list", "seq_len", "calib", "calib_column", "calib_limit",
                                   "min_cosine", "min_agreement", "allow_parity_failure", "fallback", "threads")
                 if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}
        explicit = {name: ctx.params[name] for name in given}
        if verify_isa_text is not None:
            explicit["verify_isa"] = _split_list(verify_isa_text)
        if runtime_specs:
            explicit["runtimes"] = _parse_runtimes(runtime_specs)
        if option_values:
            explicit["target_options"] = parse_option_assignments(option_values)
        overrides = cli_overrides(stages=stage_specs, sets=set_values, explicit=explicit, gate_max_drop=gate_max_drop,
                                  data_paths={"train": train_path, "validation": validation_path, "test": test_path},
                                  data_columns={"text_column": text_column, "label_column": label_column})
        sys.exit(pack_from_recipe(recipe, out_dir, force=force, archive=archive, as_json=as_json,
                                  search_trials=search_trials, overrides=overrides))
    from ..distributed import current as distributed_ranks

    if distributed_ranks().distributed:  # every rank would convert and publish the same bundle
        raise EdgepackError("pack without a recipe trains nothing: run it without torchrun / accelerate launch")

    from targets import DEFAULT_TARGETS

    from ..bundle import check_destination
    from ..calib import builtin_sample, read_texts
    from ..families import check_support, model_type_of
    from ..models import load_model, resolve_source
    from ..pack import pack_model, validate_request, validate_runtimes
    from ..target_options import parse_option_assignments, resolve_target_options
    from ..tasks import TASKS

    targets = [t.strip() for t in target_list.split(",") if t.strip()] if target_list else list(DEFAULT_TARGETS)
    if task not in TASKS:
        raise EdgepackError(f"--task {task!r}: unknown task (known: {', '.join(TASKS)})")
    if pooling is not None:
        if task != "feature-extraction":
            raise EdgepackError(f"--pooling: applies to --task feature-extraction only (not {task})")
        from ..embedding_pipeline import parse_pooling

        try:
            parse_pooling(pooling)
        except ValueError as exc:
            raise EdgepackError(str(exc)) from None
    validate_request(targets, seq_len)
    from ..pack import parse_buckets

    buckets = parse_buckets(buckets_text, seq_len)
    check_support(model_type_of(resolve_source(model)), task, targets)
    runtimes = _parse_runtimes(runtime_specs)
    validate_runtimes(runtimes, targets)
    from ..isa_parity import resolve_isas

    isas = resolve_isas(_split_list(verify_isa_text) if verify_isa_text is not None else None)
    target_options = parse_option_assignments(option_values)
    resolve_target_options(target_options, targets)
    check_destination(out_dir, force)
    if calib_limit < 1:
        raise EdgepackError("--calib-limit must be at least 1")
    texts = (read_texts(calib, calib_column) if calib else builtin_sample())[:calib_limit]

    from ..training.common import set_threads

    threads = set_threads(threads)  # this process's CPUs, not the host's (see packager.threads)
    console = _stderr_console()
    with console.status("loading model"):
        loaded = load_model(model, task, pooling=pooling)
        validate_request(targets, seq_len, loaded)
        if loaded.task.name != task:
            console.print(f"[yellow]note:[/] the model's problem_type is multi_label_classification: packed as "
                          f"{loaded.task.name} (sigmoid scores, a threshold per label)")
        if loaded.task.name == "feature-extraction":
            console.print(f"embedding pipeline: {loaded.task.pipeline.describe()}", highlight=False)
        head = loaded.task.auto_class.removeprefix("AutoModel")
        if head and getattr(loaded.config, "architectures", None) \
                and not any(head in a for a in loaded.config.architectures):
            console.print(f"[yellow]warning:[/] the checkpoint has no {head.removeprefix('For')} head: it is "
                          "randomly initialised (fine-tune it first)")
    result = _run_with_progress(console, len(targets) + 2 + len(isas), lambda step: pack_model(
        loaded, out_dir, targets, seq_len, texts, runtimes=runtimes, force=force, archive=archive,
        min_cosine=min_cosine, min_agreement=min_agreement, allow_parity_failure=allow_parity_failure,
        fallback=fallback, target_options=target_options, progress=step, buckets=buckets, threads=threads,
        verify_isa=isas))
    if as_json:
        click.echo(result.manifest.to_json())
    else:
        _print_manifest(result.manifest, result.bundle_dir)
        if result.archive:
            click.echo(f"archive: {result.archive}")
    if result.failed:
        for entry in result.manifest.targets:
            if entry.name in result.failed:
                click.echo(f"edgepack: target {entry.name} failed: {entry.error}", err=True)
        sys.exit(EXIT_TARGET_FAILED)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _run_with_progress(console, total: int, work):
    """Run ``work(step)`` under a progress bar whose steps are the pack stages."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task_id = progress.add_task("packing", total=total)
        started = [False]

        def step(description: str) -> None:
            if started[0]:
                progress.advance(task_id)
            started[0] = True
            progress.update(task_id, description=description)

        result = work(step)
        progress.update(task_id, completed=total, description="done")
    return result
