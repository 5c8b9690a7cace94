"""TFLite / LiteRT (`.tflite`): litert-torch conversion, ai-edge-quantizer dynamic int8.

The wrapper takes int32 inputs (what LiteRT apps feed) and the model is loaded
with eager attention, which litert-torch lowers cleanly. The int8 artifact stores weights as per-channel int8;
at run time the kernels quantize each row of activations (XNNPACK's dynamic int8). By default
(``rotation=attention``) the input of each of the attention's Q/K/V projections is Hadamard-rotated (ai-edge-quantizer's
``dynamic_wi8c_hr_afp32`` on those ops, decomposed into builtin ops and folded into the weights): the LayerNorm output
they read carries BERT's outlier features, which the rotation spreads over every channel, so one int8 scale per row
no longer loses the rest. Measured on MiniLM (220 unseen texts, AVX-512 VNNI + AMX host): worst cosine 0.990
unrotated, 0.9965 with the Q/K/V inputs rotated (1.09x the unrotated time), 0.998 with every input rotated
(``rotation=hadamard``, 2.5x: the FFN output's 1536-wide rotation is most of the cost and little of the fidelity).
The rotation runs as a float matmul on blocks of the input (``rotation_block``, 64 by default: half the multiply-adds
of ai-edge-quantizer's own 128 on a 384-wide input; ``benchmarks/tflite_variants.py --study rotation_block``).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from device_bench.manifest import Shapes

from .base import ExportContext, ExportResult, Target, TargetError, TargetOption, register
from .fallback import FLOAT_OPS, FLOAT_OPS_OPTION, FloatFallback, GroupError, group_ops, resolve_float_ops

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


SIGNATURE = "seq{}"  # one signature per bucket: seq16, seq32 …


def lean_layer_norms(module):
    """A copy of ``module`` whose ``nn.LayerNorm``s compute the same normalisation in fewer TFLite ops.

    litert-torch lowers ``nn.LayerNorm`` to 14 builtin ops (two MEANs without kept dims, three RESHAPEs back,
    SQUARED_DIFFERENCE, and the scale folded through MUL/SUB); written as ``d = x - mean(x)``,
    ``d * rsqrt(mean(d * d) + eps) * weight + bias`` with kept dims it is 10. MiniLM has 13 LayerNorms, so each
    signature runs 52 ops fewer; at batch 1 and a dozen tokens a TFLite run is mostly per-op overhead."""
    import torch

    class LeanLayerNorm(torch.nn.Module):
        def __init__(self, norm: torch.nn.LayerNorm) -> None:
            super().__init__()
            self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

        def forward(self, x):
            centred = x - x.mean(-1, keepdim=True)
            scaled = centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
            return scaled * self.weight + self.bias if self.weight is not None else scaled

    def leanable(child) -> bool:
        return (type(child) is torch.nn.LayerNorm and len(child.normalized_shape) == 1
                and (child.bias is not None or child.weight is None))

    lean = copy.deepcopy(module)
    if leanable(lean):
        return LeanLayerNorm(lean)
    for parent in list(lean.modules()):
        for name, child in list(parent.named_children()):
            if leanable(child):
                setattr(parent, name, LeanLayerNorm(child))
    return lean


def convert_fp32(ctx: ExportContext, out_path: Path, module=None, lean_norms: bool = True) -> Shapes:
    """fp32 .tflite of ``module`` (default ``ctx.wrapper``): one signature per bucket, weights stored once
    (litert-torch shares the constants of signatures of one module), or one static shape without buckets.
    ``lean_norms``: LayerNorms in fewer ops (``lean_layer_norms``)."""
    import litert_torch

    module = (module if module is not None else ctx.wrapper).eval()
    if lean_norms:
        module = lean_layer_norms(module).eval()
    try:
        with quiet_converter():
            if ctx.buckets:
                converter = None
                for length in ctx.buckets:
                    args = ctx.example_tensors(length)
                    converter = (litert_torch.signature(SIGNATURE.format(length), module, args) if converter is None
                                 else converter.signature(SIGNATURE.format(length), module, args))
                edge_model = converter.convert()
            else:
                edge_model = litert_torch.convert(module, ctx.example_tensors())
            edge_model.export(str(out_path))
    except Exception as exc:
        raise TargetError(f"litert-torch conversion failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    if not ctx.buckets:
        return Shapes(buckets=[ctx.seq_len], entry_points={str(ctx.seq_len): "serving_default"},
                      how="one static shape (--buckets none)")
    return dataclasses.replace(ctx.static_shapes(SIGNATURE),
                               how="one signature per bucket in one .tflite, weights shared (TFLite needs static "
                                   "shapes; litert-torch converts no dynamic sequence dimension)")


class _Fp32Cache:
    """The last fp32 conversions of this process, keyed by the wrapper's weights, structure and shapes.

    The precision fallback exports one model again and again with other ops kept in float (ranking, each
    revert, the winner's pack); litert-torch's conversion is the slow part and its result depends only on the
    module and the signature shapes, so it runs once. Files live in a private temporary folder, removed at exit.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.folder: Path | None = None
        self.entries: dict[str, tuple[Path, Shapes]] = {}

    @staticmethod
    def key(ctx: ExportContext) -> str:
        import hashlib

        digest = hashlib.sha256()
        module = ctx.wrapper
        digest.update(f"{type(module).__module__}.{type(module).__qualname__}\n{module!r}".encode())
        config = getattr(ctx.hf_model, "config", None)
        if config is not None and hasattr(config, "to_json_string"):
            digest.update(config.to_json_string().encode())
        digest.update(repr((ctx.seq_len, list(ctx.buckets), list(ctx.input_names), ctx.task.name)).encode())
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
            value = tensor.detach().cpu().contiguous()
            digest.update((value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy().tobytes())
        return digest.hexdigest()

    def convert(self, ctx: ExportContext, out_path: Path) -> Shapes:
        """``convert_fp32(ctx, out_path)``, from the cache when this module was converted at these shapes."""
        import atexit
        import tempfile

        key = self.key(ctx)
        if key in self.entries:
            cached, shapes = self.entries.pop(key)
            self.entries[key] = (cached, shapes)  # most recent last
            shutil.copyfile(cached, out_path)
            return copy.deepcopy(shapes)
        shapes = convert_fp32(ctx, out_path)
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="edgepack-tflite-fp32-"))
            atexit.register(shutil.rmtree, self.folder, True)
        cached = self.folder / f"{key}.tflite"
        shutil.copyfile(out_path, cached)
        self.entries[key] = (cached, copy.deepcopy(shapes))
        while len(self.entries) > self.keep:
            oldest = next(iter(self.entries))
            self.entries.pop(oldest)[0].unlink(missing_ok=True)
        return shapes


FP32_CACHE = _Fp32Cache()


def share_buffers(path: Path, short_names: bool = False) -> dict[str, int]:
    """Store each distinct constant once: tensors of every signature that hold identical bytes point to one buffer.

    litert-torch already shares the weights of the signatures it converts; a quantizer or a rewrite that
    copies a constant per subgraph is undone here. What the TFLite schema cannot share is per subgraph: each
    signature's tensor table, with the per-channel quantization parameters (a float32 scale and an int64 zero
    point per output channel, ~0.6 MB for MiniLM whose embedding table alone has 30522 rows) and the tensor
    names (~0.17 MB). ``short_names`` replaces the names of internal tensors (the converter's source
    locations, unused at run time) by ``t<index>``; signature inputs/outputs keep theirs.
    Returns the buffer counts.
    """
    import hashlib

    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    first: dict[bytes, int] = {}
    remap: dict[int, int] = {}
    for index, buffer in enumerate(model.buffers):
        data = getattr(buffer, "data", None)
        if data is None or len(data) == 0:
            continue
        key = hashlib.sha256(bytes(memoryview(data))).digest()
        remap[index] = first.setdefault(key, index)
    duplicates = {i: j for i, j in remap.items() if i != j}
    for graph in model.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for index, tensor in enumerate(graph.tensors):
            tensor.buffer = duplicates.get(tensor.buffer, tensor.buffer)
            if short_names and index not in keep:
                tensor.name = f"t{index}".encode()
    for index in duplicates:
        model.buffers[index].data = None  # an empty buffer keeps the other indices valid
    if duplicates or short_names:
        flatbuffer_utils.write_model(model, str(path))
    return {"buffers_with_data": len(remap) - len(duplicates), "duplicates_removed": len(duplicates),
            "subgraphs": len(model.subgraphs)}


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
        shapes = convert_fp32(ctx, out_path)
        return ExportResult(precision="fp32", details={"converter": "litert-torch"}, shapes=shapes)


def _stored(parsed, tensor) -> bool:
    """Whether a tensor's data is stored in the model (a weight), not computed (its buffer is empty)."""
    buffer = parsed.buffers[tensor.buffer]
    return ((getattr(buffer, "data", None) is not None and len(buffer.data) > 0)
            or (getattr(buffer, "offset", 0) or 0) > 1)


def quantized_ops(model: bytes) -> list[str]:
    """Names of the ops that hold an int8 constant input (a quantized weight) in a quantized model, once each
    (the signatures of one module share names), in graph order. A name is the op's scope as ai-edge-quantizer
    matches it (its output tensor names joined by ';'), without its last ';' (an unnamed output leaves ';;')."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    parsed = tfl_flatbuffer_utils.read_model(bytes(model))

    def constant_int8(tensor) -> bool:
        return tensor.type == schema.TensorType.INT8 and _stored(parsed, tensor)

    names: dict[str, None] = {}
    for graph in parsed.subgraphs:
        for op in graph.operators:
            if any(i >= 0 and constant_int8(graph.tensors[i]) for i in op.inputs):
                names[tfl_flatbuffer_utils.get_op_scope(op, graph.tensors).removesuffix(";")] = None
    return list(names)


@dataclasses.dataclass(frozen=True)
class FullyConnectedOps:
    """The fully connected ops of a float model by what the quantizer must know of them, as scopes (see
    ``quantized_ops``)."""
    #: the weight operand is computed, not stored (litert-torch lowers a one-head attention's matmul to one): no
    #: weight to quantize; the Hadamard recipe refuses them, so they are named NO_QUANTIZE (what the plain recipe
    #: does to them anyway)
    activation_weighted: list[str]
    #: the attention's input projections (Q, K, V, separate or fused, and DeBERTa's position projections): their
    #: output reaches a matmul of two activations through shape ops only. Their input is the LayerNorm output that
    #: carries BERT's outlier features
    attention_inputs: list[str]


#: ops a projection's output passes through on its way into the attention's matmul (reshape into heads, scale)
_HEAD_SHAPING = ("RESHAPE", "TRANSPOSE", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "GATHER", "MUL", "SQUEEZE",
                 "EXPAND_DIMS", "PACK", "UNPACK", "CONCATENATION", "DEQUANTIZE")


def fully_connected_ops(model: bytes) -> FullyConnectedOps:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    parsed = tfl_flatbuffer_utils.read_model(bytes(model))
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}

    activation_weighted: dict[str, None] = {}
    attention_inputs: dict[str, None] = {}
    for graph in parsed.subgraphs:
        kind = {}
        consumers: dict[int, list] = {}
        for op in graph.operators:
            code = parsed.operatorCodes[op.opcodeIndex]
            kind[id(op)] = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            for i in op.inputs:
                consumers.setdefault(int(i), []).append(op)

        def weighted(op) -> bool | None:  # FC: whether its weight is stored; None: not an FC
            if kind[id(op)] != "FULLY_CONNECTED" or len(op.inputs) < 2 or op.inputs[1] < 0:
                return None
            return _stored(parsed, graph.tensors[op.inputs[1]])

        def feeds_attention(op, depth: int = 0) -> bool:
            for out in op.outputs:
                for nxt in consumers.get(int(out), []):
                    if kind[id(nxt)] == "BATCH_MATMUL" or weighted(nxt) is False:
                        return True
                    if depth < 6 and kind[id(nxt)] in _HEAD_SHAPING and feeds_attention(nxt, depth + 1):
                        return True
            return False

        for op in graph.operators:
            scope = tfl_flatbuffer_utils.get_op_scope(op, graph.tensors).removesuffix(";")
            if weighted(op) is False:
                activation_weighted[scope] = None
            elif weighted(op) and feeds_attention(op):
                attention_inputs[scope] = None
    return FullyConnectedOps(list(activation_weighted), list(attention_inputs))


def _file_version(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _fully_connected_ops_of(path: str, mtime_ns: int, size: int) -> FullyConnectedOps:
    """``fully_connected_ops`` of a float file, once per version of it: the quantizer is built for it once per
    export, per fallback attempt and per ranked group."""
    return fully_connected_ops(Path(path).read_bytes())


def _signature_samples(path: Path, ctx: ExportContext, samples: int) -> dict[str, list[dict]]:
    """Calibration rows for ai-edge-quantizer's validation: each row at the smallest signature that holds its
    real length (as the device runner feeds it), keyed by that signature's input names."""
    from ai_edge_litert.interpreter import Interpreter

    from device_bench.shapes import fit_to_length

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    position = lambda name: int(m.group(1)) if (m := re.search(r"(\d+)$", name)) else 0
    lengths = sorted(ctx.buckets) if ctx.buckets else [ctx.seq_len]
    keys = {n: SIGNATURE.format(n) for n in lengths} if ctx.buckets else {ctx.seq_len: next(iter(signatures))}
    data: dict[str, list[dict]] = {}
    for row in ctx.calibration_samples(samples):
        real = int(row["attention_mask"].sum())
        length = next((n for n in lengths if n >= real), lengths[-1])
        key = keys[length]
        names = sorted(signatures[key]["inputs"], key=position)
        fitted = fit_to_length(row, length)
        data.setdefault(key, []).append({name: fitted[source] for name, source in zip(names, ctx.input_names)})
    return data


#: the largest Hadamard block of ``tflite-int8``'s rotation (ai-edge-quantizer's own choice: the input width's
#: largest power-of-two factor, 128 for MiniLM's 384)
ROTATION_BLOCK = 64


def _power_of_two(value: int) -> None:
    if value < 2 or value & (value - 1):
        raise ValueError(f"{value} is not a power of two (2, 4, … 64, 128 …)")


def _blocked(entries: list[dict], block: int | None) -> list[dict]:
    """ai-edge-quantizer's Hadamard recipe entries with their rotation capped at ``block`` (its
    ``max_hadamard_size``; None: its own choice)."""
    if block is None:
        return entries
    out = copy.deepcopy(entries)
    for entry in out:
        config = entry["op_config"]["weight_tensor_config"]
        config["algorithm_params"] = {**config.get("algorithm_params", {}), "max_hadamard_size": block}
    return out


@register
class TFLiteInt8(_TFLite, FloatFallback):
    name = "tflite-int8"
    description = "LiteRT/TFLite dynamic int8 (weights int8 per channel, activations int8 per row, Hadamard-rotated) via ai-edge-quantizer"
    requires = ("litert_torch", "ai_edge_quantizer")
    #: what each ``rotation`` quantizes with (ai-edge-quantizer recipes; ``attention``: the plain one, and the
    #: Hadamard one on the attention's input projections)
    RECIPES = {"attention": "dynamic_wi8_afp32, dynamic_wi8c_hr_afp32 on the attention's Q/K/V projections",
               "hadamard": "dynamic_wi8c_hr_afp32", "none": "dynamic_wi8_afp32"}
    options = {
        "rotation": TargetOption(str, "attention", "attention: Hadamard-rotate the input of the attention's Q/K/V "
                                 "projections (the LayerNorm output with BERT's outlier features), which keeps short "
                                 "texts faithful at a few % of the time; hadamard: every fully connected layer's "
                                 "input (the wide FFN output's rotation is most of the cost, little of the "
                                 "fidelity); none: plain dynamic int8 (fewest ops, least faithful)",
                                 choices=tuple(RECIPES)),
        "rotation_block": TargetOption(int, ROTATION_BLOCK, "the largest Hadamard block the rotation uses (a power "
                                       "of two; the input width's largest power-of-two factor where smaller): the "
                                       "rotation is a float matmul per block at run time, so its cost grows with "
                                       "the block, its spreading of outliers little beyond 64",
                                       check=_power_of_two),
        "embedding": TargetOption(str, "tensorwise", "int8 scales of the embedding tables: tensorwise (one per table) "
                                  "or channelwise (one per row: TFLite stores a row's scale and zero point again in "
                                  "every bucket's signature, ~0.37 MB per bucket for a 30k vocabulary)",
                                  choices=("tensorwise", "channelwise")),
        FLOAT_OPS: FLOAT_OPS_OPTION,
    }

    def _rotation(self, ctx: ExportContext) -> tuple[str, int]:
        """(``rotation``, ``rotation_block``) of this export."""
        return (str(ctx.options.get("rotation", "attention")),
                int(ctx.options.get("rotation_block", ROTATION_BLOCK)))

    def _quantizer(self, float_path: Path, embedding: str, keep_float: list[str], rotation: tuple[str, int | None]):
        """The quantizer of ``rotation`` (kind, largest block; None: ai-edge-quantizer's own) for ``float_path``,
        with the ops named in ``keep_float`` left unquantized."""
        from ai_edge_quantizer import qtyping, quantizer, recipe

        kind, block = rotation
        q = quantizer.Quantizer(str(float_path))
        fc = _fully_connected_ops_of(str(float_path), *_file_version(float_path))
        if kind == "attention" and fc.attention_inputs:
            rotate = "^(?:" + "|".join(re.escape(op) for op in fc.attention_inputs) + ");$"
            q.load_quantization_recipe(recipe.dynamic_wi8_afp32() + [
                dict(entry, regex=rotate, operation=qtyping.TFLOperationName.FULLY_CONNECTED.value)
                for entry in _blocked(recipe.dynamic_wi8c_hr_afp32(), block)])
        elif kind == "none":
            q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        else:  # hadamard, or no attention found (not a transformer graph): every input rotated
            q.load_quantization_recipe(_blocked(recipe.dynamic_wi8c_hr_afp32(), block))
        keep_float = list(keep_float) + fc.activation_weighted
        if embedding == "tensorwise":
            q.add_dynamic_config(".*", qtyping.TFLOperationName.EMBEDDING_LOOKUP, 8,
                                 granularity=qtyping.QuantGranularity.TENSORWISE)
        if keep_float:  # the last matching scope wins: this one, over the recipe's ".*"
            q.update_quantization_recipe("^(?:" + "|".join(re.escape(op) for op in keep_float) + ");$",
                                         qtyping.TFLOperationName.ALL_SUPPORTED,
                                         algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
        return q

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        float_path = ctx.workdir / f"{self.name}.fp32.tflite"
        shapes = FP32_CACHE.convert(ctx, float_path)
        embedding = ctx.options.get("embedding", "tensorwise")
        rotation = self._rotation(ctx)
        recipe_name = self.RECIPES[rotation[0]]
        patterns = list(ctx.options.get(FLOAT_OPS) or ())
        kept: list[str] = []
        ops: list[str] = []
        try:
            with quiet_converter():
                if patterns:  # the ops the recipe quantizes, to match the patterns against
                    ops = quantized_ops(self._quantizer(float_path, embedding, [], rotation).quantize()
                                        .quantized_model)
                    kept = resolve_float_ops(patterns, ops, self.name)
                result = self._quantizer(float_path, embedding, kept, rotation).quantize()
                tmp = ctx.workdir / f"{self.name}.q.tflite"
                result.export_model(str(tmp), overwrite=True)
            if not ops:
                ops = quantized_ops(tmp.read_bytes())
            shutil.move(tmp, out_path)
            sharing = share_buffers(out_path, short_names=len(ctx.buckets) > 1)
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(f"ai-edge-quantizer ({recipe_name}) failed: {str(exc).strip().splitlines()[0][:300]}") from exc
        fp32_size = float_path.stat().st_size
        float_path.unlink()
        notes = [f"ai-edge-quantizer recipe {recipe_name}"
                 + (f" (Hadamard blocks of up to {rotation[1]})" if rotation[0] != "none" else "")
                 + (", embedding tables int8 per tensor" if embedding == "tensorwise" else "")]
        if kept:
            notes.append(f"{len(kept)} of {len(ops)} quantized ops kept in float ({FLOAT_OPS})")
        return ExportResult(
            precision="dynamic-int8",
            notes=notes,
            details={"converter": "litert-torch", "quantizer_recipe": recipe_name,
                     "rotation_block": rotation[1] if rotation[0] != "none" else None,
                     "embedding_scales": embedding,
                     "fp32_tflite_size_bytes": fp32_size, "buffer_sharing": sharing,
                     "float_ops": kept, "int8_op_count": len(ops) - len(kept)},
            shapes=shapes,
        )

    def group_errors(self, ctx: ExportContext, samples: int) -> list[GroupError]:
        """Per group: quantize only its ops (every other op NO_QUANTIZE in the recipe) and compare the outputs
        with the float model's through ai-edge-quantizer's ``validate`` (output MSE per signature)."""
        from ai_edge_quantizer.utils import validation_utils

        float_path = ctx.workdir / f"{self.name}.rank.fp32.tflite"
        FP32_CACHE.convert(ctx, float_path)
        embedding = ctx.options.get("embedding", "tensorwise")
        rotation = self._rotation(ctx)
        mse = validation_utils.ValidationErrorMetric.MSE
        test_data = _signature_samples(float_path, ctx, samples)
        errors = []
        try:
            with quiet_converter():
                ops = quantized_ops(self._quantizer(float_path, embedding, [], rotation).quantize().quantized_model)
                for group, members in group_ops(ops).items():
                    q = self._quantizer(float_path, embedding, [op for op in ops if op not in members], rotation)
                    q.quantize()
                    result = q.validate(test_data=test_data, error_metrics=[mse], num_threads=1,
                                        validate_output_tensors_only=True)
                    total = 0.0
                    for key, rows in test_data.items():
                        outputs = result.get_signature_comparison_result(key).output_tensors.values()
                        total += len(rows) * float(np.mean([metrics[mse.value] for metrics in outputs]))
                    errors.append(GroupError(group, members, total / sum(map(len, test_data.values())),
                                             "output MSE against fp32 with only this group int8 "
                                             "(ai-edge-quantizer validate)"))
        except Exception as exc:
            raise TargetError(f"ai-edge-quantizer validation failed: {str(exc).strip().splitlines()[0][:300]}") from exc
        finally:
            float_path.unlink(missing_ok=True)
        return errors
