"""TorchScript mobile (`.ptl`) for the PyTorch Lite Interpreter.

`torch.jit.trace` + dynamic int8 Linear + `_save_for_lite_interpreter`.
Per-channel weight scales with the qnnpack engine (what ARM devices run)
keep MiniLM embeddings at cosine ≈ 0.99; the default per-tensor qconfig
measured 0.93–0.97, so it is not used. qnnpack quantizes each Linear's input
with one scale per tensor, which BERT's outlier features stretch: short texts
lost up to 0.03 cosine (MiniLM, worst of 220 unseen texts 0.968). So by default
(``rotation=hadamard``) every Linear's input is first rotated by a block-diagonal
Hadamard transform (orthogonal: exact in float; the inverse folded into the
weights before they are quantized), which spreads the outliers over their
block: worst unseen text 0.997.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

from device_bench.manifest import Shapes

from .base import ExportContext, ExportResult, Target, TargetError, TargetOption, register

#: the largest Hadamard block: enough to spread an outlier feature, cheap next to the Linear it precedes
ROTATION_BLOCK = 64


def _hadamard(size: int):
    """The normalized (orthogonal, symmetric) Sylvester Hadamard matrix of a power-of-two ``size``."""
    import torch

    matrix = torch.ones(1, 1)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix / size ** 0.5


def rotate_linear_inputs(module, max_block: int = ROTATION_BLOCK) -> int:
    """Replace, in place, every ``nn.Linear`` whose input width has a power-of-two factor of at least 2 by one
    that rotates its input per block (``x H``) and holds ``W H`` as its weight: the same function in float
    (``W H H x = W x``), with a flatter input for int8. Returns how many were rotated."""
    import torch

    class RotatedLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear, block: int) -> None:
            super().__init__()
            self.block, self.groups = block, linear.in_features // block
            self.register_buffer("hadamard", _hadamard(block))
            self.linear = copy.deepcopy(linear)
            with torch.no_grad():
                weight = linear.weight.unflatten(1, (self.groups, block)) @ self.hadamard
                self.linear.weight.copy_(weight.flatten(1))

        def forward(self, x):
            return self.linear((x.unflatten(-1, (self.groups, self.block)) @ self.hadamard).flatten(-2))

    rotated = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            block = 1
            while child.in_features % (block * 2) == 0 and block * 2 <= max_block:
                block *= 2
            if block > 1:
                setattr(parent, name, RotatedLinear(child, block))
                rotated += 1
    return rotated


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
            module = copy.deepcopy(ctx.wrapper)
            if ctx.options.get("rotation", "hadamard") == "hadamard":
                rotated = rotate_linear_inputs(module)
                details.update(rotation="hadamard", rotation_block=ROTATION_BLOCK, rotated_linears=rotated)
                notes.append(f"{rotated} Linear inputs Hadamard-rotated (blocks of up to {ROTATION_BLOCK}; exact in "
                             "float, flatter for int8)")
            else:
                details.update(rotation="none")
            try:
                module = torch.ao.quantization.quantize_dynamic(
                    module,
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
    description = "TorchScript Lite Interpreter (.ptl), dynamic int8 Linear, per-channel, qnnpack, Hadamard-rotated inputs"
    quantize = True
    options = {"rotation": TargetOption(str, "hadamard", "hadamard: rotate each Linear's input per block of up to "
                                        f"{ROTATION_BLOCK} (exact in float) so qnnpack's one activation scale per "
                                        "tensor keeps short texts faithful; none: plain dynamic int8 (fewer ops)",
                                        choices=("hadamard", "none"))}


@register
class TorchScriptMobileFp32(_TorchScriptMobile):
    name = "torchscript-mobile-fp32"
    description = "TorchScript Lite Interpreter (.ptl), fp32 (comparison baseline)"
    quantize = False
