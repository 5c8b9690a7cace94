"""ONNX (`.onnx`) for onnxruntime: fp32, and int8 (weights int8, activations quantized as it runs).

Export uses the TorchScript-based ``torch.onnx.export`` (``dynamo=False``): it
handles HF BERT-style encoders with static shapes without extra packages
(the dynamo exporter needs ``onnxscript``). Two int8 schemes, chosen by ``scheme``:

- ``blockwise`` (default): MatMul weights int8 in blocks of ``block_size`` along the input dimension
  (``MatMulNBits``, 8 bits), and at run time each row of activations is quantized per block too
  (``accuracy_level`` 4: int8 multiply-adds). Fine-grained scales keep the outlier features of BERT-style
  hidden states from swamping the rest, so short texts (the worst case: few tokens to average) stay within
  the gate on the kernel families measured so far (AVX2, ARM dot product; AVX-512 VNNI not yet).
- ``dynamic``: ``quantize_dynamic``'s MatMulInteger, weights per output channel, activations per tensor per
  call: the fastest x86 kernels, but one scale per activation tensor loses short texts, and AVX2-only x86
  (``vpmaddubsw``) saturates int8 weights.

Both store the embedding tables int8 (Gather, one scale per table).

``fuse=bert`` (default ``none`` until measured on a quiet host and on more model families) first runs
onnxruntime's BERT fusion (``onnxruntime.transformers.optimizer``) on the fp32 graph: EmbedLayerNormalization, one Attention per layer, SkipLayerNormalization, BiasGelu (com.microsoft ops that
plain onnxruntime runs); the quantizers then see the fused graph. With ``blockwise`` the Attention's packed Q/K/V
weight stays float (MatMulNBits covers MatMul only), which measured both slightly faster and more faithful than
the unfused blockwise graph on MiniLM (benchmarks/results/fused_int8_<kernel family>.md); ``dynamic`` makes it
QAttention.
A model the fusion does not recognise keeps the ops it did fuse (the counts are in the manifest).
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from device_bench.manifest import Shapes

from .base import ExportContext, ExportResult, Target, TargetError, TargetOption, register
from .fallback import FLOAT_OPS, FLOAT_OPS_OPTION, FloatFallback, GroupError, group_ops, output_mse, resolve_float_ops

OPSET = 17
RUNTIME_REQUIREMENT = "onnxruntime>=1.17"
#: 8-bit MatMulNBits runs from onnxruntime 1.22 (1.20.1 and 1.21.1 refuse the model at load; probed)
BLOCKWISE_RUNTIME_REQUIREMENT = "onnxruntime>=1.22"
#: int8 multiply-adds with activations quantized per block of each row (MatMulNBits ``accuracy_level``)
BLOCKWISE_ACCURACY_LEVEL = 4


FUSIONS = ("bert", "none")
#: the fused ops onnxruntime's BERT fusion reports, recorded in the manifest (counts)
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu", "LayerNormalization")


STATIC_OPTION = TargetOption(bool, False, "fixed [1, seq_len] inputs (for NNAPI/QNN/CoreML execution providers) "
                             "instead of a dynamic sequence axis")


def export_onnx(ctx: ExportContext, out_path: Path, output_name: str, static: bool = False) -> Shapes:
    """fp32 ONNX of ``ctx.wrapper`` with int32 inputs named like the bundle's; the sequence axis is dynamic
    (onnxruntime runs any length up to seq_len at full speed) unless ``static``."""
    import torch

    static = static or not ctx.buckets  # --buckets none: one static shape on every target, as before
    dynamic_axes = None if static else {name: {1: "sequence"} for name in ctx.input_names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                ctx.wrapper.eval(), ctx.example_tensors(), str(out_path),
                input_names=list(ctx.input_names), output_names=[output_name],
                opset_version=OPSET, dynamo=False, do_constant_folding=True, dynamic_axes=dynamic_axes,
            )
        except Exception as exc:
            raise TargetError(f"torch.onnx.export failed: {_first_line(exc)}") from exc
    if static:
        return Shapes(buckets=[ctx.seq_len], entry_points={str(ctx.seq_len): "main"},
                      how="one static shape (static=true or --buckets none: for execution providers that need "
                          "fixed shapes)")
    return Shapes(dynamic={"min": 1, "max": ctx.seq_len},
                  how="dynamic sequence axis (torch.onnx.export dynamic_axes); onnxruntime runs the real length")


def fuse_bert(source: Path, out_path: Path, hf_config: Any) -> dict[str, int]:
    """onnxruntime's BERT fusion of the fp32 graph ``source`` into ``out_path``; returns the fused op counts.
    Fused ops with weights get their layer's module path as name, so ``float_ops`` patterns and the precision
    fallback's per-layer groups (``layer.N``, ``embeddings``) reach them as they reach the unfused MatMuls."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = getattr(hf_config, "num_attention_heads", 0), getattr(hf_config, "hidden_size", 0)
    try:
        with _quiet_quantizers():
            optimized = optimize_model(str(source), model_type="bert", num_heads=int(heads or 0),
                                       hidden_size=int(hidden or 0))
    except Exception as exc:
        raise TargetError(f"onnxruntime BERT fusion failed: {_first_line(exc)}") from exc
    model = optimized.model
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        if node.op_type == "EmbedLayerNormalization":
            node.name = f"/embeddings/{node.op_type}"
        elif node.op_type in ("Attention", "MultiHeadAttention"):
            # named after the layer's attention output projection, the MatMul its output feeds
            scoped = [c.name for c in consumers.get(node.output[0], []) if "/" in c.name]
            if scoped:
                node.name = f"{scoped[0].rsplit('/', 3)[0]}/self/{node.op_type}"
    onnx.save(model, str(out_path))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in FUSED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _opsets(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}


class _Onnx(Target):
    runtime = "onnxruntime"
    suffix = ".onnx"
    runtime_requirement = RUNTIME_REQUIREMENT
    requires = ("onnx", "onnxruntime")


@register
class OnnxFp32(_Onnx):
    name = "onnx-fp32"
    description = "ONNX fp32 for onnxruntime (comparison baseline)"

    options = {"static": STATIC_OPTION}

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        shapes = export_onnx(ctx, out_path, ctx.output_name, bool(ctx.options.get("static", False)))
        return ExportResult(precision="fp32", details={"exporter": "torch.onnx (torchscript)", "opsets": _opsets(out_path)},
                            shapes=shapes)


#: ops each int8 scheme quantizes in these graphs, and the input holding their constant weight
_WEIGHT_INPUT = {"dynamic": {"MatMul": 1, "Gemm": 1, "Gather": 0, "Attention": 1, "EmbedLayerNormalization": 2},
                 "blockwise": {"MatMul": 1, "Gather": 0, "EmbedLayerNormalization": 2}}
SCHEMES = tuple(_WEIGHT_INPUT)


def quantizable_nodes(path: Path, scheme: str = "dynamic") -> list[str]:
    """Names of the nodes ``scheme`` makes int8 (MatMul, and for ``dynamic`` Gemm, with a constant float weight;
    embedding Gathers of a float table; in a fused graph the EmbedLayerNormalization and, for ``dynamic``, the
    Attention), in graph order, as the quantizers see them: the names ``float_ops``
    patterns match and ``nodes_to_exclude`` takes (dynamic quantization first rewrites a Gemm ``X`` into
    ``X_MatMul`` + ``X_Add``; the blockwise quantizer leaves Gemm, a 2-D head, in float)."""
    import onnx

    model = onnx.load(str(path))
    floats = {i.name for i in model.graph.initializer
              if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    weight_input = _WEIGHT_INPUT[scheme]
    return [f"{node.name}_MatMul" if node.op_type == "Gemm" else node.name for node in model.graph.node
            if (slot := weight_input.get(node.op_type)) is not None and len(node.input) > slot
            and node.input[slot] in floats]


def _op_type(path: Path, node_name: str) -> str:
    """The op type of ``node_name`` in ``path`` (``X_MatMul``, dynamic quantization's rewrite of Gemm ``X``: MatMul)."""
    import onnx

    types = {n.name: n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return types.get(node_name, "MatMul")


@contextmanager
def _quiet_quantizers():
    """onnxruntime's quantizers log a line per node at INFO (thousands for a base-size model)."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


#: MatMulConstBOnly: activations times activations stay float; DefaultTensorType: the fused com.microsoft ops
#: carry no type information the quantizer can read (it refuses the fused graph without it)
_QUANT_EXTRA: dict[str, Any] = {"MatMulConstBOnly": True, "DefaultTensorType": 1}  # onnx.TensorProto.FLOAT


@register
class OnnxInt8(_Onnx, FloatFallback):
    """The fp32 export is kept in the pack's work folder (gone with it) and reused by every quantization."""

    name = "onnx-int8"
    description = "ONNX int8 for onnxruntime (MatMul weights int8 in blocks of 32, activations per block)"
    requires = ("onnx", "onnxruntime", "onnx_ir")  # onnx_ir: the MatMulNBits quantizer's own import
    options = {"scheme": TargetOption(str, "blockwise", "blockwise: MatMulNBits, weights and activations int8 per "
                                      "block of block_size (onnxruntime>=1.22; holds short texts on AVX2 and ARM "
                                      "kernels); dynamic: MatMulInteger, activations per tensor (fastest x86 kernels, "
                                      "less faithful)", choices=SCHEMES),
               "block_size": TargetOption(int, 32, "scheme=blockwise: weights (and activations) per block of this "
                                          "many input features", choices=(16, 32, 64, 128, 256)),
               "per_channel": TargetOption(bool, True, "scheme=dynamic: int8 weights per output channel (false: per "
                                           "tensor)"),
               "weights": TargetOption(str, "int8", "scheme=dynamic: int8: signed weights (u8s8 kernels: fastest on "
                                       "AVX-512 VNNI and ARM, but AVX2-only x86 saturates them); uint8: u8u8 "
                                       "kernels, no saturation on any x86", choices=("int8", "uint8")),
               "fuse": TargetOption(str, "none", "bert: onnxruntime's BERT fusion first (EmbedLayerNormalization, "
                                    "Attention, SkipLayerNormalization, BiasGelu; blockwise leaves the fused Q/K/V "
                                    "weight float); none: the graph as exported", choices=FUSIONS),
               "static": STATIC_OPTION, FLOAT_OPS: FLOAT_OPS_OPTION}

    @staticmethod
    def _scheme(ctx: ExportContext) -> str:
        return str(ctx.options.get("scheme", "blockwise"))

    def _quantize(self, ctx: ExportContext, float_path: Path, out_path: Path, exclude: list[str]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        scheme = self._scheme(ctx)
        try:
            with _quiet_quantizers():
                if scheme == "dynamic":
                    weights = QuantType.QUInt8 if ctx.options.get("weights", "int8") == "uint8" else QuantType.QInt8
                    quantize_dynamic(str(float_path), str(out_path), weight_type=weights,
                                     per_channel=bool(ctx.options.get("per_channel", True)),
                                     nodes_to_exclude=list(exclude), extra_options=_QUANT_EXTRA)
                    return
                import onnx
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                matmuls = out_path.with_suffix(".matmul8.onnx")
                try:
                    quantizer = MatMulNBitsQuantizer(onnx.load(str(float_path)), bits=8,
                                                     block_size=int(ctx.options.get("block_size", 32)),
                                                     is_symmetric=True, accuracy_level=BLOCKWISE_ACCURACY_LEVEL,
                                                     nodes_to_exclude=list(exclude))
                    quantizer.process()
                    quantizer.model.save_model_to_file(str(matmuls))
                    # the embedding tables: int8 Gathers (or the fused EmbedLayerNormalization), one scale per
                    # table (MatMulNBits takes MatMul only)
                    quantize_dynamic(str(matmuls), str(out_path), weight_type=QuantType.QInt8, per_channel=False,
                                     op_types_to_quantize=["Gather", "EmbedLayerNormalization"],
                                     nodes_to_exclude=list(exclude), extra_options=_QUANT_EXTRA)
                finally:
                    matmuls.unlink(missing_ok=True)
        except Exception as exc:
            raise TargetError(f"onnxruntime {scheme} int8 quantization failed: {_first_line(exc)}") from exc

    @staticmethod
    def _fuse(ctx: ExportContext) -> str:
        return str(ctx.options.get("fuse", "none"))

    def _fp32(self, ctx: ExportContext) -> tuple[Path, Shapes]:
        """The fp32 graph every quantization of this pack starts from (fused with ``fuse=bert``), exported once:
        the precision fallback re-quantizes it per step and per op group (a base-size model's export takes a
        minute)."""
        static = bool(ctx.options.get("static", False))
        float_path = ctx.workdir / f"{self.name}.fp32{'.static' if static else ''}.onnx"
        exported = self.__dict__.setdefault("_fp32_exports", {})  # per instance: one pack's target
        if float_path not in exported or not float_path.is_file():
            exported[float_path] = export_onnx(ctx, float_path, ctx.output_name, static)
        if self._fuse(ctx) == "none":
            return float_path, exported[float_path]
        fused_path = float_path.with_suffix(".fused.onnx")
        fused = self.__dict__.setdefault("_fusion_counts", {})
        if fused_path not in fused or not fused_path.is_file():
            fused[fused_path] = fuse_bert(float_path, fused_path, ctx.hf_model.config)
        return fused_path, exported[float_path]

    def _fused_ops(self, ctx: ExportContext) -> dict[str, int]:
        """The op counts the BERT fusion reported for this pack's graph (empty with ``fuse=none``)."""
        float_path, _ = self._fp32(ctx)
        return dict(self.__dict__.get("_fusion_counts", {}).get(float_path, {}))

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        scheme = self._scheme(ctx)
        per_channel = bool(ctx.options.get("per_channel", True))
        float_path, shapes = self._fp32(ctx)
        ops = quantizable_nodes(float_path, scheme)
        kept = resolve_float_ops(ctx.options.get(FLOAT_OPS), ops, self.name)
        self._quantize(ctx, float_path, out_path, kept)
        fp32_size = float_path.stat().st_size
        fused_ops = self._fused_ops(ctx)
        details = {"exporter": "torch.onnx (torchscript)", "opsets": _opsets(out_path), "scheme": scheme,
                   "quantized_ops": sorted({_op_type(float_path, op) for op in ops}), "fp32_onnx_size_bytes": fp32_size,
                   "float_ops": kept, "int8_op_count": len(ops) - len(kept), "fuse": self._fuse(ctx),
                   "fused_ops": fused_ops}
        if scheme == "dynamic":
            details.update(per_channel=per_channel, weights=ctx.options.get("weights", "int8"))
            notes = [f"onnxruntime quantize_dynamic, {ctx.options.get('weights', 'int8')} weights, "
                     f"{'per-channel' if per_channel else 'per-tensor'}, activations per tensor"]
        else:
            block = int(ctx.options.get("block_size", 32))
            details.update(block_size=block, accuracy_level=BLOCKWISE_ACCURACY_LEVEL)
            notes = [f"onnxruntime MatMulNBits 8-bit, weights and activations int8 per block of {block}; "
                     "embedding tables int8"]
        if fused_ops:
            notes.append("onnxruntime BERT fusion: " + ", ".join(f"{n} {op}" for op, n in fused_ops.items()))
            if scheme == "blockwise" and fused_ops.get("Attention"):
                notes.append("the fused Attention's packed Q/K/V weights stay float (MatMulNBits takes MatMul only)")
        elif self._fuse(ctx) != "none":
            notes.append("onnxruntime BERT fusion recognised nothing in this graph (left as exported)")
        if kept:
            notes.append(f"{len(kept)} of {len(ops)} quantizable ops kept in float ({FLOAT_OPS})")
        return ExportResult(
            precision="dynamic-int8",
            notes=notes,
            details=details,
            shapes=shapes,
            runtime_requirement=BLOCKWISE_RUNTIME_REQUIREMENT if scheme == "blockwise" else None,
        )

    def group_errors(self, ctx: ExportContext, samples: int) -> list[GroupError]:
        """Per group: quantize only its nodes (``quantize_dynamic`` excluding every other node) and compare the
        output with the fp32 graph's on onnxruntime."""
        from device_bench.shapes import to_input_width

        float_path, shapes = self._fp32(ctx)
        rows = ctx.calibration_samples(samples)

        def outputs(path: Path) -> np.ndarray:
            runner = self.load(path, threads=1, shapes=shapes)
            return np.concatenate([to_input_width(runner.run(row), ctx.seq_len) for row in rows], axis=0)

        reference = outputs(float_path)
        ops = quantizable_nodes(float_path, self._scheme(ctx))
        errors = []
        partial = ctx.workdir / f"{self.name}.rank.int8.onnx"
        for group, members in group_ops(ops).items():
            self._quantize(ctx, float_path, partial, [op for op in ops if op not in members])
            errors.append(GroupError(group, members, output_mse(reference, outputs(partial)),
                                     "output MSE against fp32 with only this group int8 (onnxruntime)"))
        partial.unlink(missing_ok=True)
        return errors
