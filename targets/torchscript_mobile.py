"""TorchScript mobile (`.ptl`) for the PyTorch Lite Interpreter.

`torch.jit.trace` + dynamic int8 Linear + `_save_for_lite_interpreter`.
Per-channel weight scales with the qnnpack engine (what ARM devices run)
keep MiniLM embeddings at cosine ≈ 0.99; the default per-tensor qconfig
measured 0.93–0.97, so it is not used.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

from device_bench.manifest import Shapes

from .base import ExportContext, ExportResult, Target, TargetError, register


def _try_optimize_for_mobile(scripted, notes: list[str], details: dict):
    """optimize_for_mobile needs XNNPACK, absent from some CPU wheels: record, don't crash."""
    try:
        from torch.utils.mobile_optimizer import optimize_for_mobile

        optimized = optimize_for_mobile(scripted)
        details["optimize_for_mobile"] = True
        return optimized
    except Exception as exc:  # the failure reason varies by build
        text = str(exc).strip()
        if "XNNPACK" in text:
            reason = "this torch build has no XNNPACK, which optimize_for_mobile needs"
        else:
            reason = text.splitlines()[0][:200] if text else type(exc).__name__
        notes.append(f"optimize_for_mobile skipped: {reason}")
        details["optimize_for_mobile"] = False
        details["optimize_for_mobile_error"] = reason
        return scripted


class _TorchScriptMobile(Target):
    runtime = "torch-lite"
    suffix = ".ptl"
    runtime_requirement = "torch (Lite Interpreter: PyTorch Mobile / torch>=2.0)"
    requires = ("torch",)
    quantize: bool

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        import torch

        notes: list[str] = []
        details: dict = {}
        module = ctx.wrapper
        if self.quantize:
            engine = "qnnpack" if "qnnpack" in torch.backends.quantized.supported_engines else torch.backends.quantized.engine
            previous = torch.backends.quantized.engine
            torch.backends.quantized.engine = engine
            try:
                module = torch.ao.quantization.quantize_dynamic(
                    copy.deepcopy(ctx.wrapper),
                    {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                    dtype=torch.qint8,
                )
            finally:
                torch.backends.quantized.engine = previous
            details.update(quantized_engine=engine, qconfig="per_channel_dynamic_qconfig", quantized_ops=["Linear"])
            notes.append("embeddings and layer norms stay fp32; Linear weights int8 per-channel")
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(module, ctx.example_tensors(), check_trace=False, strict=False)
                traced = torch.jit.freeze(traced.eval()) if not self.quantize else traced
            except Exception as exc:
                raise TargetError(f"torch.jit.trace failed: {str(exc).splitlines()[0]}") from exc
            traced = _try_optimize_for_mobile(traced, notes, details)
            traced._save_for_lite_interpreter(str(out_path))
        from torch.jit.mobile import _get_model_bytecode_version

        details["bytecode_version"] = int(_get_model_bytecode_version(str(out_path)))
        if ctx.buckets:  # the pack's parity per length (spot lengths included) verifies that any length runs
            shapes = Shapes(dynamic={"min": 2, "max": ctx.seq_len},
                            how="torch.jit.trace records the sequence length as a size op, so the Lite Interpreter "
                                "module runs any length; checked at each parity length")
        else:
            shapes = Shapes(buckets=[ctx.seq_len], entry_points={str(ctx.seq_len): "forward"}, how="one static shape")
        return ExportResult(precision="dynamic-int8" if self.quantize else "fp32", notes=notes, details=details,
                            shapes=shapes)


@register
class TorchScriptMobileInt8(_TorchScriptMobile):
    name = "torchscript-mobile"
    description = "TorchScript Lite Interpreter (.ptl), dynamic int8 Linear, per-channel, qnnpack"
    quantize = True


@register
class TorchScriptMobileFp32(_TorchScriptMobile):
    name = "torchscript-mobile-fp32"
    description = "TorchScript Lite Interpreter (.ptl), fp32 (comparison baseline)"
    quantize = False
