"""Where one block layout keeps its attention heads and FFN neurons, so structured pruning can cut them out.

A ``LayerSurgery`` names, relative to one encoder block, the Linear layers that hold heads (the Q/K/V projections,
separate or fused, and the attention output whose inputs are the heads' concatenated context) and FFN neurons
(the FFN input projection, plain or gated, and the FFN output; a block may hold several FFNs). Structured pruning
scores units on the inputs of the two output projections and cuts rows / columns from the same names; a pruned
model type rebuilds the blocks to the kept sizes on load (``packager.pruned_models``). One instance per layout,
named by the families using it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _has(module: Any, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


@dataclass(frozen=True)
class LayerSurgery:
    #: the Q, K, V projections (three names), or one fused projection laid out [q | k | v] x heads x head_size
    qkv: tuple[str, ...]
    #: the attention output projection (its inputs are the heads' context, head-major)
    attention_output: str
    #: the FFN input projection; ``gated``: it produces [value | gate] halves of ``intermediate`` each (GLU)
    ffn_input: str
    ffn_output: str
    gated: bool = False
    #: further per-head projections that only some configs have (DeBERTa's own position key / query
    #: projections), cut like Q/K/V where present
    optional_heads: tuple[str, ...] = ()
    #: the attention module, and its attributes that hold the head count / total head width (updated on rebuild)
    attention_module: str = ""
    head_count_attrs: tuple[str, ...] = ()
    width_attrs: tuple[str, ...] = ()
    #: the config attribute holding the FFN width
    ffn_width: str = "intermediate_size"
    #: the config attribute holding the heads' total width (MobileBERT's attention runs at its inner width)
    head_width: str = "hidden_size"
    #: further FFNs per block, each of ``ffn_input`` / ``ffn_output``'s width: a ModuleList under the block
    #: (MobileBERT's ``ffn``), its length, less one, the config's ``ffn_count``, and the names inside each item
    ffn_stack: str = ""
    ffn_count: str = ""
    ffn_stack_names: tuple[str, str] = ("intermediate.dense", "output.dense")
    #: the attention module's argument carrying a per-head score bias computed once for every block (MPNet's
    #: relative-position bias, one table column per head): a pruned block takes the columns of the heads it kept,
    #: so their original indices are recorded (``layer_head_ids``)
    shared_head_bias_arg: str = ""

    def intermediate(self, config: Any) -> int:
        return int(getattr(config, self.ffn_width))

    def head_size(self, config: Any) -> int:
        return int(getattr(config, self.head_width)) // int(config.num_attention_heads)

    def ffns(self, config: Any) -> list[tuple[str, str]]:
        """(input, output) projection names of each FFN of one block, in order; each is pruned on its own."""
        count = int(getattr(config, self.ffn_count)) if self.ffn_count else 1
        return [(self.ffn_input, self.ffn_output)] + [
            (f"{self.ffn_stack}.{i}.{self.ffn_stack_names[0]}", f"{self.ffn_stack}.{i}.{self.ffn_stack_names[1]}")
            for i in range(count - 1)]

    def head_rows(self, heads: list[int], n_heads: int, head_size: int) -> dict[str, Any]:
        """Output rows kept in each Q/K/V projection for the kept ``heads``."""
        import torch

        per_part = torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads])
        if len(self.qkv) == 1:
            return {self.qkv[0]: torch.cat([per_part + part * n_heads * head_size for part in range(3)])}
        return {name: per_part for name in self.qkv + self.optional_heads}

    def ffn_rows(self, neurons: list[int], intermediate: int) -> Any:
        import torch

        idx = torch.as_tensor(neurons, dtype=torch.long)
        return torch.cat([idx, idx + intermediate]) if self.gated else idx

    def cut_state(self, state: dict[str, Any], prefix: str, heads: list[int], n_heads: int, head_size: int,
                  neurons: list[list[int]], config: Any) -> None:
        """Cut one block's tensors (keys under ``prefix``) down to the kept heads and, per FFN of the block
        (``ffns``), the kept neurons, in place."""
        import torch

        def rows(name: str, index) -> None:
            for part in ("weight", "bias"):
                if f"{prefix}{name}.{part}" in state:
                    state[f"{prefix}{name}.{part}"] = state[f"{prefix}{name}.{part}"][index]

        def columns(name: str, index) -> None:
            state[f"{prefix}{name}.weight"] = state[f"{prefix}{name}.weight"][:, index]

        for name, index in self.head_rows(heads, n_heads, head_size).items():
            rows(name, index)
        columns(self.attention_output, torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads]))
        for (ffn_input, ffn_output), kept in zip(self.ffns(config), neurons, strict=True):
            rows(ffn_input, self.ffn_rows(kept, self.intermediate(config)))
            columns(ffn_output, torch.as_tensor(kept, dtype=torch.long))

    def shrink(self, layer: Any, heads: int, head_size: int) -> None:
        """Resize one freshly built block's attention to ``heads`` heads (weights are loaded afterwards)."""
        from torch import nn

        width = heads * head_size

        def replace(name: str, make) -> None:
            parent, _, leaf = name.rpartition(".")
            owner = layer.get_submodule(parent) if parent else layer
            old = getattr(owner, leaf)
            setattr(owner, leaf, make(old))

        for name in self.qkv + tuple(n for n in self.optional_heads if _has(layer, n)):
            out = width * (3 if len(self.qkv) == 1 else 1)
            replace(name, lambda old, out=out: nn.Linear(old.in_features, out, bias=old.bias is not None))
        replace(self.attention_output,
                lambda old: nn.Linear(width, old.out_features, bias=old.bias is not None))
        attention = layer.get_submodule(self.attention_module) if self.attention_module else layer
        for attr in self.head_count_attrs:
            setattr(attention, attr, heads)
        for attr in self.width_attrs:
            setattr(attention, attr, width)


#: BERT's block (also RoBERTa's, ELECTRA's): separate Q/K/V, a plain FFN
BERT_LAYER = LayerSurgery(
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
    attention_output="attention.output.dense", ffn_input="intermediate.dense", ffn_output="output.dense",
    attention_module="attention.self", head_count_attrs=("num_attention_heads",), width_attrs=("all_head_size",))

#: ModernBERT's block: one fused Wqkv, a GeGLU FFN whose Wi produces value and gate halves
MODERNBERT_LAYER = LayerSurgery(qkv=("attn.Wqkv",), attention_output="attn.Wo", ffn_input="mlp.Wi",
                                ffn_output="mlp.Wo", gated=True)

#: DistilBERT's block: separate q/k/v_lin, a plain FFN whose width the config calls ``hidden_dim``
DISTILBERT_LAYER = LayerSurgery(qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                                attention_output="attention.out_lin", ffn_input="ffn.lin1", ffn_output="ffn.lin2",
                                ffn_width="hidden_dim")

#: DeBERTa-v2/v3's block: BERT's layout with q/k/value_proj, and, unless the config shares them, own position
#: key / query projections per head
DEBERTA_V2_LAYER = LayerSurgery(
    qkv=("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
    optional_heads=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
    attention_output="attention.output.dense", ffn_input="intermediate.dense", ffn_output="output.dense",
    attention_module="attention.self", head_count_attrs=("num_attention_heads",), width_attrs=("all_head_size",))

#: MPNet's block: BERT's layout under attention.attn (q, k, v, o); the relative-position bias is computed once from
#: one table shared by every block and passed to each block's attention as ``position_bias``
MPNET_LAYER = LayerSurgery(
    qkv=("attention.attn.q", "attention.attn.k", "attention.attn.v"), attention_output="attention.attn.o",
    ffn_input="intermediate.dense", ffn_output="output.dense", attention_module="attention.attn",
    head_count_attrs=("num_attention_heads",), width_attrs=("all_head_size",), shared_head_bias_arg="position_bias")

#: MobileBERT's bottleneck block: attention at the inner width (``true_hidden_size``; value from the inner or the
#: outer width), and ``num_feedforward_networks`` FFNs in a row: ``intermediate``/``output`` and ``ffn.<i>``
MOBILEBERT_LAYER = LayerSurgery(
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
    attention_output="attention.output.dense", ffn_input="intermediate.dense", ffn_output="output.dense",
    attention_module="attention.self", head_count_attrs=("num_attention_heads",), width_attrs=("all_head_size",),
    head_width="true_hidden_size", ffn_stack="ffn", ffn_count="num_feedforward_networks")
