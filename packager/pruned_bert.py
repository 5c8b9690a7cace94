"""BERT with a different number of attention heads per layer, loadable with ``from_pretrained``.

transformers 5 dropped ``prune_heads``/``pruned_heads``, and ``BertConfig`` ties the
head size to ``hidden_size / num_attention_heads``, so a BERT whose heads were
physically removed cannot be described by a stock config. This config adds
``layer_heads`` (heads kept in each layer; the head size stays that of the
original model) and registers itself with the Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(folder)`` reloads a pruned
model once this module is imported. FFN neurons are pruned uniformly across
layers and need no extension: ``intermediate_size`` describes them.
"""
from __future__ import annotations

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig
from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertModel

MODEL_TYPE = "edgepack_pruned_bert"


class PrunedBertConfig(BertConfig):
    model_type = MODEL_TYPE

    def __init__(self, layer_heads: list[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer_heads = list(layer_heads) if layer_heads is not None else None

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


def shrink_attention(bert: nn.Module, config: PrunedBertConfig) -> None:
    """Resize each layer's Q/K/V and attention-output projections to its kept heads."""
    if not config.layer_heads:
        return
    if len(config.layer_heads) != config.num_hidden_layers:
        raise ValueError(f"layer_heads has {len(config.layer_heads)} entries for {config.num_hidden_layers} layers")
    for layer, heads in zip(bert.encoder.layer, config.layer_heads):
        attn = layer.attention.self
        width = heads * config.head_size
        for name in ("query", "key", "value"):
            setattr(attn, name, nn.Linear(config.hidden_size, width))
        attn.num_attention_heads = heads
        attn.all_head_size = width
        layer.attention.output.dense = nn.Linear(width, config.hidden_size)


class PrunedBertModel(BertModel):
    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        shrink_attention(self, config)


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__(config)
        shrink_attention(self.bert, config)


AutoConfig.register(MODEL_TYPE, PrunedBertConfig, exist_ok=True)
AutoModel.register(PrunedBertConfig, PrunedBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True)
