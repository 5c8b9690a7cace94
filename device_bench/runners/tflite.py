"""LiteRT (TFLite) runner: ai-edge-litert, or the legacy tflite-runtime as a fallback.

Every signature of the file is an entry point (edgepack's bucketed artifacts
hold one per sequence length, ``seq16``, ``seq32``…).

Where ai-edge-litert has LiteRT's ``CompiledModel`` (2.x), float-in/float-out
artifacts run through it with XNNPACK's weight cache: the packed weights live
once in a file under ``$EDGEPACK_XNNPACK_CACHE`` (else the user's cache,
``edgepack/xnnpack``) and are shared by every signature, instead of packed
again per signature in private memory (the interpreter's way: a process running
MiniLM's default 4-bucket tflite-int8 peaks at 122 MB RSS that way, 101 MB
compiled; with 11 buckets 211 vs 123 MB), and a call skips the signature
runner's per-call resize and allocation. Full-integer graphs, artifacts with
quantized inputs or outputs, legacy tflite-runtime, or
``EDGEPACK_TFLITE_API=interpreter`` use the interpreter's signature runners.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import platform
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..native_output import fds_muted, mute_for_good
from .base import EntryPoint, Runner, RunnerUnavailable, TensorInfo, sequence_length


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore

        return Interpreter
    except ImportError:
        raise RunnerUnavailable("runtime 'tflite' needs ai-edge-litert (pip install ai-edge-litert)") from None


class TFLiteRunner(Runner):
    runtime = "tflite"
    distributions = ("ai-edge-litert", "tflite-runtime")

    def __init__(self, path: Path, threads: int | None = None, **kwargs) -> None:
        super().__init__(path, threads, **kwargs)
        interpreter_cls = _interpreter_class()
        # describes the file; runs it only where the compiled model does not (its delegate is applied lazily, at
        # the first invoke, so describing costs no packed weights)
        self.interpreter = interpreter_cls(model_path=str(self.path), num_threads=threads or None)
        self._finish_load()
        self.compiled: CompiledSignatures | None = None
        if os.environ.get(API_ENV, "auto") != "interpreter":
            self.compiled = CompiledSignatures.load(self.path, threads, self.entry_points, self.interpreter)

    def _describe(self) -> list[EntryPoint]:
        entries = []
        for key in self.interpreter.get_signature_list():
            runner = self.interpreter.get_signature_runner(key)
            # litert-torch names positional inputs "args_0", "args_1"…: keep forward()'s order
            ins = sorted(runner.get_input_details().items(), key=lambda kv: (_arg_position(kv[0]), kv[1]["index"]))
            outs = sorted(runner.get_output_details().items(), key=lambda kv: (_arg_position(kv[0]), kv[1]["index"]))
            inputs = [TensorInfo(name, np.dtype(d["dtype"]).name, _shape(d)) for name, d in ins]
            outputs = [TensorInfo(name, np.dtype(d["dtype"]).name, _shape(d)) for name, d in outs]
            entry = EntryPoint(key, inputs, outputs, sequence_length(inputs[0].shape) if inputs else None,
                               handle=(runner, dict(ins), dict(outs)))
            entries.append(entry)
        if not entries:  # a file without signatures: the interpreter's own inputs
            self.interpreter.allocate_tensors()
            ins = sorted(self.interpreter.get_input_details(), key=lambda d: (_arg_position(d["name"]), d["index"]))
            outs = self.interpreter.get_output_details()
            inputs = [TensorInfo(d["name"], np.dtype(d["dtype"]).name, _shape(d)) for d in ins]
            outputs = [TensorInfo(d["name"], np.dtype(d["dtype"]).name, _shape(d)) for d in outs]
            entries.append(EntryPoint("main", inputs, outputs, sequence_length(inputs[0].shape) if inputs else None,
                                      handle=(None, {d["name"]: d for d in ins}, {d["name"]: d for d in outs})))
        return entries

    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        if self.compiled is not None:
            return self.compiled.run(entry.name, [(info.name, np.ascontiguousarray(value, dtype=np.dtype(info.dtype)))
                                                  for value, info in zip(feed, entry.inputs)])
        runner, ins, outs = entry.handle
        if runner is None:
            for info, value in zip(entry.inputs, feed):
                self.interpreter.set_tensor(ins[info.name]["index"], _quantize_input(value, ins[info.name]))
            self.interpreter.invoke()
            return [_dequantize(self.interpreter.get_tensor(outs[o.name]["index"]), outs[o.name]) for o in entry.outputs]
        result = runner(**{info.name: _quantize_input(value, ins[info.name]) for info, value in zip(entry.inputs, feed)})
        return [_dequantize(result[o.name], outs[o.name]) for o in entry.outputs]

    def _order(self, entry: EntryPoint, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [i.name for i in entry.inputs]
        if len(inputs) != len(names):
            raise ValueError(f"artifact takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        if all(k in inputs for k in names):
            return [inputs[k] for k in names]
        return list(inputs.values())  # the bundle's inputs come in forward()'s order, like args_0, args_1

    def details(self) -> dict:
        first = self.entry_points[0]
        info: dict = {
            "signatures": [e.name for e in self.entry_points],
            "inputs": {i.name: i.dtype for i in first.inputs},
            "output_dtype": first.outputs[0].dtype if first.outputs else None,
            "api": "CompiledModel" if self.compiled is not None else "Interpreter",
        }
        if self.compiled is not None:
            info["xnnpack_weight_cache"] = str(self.compiled.weight_cache) if self.compiled.weight_cache else None
            return info
        arena = getattr(self.interpreter, "arena_used_bytes", None)
        if callable(arena):
            try:
                info["arena_used_bytes"] = int(arena())
            except Exception:  # not every interpreter build exposes it
                pass
        return info


def _shape(detail: dict) -> list[int | None]:
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return [int(d) if int(d) >= 0 else None for d in shape]


def _arg_position(name: str) -> int:
    match = re.search(r"args_(\d+)", name)
    return int(match.group(1)) if match else 1 << 30


def _quantize_input(value: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(value.dtype, np.floating) and dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(value, dtype=dtype)


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value.astype(np.float32, copy=True)


#: ``interpreter``: run through the interpreter's signature runners even where the compiled model could
API_ENV = "EDGEPACK_TFLITE_API"
#: where XNNPACK's packed-weight files go (see ``device_bench.user_cache``)
WEIGHT_CACHE_ENV = "EDGEPACK_XNNPACK_CACHE"


class CompiledSignatures:
    """The artifact as one LiteRT ``CompiledModel``: per signature, its index and input/output buffers made once."""

    def __init__(self, model: Any, weight_cache: Path | None, slots: dict[str, Any]) -> None:
        self.model = model
        self.weight_cache = weight_cache
        #: signature -> (index, input buffers by name, in the signature's order, output buffers,
        #: [(output buffer, elements, dtype, shape)] in the entry's order)
        self.slots = slots

    @classmethod
    def load(cls, path: Path, threads: int | None, entries: list[EntryPoint],
             interpreter: Any) -> "CompiledSignatures | None":
        """The compiled model of ``path``, or None where it cannot run this artifact the same way."""
        if not all(_plain(entry) for entry in entries):
            return None  # quantized inputs/outputs (the interpreter path reads their scales), or no signatures
        if not _float_activations(interpreter):
            return None  # full-integer graphs keep the interpreter's kernels their parity was measured with
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.options import CpuOptions, Options
        except ImportError:
            return None
        cache = _weight_cache_file(path)
        model = None
        for weight_cache in ((cache, None) if cache else (None,)):
            try:
                options = CpuOptions(num_threads=threads or 0,
                                     xnnpack_weight_cache_path=str(weight_cache) if weight_cache else "")
                with _locked(weight_cache):
                    model = CompiledModel.from_file(str(path), options=Options(cpu_options=options))
                cache = weight_cache
                break
            except (TypeError, RuntimeError, ValueError, OSError):
                if weight_cache is not None:  # a damaged or unwritable cache file: packed in memory instead
                    weight_cache.unlink(missing_ok=True)
        if model is None:
            return None
        try:
            signatures = model.get_signature_list()
            slots = {}
            for entry in entries:
                index = model.get_signature_index(entry.name)
                buffers = model.create_input_buffers(index)
                inputs = dict(zip(signatures[entry.name]["inputs"], buffers))  # every input, by its signature name
                out_names = signatures[entry.name]["outputs"]
                out_buffers = model.create_output_buffers(index)
                outputs = [(out_buffers[out_names.index(info.name)], int(np.prod(info.shape)), np.dtype(info.dtype),
                            tuple(info.shape)) for info in entry.outputs]
                slots[entry.name] = (index, inputs, buffers, out_buffers, outputs)
        except (KeyError, ValueError, RuntimeError, TypeError):
            return None  # a signature the compiled model names differently: the interpreter runs it
        compiled = cls(model, cache, slots)
        _released_quietly_at_exit()
        return compiled

    def __del__(self) -> None:
        """Freed with fd 2 muted: the model's environment logs each accelerator's destruction (INFO lines)."""
        with fds_muted(2):
            self.slots = {}
            self.model = None

    def run(self, signature: str, feed: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """``feed``: (input name, value) for every input of the signature."""
        index, by_name, buffers, out_buffers, outputs = self.slots[signature]
        if len(feed) != len(buffers):
            raise ValueError(f"signature {signature} takes {len(buffers)} inputs, got {len(feed)}")
        for name, value in feed:
            by_name[name].write(value)
        self.model.run_by_index(index, buffers, out_buffers)
        return [buffer.read(size, dtype).reshape(shape).astype(np.float32, copy=False)
                for buffer, size, dtype, shape in outputs]


def _plain(entry: EntryPoint) -> bool:
    """Whether ``entry`` takes and gives unquantized tensors of static shape (what the compiled path handles)."""
    runner, ins, outs = entry.handle
    if runner is None:
        return False
    tensors = list(ins.values()) + list(outs.values())
    static = all(None not in i.shape for i in entry.inputs + entry.outputs)
    return static and not any((d.get("quantization") or (0.0, 0))[0] for d in tensors)


def _float_activations(interpreter: Any) -> bool:
    """Whether the graph computes in float between its weights (float or dynamic-range int8): no QUANTIZE op.
    A full-integer graph requantizes between ops, and LiteRT's compiled path rounds some of those steps
    differently from the interpreter (one int8 step on some outputs)."""
    try:
        return not any(op.get("op_name") == "QUANTIZE" for op in interpreter._get_ops_details())
    except Exception:  # an interpreter without the (private) op listing: the interpreter path, unchanged
        return False


def _weight_cache_file(path: Path) -> Path | None:
    """The packed-weight file of this artifact on this machine and runtime: keyed by the file (path, size, mtime)
    and what decides the packing (CPU, ai-edge-litert's version), so a rebuilt bundle or another CPU never reads
    another's; None where the cache folder cannot be made."""
    from importlib import metadata

    from ..fingerprint import cpu_isa, cpu_model
    from ..user_cache import user_cache

    try:
        stat = path.stat()
        version = metadata.version("ai-edge-litert")
    except (OSError, metadata.PackageNotFoundError):
        return None
    key = repr((str(path.resolve()), stat.st_size, stat.st_mtime_ns, version, platform.machine(), cpu_model(),
                cpu_isa()))
    folder = user_cache("xnnpack", WEIGHT_CACHE_ENV)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.xnnpack"


@contextmanager
def _locked(cache: Path | None) -> Iterator[None]:
    """Two processes loading one artifact at once (a bench's workers) must not write its cache file together."""
    if cache is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): ai-edge-litert has no wheel there either
        yield
        return
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_EXIT_MUTED: list[bool] = []  # set once a compiled model was loaded: fd 2 is muted at exit


def _released_quietly_at_exit() -> None:
    """LiteRT's environments print an INFO line per accelerator to fd 2 as the process exits (from static
    storage, whatever Python still holds), after the command's own output. A process that loaded a compiled
    model mutes fd 2 in its last moments instead: its atexit handler runs after every handler registered later
    (an application's own, typically) and only before those registered earlier and the C++ teardown."""
    if not _EXIT_MUTED:
        atexit.register(mute_for_good, 2)
        _EXIT_MUTED.append(True)
