"""ExecuTorch (`.pte`): ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner.

PyTorch's successor to TorchScript mobile. ``executorch`` is optional on the
host (it pulls coremltools, scikit-learn, pandas ...): without it the target
reports itself unavailable through ``requires``. Checked in a throwaway venv:
executorch 1.5.1 (its metadata pins no torch) imports, exports and runs with
torch 2.13.0+cpu.

The export uses the quantization-friendly wrapper of ``tflite_full`` (mask
built by the wrapper, a gather for the embeddings) because HF's own mask
construction does not survive pt2e graph rewrites. The artifact is fp32 with
every supported op delegated to XNNPACK. int8 via pt2e + ``XNNPACKQuantizer``
(dynamic, Linear) was tried with executorch 1.5.1 / torchao 0.18 and does not
lower today: per-channel weights fail in XNNPACK's ``op_linear`` ("Invalid size
of per channel quantization scales"), per-tensor ones leave
``quantized_decomposed`` ops undelegated ("Missing out variants"); so no int8
variant is offered.
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
    leftover = sorted({getattr(n.target, "__name__", str(n.target)) for n in graph.nodes
                       if n.op == "call_function" and "executorch_call_delegate" not in str(n.target)
                       and "getitem" not in str(n.target)})
    program = edge.to_executorch()
    out_path.write_bytes(program.buffer)
    return {"xnnpack_delegates": delegated, "non_delegated_ops": leftover}


class _ExecuTorch(Target):
    """Shared export path (one subclass today: fp32 + XNNPACK)."""

    runtime = "executorch"
    suffix = ".pte"
    runtime_requirement = RUNTIME_REQUIREMENT
    requires = ("executorch",)

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        import torch

        from .tflite_full import quant_friendly_wrapper

        module = quant_friendly_wrapper(ctx, MASK_VALUE)
        args = ctx.example_tensors()
        details: dict = {"exporter": "torch.export", "partitioner": "XnnpackPartitioner", "mask_constant": -MASK_VALUE}
        notes = ["fp32; int8 via pt2e does not lower with executorch 1.5.1 (see targets/executorch.py)"]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                details.update(lower_to_pte(module, args, out_path))
            except Exception as exc:
                raise TargetError(f"ExecuTorch export failed: {_first_line(exc)}") from exc
        return ExportResult(precision="fp32", notes=notes, details=details)


@register
class ExecuTorchXnnpack(_ExecuTorch):
    name = "executorch"
    description = "ExecuTorch .pte, fp32, XNNPACK delegate (needs executorch on host and device)"
