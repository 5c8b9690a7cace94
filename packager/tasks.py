"""Tasks: what the exported graph computes and how its outputs are compared.

Each task is one class and owns everything task-specific: the HF auto class it
loads with, its head (model outputs -> the one output tensor), the two export
wrappers built from that head (plain, and quantization-friendly for the
full-integer and ExecuTorch targets), the parity reference, parity metrics and
gates, and the recipe stages it supports. Targets receive the Task object and
never branch on a task name.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .embedding_pipeline import (
    SOURCE_DEFAULT,
    SOURCE_OVERRIDE,
    EmbeddingHead,
    EmbeddingPipeline,
    prompt_length,
    read_pipeline,
    sentence_transformers_reference,
)
from device_bench.parity import DEFAULT_LABEL_THRESHOLD, GATES, cosines, task_metrics
from device_bench.parity import shortfalls as gate_shortfalls
from device_bench.registry import EVERY, Registry, names_all

from .errors import EdgepackError

INPUT_NAMES = ["input_ids", "attention_mask"]
#: an export wrapper must reproduce the model's own pipeline this closely (fp32 against fp32)
PIPELINE_FIDELITY = 0.9999


class TaskWrapper(nn.Module):
    """forward(input_ids:int32, attention_mask:int32) -> the task's one output tensor.

    With ``mask_value`` the wrapper builds a bounded additive attention mask and looks
    the embeddings up with a gather (see ``targets/tflite_full``): same numbers, a
    graph that static quantization and pt2e rewrites survive.
    """

    def __init__(self, model: nn.Module, head: nn.Module, mask_value: float | None = None) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.mask_value = None if mask_value is None else float(mask_value)
        self.embeddings = model.get_input_embeddings() if mask_value is not None else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.mask_value is None:
            out = self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long())
        else:
            mask = attention_mask.to(torch.float32)
            bias = ((1.0 - mask) * -self.mask_value)[:, None, None, :]
            embeds = torch.index_select(self.embeddings.weight, 0, input_ids.reshape(-1).long())
            embeds = embeds.reshape(input_ids.shape[0], input_ids.shape[1], -1)
            out = self.model(inputs_embeds=embeds, attention_mask=bias)
        return self.head(out, attention_mask)


class _LogitsHead(nn.Module):
    def __init__(self, sigmoid: bool = False) -> None:
        super().__init__()
        self.sigmoid = sigmoid

    def forward(self, out: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.logits) if self.sigmoid else out.logits


class _TokenLogitsHead(nn.Module):
    """Per-token logits, zero at padding: padding carries no prediction, and architectures whose padded
    positions depend on how the ids arrive (RoBERTa's position ids) then give the same output either way."""

    def forward(self, out: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        return out.logits * attention_mask.unsqueeze(-1).to(out.logits.dtype)


class _PooledHead(nn.Module):
    def __init__(self, pooling: EmbeddingHead) -> None:
        super().__init__()
        self.pooling = pooling

    def forward(self, out: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pooling(out.last_hidden_state, attention_mask)


class Task(ABC):
    name: ClassVar[str]
    output_name: ClassVar[str]
    auto_class: ClassVar[str]  # attribute of ``transformers``
    #: one line for `--task` help and `edgepack targets --models`
    summary: ClassVar[str]
    #: threshold name -> the parity metric it bounds from below
    gates: ClassVar[dict[str, str]]
    #: the parity metric and goal the full-integer target's per-op-type search aims for
    integer_goal: ClassVar[tuple[str, float]]
    #: recipe stages this task supports (the others are refused at recipe validation); ``EVERY``: all of them
    stages: ClassVar[tuple[str, ...]] = ()
    #: whether the model's config carries label names for the manifest
    has_labels: ClassVar[bool] = False
    #: one output row per token (not one vector per text): targets that carry per-text outputs only refuse it
    per_token: ClassVar[bool] = False

    @classmethod
    def supports_stage(cls, kind: str) -> bool:
        return kind in cls.stages or names_all(cls.stages)

    def configure(self, source: str, model: nn.Module, tokenizer: Any) -> "Task":
        """The task as the loaded model needs it (reads the model's own files); returns the task to use."""
        return self

    @abstractmethod
    def make_head(self, model: nn.Module) -> nn.Module:
        """forward(model outputs, attention_mask) -> the one output tensor."""

    def make_wrapper(self, model: nn.Module) -> nn.Module:
        """The export wrapper every target converts: the model called as HF calls it, then the head."""
        return TaskWrapper(model, self.make_head(model)).eval()

    def make_quant_friendly_wrapper(self, model: nn.Module, mask_value: float) -> nn.Module:
        """Same outputs, bounded additive mask and gather-based embeddings (full-integer and ExecuTorch targets)."""
        return TaskWrapper(model, self.make_head(model), mask_value).eval()

    def prepare_texts(self, texts: list[str]) -> list[str]:
        """Texts as the model's own pipeline feeds them to the tokenizer."""
        return list(texts)

    def reference(self, wrapper_outputs: np.ndarray, texts: list[str], seq_len: int) -> tuple[np.ndarray, str]:
        """What every artifact is checked against, and its name for the manifest."""
        return wrapper_outputs, "fp32 PyTorch export wrapper"

    def parity(self, reference: np.ndarray, candidate: np.ndarray,
               inputs: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Compare the artifact's outputs with the reference (``inputs``: the tokenized texts, for masks): the
        task's metrics as the device computes them (``device_bench.parity``)."""
        mask = None if inputs is None else inputs.get("attention_mask")
        return task_metrics(self.name, reference, candidate, mask, self.label_thresholds() or None)

    def thresholds(self, min_cosine: float, min_agreement: float) -> dict[str, float]:
        """The pack's gate values for this task's ``gates`` (``min_cosine`` / ``min_agreement``)."""
        given = {"min_cosine": min_cosine, "min_agreement": min_agreement}
        return {gate: given[gate] for gate in self.gates}

    def shortfalls(self, metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
        """Human-readable gates that failed; empty when the artifact passes."""
        return gate_shortfalls(self.name, metrics, thresholds)

    def predictions(self, outputs: np.ndarray) -> np.ndarray | None:
        """Class predictions for task accuracy on labelled texts, or None when the task has none."""
        return None

    @abstractmethod
    def output_shape(self, model: nn.Module, seq_len: int) -> list[int]: ...

    def spec(self) -> dict[str, Any]:
        """Task fields of the manifest's ``input_spec``."""
        return {}

    def label_thresholds(self) -> list[float] | None:
        return None


class FeatureExtraction(Task):
    """Sentence embedding, computed by the model's own pipeline (sentence-transformers modules) or the default."""

    name = "feature-extraction"
    output_name = "embedding"
    auto_class = "AutoModel"
    summary = "sentence embedding: the model's own sentence-transformers pipeline, else mean + L2 normalize"
    gates = GATES["feature-extraction"]
    integer_goal = ("mean_cosine", 0.995)

    def __init__(self, pooling: str | None = None) -> None:
        self.pooling_override = pooling
        self.pipeline = EmbeddingPipeline()
        self.source: str | None = None
        self.prompt_tokens = 0

    def configure(self, source: str, model: nn.Module, tokenizer: Any) -> "Task":
        self.source = source
        self.pipeline = read_pipeline(source, self.pooling_override)
        self.prompt_tokens = prompt_length(tokenizer, self.pipeline.prompt)
        return self

    def make_head(self, model: nn.Module) -> nn.Module:
        return _PooledHead(EmbeddingHead(self.pipeline, int(model.config.hidden_size), self.prompt_tokens))

    def prepare_texts(self, texts: list[str]) -> list[str]:
        prompt = self.pipeline.prompt or ""
        return [prompt + t for t in texts]

    def reference(self, wrapper_outputs: np.ndarray, texts: list[str], seq_len: int) -> tuple[np.ndarray, str]:
        own = sentence_transformers_reference(self.source, self.pipeline, texts, seq_len) if self.source else None
        if own is None:
            why = {SOURCE_DEFAULT: "no sentence-transformers pipeline in the model: default mean + normalize",
                   SOURCE_OVERRIDE: "pooling set by --pooling"}.get(self.pipeline.source,
                                                                    "sentence-transformers not installed: the "
                                                                    "model's pipeline applied by hand")
            if self.pipeline.unchecked:
                why += f"; {self.pipeline.unchecked}"
            return wrapper_outputs, f"fp32 PyTorch export wrapper ({why})"
        expected, name = own
        fidelity = cosines(np.asarray(expected), wrapper_outputs)
        if fidelity.min() < PIPELINE_FIDELITY:
            raise EdgepackError(f"the export wrapper does not reproduce the model's own pipeline "
                                f"({self.pipeline.describe()}): min cosine {fidelity.min():.6f} against {name}")
        return np.asarray(expected, dtype=np.float32), name

    def output_shape(self, model: nn.Module, seq_len: int) -> list[int]:
        width = self.pipeline.dense[-1].out_features if self.pipeline.dense else \
            int(model.config.hidden_size) * len(self.pipeline.pooling)
        return [1, width]

    def spec(self) -> dict[str, Any]:
        p = self.pipeline
        return {"pooling": p.pooling_name, "normalize": p.normalize, "pooling_source": p.source,
                "dense": [d.describe() for d in p.dense], "prompt": p.prompt, "include_prompt": p.include_prompt}


class SequenceClassification(Task):
    name = "sequence-classification"
    output_name = "logits"
    auto_class = "AutoModelForSequenceClassification"
    summary = "one label per text: logits (argmax)"
    gates = GATES["sequence-classification"]
    integer_goal = ("top1_agreement", 0.99)
    stages = EVERY
    has_labels = True

    def configure(self, source: str, model: nn.Module, tokenizer: Any) -> "Task":
        if getattr(model.config, "problem_type", None) == "multi_label_classification":
            return MultiLabelClassification().configure(source, model, tokenizer)
        return self

    def make_head(self, model: nn.Module) -> nn.Module:
        return _LogitsHead()

    def predictions(self, outputs: np.ndarray) -> np.ndarray | None:
        return np.argmax(outputs, axis=1)

    def output_shape(self, model: nn.Module, seq_len: int) -> list[int]:
        return [1, int(model.config.num_labels)]


class TokenClassification(Task):
    """Per-token logits (NER, PII tagging); parity counts real tokens only, never padding."""

    name = "token-classification"
    output_name = "logits"
    auto_class = "AutoModelForTokenClassification"
    summary = "one label per token (NER, PII tagging): per-token logits"
    gates = GATES["token-classification"]
    integer_goal = ("token_agreement", 0.99)
    has_labels = True
    per_token = True

    def make_head(self, model: nn.Module) -> nn.Module:
        return _TokenLogitsHead()

    def output_shape(self, model: nn.Module, seq_len: int) -> list[int]:
        return [1, seq_len, int(model.config.num_labels)]


class MultiLabelClassification(Task):
    """Any number of labels per text (``problem_type: multi_label_classification``): sigmoid scores, one
    threshold per label; parity is per-label decision agreement."""

    name = "multi-label-classification"
    output_name = "scores"
    auto_class = "AutoModelForSequenceClassification"
    summary = "any number of labels per text: sigmoid scores, a threshold per label"
    gates = GATES["multi-label-classification"]
    integer_goal = ("label_agreement", 0.99)
    has_labels = True

    def __init__(self) -> None:
        self.thresholds_by_label: list[float] = []

    def configure(self, source: str, model: nn.Module, tokenizer: Any) -> "Task":
        n = int(model.config.num_labels)
        model.config.problem_type = "multi_label_classification"
        self.thresholds_by_label = _config_thresholds(model.config, n)
        return self

    def make_head(self, model: nn.Module) -> nn.Module:
        return _LogitsHead(sigmoid=True)

    def output_shape(self, model: nn.Module, seq_len: int) -> list[int]:
        return [1, int(model.config.num_labels)]

    def spec(self) -> dict[str, Any]:
        return {"output_activation": "sigmoid"}

    def label_thresholds(self) -> list[float] | None:
        return list(self.thresholds_by_label)


def _config_thresholds(config: Any, n: int) -> list[float]:
    """``label_thresholds`` from the model's config (a list, or a mapping by label name) or 0.5 each."""
    given = getattr(config, "label_thresholds", None)
    if given is None:
        return [DEFAULT_LABEL_THRESHOLD] * n
    id2label = getattr(config, "id2label", None) or {}
    if isinstance(given, dict):
        values = [given.get(str(id2label.get(i, i)), DEFAULT_LABEL_THRESHOLD) for i in range(n)]
    else:
        values = list(given)
    if len(values) != n or not all(isinstance(v, (int, float)) and 0.0 < v < 1.0 for v in values):
        raise EdgepackError(f"config label_thresholds: expected {n} numbers between 0 and 1, got {given!r}")
    return [float(v) for v in values]


TASKS: Registry[type[Task]] = Registry("task", [(cls.name, cls) for cls in (
    FeatureExtraction, SequenceClassification, TokenClassification, MultiLabelClassification)])
# a task's stage names are checked against the stages registry where both meet (``recipe.spec``, at import)


def get_task(name: str, **options: Any) -> Task:
    try:
        cls = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None
    return cls(**options)


def task_names() -> list[str]:
    return list(TASKS)
