"""MediaPipe Tasks text (`.tflite` + TFLite Metadata): load as is in ``TextEmbedder`` / ``TextClassifier``.

MediaPipe's BERT preprocessor tokenizes raw text itself (the WordPiece vocabulary packed in the file's metadata)
and feeds a graph with one fixed-length signature and three int32 inputs: ids, mask, segment ids, in the order
and under the names the metadata declares. This target converts the task's wrapper in that layout (litert-torch,
the static ``seq_len``), optionally int8 (ai-edge-quantizer, tflite-int8's recipe), renames the inputs as Model
Maker's BERT models name them, and writes the metadata with MediaPipe's own writer: the vocabulary, and for a
classifier the label file. The embedding keeps the model's own pooling and normalization (MediaPipe adds none).
The pack verifies it through MediaPipe's Python Tasks API on raw text (``device_bench.runners.mediapipe``).
"""
from __future__ import annotations

import gc
import inspect
import json
import shutil
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_bench.manifest import Shapes
from device_bench.runners.mediapipe import (
    DESCRIPTION_NORMALIZATION,
    LABELS_FILE,
    STRIP_ACCENTS,
    VOCAB_FILE,
    strip_accents,
)

from .base import ExportContext, ExportResult, Target, TargetError, TargetOption, register
from .tflite import TFLiteInt8, quiet_converter

if TYPE_CHECKING:
    from packager.tasks import Task

#: signature input names (Model Maker's BERT models): MediaPipe matches the metadata to tensors by these
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
TENSOR_NAME = "serving_default_{}:0"
RUNTIME_REQUIREMENT = "mediapipe>=1.2.2"


def _wordpiece_vocab(tokenizer: Any) -> list[str] | None:
    """The WordPiece vocabulary in id order, or None when the tokenizer is not WordPiece."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return None
    model = json.loads(backend.to_str()).get("model", {})
    if model.get("type") != "WordPiece":
        return None
    vocab = model.get("vocab") or {}
    # an id no token maps to (a vocab.txt listing one token twice keeps the later id): a line that never matches,
    # since MediaPipe numbers the file's non-empty lines
    tokens = [f"[edgepack-unused-{i}]" for i in range(max(vocab.values()) + 1 if vocab else 0)]
    for token, index in vocab.items():
        tokens[index] = token
    return tokens


#: what MediaPipe's BERT tokenizer does to text before WordPiece: lowercase, no accent stripping
ACCENT_PROBE = "Café Zürich ございます"


def needs_accent_stripping(tokenizer: Any) -> bool:
    """Whether the model's normalizer strips accents (uncased BERT: NFD, combining marks dropped), which
    MediaPipe's tokenizer does not: the app then strips them itself (``device_bench.runners.mediapipe``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is None:
        return False
    return strip_accents(ACCENT_PROBE.lower()) == normalizer.normalize_str(ACCENT_PROBE).lower()


def tokenizer_refusal(tokenizer: Any) -> str | None:
    """Why MediaPipe's BERT preprocessor cannot reproduce this tokenizer, in one line; None when it can."""
    if tokenizer is None:
        return "no tokenizer given to the export"
    if _wordpiece_vocab(tokenizer) is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        kind = json.loads(backend.to_str()).get("model", {}).get("type") if backend is not None else type(tokenizer).__name__
        return f"MediaPipe's text tasks take a WordPiece (BERT) tokenizer; this model's is {kind}"
    if (getattr(tokenizer, "cls_token", None), getattr(tokenizer, "sep_token", None)) != ("[CLS]", "[SEP]"):
        return (f"MediaPipe's BERT preprocessor adds [CLS] and [SEP]; this tokenizer uses "
                f"{tokenizer.cls_token} and {tokenizer.sep_token}")
    return None


def _patch_metadata_version() -> None:
    """mediapipe 1.2.x wheels ship the metadata writers without their compiled helper
    (``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``): supply its one function, the minimum
    metadata parser version, from the schema's history (``metadata_schema.fbs``) for the fields written here."""
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        __import__(name)
        return
    except ImportError:
        pass
    module = types.ModuleType(name)
    module.GetMinimumMetadataParserVersion = _minimum_parser_version
    parent = None
    for part in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
        parent = sys.modules.setdefault(part, types.ModuleType(part))
    sys.modules[name] = module
    parent._pywrap_metadata_version = module


def _minimum_parser_version(buffer: bytes) -> str:
    """The metadata schema version that introduced the newest field in ``buffer`` (history in
    metadata_schema.fbs): 1.1.0 for tokenizer process units, 1.2.0 tensor groups, 1.5.0 custom metadata."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    metadata = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytes(buffer), 0))
    version = (1, 0, 0)
    for graph in metadata.subgraphMetadata or []:
        if graph.customMetadata:
            version = max(version, (1, 5, 0))
        if graph.inputTensorGroups or graph.outputTensorGroups:
            version = max(version, (1, 2, 0))
        units = list(graph.inputProcessUnits or []) + list(graph.outputProcessUnits or [])
        if units:
            version = max(version, (1, 1, 0))
        if any(u.optionsType == fb.ProcessUnitOptions.RegexTokenizerOptions for u in units):
            version = max(version, (1, 2, 1))
        tensors = list(graph.inputTensorMetadata or []) + list(graph.outputTensorMetadata or [])
        files = [f for t in tensors for f in (t.associatedFiles or [])] + list(graph.associatedFiles or [])
        if any(f.type == fb.AssociatedFileType.VOCABULARY for f in files):
            version = max(version, (1, 0, 1))
        if any(f.version for f in files):
            version = max(version, (1, 4, 1))
    return ".".join(map(str, version))


def _three_input_module(wrapper: Any):
    """forward(ids, mask, segment_ids) -> the task's output: the wrapper's model called with the segment ids as
    ``token_type_ids`` (models without them: the mask gated on the segment ids, so the input stays in the graph)."""
    import torch

    model, head = wrapper.model, wrapper.head
    takes_segments = "token_type_ids" in inspect.signature(model.forward).parameters

    class BertLayout(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.head = model, head

        def forward(self, ids, mask, segment_ids):
            if takes_segments:
                out = self.model(input_ids=ids.long(), attention_mask=mask.long(), token_type_ids=segment_ids.long())
            else:
                out = self.model(input_ids=ids.long(), attention_mask=(mask * (segment_ids >= 0).to(mask.dtype)).long())
            return self.head(out, mask)

    return BertLayout().eval()


def _rename_inputs(path: Path) -> None:
    """Name the inputs as MediaPipe's metadata declares them, by forward()'s position: litert-torch names the
    signature's inputs ``args_<position>``; the subgraph's input order need not follow it."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    signatures = model.signatureDefs or []
    if len(model.subgraphs) != 1 or len(signatures) != 1 or len(signatures[0].inputs) != len(INPUT_NAMES):
        raise TargetError(f"expected one signature with {len(INPUT_NAMES)} inputs, got {len(signatures)} signature(s)")
    graph = model.subgraphs[0]
    for tensor in signatures[0].inputs:
        position = int(tensor.name.decode().rsplit("_", 1)[-1])
        tensor.name = INPUT_NAMES[position].encode()
        graph.tensors[tensor.tensorIndex].name = TENSOR_NAME.format(INPUT_NAMES[position]).encode()
    flatbuffer_utils.write_model(model, str(path))


@register
class MediaPipeText(Target):
    name = "mediapipe-text"
    runtime = "mediapipe"
    suffix = ".tflite"
    description = ("MediaPipe Tasks TextEmbedder/TextClassifier .tflite: tokenizer and labels in its TFLite "
                   "Metadata, raw text in (Android, iOS, web, Python)")
    runtime_requirement = RUNTIME_REQUIREMENT
    requires = ("litert_torch", "ai_edge_quantizer", "mediapipe")
    @classmethod
    def refuses_task(cls, task: "type[Task] | Task") -> str | None:
        return (f"MediaPipe's text tasks give one vector per text (embedding or class scores); {task.name} gives "
                "one row per token") if task.per_token else None

    options = {
        "precision": TargetOption(str, "int8", "int8: tflite-int8's dynamic int8 recipe (Hadamard-rotated); fp32: "
                                  "the float graph", choices=("int8", "fp32")),
    }

    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        refusal = tokenizer_refusal(ctx.tokenizer)
        if refusal:
            raise TargetError(f"MediaPipe cannot take this model: {refusal}")
        shape = ctx.task.output_shape(ctx.hf_model, ctx.seq_len)
        if len(shape) != 2:
            raise TargetError("MediaPipe's text tasks give one vector per text (embedding or class scores); "
                              f"this task's output is {shape}")
        labels = None
        if ctx.task.has_labels:
            id2label = getattr(ctx.hf_model.config, "id2label", None) or {}
            labels = [str(id2label.get(i, i)) for i in range(shape[1])]
        module = _three_input_module(ctx.wrapper)
        example = ctx.example_tensors()
        import litert_torch
        import torch

        float_path = ctx.workdir / f"{self.name}.fp32.tflite"
        try:
            with quiet_converter():
                litert_torch.convert(module, (*example, torch.zeros_like(example[0]))).export(str(float_path))
        except Exception as exc:
            raise TargetError(f"litert-torch conversion failed: {str(exc).strip().splitlines()[0][:300]}") from exc
        precision = ctx.options.get("precision", "int8")
        graph_path = float_path
        notes = []
        if precision == "int8":
            quantizer = TFLiteInt8()
            recipe_name = quantizer.RECIPES["hadamard"]  # MediaPipe runs it as TFLite does; every input rotated
            graph_path = ctx.workdir / f"{self.name}.int8.tflite"
            try:
                with quiet_converter():
                    quantizer._quantizer(float_path, "tensorwise", [], ("hadamard", None)).quantize().export_model(
                        str(graph_path), overwrite=True)
            except Exception as exc:
                raise TargetError(f"ai-edge-quantizer ({recipe_name}) failed: "
                                  f"{str(exc).strip().splitlines()[0][:300]}") from exc
            notes.append(f"ai-edge-quantizer recipe {recipe_name} (Hadamard-rotated inputs), embedding tables "
                         "int8 per tensor")
        _rename_inputs(graph_path)
        vocab = _wordpiece_vocab(ctx.tokenizer) or []
        files = ctx.workdir / f"{self.name}.files"
        files.mkdir(exist_ok=True)
        (files / VOCAB_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
        normalization = STRIP_ACCENTS if needs_accent_stripping(ctx.tokenizer) else None
        try:
            out_path.write_bytes(self._with_metadata(graph_path.read_bytes(), files, labels, normalization))
        except Exception as exc:
            raise TargetError(f"MediaPipe metadata writer failed: {str(exc).strip().splitlines()[0][:300]}") from exc
        finally:
            float_path.unlink(missing_ok=True)
            graph_path.unlink(missing_ok=True)
            shutil.rmtree(files, ignore_errors=True)
        mediapipe_task = "TextClassifier" if labels is not None else "TextEmbedder"
        notes.append(f"MediaPipe {mediapipe_task}: WordPiece vocabulary ({len(vocab)} tokens)"
                     + (f" and {len(labels)} labels" if labels is not None else "")
                     + f" in its TFLite Metadata; one static shape of {ctx.seq_len} tokens (MediaPipe's BERT "
                       "preprocessor pads every text to it)")
        if normalization:
            notes.append("the model's tokenizer strips accents and MediaPipe's does not: apps strip them before "
                         "MediaPipe (NFD, combining marks dropped; USAGE.md's snippets do), as the verification did")
        return ExportResult(
            precision="dynamic-int8" if precision == "int8" else "fp32",
            notes=notes,
            details={"converter": "litert-torch", "mediapipe_task": mediapipe_task, "inputs": list(INPUT_NAMES),
                     "max_seq_len": ctx.seq_len, "labels": labels, "vocab_size": len(vocab),
                     "text_normalization": normalization,
                     "verified_with": f"MediaPipe Python Tasks API ({mediapipe_task}) on the raw texts"},
            shapes=Shapes(buckets=[ctx.seq_len], entry_points={str(ctx.seq_len): "serving_default"},
                          how="one static shape: MediaPipe's BERT preprocessor pads every text to the input length"),
        )

    @staticmethod
    def _with_metadata(model: bytes, files: Path, labels: list[str] | None, normalization: str | None = None) -> bytes:
        _patch_metadata_version()
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer as mw

        writer = mw.MetadataWriter.create(bytearray(model))
        try:
            return MediaPipeText._populate(writer, mw, files, labels, normalization)
        finally:  # the writer (in a reference cycle) and its temporary folder go now, not at interpreter exit,
            del writer  # where its __del__ fails
            gc.collect()

    @staticmethod
    def _populate(writer: Any, mw: Any, files: Path, labels: list[str] | None, normalization: str | None) -> bytes:
        description = "Packed by edgepack: text in, the model's own output (embedding or class scores)."
        if normalization:
            description += f"\n{DESCRIPTION_NORMALIZATION}{normalization}"
        writer.add_general_info("TextClassifier" if labels is not None else "TextEmbedder", description)
        writer.add_bert_text_input(mw.BertTokenizer(str(files / VOCAB_FILE)),
                                   *(TENSOR_NAME.format(n) for n in INPUT_NAMES))
        if labels is not None:
            writer.add_classification_output(mw.Labels().add(labels, exported_filename=LABELS_FILE))
        else:
            writer.add_feature_output(name="embedding", description="the model's own sentence embedding")
        buffer, _ = writer.populate()
        return bytes(buffer)
