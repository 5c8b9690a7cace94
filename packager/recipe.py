"""The compression recipe: a YAML file validated into dataclasses, defaults filled in.

Every error names the offending key as a path (``stages[1].distill.temperature``) so a
user can fix a 40-line recipe without reading a traceback.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .errors import EdgepackError, RecipeError

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
class FinetuneSpec:
    """Fine-tune with the HF Trainer; the checkpoint with the best validation accuracy wins."""

    epochs: float = 3.0
    lr: float = 5.0e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1


@dataclass
class StudentSpec:
    """Exactly one of: teacher layers to keep, a config override, or a model folder."""

    layers: list[int] | None = None
    config: dict[str, Any] | None = None
    model: str | None = None


SEARCH_PRUNERS = ("median", "none")


@dataclass
class SearchSpec:
    """Hyper-parameter search over alpha, temperature, epochs (and lr when given) on validation (needs optuna)."""

    trials: int = 8
    alpha: list[float] = field(default_factory=lambda: [0.0, 1.0])
    temperature: list[float] = field(default_factory=lambda: [1.0, 10.0])
    epochs: list[int] = field(default_factory=lambda: [1, 5])
    #: learning-rate range, searched on a log scale; null keeps distill.lr
    lr: list[float] | None = field(default_factory=lambda: [2.0e-5, 5.0e-4])
    #: "median": stop a trial after an epoch whose validation accuracy is below the median of earlier trials at
    #: that epoch (optuna MedianPruner, after 2 complete trials); "none": run every trial to the end
    pruner: str = "median"
    #: an optuna storage URL (``sqlite:///search.db``, ``postgresql://…``) shared by several workers; with it
    #: ``trials`` is the study's total of completed trials and a worker started later resumes the study
    storage: str | None = None
    #: the study's name in ``storage`` (the same name on every worker)
    study: str | None = None


@dataclass
class AugmentSpec:
    """Teacher-labelled variants of the training texts: each copy drops, swaps and replaces some words.

    Replacement words are drawn from the training texts' own vocabulary; the recipe seed makes it repeatable."""

    copies: int = 4
    #: probability that a word is dropped
    word_dropout: float = 0.1
    #: probability that a word swaps places with its right-hand neighbour
    swap: float = 0.1
    #: probability that a word is replaced by a word of the training data
    replace: float = 0.1


@dataclass
class DistillSpec:
    student: StudentSpec = field(default_factory=lambda: StudentSpec(layers=[0, 2, 4]))
    temperature: float = 2.0
    alpha: float = 0.5
    epochs: float = 3.0
    lr: float = 1.0e-4
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    #: weight of the MSE between student hidden states and the matching teacher layers
    hidden_weight: float = 0.0
    #: weight of the MSE between student and teacher attention maps (same head count only)
    attention_weight: float = 0.0
    search: SearchSpec | None = None
    #: teacher-labelled variants of the training texts added to the transfer set
    augment: AugmentSpec | None = None
    #: also train the student on the labels alone (same epochs / lr), a row showing what distillation bought
    student_alone: bool = True


@dataclass
class RecoverySpec:
    """Short distillation from the unpruned model after structured pruning."""

    epochs: float = 1.0
    lr: float = 5.0e-5
    batch_size: int = 32
    temperature: float = 2.0
    alpha: float = 0.5


PRUNE_METHODS = ("magnitude", "movement", "structured")


@dataclass
class PruneSpec:
    method: str = "structured"
    #: magnitude / movement: fraction of encoder Linear weights set to zero
    sparsity: float = 0.5
    #: structured: fraction of attention heads / FFN neurons removed
    heads: float = 0.0
    ffn: float = 0.0
    #: movement: fine-tuning epochs during which the scores are learned
    epochs: float = 2.0
    lr: float = 5.0e-5
    score_lr: float = 1.0e-2
    batch_size: int = 32
    #: structured / magnitude: training batches used to score importance (structured only)
    importance_batches: int = 32
    recovery: RecoverySpec | None = field(default_factory=RecoverySpec)


@dataclass
class TrimVocabSpec:
    #: splits whose tokens are kept
    splits: list[str] = field(default_factory=lambda: ["train"])
    #: also keep single ASCII characters (and their ## forms): unseen words are then spelled out instead of
    #: becoming [UNK]. Off by default: on CLINC150 the spelled-out words cost more accuracy than [UNK] did.
    keep_ascii_chars: bool = False
    #: also keep the first N regular ids of the original vocabulary (BERT's WordPiece vocabulary is roughly
    #: frequency-ordered), so common words absent from the training data are not lost; 0 keeps only what is seen
    keep_top: int = 0


STAGE_SPECS: dict[str, type] = {
    "finetune": FinetuneSpec,
    "distill": DistillSpec,
    "prune": PruneSpec,
    "trim_vocab": TrimVocabSpec,
}


#: options that a pruning method ignores, left out when the recipe is shown or stored
_IRRELEVANT: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("prune", "structured"): ("sparsity", "epochs", "lr", "score_lr"),
    ("prune", "magnitude"): ("heads", "ffn", "epochs", "lr", "score_lr", "importance_batches"),
    ("prune", "movement"): ("heads", "ffn", "importance_batches"),
}


@dataclass
class Stage:
    kind: str
    spec: Any

    def to_dict(self) -> dict[str, Any]:
        options = dataclasses.asdict(self.spec)
        for key in _IRRELEVANT.get((self.kind, getattr(self.spec, "method", None)), ()):
            options.pop(key, None)
        if self.kind == "distill":
            options["student"] = {k: v for k, v in options["student"].items() if v is not None}
        return {self.kind: options}


@dataclass
class GateSpec:
    #: fail when a final artifact's test accuracy is more than this below the fine-tuned teacher's (None: report only)
    max_accuracy_drop: float | None = None


@dataclass
class ParitySpec:
    min_cosine: float = 0.99
    min_agreement: float = 0.98


@dataclass
class Recipe:
    data: DataSpec
    model: str | None = None
    task: str = SUPPORTED_TASK
    seq_len: int = 64
    seed: int = 42
    #: torch threads for training and measurement (None: torch's default)
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
    #: training texts used as calibration/parity samples
    calib_samples: int = 200
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


# -- generic validation ------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; numbers given as ints become floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(tp):
                return None
            raise RecipeError(f"recipe {where}: must not be empty")
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except RecipeError as exc:
                errors.append(exc)
        raise errors[0] if len(args) == 1 else RecipeError(f"recipe {where}: expected {_type_name(tp)}, got {value!r}")
    if value is None:
        raise RecipeError(f"recipe {where}: must not be empty (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"recipe {where}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe {where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe {where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 (PyYAML) reads `5e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe {where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"recipe {where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r}")


def _unknown_key(key: str, known: list[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return RecipeError(f"recipe {where}{'.' if where else ''}{key}: unknown key{hint}")


def build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, type-checking each field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {where or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            raise _unknown_key(str(key), list(fields), where)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"recipe {prefix}{name}: required key is missing")
    return cls(**kwargs)


# -- recipe-specific checks --------------------------------------------------------

def _check_range(value: float | None, low: float, high: float, where: str, *, low_open=False, high_open=False) -> None:
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise RecipeError(f"recipe {where}: {value} is outside {lb}{low}, {high}{hb}")


def _check_training(spec: Any, where: str) -> None:
    for name in ("epochs", "lr", "temperature", "score_lr"):
        if hasattr(spec, name):
            _check_range(getattr(spec, name), 0, float("inf"), f"{where}.{name}", low_open=True, high_open=True)
    if hasattr(spec, "batch_size") and spec.batch_size < 1:
        raise RecipeError(f"recipe {where}.batch_size: must be at least 1")
    for name in ("alpha", "warmup_ratio"):
        if hasattr(spec, name):
            _check_range(getattr(spec, name), 0.0, 1.0, f"{where}.{name}")


def _parse_stage(raw: Any, i: int) -> Stage:
    where = f"stages[{i}]"
    if isinstance(raw, str):
        raw = {raw: {}}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecipeError(f"recipe {where}: expected one stage name with its options, e.g. '- finetune: {{epochs: 3}}'")
    (kind, options), = raw.items()
    if kind not in STAGE_SPECS:
        raise _unknown_key(str(kind), list(STAGE_SPECS), where)
    where = f"{where}.{kind}"
    spec = build(STAGE_SPECS[kind], options, where)
    _check_training(spec, where)
    if isinstance(spec, DistillSpec):
        _check_student(spec.student, f"{where}.student")
        _check_range(spec.hidden_weight, 0, float("inf"), f"{where}.hidden_weight", high_open=True)
        _check_range(spec.attention_weight, 0, float("inf"), f"{where}.attention_weight", high_open=True)
        if spec.search is not None:
            s = spec.search
            if s.trials < 1:
                raise RecipeError(f"recipe {where}.search.trials: must be at least 1")
            for name in ("alpha", "temperature", "epochs", "lr"):
                bounds = getattr(s, name)
                if bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
                    raise RecipeError(f"recipe {where}.search.{name}: expected [low, high], got {bounds}")
            if s.lr is not None and s.lr[0] <= 0:
                raise RecipeError(f"recipe {where}.search.lr: must be above 0, got {s.lr}")
            if s.pruner not in SEARCH_PRUNERS:
                raise RecipeError(f"recipe {where}.search.pruner: {s.pruner!r} is not one of {', '.join(SEARCH_PRUNERS)}")
            if (s.storage is None) != (s.study is None):
                missing = "study" if s.study is None else "storage"
                raise RecipeError(f"recipe {where}.search.{missing}: storage and study go together (the workers "
                                  "of one search name the same database and study)")
            if s.storage is not None and "://" not in s.storage:
                raise RecipeError(f"recipe {where}.search.storage: expected a database URL such as "
                                  f"sqlite:///search.db, got {s.storage!r}")
        if spec.augment is not None:
            a = spec.augment
            if a.copies < 1:
                raise RecipeError(f"recipe {where}.augment.copies: must be at least 1")
            for name in ("word_dropout", "swap", "replace"):
                _check_range(getattr(a, name), 0.0, 1.0, f"{where}.augment.{name}", high_open=True)
            if a.word_dropout == a.swap == a.replace == 0:
                raise RecipeError(f"recipe {where}.augment: word_dropout, swap and replace are all 0 (copies would be "
                                  "the training texts again)")
    if isinstance(spec, PruneSpec):
        if spec.method not in PRUNE_METHODS:
            raise RecipeError(f"recipe {where}.method: {spec.method!r} is not one of {', '.join(PRUNE_METHODS)}")
        if spec.method == "structured":
            if "sparsity" in (options or {}):
                raise RecipeError(f"recipe {where}.sparsity: structured pruning takes heads and ffn fractions")
            _check_range(spec.heads, 0.0, 1.0, f"{where}.heads", high_open=True)
            _check_range(spec.ffn, 0.0, 1.0, f"{where}.ffn", high_open=True)
            if spec.heads == 0 and spec.ffn == 0:
                raise RecipeError(f"recipe {where}: structured pruning needs heads > 0 or ffn > 0")
        else:
            for name in ("heads", "ffn"):
                if name in (options or {}):
                    raise RecipeError(f"recipe {where}.{name}: only structured pruning removes heads/FFN neurons")
            _check_range(spec.sparsity, 0.0, 1.0, f"{where}.sparsity", low_open=True, high_open=True)
        if spec.importance_batches < 1:
            raise RecipeError(f"recipe {where}.importance_batches: must be at least 1")
        if spec.recovery is not None:
            _check_training(spec.recovery, f"{where}.recovery")
    if isinstance(spec, TrimVocabSpec):
        for j, split in enumerate(spec.splits):
            if split not in ("train", "validation", "test"):
                raise RecipeError(f"recipe {where}.splits[{j}]: {split!r} is not one of train, validation, test")
        if not spec.splits:
            raise RecipeError(f"recipe {where}.splits: at least one split is needed")
        if spec.keep_top < 0:
            raise RecipeError(f"recipe {where}.keep_top: must not be negative")
    return Stage(kind=kind, spec=spec)


def _check_student(student: StudentSpec, where: str) -> None:
    given = [n for n in ("layers", "config", "model") if getattr(student, n) is not None]
    if len(given) != 1:
        raise RecipeError(f"recipe {where}: give exactly one of layers, config, model (got {', '.join(given) or 'none'})")
    if student.layers is not None:
        if not student.layers:
            raise RecipeError(f"recipe {where}.layers: at least one layer is needed")
        if any(l < 0 for l in student.layers) or len(set(student.layers)) != len(student.layers):
            raise RecipeError(f"recipe {where}.layers: expected distinct layer indices >= 0, got {student.layers}")


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

    from .pack import validate_runtimes

    for name, spec in recipe.runtimes.items():
        if not isinstance(spec, str):
            raise RecipeError(f"recipe runtimes.{name}: expected a requirement string like 'ai-edge-litert>=2.3'")
    try:
        validate_runtimes(recipe.runtimes, list(recipe.targets or DEFAULT_TARGETS))
    except EdgepackError as exc:
        raise RecipeError(f"recipe runtimes: {str(exc).replace('--runtime ', '')}") from None


def _check_task(recipe: Recipe) -> None:
    """The task exists and supports every stage, said in one line (each task declares its stages)."""
    from .tasks import RECIPE_STAGES, TASKS

    if recipe.task not in TASKS:
        raise RecipeError(f"recipe task: unknown task {recipe.task!r} (known: {', '.join(TASKS)})")
    supported = TASKS[recipe.task].stages
    if not supported:
        raise RecipeError(f"recipe task: {recipe.task} supports none of the recipe stages "
                          f"({', '.join(RECIPE_STAGES)}): pack it without a recipe (edgepack pack --task {recipe.task})")
    refused = sorted({s.kind for s in recipe.stages if s.kind not in supported})
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
    recipe.stages = [_parse_stage(s, i) for i, s in enumerate(stages_raw)]
    _check_task(recipe)
    if recipe.seq_len < 2:
        raise RecipeError(f"recipe seq_len: {recipe.seq_len} must be at least 2")
    if recipe.threads is not None and recipe.threads < 1:
        raise RecipeError(f"recipe threads: {recipe.threads} must be at least 1")
    if recipe.calib_samples < 1:
        raise RecipeError(f"recipe calib_samples: {recipe.calib_samples} must be at least 1")
    if recipe.precision not in TRAIN_PRECISIONS:
        raise RecipeError(f"recipe precision: {recipe.precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
    if recipe.data.unlabeled is not None and not any(s.kind == "distill" for s in recipe.stages):
        raise RecipeError("recipe data.unlabeled: only a distill stage uses unlabeled texts (the teacher labels them), "
                          "and the recipe has none")
    if recipe.targets is not None and not recipe.targets:
        raise RecipeError("recipe targets: at least one target is needed")
    _check_target_options(recipe)
    _check_runtimes(recipe)
    if recipe.gate.max_accuracy_drop is not None:
        _check_range(recipe.gate.max_accuracy_drop, 0.0, 1.0, "gate.max_accuracy_drop")
    _check_range(recipe.parity.min_cosine, -1.0, 1.0, "parity.min_cosine")
    _check_range(recipe.parity.min_agreement, 0.0, 1.0, "parity.min_agreement")
    if recipe.gate.max_accuracy_drop is not None and recipe.data.test is None:
        raise RecipeError("recipe gate.max_accuracy_drop: the gate needs data.test")
    needs_validation = any(s.kind in ("finetune", "distill") or (s.kind == "prune" and s.spec.recovery) for s in recipe.stages)
    if needs_validation and recipe.data.validation is None:
        raise RecipeError("recipe data.validation: required by the training stages (best checkpoint by validation accuracy)")
    trim_splits = {sp for s in recipe.stages if s.kind == "trim_vocab" for sp in s.spec.splits}
    for split in sorted(trim_splits):
        if getattr(recipe.data, split) is None:
            raise RecipeError(f"recipe data.{split}: trim_vocab keeps the tokens of this split, but it is not given")
    return recipe


def load_recipe(path: Path | str | None, overrides: list[tuple[str, Any]] | None = None) -> Recipe:
    """Read and validate a YAML recipe; relative data paths resolve against its folder.

    ``overrides`` (dotted key, value) come from the command line (``recipe_flags``) and are applied before
    validation; with ``path=None`` they are the whole recipe."""
    import yaml

    from .recipe_flags import apply_overrides  # recipe_flags needs only errors: no cycle

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
