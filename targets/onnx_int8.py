"""ONNX (`.onnx`) for onnxruntime: fp32, and dynamic int8 (weights int8, activations quantized per call).

Export uses the TorchScript-based ``torch.onnx.export`` (``dynamo=False``): it
handles HF BERT-style encoders with static shapes without extra packages
(the dynamo exporter needs ``onnxscript``). ``quantize_dynamic`` then stores
MatMul weights as int8; per-channel scales are the default because they keep
MiniLM embeddings closer to fp32 than per-tensor ones.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from device_bench.manifest import Shapes

from .base import ExportContext, ExportResult, Target, TargetError, TargetOption, register
from .fallback import FLOAT_OPS, FLOAT_OPS_OPTION, FloatFallback, GroupError, group_ops, output_mse, resolve_float_ops

OPSET = 17
RUNTIME_REQUIREMENT = "onnxruntime>=1.17"


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


#: ops ``quantize_dynamic`` quantizes in these graphs, and the input holding their constant weight
_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Gather": 0}


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes ``quantize_dynamic`` makes int8 (MatMul/Gemm with a constant float weight, embedding
    Gathers of a float table), in graph order, as the quantizer sees them: the names ``float_ops`` patterns match
    and ``nodes_to_exclude`` takes (dynamic quantization first rewrites a Gemm ``X`` into ``X_MatMul`` + ``X_Add``)."""
    import onnx

    model = onnx.load(str(path))
    floats = {i.name for i in model.graph.initializer
              if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    return [f"{node.name}_MatMul" if node.op_type == "Gemm" else node.name for node in model.graph.node
            if (slot := _WEIGHT_INPUT.get(node.op_type)) is not None and len(node.input) > slot
            and node.input[slot] in floats]


@register
class OnnxInt8(_Onnx, FloatFallback):
    """The fp32 export is kept in the pack's work folder (gone with it) and reused by every quantization."""

    name = "onnx-int8"
    description = "ONNX dynamic int8 (MatMul weights int8 per-channel) for onnxruntime"
    options = {"per_channel": TargetOption(bool, True, "int8 weights per output channel (false: per tensor)"),
               "weights": TargetOption(str, "int8", "int8: signed weights (u8s8 kernels: fastest on AVX-512 VNNI and "
                                       "ARM, but AVX2-only x86 saturates them); uint8: u8u8 kernels, no saturation on "
                                       "any x86", choices=("int8", "uint8")),
               "static": STATIC_OPTION, FLOAT_OPS: FLOAT_OPS_OPTION}

    def _quantize(self, ctx: ExportContext, float_path: Path, out_path: Path, exclude: list[str]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        weights = QuantType.QUInt8 if ctx.options.get("weights", "int8") == "uint8" else QuantType.QInt8
        try:
            quantize_dynamic(str(float_path), str(out_path), weight_type=weights,
                             per_channel=bool(ctx.options.get("per_channel", True)),
                             nodes_to_exclude=list(exclude), extra_options={"MatMulConstBOnly": True})
        except Exception as exc:
            raise TargetError(f"onnxruntime quantize_dynamic failed: {_first_line(exc)}") from exc

    def _fp32(self, ctx: ExportContext) -> tuple[Path, Shapes]:
        """The fp32 graph every quantization of this pack starts from, exported once: the precision fallback
        re-quantizes it per step and per op group (a base-size model's export takes a minute)."""
        static = bool(ctx.options.get("static", False))
        float_path = ctx.workdir / f"{self.name}.fp32{'.static' if static else ''}.onnx"
        exported = self.__dict__.setdefault("_fp32_exports", {})  # per instance: one pack's target
        if float_path not in exported or not float_path.is_file():
            exported[float_path] = export_onnx(ctx, float_path, ctx.output_name, static)
        return float_path, exported[float_path]

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        per_channel = bool(ctx.options.get("per_channel", True))
        float_path, shapes = self._fp32(ctx)
        ops = quantizable_nodes(float_path)
        kept = resolve_float_ops(ctx.options.get(FLOAT_OPS), ops, self.name)
        self._quantize(ctx, float_path, out_path, kept)
        fp32_size = float_path.stat().st_size
        notes = [f"onnxruntime quantize_dynamic, {ctx.options.get('weights', 'int8')} weights, "
                 f"{'per-channel' if per_channel else 'per-tensor'}"]
        if kept:
            notes.append(f"{len(kept)} of {len(ops)} quantizable ops kept in float ({FLOAT_OPS})")
        return ExportResult(
            precision="dynamic-int8",
            notes=notes,
            details={"exporter": "torch.onnx (torchscript)", "opsets": _opsets(out_path), "per_channel": per_channel,
                     "weights": ctx.options.get("weights", "int8"),
                     "quantized_ops": ["MatMul"], "fp32_onnx_size_bytes": fp32_size,
                     "float_ops": kept, "int8_op_count": len(ops) - len(kept)},
            shapes=shapes,
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
        ops = quantizable_nodes(float_path)
        errors = []
        partial = ctx.workdir / f"{self.name}.rank.int8.onnx"
        for group, members in group_ops(ops).items():
            self._quantize(ctx, float_path, partial, [op for op in ops if op not in members])
            errors.append(GroupError(group, members, output_mse(reference, outputs(partial)),
                                     "output MSE against fp32 with only this group int8 (onnxruntime)"))
        partial.unlink(missing_ok=True)
        return errors
