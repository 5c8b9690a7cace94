"""ExecuTorch (`.pte`): ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner.

PyTorch's successor to TorchScript mobile. ``executorch`` is optional on the
host (it pulls coremltools, scikit-learn, pandas ...): without it the target
reports itself unavailable through ``requires``. Checked here: executorch 1.5.1
(no torch pin in its metadata) imports, exports and runs with torch 2.13.0+cpu.

The export uses the quantization-friendly wrapper of ``tflite_full`` (the mask
built by the wrapper, a gather for the embeddings): HF's mask construction
indexes with int tensors that pt2e's ``prepare``/``convert`` leave in a dtype
``aten.index`` rejects. ``executorch-int8`` quantizes the Linear layers with
pt2e + ``XNNPACKQuantizer`` (dynamic int8 activations, per-channel int8
weights), the XNNPACK flow for transformers; no calibration is needed.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .base import ExportContext, ExportResult, Target, TargetError, register

RUNTIME_REQUIREMENT = "executorch>=1.5"
MASK_VALUE = 1e4  # float graph: any large constant is exact; parity confirms it


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def lower_to_pte(module, example_args: tuple, out_path: Path) -> dict:
    """Export, lower to XNNPACK and write the program; returns facts about the delegation."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(module, example_args, strict=False)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph_module.graph
    delegated = sum(1 for n in graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    leftover = sorted({str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                       for n in graph.nodes if n.op == "call_function" and "executorch_call_delegate" not in str(n.target)
                       and "getitem" not in str(n.target)})
    program = edge.to_executorch()
    out_path.write_bytes(program.buffer)
    return {"xnnpack_delegates": delegated, "non_delegated_ops": leftover}


class _ExecuTorch(Target):
    runtime = "executorch"
    suffix = ".pte"
    runtime_requirement = RUNTIME_REQUIREMENT
    requires = ("executorch",)
    quantize: bool

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        import torch

        from .tflite_full import quant_friendly_wrapper

        module = quant_friendly_wrapper(ctx, MASK_VALUE)
        args = ctx.example_tensors()
        details: dict = {"exporter": "torch.export", "partitioner": "XnnpackPartitioner", "mask_constant": -MASK_VALUE}
        notes: list[str] = []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if self.quantize:
                    module = _quantize_linear_dynamic(module, args)
                    details.update(quantizer="pt2e XNNPACKQuantizer", quantized_ops=["Linear"],
                                   weights="int8 per-channel", activations="int8 dynamic")
                    notes.append("Linear layers int8 (dynamic activations, per-channel weights); the rest fp32")
                details.update(lower_to_pte(module, args, out_path))
            except TargetError:
                raise
            except Exception as exc:
                raise TargetError(f"ExecuTorch export failed: {_first_line(exc)}") from exc
        return ExportResult(precision="dynamic-int8" if self.quantize else "fp32", notes=notes, details=details)


def _quantize_linear_dynamic(module, args: tuple):
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    graph = torch.export.export(module, args, strict=False).module()
    return convert_pt2e(prepare_pt2e(graph, quantizer))


@register
class ExecuTorchInt8(_ExecuTorch):
    name = "executorch"
    description = "ExecuTorch .pte, XNNPACK delegate, dynamic int8 Linear (pt2e)"
    requires = ("executorch", "torchao")
    quantize = True


@register
class ExecuTorchFp32(_ExecuTorch):
    name = "executorch-fp32"
    description = "ExecuTorch .pte, XNNPACK delegate, fp32 (comparison baseline)"
    quantize = False
