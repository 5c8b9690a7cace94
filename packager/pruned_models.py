"""Encoders with a different number of attention heads per layer, loadable with ``from_pretrained``.

transformers 5 dropped ``prune_heads``/``pruned_heads``, and the stock configs tie the head size to
``hidden_size / num_attention_heads``, so an encoder whose heads were physically removed cannot be described by a
stock config. Each prunable family gets a model type of its own, ``edgepack_pruned_<family>``: the family's config
plus ``layer_heads`` (heads kept in each layer; the head size stays the original's), and the family's model classes
rebuilding each block to its kept heads (the family's ``LayerSurgery``), registered with the Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(folder)`` reloads a pruned model once this module is imported.
FFN neurons are pruned uniformly across layers and need no extension: the config's FFN width describes them.
A family whose blocks share one per-head bias table (MPNet's relative positions) also records, per layer, the
original indices of the kept heads (``layer_head_ids``): each block's attention takes those columns of the bias.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import transformers

from .surgery import (BERT_LAYER, DEBERTA_V2_LAYER, DISTILBERT_LAYER, MOBILEBERT_LAYER, MODERNBERT_LAYER,
                      MPNET_LAYER, LayerSurgery)


@dataclass(frozen=True)
class PrunedArch:
    family: str
    layers: str  # the family's encoder blocks under the base model (as ``ModelFamily.layers``)
    surgery: LayerSurgery
    #: the transformers module and class names: config, then Auto class name -> model class name
    module: str
    config: str
    models: tuple[tuple[str, str], ...]

    @property
    def model_type(self) -> str:
        return f"edgepack_pruned_{self.family.replace('-', '_')}"


ARCHS: dict[str, PrunedArch] = {}


def _config_class(arch: PrunedArch, base: type) -> type:
    def __init__(self, layer_heads: list[int] | None = None, layer_head_ids: list[list[int]] | None = None,
                 **kwargs: Any) -> None:
        base.__init__(self, **kwargs)
        self.layer_heads = list(layer_heads) if layer_heads is not None else None
        if layer_head_ids is not None:  # only families with a shared per-head bias record them
            self.layer_head_ids = [list(ids) for ids in layer_head_ids]

    return type(f"Pruned{base.__name__}", (base,), {"model_type": arch.model_type, "__init__": __init__,
                                                      "__module__": __name__})


def shrink_attention(model: Any, arch: PrunedArch) -> None:
    """Resize each block's attention to its kept heads (``config.layer_heads``)."""
    config = model.config
    if not getattr(config, "layer_heads", None):
        return
    if len(config.layer_heads) != config.num_hidden_layers:
        raise ValueError(f"layer_heads has {len(config.layer_heads)} entries for {config.num_hidden_layers} layers")
    node = getattr(model, model.base_model_prefix, model)
    for part in arch.layers.split("."):
        node = getattr(node, part)
    head_size = arch.surgery.head_size(config)
    for layer, heads in zip(node, config.layer_heads):
        arch.surgery.shrink(layer, heads, head_size)
    if arch.surgery.shared_head_bias_arg:
        head_ids = getattr(config, "layer_head_ids", None) or [list(range(n)) for n in config.layer_heads]
        for layer, ids in zip(node, head_ids):
            take_kept_head_bias(layer.get_submodule(arch.surgery.attention_module), ids,
                                arch.surgery.shared_head_bias_arg)


_HEAD_BIAS_CLASSES: dict[type, type] = {}


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Consecutive ids as (start, length) runs: [0, 1, 3] -> [(0, 2), (3, 1)]."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def take_kept_head_bias(attention: Any, head_ids: list[int], arg: str) -> None:
    """Make one block's attention module select its kept heads' columns (dim 1) of the shared bias ``arg``."""
    import torch

    base = type(attention)
    if base not in _HEAD_BIAS_CLASSES:
        position = list(inspect.signature(base.forward).parameters).index(arg) - 1  # without self

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            def kept(bias: Any) -> Any:  # slices, not a gather: int8 quantizers take a gather for a weight lookup
                return torch.cat([bias.narrow(1, start, length) for start, length in _runs(self.kept_head_ids)], 1)

            if kwargs.get(arg) is not None:
                kwargs[arg] = kept(kwargs[arg])
            elif len(args) > position and args[position] is not None:
                args = args[:position] + (kept(args[position]),) + args[position + 1:]
            return base.forward(self, *args, **kwargs)

        cls = type(f"KeptHeads{base.__name__}", (base,), {"forward": forward, "__module__": __name__})
        globals()[cls.__name__] = cls
        _HEAD_BIAS_CLASSES[base] = cls
    attention.__class__ = _HEAD_BIAS_CLASSES[base]
    # a plain attribute, not a buffer: transformers materialises non-persistent buffers uninitialised on load
    attention.kept_head_ids = list(head_ids)


def _model_class(arch: PrunedArch, base: type, config_class: type) -> type:
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        shrink_attention(self, arch)

    return type(f"Pruned{base.__name__}", (base,), {"config_class": config_class, "__init__": __init__,
                                                      "__module__": __name__})


def register(arch: PrunedArch) -> PrunedArch:
    """Create and register the pruned config and model classes of one family (module globals, for pickling)."""
    module = importlib.import_module(arch.module)
    config_class = _config_class(arch, getattr(module, arch.config))
    globals()[config_class.__name__] = config_class
    transformers.AutoConfig.register(arch.model_type, config_class, exist_ok=True)
    for auto, name in arch.models:
        model_class = _model_class(arch, getattr(module, name), config_class)
        globals()[model_class.__name__] = model_class
        getattr(transformers, auto).register(config_class, model_class, exist_ok=True)
    ARCHS[arch.family] = arch
    return arch


def _heads(prefix: str) -> tuple[tuple[str, str], ...]:
    return (("AutoModel", f"{prefix}Model"), ("AutoModelForSequenceClassification", f"{prefix}ForSequenceClassification"),
            ("AutoModelForTokenClassification", f"{prefix}ForTokenClassification"))


register(PrunedArch("bert", "encoder.layer", BERT_LAYER, "transformers.models.bert.modeling_bert", "BertConfig",
                    _heads("Bert")))
register(PrunedArch("roberta", "encoder.layer", BERT_LAYER, "transformers.models.roberta.modeling_roberta",
                    "RobertaConfig", _heads("Roberta")))
register(PrunedArch("electra", "encoder.layer", BERT_LAYER, "transformers.models.electra.modeling_electra",
                    "ElectraConfig", _heads("Electra")))
register(PrunedArch("modernbert", "layers", MODERNBERT_LAYER, "transformers.models.modernbert.modeling_modernbert",
                    "ModernBertConfig", _heads("ModernBert")))

register(PrunedArch("distilbert", "transformer.layer", DISTILBERT_LAYER,
                    "transformers.models.distilbert.modeling_distilbert", "DistilBertConfig", _heads("DistilBert")))
register(PrunedArch("deberta-v2", "encoder.layer", DEBERTA_V2_LAYER,
                    "transformers.models.deberta_v2.modeling_deberta_v2", "DebertaV2Config", _heads("DebertaV2")))
register(PrunedArch("mpnet", "encoder.layer", MPNET_LAYER, "transformers.models.mpnet.modeling_mpnet", "MPNetConfig",
                    _heads("MPNet")))
register(PrunedArch("mobilebert", "encoder.layer", MOBILEBERT_LAYER,
                    "transformers.models.mobilebert.modeling_mobilebert", "MobileBertConfig", _heads("MobileBert")))
