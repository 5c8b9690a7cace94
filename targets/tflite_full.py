"""TFLite full-integer (`tflite-int8-full`): static int8/int16 quantization calibrated on real texts.

For NPUs, DSPs, the Edge TPU and microcontrollers every tensor must be integer.
The naive ``static_wi8_ai8`` recipe destroys BERT-style encoders (cosine 0.31
on MiniLM, measured); three causes, three fixes:

1. Additive attention masks built from ``finfo.min`` (or -1e4) stretch the
   calibrated range of the attention scores so far that int8 keeps no
   information about the real scores. The task's quantization-friendly wrapper builds the mask
   itself with the smallest bounded constant (-10, -20, -40 ...) whose float
   output matches the reference on the calibration texts.
2. ``nn.Embedding`` lowers to EMBEDDING_LOOKUP, which static recipes leave in
   float; an ``index_select`` lowers to GATHER_ND, whose table is quantized.
3. A few op types (on MiniLM: FULLY_CONNECTED, ADD, MUL and the layer-norm
   MEANs) carry outlier activations that int8 cannot hold. Each op type is
   quantized to int8 *alone* (rest float) and scored with ai-edge-quantizer's
   validation (output cosine vs the float model); the types that lose more than
   ``SENSITIVE_BUDGET`` get int16 activations (``static_wi8_ai16``-style, int8
   weights), the rest int8. If the combined model still misses the parity goal
   on held-out calibration texts, the next most sensitive int8 type is promoted,
   down to all-int16. The per-op-type choice and the scores go to the manifest.

Inputs stay int32 ids/mask, the output is dequantized by the runner (scale and
zero point are in the file). Integer kernels for int16 activations have no
XNNPACK path: on a CPU this artifact is much *slower* than dynamic int8; it
exists for integer-only accelerators.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from device_bench.parity import cosines

from .base import ExportContext, ExportResult, Target, TargetError, TargetOption, register
from .tflite import RUNTIME_REQUIREMENT, convert_fp32, quiet_converter, share_buffers

MASK_CONSTANTS = (10.0, 20.0, 40.0, 80.0, 160.0, 1e4)
MASK_TOLERANCE = 1e-5  # max |float wrapper - reference| on calibration texts
SENSITIVE_BUDGET = 2e-3  # an op type whose int8-alone output cosine is below 1 - budget gets int16
DEFAULT_CALIB_SAMPLES = 100
SELECTION_SAMPLES = 64  # held-out texts scoring the op-type choice (16 let 1.5% top-1 disagreement through)
BUCKET_SELECTION_SAMPLES = 8  # joined held-out texts filling each bucket longer than every held-out text
VALIDATION_SAMPLES = 4  # samples for each per-op-type ai-edge-quantizer validation


def quant_friendly_wrapper(ctx: ExportContext, mask_value: float):
    """The task's export wrapper with a bounded additive mask and a gather-based embedding lookup."""
    return ctx.task.make_quant_friendly_wrapper(ctx.hf_model, mask_value)


@contextlib.contextmanager
def quiet():
    """ai-edge-quantizer draws tqdm bars on stderr and warns on every call; keep the CLI readable."""
    with quiet_converter(), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _torch_outputs(module, samples: list[dict[str, np.ndarray]], names: list[str]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([module(*(torch.from_numpy(s[n]) for n in names)).float().numpy() for s in samples])


def choose_mask_value(ctx: ExportContext, samples: list[dict[str, np.ndarray]]) -> tuple[Any, float, float]:
    """Smallest mask constant whose float wrapper reproduces the reference (a quantization range is only
    as fine as its extremes allow)."""
    reference = _torch_outputs(ctx.wrapper, samples, ctx.input_names)
    err = float("inf")
    for value in MASK_CONSTANTS:
        wrapper = quant_friendly_wrapper(ctx, value)
        try:
            err = float(np.abs(_torch_outputs(wrapper, samples, ctx.input_names) - reference).max())
        except Exception as exc:  # the model does not take inputs_embeds / a 4-D float mask
            raise TargetError(f"model cannot take a precomputed mask and embeddings: {_first_line(exc)}") from exc
        if err <= MASK_TOLERANCE:
            return wrapper, value, err
    raise TargetError(f"the quantization-friendly wrapper differs from the model by {err:.2e} even with mask -1e4")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@dataclass
class Selection:
    """Which op types got int16 activations, and why."""

    int16_ops: list[str]
    int8_ops: list[str]
    sensitivity: dict[str, float]  # op type -> output cosine with only that type in int8
    steps: list[dict[str, Any]] = field(default_factory=list)  # each combined model tried, with its parity


class FullIntegerQuantizer:
    """Calibrate once, then quantize with per-op-type activation widths and score the result.

    A bucketed file has one signature per sequence length; each is calibrated on the inputs it will
    run (see ``bucket_calibration``), so each bucket's activation ranges come from inputs of its shape,
    and the op-type choice applies to all of them.
    """

    def __init__(self, float_path: Path, calibration: list[dict[str, np.ndarray]], input_names: list[str]):
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer, recipe

        self.float_path = float_path
        self.input_names = input_names
        interpreter = Interpreter(model_path=str(float_path))
        # litert-torch names the signature inputs args_0, args_1 ... in forward() order
        self.signatures: dict[str, tuple[list[str], int]] = {}  # key -> (input names in forward() order, length)
        for key, signature in interpreter.get_signature_list().items():
            names = sorted(signature["inputs"], key=lambda n: (len(n), n))
            shape = interpreter.get_signature_runner(key).get_input_details()[names[0]]["shape"]
            self.signatures[key] = (names, int(shape[-1]))
        self.largest = max(self.signatures, key=lambda k: self.signatures[k][1])
        self._calibration = calibration
        q = quantizer.Quantizer(str(float_path))
        q.load_quantization_recipe(recipe.static_wi8_ai16())
        with quiet():
            self.qsv = q.calibrate({key: [self._signature(s, key) for s in bucket_calibration(calibration, length)]
                                    for key, (_, length) in self.signatures.items()}, num_threads=2)
        self.op_types = sorted(self._quantizable_op_types())
        self.sensitivity_method: dict[str, str] = {}

    def _signature(self, sample: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
        """``sample`` as signature ``key``'s named inputs, fitted to its length."""
        from device_bench.shapes import fit_to_length

        names, length = self.signatures[key]
        fitted = fit_to_length(sample, length)
        return {arg: fitted[name] for arg, name in zip(names, self.input_names)}

    def _quantizable_op_types(self) -> set[str]:
        from ai_edge_quantizer import qtyping

        from .compat import tflite_ops

        ops, _ = tflite_ops(self.float_path)
        names = {o["op"] for o in ops}
        return {n for n in names if hasattr(qtyping.TFLOperationName, n) and n not in ("CAST", "QUANTIZE", "DEQUANTIZE")}

    def quantize(self, int16_ops: list[str], int8_ops: list[str], out_path: Path) -> Path:
        """int16 activations where asked; an op without an int16 kernel in the policy then stays float."""
        from ai_edge_quantizer import qtyping, quantizer

        q = quantizer.Quantizer(str(self.float_path))
        for op in int16_ops:
            if op in _int16_capable_ops():
                q.add_static_config(".*", getattr(qtyping.TFLOperationName, op), 16, 8)
        for op in int8_ops:
            q.add_static_config(".*", getattr(qtyping.TFLOperationName, op), 8, 8)
        with quiet():
            result = q.quantize(self.qsv, enable_progress_report=False)
            result.export_model(str(out_path), overwrite=True)
        return out_path

    def sensitivity(self, op: str, samples: list[dict[str, np.ndarray]]) -> float:
        """Output cosine of the model with only ``op`` in int8 (rest float).

        Measured by ai-edge-quantizer's validation; on graphs where that cannot read
        a tensor back ("Tensor data is null", seen on head-pruned students) the
        quantized model is run directly on the same samples instead.
        """
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.utils import validation_utils

        q = quantizer.Quantizer(str(self.float_path))
        q.add_static_config(".*", getattr(qtyping.TFLOperationName, op), 8, 8)
        with quiet():
            quantized = q.quantize(self.qsv, enable_progress_report=False)
            try:
                result = q.validate({self.largest: [self._signature(s, self.largest) for s in samples]},
                                    error_metrics=[validation_utils.ValidationErrorMetric.COSINE_SIMILARITY],
                                    num_threads=2, validate_output_tensors_only=True)
            except Exception:  # noqa: BLE001 - validation's own interpreter failed; measure directly
                result = None
            if result is None:
                path = self.float_path.with_name(f"sensitivity-{op}.tflite")
                quantized.export_model(str(path), overwrite=True)
        if result is not None:
            self.sensitivity_method[op] = "ai-edge-quantizer validation"
            outputs = result.get_signature_comparison_result(self.largest).output_tensors
            return float(min(m["cosine_similarity"] for m in outputs.values()))
        self.sensitivity_method[op] = "direct run (validation could not read the graph)"
        try:
            got, ref = run_tflite(path, samples), run_tflite(self.float_path, samples)
        finally:
            path.unlink(missing_ok=True)
        return float(min(cosines(ref, got)))


def joined_samples(samples: list[dict[str, np.ndarray]], length: int, n: int, width: int) -> list[dict[str, np.ndarray]]:
    """``n`` inputs of exactly ``length`` real tokens: the real tokens of consecutive samples joined and cut
    (long inputs as the device meets them), right-padded to ``width``. Empty when the samples are too short."""
    from device_bench.shapes import fit_to_length, real_length

    pieces = [{k: v[..., : real_length(s)] for k, v in s.items()} for s in samples]
    out: list[dict[str, np.ndarray]] = []
    start = 0
    total = sum(real_length(s) for s in samples)
    while len(out) < n and total >= length:
        joined: dict[str, list[np.ndarray]] = {k: [] for k in samples[0]}
        got = 0
        for i in range(len(pieces)):
            piece = pieces[(start + i) % len(pieces)]
            for k, v in piece.items():
                joined[k].append(v)
            got += next(iter(piece.values())).shape[-1]
            if got >= length:
                start += i + 1
                break
        whole = {k: np.concatenate(v, axis=-1)[..., :length] for k, v in joined.items()}
        out.append(fit_to_length(whole, width))
    return out


def bucket_calibration(samples: list[dict[str, np.ndarray]], length: int) -> list[dict[str, np.ndarray]]:
    """What a bucket of ``length`` tokens runs: the samples that fit in it, and inputs that fill it (joined
    samples cut to ``length``): without the latter a large bucket is calibrated on padding only and its
    ranges miss real long inputs."""
    from device_bench.shapes import real_length

    fitting = [s for s in samples if real_length(s) <= length]
    width = next(iter(samples[0].values())).shape[-1]
    return fitting + joined_samples(samples, length, max(8, len(samples) // 4), width)


def length_spread(samples: list[dict[str, np.ndarray]], buckets: list[int], per_bucket: int) -> list[dict[str, np.ndarray]]:
    """``samples`` plus ``per_bucket`` inputs filling each bucket longer than every sample, so the precision
    choice is scored on every shape the artifact holds."""
    from device_bench.shapes import real_length

    longest = max(real_length(s) for s in samples)
    width = next(iter(samples[0].values())).shape[-1]
    extra = [j for b in buckets if b > longest for j in joined_samples(samples, b, per_bucket, width)]
    return samples + extra


@lru_cache(maxsize=1)
def _int16_capable_ops() -> frozenset[str]:
    """Op types ai-edge-quantizer's default policy can give int16 activations."""
    import json

    from ai_edge_quantizer import default_policy

    return frozenset(json.loads(default_policy.DEFAULT_JSON_POLICY)["ops_per_config"]["static_wi8_ai16"])


def run_tflite(path: Path, samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    from device_bench.runners import load_runner

    from device_bench.shapes import to_input_width

    runner = load_runner("tflite", path)  # each sample runs at the smallest bucket that holds it
    return np.concatenate([to_input_width(runner.run(s), next(iter(s.values())).shape[-1]) for s in samples])


def parity_metric(task, reference: np.ndarray, candidate: np.ndarray, samples: list[dict[str, np.ndarray]]) -> float:
    """The task's own parity metric named by its ``integer_goal``."""
    inputs = {k: np.concatenate([s[k] for s in samples]) for k in samples[0]}
    return float(task.parity(reference, candidate, inputs)[task.integer_goal[0]])


def tensor_dtypes(path: Path) -> dict[str, int]:
    """How many tensors of each dtype the artifact holds (the 'is it really integer' evidence)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    counts: dict[str, int] = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            name = names.get(graph.Tensors(t).Type(), "unknown")
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def float_ops(path: Path) -> list[str]:
    """Op types that still compute in float32 (no integer kernel in the recipe)."""
    from ai_edge_litert import schema_py_generated as schema

    from .tflite_schema import builtin_names

    names = builtin_names()
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    found = set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if name in ("DEQUANTIZE", "QUANTIZE", "CAST"):
                continue
            outs = [graph.Tensors(op.Outputs(j)).Type() for j in range(op.OutputsLength())]
            if any(t == schema.TensorType.FLOAT32 for t in outs):
                found.add(name)
    return sorted(found)


def select_precisions(fq: FullIntegerQuantizer, task, selection_samples: list[dict[str, np.ndarray]],
                      reference: np.ndarray, validation_samples: list[dict[str, np.ndarray]], workdir: Path,
                      int8_only: bool) -> tuple[Path, Selection]:
    """int8 where the accuracy allows, int16 activations where it does not (see the module docstring)."""
    metric, goal = task.integer_goal
    trial = workdir / "tflite-int8-full.trial.tflite"
    all_ops = list(fq.op_types)
    steps: list[dict[str, Any]] = []

    def score(int16_ops: list[str]) -> float:
        int8_ops = [o for o in all_ops if o not in int16_ops]
        value = parity_metric(task, reference, run_tflite(fq.quantize(int16_ops, int8_ops, trial), selection_samples),
                              selection_samples)
        steps.append({"int16_ops": list(int16_ops), metric: round(value, 5)})
        return value

    if score([]) >= goal or int8_only:
        return trial, Selection(int16_ops=[], int8_ops=all_ops, sensitivity={}, steps=steps)
    sensitivity = {op: fq.sensitivity(op, validation_samples) for op in all_ops}
    ranked = sorted(all_ops, key=lambda op: sensitivity[op])  # most damaging first
    int16 = [op for op in ranked if sensitivity[op] < 1.0 - SENSITIVE_BUDGET]
    rest = [op for op in ranked if op not in int16]
    while score(int16) < goal and rest:
        int16.append(rest.pop(0))
    int16_sorted = sorted(int16)
    return trial, Selection(int16_ops=int16_sorted, int8_ops=[o for o in all_ops if o not in int16],
                            sensitivity={k: round(v, 6) for k, v in sorted(sensitivity.items())}, steps=steps)


def output_details(path: Path) -> list[dict[str, Any]]:
    """Output dtype and quantization of the artifact, as the runtime reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signatures = list(interpreter.get_signature_list())
    if not signatures:
        return [_output_record(d["name"], d) for d in interpreter.get_output_details()]
    return [{"signature": key, **_output_record(name, d)} for key in signatures
            for name, d in interpreter.get_signature_runner(key).get_output_details().items()]


def _output_record(name: str, d: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "dtype": np.dtype(d["dtype"]).name, "scale": float(d["quantization"][0]),
            "zero_point": int(d["quantization"][1])}


def integer_outputs(src: Path, dst: Path) -> list[dict[str, Any]]:
    """Rewrite ``src`` so every model output is the int8 tensor itself (for integer-only accelerators).

    ai-edge-quantizer ends each output with a DEQUANTIZE op; that op is dropped and
    the signature re-pointed at its int8 input. An int16 output (an int16-activation
    op at the end) gets a requantizing QUANTIZE op to int8 over the same range.
    TFLite's own ``modify_model_interface`` cannot do this: it expects quantized
    inputs too, and token ids stay int32.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))

    def opcode_index(builtin: int) -> int:
        for i, code in enumerate(model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return i
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    dequantize = opcode_index(schema.BuiltinOperator.DEQUANTIZE)
    remaps = [_integer_graph_outputs(graph, dequantize, opcode_index) for graph in model.subgraphs]
    for signature in model.signatureDefs or []:
        remap = remaps[signature.subgraphIndex]
        for item in signature.outputs:
            item.tensorIndex = remap.get(item.tensorIndex, item.tensorIndex)
    flatbuffer_utils.write_model(model, str(dst))
    src.unlink()
    return output_details(dst)


def _integer_graph_outputs(graph, dequantize: int, opcode_index) -> dict[int, int]:
    """One subgraph's outputs re-pointed at their integer tensors (see ``integer_outputs``); returns the remap."""
    from ai_edge_litert import schema_py_generated as schema

    remap: dict[int, int] = {}
    for position, tensor_index in enumerate(list(graph.outputs)):
        producer = next((op for op in graph.operators if tensor_index in list(op.outputs)), None)
        if producer is None or producer.opcodeIndex != dequantize:
            raise TargetError(f"tflite-int8-full io=int8: output {tensor_index} is not a dequantized integer tensor")
        quantized = int(producer.inputs[0])
        graph.operators.remove(producer)
        tensor = graph.tensors[quantized]
        if tensor.type == schema.TensorType.INT16:
            requantized = schema.TensorT()
            requantized.name = (tensor.name or b"output") + b"_int8"
            requantized.shape, requantized.type, requantized.buffer = list(tensor.shape), schema.TensorType.INT8, 0
            q = schema.QuantizationParametersT()
            q.scale = [float(tensor.quantization.scale[0]) * 32767.0 / 127.0]
            q.zeroPoint = [0]
            requantized.quantization = q
            graph.tensors.append(requantized)
            op = schema.OperatorT()
            op.opcodeIndex = opcode_index(schema.BuiltinOperator.QUANTIZE)
            op.inputs, op.outputs = [quantized], [len(graph.tensors) - 1]
            graph.operators.append(op)
            quantized = len(graph.tensors) - 1
        elif tensor.type != schema.TensorType.INT8:
            raise TargetError(f"tflite-int8-full io=int8: output tensor type {tensor.type} is not an integer type")
        graph.outputs[position] = quantized
        remap[tensor_index] = quantized
    return remap


@register
class TFLiteInt8Full(Target):
    name = "tflite-int8-full"
    runtime = "tflite"
    suffix = ".tflite"
    runtime_requirement = RUNTIME_REQUIREMENT
    description = ("LiteRT/TFLite full-integer: int8 weights, int8/int16 activations per op type, "
                   "calibrated on real texts (for NPUs/DSPs/MCUs)")
    requires = ("litert_torch", "ai_edge_quantizer")
    options = {
        "calib_samples": TargetOption(int, DEFAULT_CALIB_SAMPLES, "calibration texts (the rest of the pack's texts "
                                      "score the per-op-type choice)", minimum=2),
        "int8_only": TargetOption(bool, False, "int8 activations everywhere, even where int16 would keep accuracy"),
        "io": TargetOption(str, "float", "model output: float (dequantized inside the model) or int8 (integer "
                           "output with scale/zero point, for integer-only accelerators)", choices=("float", "int8")),
    }

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        n_calib = int(ctx.options.get("calib_samples", DEFAULT_CALIB_SAMPLES))
        samples = ctx.calibration_samples()
        if len(samples) < 2:
            raise TargetError("tflite-int8-full needs calibration texts (got fewer than 2)")
        calibration = samples[:n_calib]
        held_out = samples[n_calib:][:SELECTION_SAMPLES] or samples[-SELECTION_SAMPLES:]
        if len(ctx.buckets) > 1:
            held_out = length_spread(held_out, ctx.buckets, BUCKET_SELECTION_SAMPLES)
        notes = []
        if len(calibration) < DEFAULT_CALIB_SAMPLES:
            notes.append(f"calibrated on {len(calibration)} texts (fewer than the recommended {DEFAULT_CALIB_SAMPLES})")
        if not samples[n_calib:]:
            notes.append("op-type selection scored on calibration texts (no held-out texts left)")

        wrapper, mask_value, mask_err = choose_mask_value(ctx, samples[: min(len(samples), 32)])
        float_path = ctx.workdir / f"{self.name}.fp32.tflite"
        # (its float-op selection is by op type, tuned on the stock LayerNorm ops: kept as they were)
        shapes = convert_fp32(ctx, float_path, module=wrapper, lean_norms=False)

        try:
            fq = FullIntegerQuantizer(float_path, calibration, list(ctx.input_names))
            reference = _torch_outputs(ctx.wrapper, held_out, ctx.input_names)
            trial, selection = select_precisions(fq, ctx.task, held_out, reference, held_out[-VALIDATION_SAMPLES:],
                                                 ctx.workdir, int8_only=bool(ctx.options.get("int8_only", False)))
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(f"ai-edge-quantizer static quantization failed: {_first_line(exc)}") from exc
        io = ctx.options.get("io", "float")
        if io == "int8":
            outputs = integer_outputs(trial, out_path)
        else:
            shutil.move(trial, out_path)
            outputs = output_details(out_path)
        sharing = share_buffers(out_path, short_names=len(ctx.buckets) > 1)
        float_size = float_path.stat().st_size
        float_path.unlink()

        dtypes = tensor_dtypes(out_path)
        precision = "int8-full" if not selection.int16_ops else "int8-int16-mixed"
        per_op = ({op: "int16" if op in _int16_capable_ops() else "float" for op in selection.int16_ops}
                  | {op: "int8" for op in selection.int8_ops})
        leftover_float = float_ops(out_path)
        if leftover_float:
            notes.append(f"ops without an integer kernel in ai-edge-quantizer stay float: {', '.join(leftover_float)}")
        widened = [op for op, width in per_op.items() if width == "int16"]
        if widened:
            notes.append(f"int16 activations for {', '.join(sorted(widened))} (int8 lost accuracy there)")
        if io == "int8":
            notes.append("int8 model output: dequantize with (q - zero_point) * scale, as the device runner does")
        notes.append("full-integer targets integer accelerators; on a CPU it is usually slower than dynamic int8"
                     + (" (int16 kernels have no XNNPACK path)" if selection.int16_ops else ""))
        if len(ctx.buckets) > 1:
            shapes = dataclasses.replace(shapes, how=shapes.how + "; each bucket calibrated on the calibration texts "
                                         "fitted to its length, one per-op-type precision choice for all")
        return ExportResult(
            precision=precision,
            notes=notes,
            shapes=shapes,
            details={
                "converter": "litert-torch", "quantizer": "ai-edge-quantizer static (min/max)",
                "weights": "int8 per-channel", "activations_per_op": dict(sorted(per_op.items())),
                "float_ops": leftover_float, "sensitivity_int8_alone_cosine": selection.sensitivity,
                "sensitivity_method": sorted(set(fq.sensitivity_method.values())),
                "selection_steps": selection.steps, "selection_goal": dict([ctx.task.integer_goal]),
                "calibration_samples": len(calibration), "selection_samples": len(held_out),
                "mask_constant": -mask_value, "mask_wrapper_max_abs_error": mask_err,
                "tensor_dtypes": dtypes, "fp32_tflite_size_bytes": float_size, "buffer_sharing": sharing,
                "io": {"inputs": "int32 token ids / mask", "outputs": outputs},
            },
        )
