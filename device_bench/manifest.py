"""The bundle manifest: the contract between the packing host and the device.

It lives in ``device_bench`` because the device agent must read and validate
bundles without the packing side (torch, transformers, converters) installed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compute import MacsPerLength
from .records import RecordError, from_dict, load_json

#: Evolution rule: a field added with a default bumps SCHEMA_MINOR, and readers of the same major version
#: accept bundles of any minor (ignoring, and naming, the fields they do not know); only a new major is
#: refused. Minor 1 added the sequence-length fields (buckets, dynamic shapes, parity per length) and the
#: embedding-pipeline / task fields (pooling_source, dense, prompt, label thresholds, parity reference…).
#: Minor 2 added ``parity_inputs``: the parity texts' inputs and fp32 outputs, for the device's own check.
#: Minor 3 added ``model.macs``: multiply-accumulates per inference as a function of the length.
#: Minor 4 added ``targets[].parity_by_isa``: the gates recomputed on other x86 kernel families at pack time.
SCHEMA_VERSION = 1
SCHEMA_MINOR = 4
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
class TokenLengths:
    """Token-length distribution of the pack's texts (after truncation to seq_len): where the buckets came from."""

    n_texts: int
    mean: float
    p50: int
    p90: int
    max: int
    truncated: int = 0  # texts longer than seq_len (cut to seq_len)


@dataclass
class InputSpec:
    seq_len: int  # the maximum length; inputs/outputs shapes are given at this length
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    padding_side: str = "right"
    truncation: bool = True
    pooling: str | None = None  # sentence embeddings: "mean", "cls", "max", "mean+max"...; None for logits
    normalize: bool = False
    buckets: list[int] | None = None  # requested static lengths (None: one shape, seq_len); minor 1
    bucket_choice: str | None = None  # "--buckets" or how the default was derived; minor 1
    token_lengths: TokenLengths | None = None  # minor 1
    #: where the pooling came from: "sentence-transformers" (the model's modules), "default" (plain encoder:
    #: mean + normalize), "--pooling" (overridden at pack time)
    pooling_source: str | None = None
    dense: list[dict[str, Any]] = field(default_factory=list)  # Dense layers after pooling, in order
    prompt: str | None = None  # prepended to every text before tokenizing (the model's default prompt)
    include_prompt: bool = True  # False: the prompt's tokens are left out of the pooling
    output_activation: str | None = None  # "sigmoid": multi-label scores (compare with label_thresholds)


@dataclass
class Shapes:
    """The sequence lengths one artifact accepts (minor 1).

    Either static ``buckets`` (ascending; inputs are padded to the smallest that holds them) or a
    ``dynamic`` range ``{"min": m, "max": n}`` (any length in it, no padding). ``entry_points`` maps a
    bucket (as a string) to the signature/method that runs it; ``how`` says how and why.
    """

    buckets: list[int] = field(default_factory=list)
    dynamic: dict[str, int] | None = None
    entry_points: dict[str, str] = field(default_factory=dict)
    how: str = ""


@dataclass
class LengthParity:
    """Agreement with the fp32 reference on texts of one length group (a bucket, or a spot length of a dynamic
    artifact); minor 1."""

    length: int
    n_samples: int
    passed: bool
    mean_cosine: float | None = None
    min_cosine: float | None = None
    top1_agreement: float | None = None
    inputs: str = ""  # which texts: "texts that fit" / "texts joined and cut to the length"
    agreements: dict[str, float] = field(default_factory=dict)  # the task's agreement metrics (top-1, per token…)


@dataclass
class ParityGroup:
    """One group of the pack's parity inputs: the calibration rows at their real lengths (``length`` None), or the
    texts of one length (a bucket, or a spot length only dynamic artifacts are checked at); minor 2."""

    length: int | None
    rows: int = 0
    gates: bool = True  # a failure here fails the artifact (spot lengths are recorded only)
    dynamic_only: bool = False
    source: str = ""


@dataclass
class ParityInputs:
    """The file holding every group's inputs and fp32 reference outputs (``parity.npz``); minor 2."""

    file: str
    sha256: str
    groups: list[ParityGroup] = field(default_factory=list)


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
    macs: MacsPerLength | None = None  # minor 3: counted on the fp32 model at pack time


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
class IsaParity:
    """The artifact's parity gates recomputed at pack time with another x86 kernel family's kernels (an
    ``edgepack isa-mask`` profile on the packing host: that family's int8 numerics); minor 4."""

    isa: str  # the profile: "avx2", "avx512_vnni"
    passed: bool
    metrics: dict[str, float] = field(default_factory=dict)  # the calibration rows', as ``Parity``'s
    shortfalls: list[str] = field(default_factory=list)  # the gates missed, per length
    emulated_on: str = ""  # the packing host's CPU
    error: str | None = None


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
    shapes: Shapes | None = None  # None: static [1, seq_len] (bundles before minor 1)
    parity_by_length: list[LengthParity] = field(default_factory=list)
    parity_by_isa: list[IsaParity] = field(default_factory=list)  # minor 4


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
    parity_inputs: ParityInputs | None = None  # minor 2: what the device re-checks parity with
    schema_version: int = SCHEMA_VERSION
    schema_minor: int = SCHEMA_MINOR

    #: fields of the document this reader does not know (a newer minor version), set by ``from_dict``
    ignored_fields: typing.ClassVar[list[str]] = []

    # -- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # the version first: readers look for it before anything else
        return {"schema_version": d.pop("schema_version"), "schema_minor": d.pop("schema_minor"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def write(self, bundle_dir: Path) -> Path:
        path = Path(bundle_dir) / MANIFEST_NAME
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        """Validate and build; unknown fields of a newer minor version are ignored and listed in
        ``ignored_fields``; another major version is refused."""
        if not isinstance(data, dict):
            raise ManifestError("manifest: expected a JSON object")
        check_version(data.get("schema_version"), data.get("schema_minor", 0), "manifest")
        ignored: list[str] = []
        try:
            manifest = from_dict(cls, data, "manifest", ignore_unknown=True, ignored=ignored)
        except RecordError as exc:
            raise ManifestError(str(exc)) from None
        for i, entry in enumerate(manifest.targets):
            if entry.status not in TARGET_STATUSES:
                raise ManifestError(f"manifest: targets[{i}].status {entry.status!r} is not one of {TARGET_STATUSES}")
            if entry.status != STATUS_FAILED and not (entry.file and entry.sha256):
                raise ManifestError(f"manifest: targets[{i}] ({entry.name}) has no file/sha256")
            if entry.file is not None:
                _check_relative(entry.file, f"targets[{i}].file")
        for key in ("tokenizer", "samples"):
            if getattr(manifest, key) is not None:
                _check_relative(getattr(manifest, key), key)
        if manifest.parity_inputs is not None:
            _check_relative(manifest.parity_inputs.file, "parity_inputs.file")
        manifest.ignored_fields = [name.removeprefix("manifest.") for name in ignored]
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


def check_version(major: Any, minor: Any, what: str, supported: int = SCHEMA_VERSION) -> None:
    """Accept any minor of the supported major version; refuse another major with a one-line reason."""
    if type(major) is not int or major != supported:  # `true == 1` in Python
        raise ManifestError(f"{what}: schema_version {major!r:.40} is not supported (this edgepack reads "
                            f"{supported}.x; a new major version changes the meaning of existing fields)")
    if type(minor) is not int or minor < 0:
        raise ManifestError(f"{what}: schema_minor {minor!r:.40} must be a non-negative integer")


def _check_relative(rel: Any, where: str) -> None:
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ManifestError(f"manifest: {where} must be a non-empty path without NUL bytes, got {rel!r:.80}")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ManifestError(f"manifest: {where} must be a relative path inside the bundle, got {rel!r}")
