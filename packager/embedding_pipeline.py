"""A sentence-embedding model's own pipeline: pooling, Dense layers, Normalize.

A sentence-transformers folder writes its pipeline down (``modules.json``,
``1_Pooling/config.json``, ``2_Dense/``, ``…_Normalize``). Exporting every embedding
model as "mean + L2" is silently wrong for CLS-, max- or last-token-pooled models
(a CLS-pooled MiniLM measured cosine 0.37–0.57 against its own ``encode``), so the
pipeline is read from those files (no sentence-transformers needed at pack time) and
reproduced by ``EmbeddingHead`` in every export wrapper. A plain HF encoder gets the
default (mean + normalize) and the manifest says it was a default.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import EdgepackError

#: edgepack's names (the boolean keys of older sentence-transformers concatenate in this order)
POOLING_MODES = ("cls", "max", "mean", "mean-sqrt-len", "weighted-mean", "last-token")
_ST_MODES = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean-sqrt-len",
             "weightedmean": "weighted-mean", "lasttoken": "last-token"}
_ST_LEGACY_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean-sqrt-len",
                   "pooling_mode_weightedmean_tokens": "weighted-mean", "pooling_mode_lasttoken": "last-token"}
#: Dense activations by the class path sentence-transformers writes (only torch's own, no code is imported)
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.activation.Tanh": nn.Tanh, "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU, "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid, "torch.nn.modules.activation.SiLU": nn.SiLU,
}
DEFAULT_ACTIVATION = "torch.nn.modules.activation.Tanh"  # sentence-transformers' Dense default

SOURCE_SENTENCE_TRANSFORMERS = "sentence-transformers"
SOURCE_DEFAULT = "default"
SOURCE_OVERRIDE = "--pooling"


@dataclass(frozen=True)
class DenseLayer:
    """One sentence-transformers Dense module: activation(linear(x))."""

    path: str  # its folder inside the model, e.g. "2_Dense"
    in_features: int
    out_features: int
    bias: bool
    activation: str  # torch class path, one of ACTIVATIONS

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "activation": self.activation.rsplit(".", 1)[-1].lower()}


@dataclass
class EmbeddingPipeline:
    """What turns the encoder's token states into the sentence embedding."""

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = True
    dense: list[DenseLayer] = field(default_factory=list)
    include_prompt: bool = True
    prompt: str | None = None  # the model's default prompt, prepended to every text
    source: str = SOURCE_DEFAULT
    folder: str | None = None  # local folder holding the module files (Dense weights)
    unchecked: str | None = None  # why the model's own pipeline files could not be read (a Hub id offline)

    @property
    def pooling_name(self) -> str:
        return "+".join(self.pooling)

    def describe(self) -> str:
        parts = [f"{self.pooling_name} pooling"] + [f"Dense {d.in_features}->{d.out_features}" for d in self.dense]
        if self.normalize:
            parts.append("Normalize")
        return " + ".join(parts) + f" ({self.source}{'; ' + self.unchecked if self.unchecked else ''})"


def parse_pooling(value: str) -> tuple[str, ...]:
    """``--pooling cls`` or ``mean+max`` (concatenated in that order) -> modes; ValueError when unknown."""
    modes = [m.strip() for m in value.split("+") if m.strip()]
    unknown = [m for m in modes if m not in POOLING_MODES]
    if not modes or unknown:
        raise ValueError(f"--pooling {value!r}: expected one of {', '.join(POOLING_MODES)} (or several joined by +)")
    return tuple(dict.fromkeys(modes))


def read_pipeline(source: str, pooling_override: str | None = None) -> EmbeddingPipeline:
    """The pipeline written in ``source`` (a folder or a Hub id), else the default; ``--pooling`` last."""
    folder, unchecked = _local_folder(source)
    pipeline = _read_st_folder(folder) if folder is not None else None
    if pipeline is None:
        pipeline = EmbeddingPipeline(folder=str(folder) if folder else None, unchecked=unchecked)
    if pooling_override:
        try:
            modes = parse_pooling(pooling_override)
        except ValueError as exc:
            raise EdgepackError(str(exc)) from None
        pipeline = replace(pipeline, pooling=modes, source=SOURCE_OVERRIDE)
    return pipeline


def _local_folder(source: str) -> tuple[Path | None, str | None]:
    """A folder with the model's files (the folder itself, or the Hub snapshot holding ``modules.json``), and
    why a Hub id's ``modules.json`` could not be checked (None when it was: found, or absent on the Hub)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(source, "modules.json")
    if isinstance(cached, str):
        return Path(cached).parent, None
    try:
        return Path(hf_hub_download(source, "modules.json")).parent, None
    except LocalEntryNotFoundError as exc:  # (a subclass of the next) offline and not cached
        return None, f"modules.json of {source} could not be checked ({type(exc).__name__})"
    except EntryNotFoundError:  # the Hub has no modules.json: a plain HF encoder
        return None, None
    except Exception as exc:  # noqa: BLE001 - offline and not cached, ...: say so rather than assume
        return None, f"modules.json of {source} could not be checked ({type(exc).__name__})"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgepackError(f"sentence-transformers {what} {path}: unreadable ({type(exc).__name__}: {exc})") from None


def _read_st_folder(folder: Path) -> EmbeddingPipeline | None:
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file, "modules.json")
    if not isinstance(modules, list):
        raise EdgepackError(f"{modules_file}: expected a list of modules")
    pooling: tuple[str, ...] | None = None
    include_prompt = True
    dense: list[DenseLayer] = []
    normalize = False
    for i, module in enumerate(sorted(modules, key=lambda m: int(m.get("idx", 0)))):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = folder / str(module.get("path", ""))
        if kind == "Transformer":
            if i != 0:
                raise EdgepackError(f"{modules_file}: the Transformer must be the first module")
        elif kind == "Pooling":
            if pooling is not None:
                raise EdgepackError(f"{modules_file}: more than one Pooling module")
            pooling, include_prompt = _read_pooling(where / "config.json")
        elif kind == "Dense":
            if pooling is None:
                raise EdgepackError(f"{modules_file}: a Dense module before Pooling (token-level Dense) is not supported")
            dense.append(_read_dense(where, str(module.get("path", ""))))
        elif kind == "Normalize":
            normalize = True
        else:
            raise EdgepackError(f"{modules_file}: module {module.get('type')!r} is not supported by edgepack "
                                f"(supported: Transformer, Pooling, Dense, Normalize)")
    if pooling is None:
        raise EdgepackError(f"{modules_file}: no Pooling module (edgepack exports sentence embeddings)")
    prompt = _default_prompt(folder)
    return EmbeddingPipeline(pooling=pooling, normalize=normalize, dense=dense, include_prompt=include_prompt,
                             prompt=prompt, source=SOURCE_SENTENCE_TRANSFORMERS, folder=str(folder))


def _read_pooling(config_path: Path) -> tuple[tuple[str, ...], bool]:
    config = _read_json(config_path, "pooling config")
    mode = config.get("pooling_mode")
    if mode is not None:  # sentence-transformers >= 6: a name or a list of names
        names = [mode] if isinstance(mode, str) else list(mode)
        unknown = [n for n in names if n not in _ST_MODES]
        if unknown:
            raise EdgepackError(f"{config_path}: pooling mode {unknown[0]!r} is not supported")
        modes = tuple(dict.fromkeys(_ST_MODES[n] for n in names))  # concatenated in the order given
    else:  # the boolean keys of older releases, concatenated in their fixed order
        modes = tuple(mode_name for key, mode_name in _ST_LEGACY_KEYS.items() if config.get(key)) or ("mean",)
    return modes, bool(config.get("include_prompt", True))


def _read_dense(folder: Path, rel: str) -> DenseLayer:
    config = _read_json(folder / "config.json", "Dense config")
    activation = config.get("activation_function") or DEFAULT_ACTIVATION
    if activation not in ACTIVATIONS:
        raise EdgepackError(f"{folder}: Dense activation {activation!r} is not supported "
                            f"(supported: {', '.join(a.rsplit('.', 1)[-1] for a in ACTIVATIONS)})")
    if config.get("use_residual"):
        raise EdgepackError(f"{folder}: Dense with use_residual is not supported")
    try:
        return DenseLayer(path=rel, in_features=int(config["in_features"]), out_features=int(config["out_features"]),
                          bias=bool(config.get("bias", True)), activation=activation)
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgepackError(f"{folder}/config.json: Dense needs in_features and out_features ({exc})") from None


def _default_prompt(folder: Path) -> str | None:
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return None
    config = _read_json(path, "config")
    name = config.get("default_prompt_name")
    return (config.get("prompts") or {}).get(name) if name else None


def _load_dense_weights(pipeline: EmbeddingPipeline, layer: DenseLayer) -> dict[str, torch.Tensor]:
    folder = Path(pipeline.folder or ".") / layer.path
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise EdgepackError(f"{folder}: Dense module has no model.safetensors or pytorch_model.bin")


def prompt_length(tokenizer, prompt: str | None) -> int:
    """Tokens the prompt occupies at the start of a text (with the leading special token), like sentence-transformers."""
    if not prompt:
        return 0
    ids = tokenizer(prompt)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return len(ids) - 1 if ids and ids[-1] in special else len(ids)


class EmbeddingHead(nn.Module):
    """Token states + attention mask -> sentence embedding, written with export-friendly ops only.

    Selections (first/last real token, max over real tokens) are one-hot sums and
    masked arithmetic rather than gathers or -inf fills, so every converter and the
    full-integer quantizer (which calibrates ranges) take the same graph.
    """

    def __init__(self, pipeline: EmbeddingPipeline, hidden_size: int, prompt_tokens: int = 0) -> None:
        super().__init__()
        self.modes = tuple(pipeline.pooling)
        self.normalize = bool(pipeline.normalize)
        self.prompt_tokens = 0 if pipeline.include_prompt else int(prompt_tokens)
        layers = []
        width = hidden_size * len(self.modes)
        for spec in pipeline.dense:
            if spec.in_features != width:
                raise EdgepackError(f"Dense {spec.path}: expects {spec.in_features} features, the pooling gives {width}")
            linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
            state = _load_dense_weights(pipeline, spec)
            try:
                linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()
                                        if k.startswith("linear.")})
            except RuntimeError as exc:
                raise EdgepackError(f"Dense {spec.path}: weights do not fit ({str(exc).splitlines()[0]})") from None
            layers.append(nn.Sequential(linear, ACTIVATIONS[spec.activation]()))
            width = spec.out_features
        self.dense = nn.ModuleList(layers)
        self.output_dim = width

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        full = attention_mask.to(hidden.dtype)
        mask = full
        if self.prompt_tokens:
            position = torch.cumsum(torch.ones_like(full), dim=1)
            mask = full * (position > self.prompt_tokens).to(hidden.dtype)
        weights = mask.unsqueeze(-1)
        count = weights.sum(dim=1).clamp(min=1e-9)
        rank = torch.cumsum(mask, dim=1)  # 1, 2, ... over the pooled tokens
        pooled = []
        for mode in self.modes:
            if mode == "cls":  # the first pooled token
                first = mask * (rank == 1).to(hidden.dtype)
                pooled.append((hidden * first.unsqueeze(-1)).sum(dim=1))
            elif mode == "last-token":
                last = mask * (rank == mask.sum(dim=1, keepdim=True)).to(hidden.dtype)
                pooled.append((hidden * last.unsqueeze(-1)).sum(dim=1))
            elif mode == "max":  # padding takes the overall minimum, which never wins
                floor = hidden.min(dim=1, keepdim=True).values
                pooled.append((hidden * weights + floor * (1.0 - weights)).max(dim=1).values)
            elif mode == "mean":
                pooled.append((hidden * weights).sum(dim=1) / count)
            elif mode == "mean-sqrt-len":
                pooled.append((hidden * weights).sum(dim=1) / torch.sqrt(count))
            elif mode == "weighted-mean":  # position weights 1..n over the real tokens (a prompt keeps its share)
                positional = (torch.cumsum(full, dim=1) * mask).unsqueeze(-1)
                pooled.append((hidden * positional).sum(dim=1) / positional.sum(dim=1).clamp(min=1e-9))
        out = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)
        for layer in self.dense:
            out = layer(out)
        return nn.functional.normalize(out, p=2.0, dim=-1) if self.normalize else out


def sentence_transformers_reference(folder: str, pipeline: EmbeddingPipeline, texts: list[str],
                                    seq_len: int) -> tuple[Any, str] | None:
    """``SentenceTransformer(folder).encode(texts)`` with the same truncation, or None when sentence-transformers
    is not installed or the pipeline is not the folder's own (a plain encoder, or ``--pooling`` overriding it)."""
    if pipeline.source != SOURCE_SENTENCE_TRANSFORMERS:
        return None
    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(folder, device="cpu")
    model.max_seq_length = seq_len
    embeddings = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    return embeddings, f"sentence-transformers {sentence_transformers.__version__} encode"

