"""TFLite / LiteRT (`.tflite`): litert-torch conversion, ai-edge-quantizer dynamic int8.

The wrapper takes int32 inputs (what LiteRT apps feed) and the model is loaded
with eager attention, which litert-torch lowers cleanly. `dynamic_wi8_afp32`
stores weights as per-channel int8 and computes in float: about 4x smaller
than fp32 with cosine ≈ 0.998 on MiniLM.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from pathlib import Path

from .base import ExportContext, ExportResult, Target, TargetError, register

RUNTIME_REQUIREMENT = "ai-edge-litert>=2.3"


@contextlib.contextmanager
def quiet_converter():
    """The converters print MLIR progress and absl logs; keep the CLI's output readable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    previous = logging.root.level
    logging.root.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            yield sink
    finally:
        logging.root.setLevel(previous)


def convert_fp32(ctx: ExportContext, out_path: Path) -> None:
    import litert_torch

    try:
        with quiet_converter():
            edge_model = litert_torch.convert(ctx.wrapper.eval(), ctx.example_tensors())
            edge_model.export(str(out_path))
    except Exception as exc:
        raise TargetError(f"litert-torch conversion failed: {str(exc).strip().splitlines()[0][:300]}") from exc


class _TFLite(Target):
    runtime = "tflite"
    suffix = ".tflite"
    runtime_requirement = RUNTIME_REQUIREMENT
    requires = ("litert_torch",)


@register
class TFLiteFp32(_TFLite):
    name = "tflite-fp32"
    description = "LiteRT/TFLite fp32 via litert-torch (comparison baseline)"

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        convert_fp32(ctx, out_path)
        return ExportResult(precision="fp32", details={"converter": "litert-torch"})


@register
class TFLiteInt8(_TFLite):
    name = "tflite-int8"
    description = "LiteRT/TFLite dynamic int8 (weights int8 per-channel, float activations) via ai-edge-quantizer"
    requires = ("litert_torch", "ai_edge_quantizer")
    recipe_name = "dynamic_wi8_afp32"

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        from ai_edge_quantizer import quantizer, recipe

        float_path = ctx.workdir / f"{self.name}.fp32.tflite"
        convert_fp32(ctx, float_path)
        try:
            with quiet_converter():
                q = quantizer.Quantizer(str(float_path))
                q.load_quantization_recipe(getattr(recipe, self.recipe_name)())
                result = q.quantize()
                tmp = ctx.workdir / f"{self.name}.q.tflite"
                result.export_model(str(tmp), overwrite=True)
            shutil.move(tmp, out_path)
        except Exception as exc:
            raise TargetError(f"ai-edge-quantizer ({self.recipe_name}) failed: {str(exc).strip().splitlines()[0][:300]}") from exc
        fp32_size = float_path.stat().st_size
        float_path.unlink()
        return ExportResult(
            precision="dynamic-int8",
            notes=[f"ai-edge-quantizer recipe {self.recipe_name}"],
            details={"converter": "litert-torch", "quantizer_recipe": self.recipe_name,
                     "fp32_tflite_size_bytes": fp32_size},
        )
