"""ExecuTorch (`.pte`): ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner.

PyTorch's successor to TorchScript mobile. ``executorch`` is optional on the
host (it pulls coremltools, scikit-learn, pandas ...): without it the targets
report themselves unavailable through ``requires``. Checked in a throwaway venv:
executorch 1.5.1 (its metadata pins no torch) imports, exports and runs with
torch 2.13.0+cpu and torchao 0.18.0.

The export uses the quantization-friendly wrapper of ``tflite_full`` (mask
built by the wrapper, a gather for the embeddings) because HF's own mask
construction does not survive pt2e graph rewrites. Two targets:

* ``executorch``: fp32, every supported op delegated to XNNPACK.
* ``executorch-int8``: the ExecuTorch/XNNPACK recipe for transformers, pt2e +
  ``XNNPACKQuantizer`` with ``get_symmetric_quantization_config(is_per_channel=True,
  is_dynamic=True)``: every ``aten.linear`` (encoder, pooler, classifier) gets
  int8 per-output-channel symmetric weights and int8 activations quantized at
  run time (per tensor, asymmetric); the dynamic config annotates nothing else,
  so embeddings, LayerNorm, softmax and the attention matmuls stay fp32. All
  quantize/dequantize ops end up inside the XNNPACK delegates (the fp32 and
  int8 programs leave the same ops undelegated) and the ``.pte`` stores the
  Linear weights as int8.

The prepared graph must be run once before ``convert_pt2e``: dynamic
activations need no calibration, but the weights' ``PerChannelMinMaxObserver``
only records a weight when the forward runs. An earlier attempt skipped that
call; ``convert_pt2e`` then folds an unobserved observer into a scale of shape
``[1]``, and XNNPACK's lowering rejects it in ``backends/xnnpack/operators/
quant_params.py`` ("Invalid size of per channel quantization scales, axis: 0,
scale size: torch.Size([1]), tensor shape: torch.Size([64, 64])"), which was
misread as an executorch limitation. One forward on the example input fixes it.

``executorch-int8`` takes the precision fallback: its ops are the wrapper's Linear modules, named by module path
with "/" between modules (``model/encoder/layer.3/attention/self/query``); ``float_ops`` keeps the matching ones
out of the quantizer (its filter function), and ``group_errors`` quantizes one group
(a layer, the embeddings, the head) at a time in the converted pt2e graph and compares it with fp32.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from device_bench.manifest import Shapes

from .base import ExportContext, ExportResult, Target, TargetError, register
from .fallback import FLOAT_OPS, FLOAT_OPS_OPTION, FloatFallback, GroupError, group_ops, output_mse, resolve_float_ops

RUNTIME_REQUIREMENT = "executorch>=1.5"
MASK_VALUE = 1e4  # float graph: any large constant is exact; parity confirms it


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def sequence_dims(n_inputs: int, max_len: int | None):
    """``dynamic_shapes`` for torch.export: a bounded sequence dimension shared by every input, or None."""
    import torch

    if max_len is None:
        return None
    seq = torch.export.Dim("seq", min=2, max=max_len)
    return tuple({1: seq} for _ in range(n_inputs))


def lower_to_pte(module, example_args: tuple | dict[str, tuple], out_path: Path, max_len: int | None = None) -> dict:
    """Export, lower to XNNPACK and write the program; returns facts about the delegation.

    ``example_args`` is one tuple (method ``forward``; its sequence dimension dynamic up to ``max_len`` when
    given) or a dict method name -> tuple (one static method per bucket)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    methods = example_args if isinstance(example_args, dict) else {"forward": example_args}
    exported = {name: torch.export.export(module, args, strict=False,
                                          dynamic_shapes=sequence_dims(len(args), max_len if name == "forward" else None))
                for name, args in methods.items()}
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program(next(iter(methods))).graph_module.graph
    delegated = sum(1 for n in graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    leftover = sorted({getattr(n.target, "__name__", str(n.target)) for n in graph.nodes
                       if n.op == "call_function" and "executorch_call_delegate" not in str(n.target)
                       and "getitem" not in str(n.target)})
    program = edge.to_executorch()
    out_path.write_bytes(program.buffer)
    return {"xnnpack_delegates": delegated, "non_delegated_ops": leftover}


def linear_ops(module) -> list[str]:
    """The op names of a module's Linear layers, in module order: the module path with '/' between modules and a
    list item joined to its list (``layer.3``), the form ``targets.fallback.op_group`` groups by."""
    from torch import nn

    def op_name(path: str) -> str:
        parts: list[str] = []
        for part in path.split("."):
            if part.isdigit() and parts:
                parts[-1] = f"{parts[-1]}.{part}"
            else:
                parts.append(part)
        return "/".join(parts)

    return [op_name(name) for name, m in module.named_modules() if isinstance(m, nn.Linear)]


def _module_path(op: str) -> str:
    return op.replace("/", ".")


def quantize_linear_dynamic(module, example_args: tuple, max_len: int | None = None, float_ops: list[str] = ()):
    """pt2e dynamic int8 for every Linear (per-channel weights) but those named in ``float_ops`` (``linear_ops``
    names); returns the converted graph module and how many Linear weights were quantized. ``max_len``: keep the
    sequence dimension dynamic up to it."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    if float_ops:  # set_module_name(name, None) is refused ("not supported yet"): a filter leaves them out
        from torchao.quantization.pt2e.quantizer import get_module_name_filter

        in_float = [get_module_name_filter(_module_path(op)) for op in float_ops]
        quantizer.set_filter_function(lambda node: not any(f(node) for f in in_float))
    exported = torch.export.export(module, example_args, strict=False,
                                   dynamic_shapes=sequence_dims(len(example_args), max_len))
    prepared = prepare_pt2e(exported.module(), quantizer)
    prepared(*example_args)  # the weight observers record the weights here; without it the scales are [1]
    converted = convert_pt2e(prepared)
    n_weights = sum(1 for n in converted.graph.nodes
                    if n.op == "call_function" and "dequantize_per_channel" in str(n.target))
    return converted, n_weights


class _ExecuTorch(Target):
    """Shared export path: fp32, or dynamic int8 Linear layers; both delegated to XNNPACK."""

    runtime = "executorch"
    suffix = ".pte"
    runtime_requirement = RUNTIME_REQUIREMENT
    requires = ("executorch",)
    quantize = False

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        from .tflite_full import quant_friendly_wrapper

        details: dict = {"exporter": "torch.export", "partitioner": "XnnpackPartitioner", "mask_constant": -MASK_VALUE}
        if self.quantize:
            notes = ["every Linear int8 (per-channel symmetric weights, activations quantized at run time); "
                     "embeddings, LayerNorm, softmax and attention matmuls fp32"]
            if ctx.options.get(FLOAT_OPS):
                notes.append(f"Linear layers matching {FLOAT_OPS} kept in float")
        else:
            notes = ["fp32; executorch-int8 is the dynamic int8 variant"]
        attempts = [("dynamic", ctx.seq_len)] if ctx.buckets else [("static", None)]
        if ctx.buckets:
            attempts.append(("methods", None))
        failure = None
        for kind, max_len in attempts:
            try:
                shapes = self._export(ctx, quant_friendly_wrapper(ctx, MASK_VALUE), kind, max_len, out_path, details)
                break
            except TargetError:
                raise
            except Exception as exc:
                failure = _first_line(exc)
                if kind == "dynamic":
                    details["dynamic_export_error"] = failure
        else:
            raise TargetError(f"ExecuTorch export failed: {failure}")
        if kind == "methods":
            shapes.how = (f"one method per bucket: the bounded dynamic sequence dimension did not lower "
                          f"({details['dynamic_export_error']})")
        if self.quantize:
            stray = [op for op in details["non_delegated_ops"] if "quantize" in op or "choose_qparams" in op]
            if stray:  # the portable runtime has no out variants for these: the program would not load
                raise TargetError(f"ExecuTorch int8: quantization ops left outside XNNPACK: {', '.join(stray)}")
        return ExportResult(precision="dynamic-int8" if self.quantize else "fp32", notes=notes, details=details,
                            shapes=shapes)

    def _export(self, ctx: ExportContext, module, kind: str, max_len: int | None, out_path: Path,
                details: dict) -> Shapes:
        """One attempt: ``dynamic`` (method forward, any length up to seq_len), ``methods`` (seq<N> per bucket)
        or ``static`` (forward at seq_len)."""
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "methods":
                args: tuple | dict = {f"seq{n}": ctx.example_tensors(n) for n in ctx.buckets}
                example = ctx.example_tensors()
            else:
                args = example = ctx.example_tensors()
            if self.quantize:
                ops = linear_ops(module)
                kept = resolve_float_ops(ctx.options.get(FLOAT_OPS) or (), ops, self.name)
                module, n_weights = quantize_linear_dynamic(module, example, max_len, kept)
                if n_weights == 0:
                    raise TargetError("ExecuTorch int8: the quantizer found no Linear layer to quantize")
                details.update(quantizer="pt2e XNNPACKQuantizer (torchao convert_pt2e)",
                               scheme="dynamic int8: weights int8 symmetric per output channel, "
                                      "activations int8 per tensor at run time",
                               quantized_ops=["linear"], quantized_linear_layers=n_weights, float_ops=kept,
                               int8_op_count=len(ops) - len(kept))
            details.update(lower_to_pte(module, args, out_path, max_len))
        if kind == "dynamic":
            return Shapes(dynamic={"min": 2, "max": ctx.seq_len}, entry_points={"dynamic": "forward"},
                          how="torch.export with Dim('seq', max=seq_len), lowered to XNNPACK: one method, any length")
        if kind == "methods":
            return ctx.static_shapes("seq{}")
        return Shapes(buckets=[ctx.seq_len], entry_points={str(ctx.seq_len): "forward"}, how="one static shape")


@register
class ExecuTorchXnnpack(_ExecuTorch):
    name = "executorch"
    description = "ExecuTorch .pte, fp32, XNNPACK delegate (needs executorch on host and device)"


@register
class ExecuTorchXnnpackInt8(_ExecuTorch, FloatFallback):
    name = "executorch-int8"
    description = ("ExecuTorch .pte, XNNPACK delegate, dynamic int8 Linear layers via pt2e XNNPACKQuantizer "
                   "(needs executorch + torchao on host, executorch on device)")
    requires = ("executorch", "torchao")
    quantize = True
    options = {FLOAT_OPS: FLOAT_OPS_OPTION}

    def group_errors(self, ctx: ExportContext, samples: int) -> list[GroupError]:
        """Per group: only its Linear layers int8 in the converted pt2e graph (run in PyTorch, a stand-in for
        XNNPACK's kernels good enough to rank the groups), output MSE against the fp32 wrapper's."""
        import torch

        from .tflite_full import _torch_outputs, quant_friendly_wrapper

        module = quant_friendly_wrapper(ctx, MASK_VALUE).eval()
        rows = ctx.calibration_samples(samples)
        ops = linear_ops(module)
        errors = []
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = _torch_outputs(module, rows, ctx.input_names)
                for group, members in group_ops(ops).items():
                    converted, _ = quantize_linear_dynamic(module, ctx.example_tensors(), None,
                                                           [op for op in ops if op not in members])
                    errors.append(GroupError(group, members, output_mse(reference, _torch_outputs(
                        converted, rows, ctx.input_names)), "output MSE against fp32 with only this group int8 "
                                                           "(the converted pt2e graph, run in PyTorch)"))
        except Exception as exc:
            raise TargetError(f"ExecuTorch int8 group ranking failed: {_first_line(exc)}") from exc
        return errors
