"""MediaPipe Tasks text runner: the ``mediapipe-text`` artifact run by MediaPipe's own Python Tasks API.

The artifact is a ``.tflite`` whose TFLite Metadata carries the WordPiece vocabulary (and, for a classifier, the
label file): MediaPipe's ``TextEmbedder`` / ``TextClassifier`` take raw text and tokenize it themselves, as the
app on the phone or in the browser does. ``run_text`` is that path. Token ids from a bundle's ``parity.npz`` or
``samples.npz`` (``check --on-device``, ``bench``) run through LiteRT on the same file (``run``): MediaPipe's
Python API takes no ids. The segment-ids input (MediaPipe's BERT layout: ids, mask, segment ids) is fed zeros
there, as MediaPipe does for one text.
"""
from __future__ import annotations

import dataclasses
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .base import EntryPoint, RunnerUnavailable
from .tflite import TFLiteRunner

#: the label file a classifier artifact carries in its metadata (its presence makes the artifact a classifier)
LABELS_FILE = "labels.txt"
VOCAB_FILE = "vocab.txt"
#: the model's tokenizer strips accents (uncased BERT) and MediaPipe's does not: the text is stripped before it
STRIP_ACCENTS = "strip-accents"
#: how the artifact's metadata description (one line of it) says which normalization the app applies
DESCRIPTION_NORMALIZATION = "text normalization before MediaPipe: "


def strip_accents(text: str) -> str:
    """Hugging Face BertNormalizer's accent stripping: NFD, then every combining mark (Mn) dropped."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def text_normalization(path: Path) -> str | None:
    """The normalization the artifact's metadata description asks the app to apply (None: the text as is)."""
    try:
        from ai_edge_litert.tools import flatbuffer_utils
        from mediapipe.tasks.metadata import metadata_schema_py_generated as fb
    except ImportError:
        return None
    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        if entry.name == b"TFLITE_METADATA":
            data = bytes(model.buffers[entry.buffer].data)
            description = (fb.ModelMetadata.GetRootAsModelMetadata(data, 0).Description() or b"").decode()
            for line in description.splitlines():
                if line.startswith(DESCRIPTION_NORMALIZATION):
                    return line[len(DESCRIPTION_NORMALIZATION):].strip()
    return None


def packed_files(path: Path) -> list[str]:
    """Names of the files packed in the artifact's metadata (MediaPipe appends them as a zip archive)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return []


class MediaPipeTextRunner(TFLiteRunner):
    runtime = "mediapipe"
    distributions = ("mediapipe",)
    #: runs raw text (``run_text``): callers that hold texts feed them here instead of token ids
    takes_text = True

    def __init__(self, path: Path, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(path, threads, **kwargs)
        self.is_classifier = LABELS_FILE in packed_files(self.path)
        self.normalization = text_normalization(self.path)

    def _describe(self) -> list[EntryPoint]:
        """The entry point as the bundle sees it: ids and mask; the segment ids are filled in by ``_invoke``."""
        entries = super()._describe()
        self._all_inputs = {entry.name: entry.inputs for entry in entries}
        for entry in entries:
            entry.inputs = entry.inputs[:2]
        return entries

    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        every = dataclasses.replace(entry, inputs=self._all_inputs[entry.name])
        return super()._invoke(every, [*feed, np.zeros_like(feed[0])][:len(every.inputs)])

    def _mediapipe_task(self):
        """A fresh TextClassifier / TextEmbedder on the file as is; the caller closes it."""
        try:
            from mediapipe.tasks.python import text
            from mediapipe.tasks.python.core.base_options import BaseOptions
        except ImportError:
            raise RunnerUnavailable("runtime 'mediapipe' needs mediapipe (pip install 'mediapipe>=1.2.2,<2')") from None
        base = BaseOptions(model_asset_path=str(self.path))
        if self.is_classifier:
            return text.TextClassifier.create_from_options(text.TextClassifierOptions(base_options=base, max_results=-1))
        # the model's own pooling and normalization: MediaPipe adds none
        return text.TextEmbedder.create_from_options(
            text.TextEmbedderOptions(base_options=base, l2_normalize=False, quantize=False))

    def run_texts(self, texts: list[str]) -> np.ndarray:
        """MediaPipe's outputs for raw texts, [n, width]: the embeddings, or the scores in label order."""
        rows = []
        if self.normalization == STRIP_ACCENTS:
            texts = [strip_accents(t) for t in texts]
        with self._mediapipe_task() as task:
            for text_input in texts:
                if self.is_classifier:
                    categories = task.classify(text_input).classifications[0].categories
                    scores = np.zeros(len(categories), dtype=np.float32)
                    for category in categories:
                        scores[category.index] = category.score
                    rows.append(scores)
                else:
                    rows.append(np.asarray(task.embed(text_input).embeddings[0].embedding, dtype=np.float32))
        return np.stack(rows)

    def run_text(self, text_input: str) -> np.ndarray:
        return self.run_texts([text_input])

    def details(self) -> dict:
        return {"mediapipe_task": "TextClassifier" if self.is_classifier else "TextEmbedder",
                "text_normalization": self.normalization}
