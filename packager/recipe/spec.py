"""The compression recipe: a YAML file validated into dataclasses, defaults filled in.

Every error names the offending key as a path (``stages[1].distill.temperature``) so a
user can fix a 40-line recipe without reading a traceback.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_bench.isa_mask.profiles import PROFILES

from ..errors import EdgepackError, RecipeError
from ..records import build, check_range
from ..stages import STAGES, Stage, parse_stage
from .buckets import recipe_buckets
from .search_space import check_search_space

RECIPE_SCHEMA_VERSION = 1
SUPPORTED_TASK = "sequence-classification"
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class DataSpec:
    """Labelled splits: local CSV / JSON / JSONL / parquet files read through `datasets`."""

    train: str
    validation: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    #: label names in id order; default: sorted distinct labels of the train split
    labels: list[str] | None = None
    #: texts without labels that the teacher labels for a distill stage: a .txt file (one text a line) or a
    #: CSV / JSON / JSONL / parquet file read through `datasets`
    unlabeled: str | None = None
    #: the column holding the unlabeled texts (default: text_column); not used for a .txt file
    unlabeled_column: str | None = None


@dataclass
class GateSpec:
    #: fail when a final artifact's test accuracy is more than this below the fine-tuned teacher's (None: report only)
    max_accuracy_drop: float | None = None


@dataclass
class ParitySpec:
    min_cosine: float = 0.99
    min_agreement: float = 0.98
    #: an int8 artifact below the gate keeps its worst op groups in float until it passes (false: it fails)
    fallback: bool = True
    #: `edgepack isa-mask` profiles (or "all") whose kernels every artifact's gates are recomputed with too
    isas: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    data: DataSpec
    model: str | None = None
    task: str = SUPPORTED_TASK
    seq_len: int = 64
    seed: int = 42
    #: threads of each pool (torch, the runtime sessions verifying the targets); None: $EDGEPACK_THREADS, else the
    #: CPUs this process may run on (never the host's core count; see packager.threads)
    threads: int | None = None
    #: training precision: "auto" (bf16 autocast on a GPU with bf16 or a CPU with AVX512-BF16/AMX, else fp32),
    #: "bf16" or "fp32"; models are measured and packed in fp32 either way
    precision: str = "auto"
    stages: list[Stage] = field(default_factory=list)
    targets: list[str] | None = None
    #: per-target options, e.g. {"tflite-int8-full": {"io": "int8"}} (see `edgepack targets --options`)
    target_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: declared device runtime per target, checked at pack time, e.g. {"tflite-int8": "tflite-runtime==2.14"}
    runtimes: dict[str, str] = field(default_factory=dict)
    gate: GateSpec = field(default_factory=GateSpec)
    parity: ParitySpec = field(default_factory=ParitySpec)
    #: the sequence lengths the artifacts are exported at: "auto" (from the calibration texts' lengths), "none"
    #: (one static shape, seq_len) or ascending lengths ending at most at seq_len, e.g. [16, 32, 64]
    buckets: Any = "auto"
    #: training texts used as calibration/parity samples
    calib_samples: int = 200
    #: what `edgepack tune` searches: KIND.OPTION -> [low, high], a list of choices, one value (fixed) or null
    #: (the stage's own value); knobs not named keep their stage's declared range (see ``search_space``)
    search_space: dict[str, Any] = field(default_factory=dict)
    #: folder the relative data paths are resolved against (the recipe's folder)
    base_dir: str = "."

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out: dict[str, Any] = {"schema_version": RECIPE_SCHEMA_VERSION}
        for key, value in d.items():
            if key == "stages":
                out[key] = [s.to_dict() for s in value]
            elif dataclasses.is_dataclass(value):
                out[key] = dataclasses.asdict(value)
            else:
                out[key] = value
        return out

    def data_path(self, split: str) -> Path | None:
        value = getattr(self.data, split)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


# -- checks across the recipe ---------------------------------------------------

def _check_target_options(recipe: Recipe) -> None:
    """``target_options`` must name packed targets and options they accept, with values of the right type."""
    from targets import DEFAULT_TARGETS, TARGETS

    if not isinstance(recipe.target_options, dict):
        raise RecipeError("recipe target_options: expected a mapping of target name to options")
    packed = list(recipe.targets or DEFAULT_TARGETS)
    for name, options in recipe.target_options.items():
        if name not in packed:
            raise RecipeError(f"recipe target_options.{name}: that target is not being packed")
        if name not in TARGETS:
            raise RecipeError(f"recipe target_options.{name}: unknown target")
        if not isinstance(options, dict):
            raise RecipeError(f"recipe target_options.{name}: expected a mapping of option to value")
        try:
            TARGETS[name]().resolve_options(options)
        except ValueError as exc:
            raise RecipeError(f"recipe target_options.{exc}") from None


def _check_runtimes(recipe: Recipe) -> None:
    from targets import DEFAULT_TARGETS

    from ..pack import validate_runtimes

    for name, spec in recipe.runtimes.items():
        if not isinstance(spec, str):
            raise RecipeError(f"recipe runtimes.{name}: expected a requirement string like 'ai-edge-litert>=2.3'")
    try:
        validate_runtimes(recipe.runtimes, list(recipe.targets or DEFAULT_TARGETS))
    except EdgepackError as exc:
        raise RecipeError(f"recipe runtimes: {str(exc).replace('--runtime ', '')}") from None


def _check_task(recipe: Recipe) -> None:
    """The task exists and supports every stage, said in one line (each task declares its stages)."""
    from ..tasks import TASKS

    if recipe.task not in TASKS:
        raise RecipeError(f"recipe task: unknown task {recipe.task!r} (known: {', '.join(TASKS)})")
    task = TASKS[recipe.task]
    STAGES.check_names(task.stages, f"task {task.name}")
    supported = [kind for kind in STAGES if task.supports_stage(kind)]
    if not supported:
        raise RecipeError(f"recipe task: {recipe.task} supports none of the recipe stages "
                          f"({', '.join(STAGES)}): pack it without a recipe (edgepack pack --task {recipe.task})")
    refused = sorted({s.kind for s in recipe.stages if not task.supports_stage(s.kind)})
    if refused:
        raise RecipeError(f"recipe task: {recipe.task} does not support the stage(s) {', '.join(refused)} "
                          f"(supported: {', '.join(supported)})")


def parse_recipe(raw: Any, base_dir: Path | str = ".") -> Recipe:
    """Validate a recipe mapping (as loaded from YAML) into a ``Recipe``."""
    if not isinstance(raw, dict):
        raise RecipeError("recipe: expected a mapping at the top level")
    raw = dict(raw)
    raw.pop("schema_version", None)
    stages_raw = raw.pop("stages", [])
    if "base_dir" in raw:
        raise RecipeError("recipe base_dir: set by edgepack (the recipe's folder), not a recipe key")
    if "data" not in raw:
        raise RecipeError("recipe data: required key is missing")
    recipe = build(Recipe, raw, "")
    recipe.base_dir = str(Path(base_dir))
    if not isinstance(stages_raw, list):
        raise RecipeError("recipe stages: expected a list of stages")
    recipe.stages = [parse_stage(s, i) for i, s in enumerate(stages_raw)]
    _check_task(recipe)
    if recipe.seq_len < 2:
        raise RecipeError(f"recipe seq_len: {recipe.seq_len} must be at least 2")
    if recipe.threads is not None and recipe.threads < 1:
        raise RecipeError(f"recipe threads: {recipe.threads} must be at least 1")
    if recipe.calib_samples < 1:
        raise RecipeError(f"recipe calib_samples: {recipe.calib_samples} must be at least 1")
    if recipe.precision not in TRAIN_PRECISIONS:
        raise RecipeError(f"recipe precision: {recipe.precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
    if recipe.data.unlabeled is not None and not any(s.uses_unlabeled or "unlabeled" in s.required_splits()
                                                     for s in recipe.stages):
        readers = " or ".join(kind for kind, cls in STAGES.items() if cls.uses_unlabeled)
        raise RecipeError(f"recipe data.unlabeled: only a {readers} stage uses unlabeled texts (the teacher labels "
                          "them; trim_vocab may keep their tokens), and the recipe has none")
    if recipe.targets is not None and not recipe.targets:
        raise RecipeError("recipe targets: at least one target is needed")
    _check_target_options(recipe)
    _check_runtimes(recipe)
    recipe_buckets(recipe.buckets, recipe.seq_len, "buckets")
    check_search_space(recipe.search_space, recipe.stages, recipe.seq_len)
    if recipe.gate.max_accuracy_drop is not None:
        check_range(recipe.gate.max_accuracy_drop, 0.0, 1.0, "gate.max_accuracy_drop")
    check_range(recipe.parity.min_cosine, -1.0, 1.0, "parity.min_cosine")
    check_range(recipe.parity.min_agreement, 0.0, 1.0, "parity.min_agreement")
    unknown = [name for name in recipe.parity.isas if name not in (*PROFILES, "all")]
    if unknown:
        raise RecipeError(f"recipe parity.isas: {unknown[0]!r} is not one of {', '.join(PROFILES)}, all")
    if recipe.gate.max_accuracy_drop is not None and recipe.data.test is None:
        raise RecipeError("recipe gate.max_accuracy_drop: the gate needs data.test")
    required = {}
    for stage in recipe.stages:
        for split, why in stage.required_splits().items():
            required.setdefault(split, why)
    for split in sorted(required, key=lambda name: (name != "validation", name)):  # validation first, then A-Z
        if getattr(recipe.data, split) is None:
            raise RecipeError(f"recipe data.{split}: {required[split]}")
    return recipe


def load_recipe(path: Path | str | None, overrides: list[tuple[str, Any]] | None = None) -> Recipe:
    """Read and validate a YAML recipe; relative data paths resolve against its folder.

    ``overrides`` (dotted key, value) come from the command line (``recipe.flags``) and are applied before
    validation; with ``path=None`` they are the whole recipe."""
    import yaml

    from .flags import apply_overrides

    if path is None:
        raw = apply_overrides({}, overrides or [])
        if "data" not in raw:
            raise RecipeError("recipe data: required key is missing (without --recipe, give --train, "
                              "--validation and --test, or --set data.train=...)")
        return parse_recipe(raw, base_dir=Path.cwd())
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path}: cannot read ({type(exc).__name__}: {exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"recipe {path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if overrides and isinstance(raw, dict):
        raw = apply_overrides(raw, overrides)
    return parse_recipe(raw, base_dir=path.parent)
