"""Encoders with a different number of attention heads per layer, loadable with ``from_pretrained``.

transformers 5 dropped ``prune_heads``/``pruned_heads``, and the stock configs tie the head size to
``hidden_size / num_attention_heads``, so an encoder whose heads were physically removed cannot be described by a
stock config. Each prunable family gets a model type of its own, ``edgepack_pruned_<family>``: the family's config
plus ``layer_heads`` (heads kept in each layer; the head size stays the original's), and the family's model classes
rebuilding each block to its kept heads (the family's ``LayerSurgery``), registered with the Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(folder)`` reloads a pruned model once this module is imported.
FFN neurons are pruned uniformly across layers and need no extension: the config's FFN width describes them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import transformers

from .surgery import BERT_LAYER, DEBERTA_V2_LAYER, DISTILBERT_LAYER, MODERNBERT_LAYER, LayerSurgery


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
    def __init__(self, layer_heads: list[int] | None = None, **kwargs: Any) -> None:
        base.__init__(self, **kwargs)
        self.layer_heads = list(layer_heads) if layer_heads is not None else None

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
    head_size = config.hidden_size // config.num_attention_heads
    for layer, heads in zip(node, config.layer_heads):
        arch.surgery.shrink(layer, heads, head_size, config.hidden_size)


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
