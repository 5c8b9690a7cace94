"""The bundle manifest: the contract between the packing host and the device.

It lives in ``device_bench`` because the device agent must read and validate
bundles without the packing side (torch, transformers, converters) installed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import RecordError, check, load_json

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is ~10 KB; the agent refuses more (413)
SAMPLES_NAME = "samples.npz"

STATUS_OK = "ok"
STATUS_PARITY_FAILED = "parity-failed"
STATUS_FAILED = "failed"
TARGET_STATUSES = (STATUS_OK, STATUS_PARITY_FAILED, STATUS_FAILED)


class ManifestError(ValueError):
    """A manifest that does not match the schema; the message names the field."""


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int]


@dataclass
class InputSpec:
    seq_len: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    padding_side: str = "right"
    truncation: bool = True
    pooling: str | None = None  # sentence embeddings: "mean", "cls", "max", "mean+max"...; None for logits
    normalize: bool = False
    #: where the pooling came from: "sentence-transformers" (the model's modules), "default" (plain encoder:
    #: mean + normalize), "--pooling" (overridden at pack time)
    pooling_source: str | None = None
    dense: list[dict[str, Any]] = field(default_factory=list)  # Dense layers after pooling, in order
    prompt: str | None = None  # prepended to every text before tokenizing (the model's default prompt)
    include_prompt: bool = True  # False: the prompt's tokens are left out of the pooling
    output_activation: str | None = None  # "sigmoid": multi-label scores (compare with label_thresholds)


@dataclass
class ModelInfo:
    source: str
    architecture: str
    model_type: str
    num_parameters: int
    fp32_size_bytes: int
    num_layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None


@dataclass
class Parity:
    """Agreement of one artifact with the fp32 PyTorch reference on held-in texts."""

    n_samples: int
    passed: bool
    mean_cosine: float | None = None
    min_cosine: float | None = None
    top1_agreement: float | None = None
    token_agreement: float | None = None  # token classification: per-token top-1 on real tokens
    label_agreement: float | None = None  # multi-label: per-label decisions at the label thresholds
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None  # task accuracy on labelled data, when labels were given


@dataclass
class TargetEntry:
    name: str
    status: str
    runtime: str  # device_bench runner key: "tflite", "torch-lite", "onnxruntime", "executorch"
    precision: str = ""
    file: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    runtime_requirement: str = ""  # pip-style requirement for the device, e.g. "ai-edge-litert>=2.3"
    notes: list[str] = field(default_factory=list)
    parity: Parity | None = None
    error: str | None = None
    export_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    created_at: str
    edgepack_version: str
    tool_versions: dict[str, str]
    model: ModelInfo
    task: str
    input_spec: InputSpec
    tokenizer: str | None
    targets: list[TargetEntry]
    labels: list[str] | None = None
    label_thresholds: list[float] | None = None  # multi-label: a label is predicted when its score >= this
    parity_reference: str | None = None  # what the targets' parity was measured against
    samples: str | None = SAMPLES_NAME
    recipe: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    # -- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # schema_version first: readers look for it before anything else
        return {"schema_version": d.pop("schema_version"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def write(self, bundle_dir: Path) -> Path:
        path = Path(bundle_dir) / MANIFEST_NAME
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("manifest: expected a JSON object")
        version = data.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:  # `true == 1` in Python
            raise ManifestError(
                f"manifest: schema_version {version!r} is not supported (this edgepack reads {SCHEMA_VERSION})"
            )
        try:
            input_spec = dict(_require(data, "input_spec", dict))
            input_spec["inputs"] = [_build(TensorSpec, t, "input_spec.inputs") for t in _require(input_spec, "inputs", list)]
            input_spec["outputs"] = [_build(TensorSpec, t, "input_spec.outputs") for t in _require(input_spec, "outputs", list)]
            targets = []
            for i, t in enumerate(_require(data, "targets", list)):
                t = dict(_expect(t, dict, f"targets[{i}]"))
                if t.get("parity") is not None:
                    t["parity"] = _build(Parity, t["parity"], f"targets[{i}].parity")
                entry = _build(TargetEntry, t, f"targets[{i}]")
                if entry.status not in TARGET_STATUSES:
                    raise ManifestError(f"manifest: targets[{i}].status {entry.status!r} is not one of {TARGET_STATUSES}")
                if entry.status != STATUS_FAILED and not (entry.file and entry.sha256):
                    raise ManifestError(f"manifest: targets[{i}] ({entry.name}) has no file/sha256")
                if entry.file is not None:
                    _check_relative(entry.file, f"targets[{i}].file")
                targets.append(entry)
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(data) - fields
            if unknown:
                raise ManifestError(f"manifest: unknown field(s) {sorted(unknown)}")
            kwargs = dict(data)
            kwargs["model"] = _build(ModelInfo, _require(data, "model", dict), "model")
            kwargs["input_spec"] = _build(InputSpec, input_spec, "input_spec")
            kwargs["targets"] = targets
            for key in ("tokenizer", "samples"):
                if kwargs.get(key) is not None:
                    _check_relative(kwargs[key], key)
            manifest = cls(**kwargs)
            check(manifest, "manifest")  # every field of its declared type (a name is a string, …)
        except TypeError as exc:  # missing/extra constructor fields
            raise ManifestError(f"manifest: {exc}") from None
        except RecordError as exc:
            raise ManifestError(str(exc)) from None
        names = [t.name for t in manifest.targets]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ManifestError(f"manifest: target {twice!r} is listed twice")
        return manifest

    @classmethod
    def load(cls, bundle_dir: Path) -> "Manifest":
        path = Path(bundle_dir) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{bundle_dir}: not a bundle (no {MANIFEST_NAME})")
        try:
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{path}: {size} bytes, over the limit of {MAX_MANIFEST_BYTES}")
            data = load_json(path.read_bytes(), what=f"{path}", max_bytes=MAX_MANIFEST_BYTES, allow_nan=True)
        except (OSError, RecordError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
        return cls.from_dict(data)

    # -- helpers -------------------------------------------------------
    def target(self, name: str) -> TargetEntry:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def runnable_targets(self) -> list[TargetEntry]:
        """Targets with an artifact on disk (ok, or kept despite a parity failure)."""
        return [t for t in self.targets if t.status != STATUS_FAILED and t.file]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_files(bundle_dir: Path, manifest: Manifest, digests: dict[Path, str] | None = None) -> list[str]:
    """Return a list of problems (missing file, size or sha256 mismatch); empty when intact.

    A file listed by several targets is hashed once (``digests`` may carry the hashes across calls).
    """
    problems = []
    root = Path(bundle_dir).resolve()
    digests = {} if digests is None else digests
    for t in manifest.runnable_targets():
        path = (root / t.file).resolve()
        if root not in path.parents:
            problems.append(f"{t.name}: file {t.file!r} escapes the bundle")
        elif not path.is_file():
            problems.append(f"{t.name}: missing file {t.file}")
        elif t.size_bytes is not None and path.stat().st_size != t.size_bytes:
            problems.append(f"{t.name}: size of {t.file} is {path.stat().st_size}, manifest says {t.size_bytes}")
        elif (digests[path] if path in digests else digests.setdefault(path, sha256_file(path))) != t.sha256:
            problems.append(f"{t.name}: sha256 mismatch for {t.file}")
    return problems


def _expect(value: Any, typ: type, where: str) -> Any:
    if not isinstance(value, typ):
        raise ManifestError(f"manifest: {where} must be a {typ.__name__}")
    return value


def _require(data: dict, key: str, typ: type) -> Any:
    if key not in data:
        raise ManifestError(f"manifest: missing field {key!r}")
    return _expect(data[key], typ, key)


def _build(cls: type, value: Any, where: str) -> Any:
    value = _expect(value, dict, where)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise ManifestError(f"manifest: unknown field(s) {sorted(unknown)} in {where}")
    try:
        return cls(**value)
    except TypeError as exc:
        raise ManifestError(f"manifest: {where}: {exc}") from None


def _check_relative(rel: Any, where: str) -> None:
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ManifestError(f"manifest: {where} must be a non-empty path without NUL bytes, got {rel!r:.80}")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ManifestError(f"manifest: {where} must be a relative path inside the bundle, got {rel!r}")
