"""Model families: what edgepack knows about an architecture, declared once.

A family names the ``config.model_type`` values it covers, where its encoder
blocks live (the compression stages read them there), the attention-mask form
its export wrappers rely on, and which tasks, recipe stages and targets it
supports. ``pack`` checks the pair (model, target) against this table from the
model's ``config.json`` before loading any weights, so an unsupported
architecture is refused in one line instead of failing inside a converter;
``edgepack targets --models`` prints the table. Adding a family is one
``register(ModelFamily(...))`` here, after packing a tiny random model of it to
every target it declares.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_bench.registry import EVERY, Registry

from .errors import EdgepackError

ALL = EVERY


@dataclass(frozen=True)
class ModelFamily:
    name: str
    model_types: tuple[str, ...]  # config.model_type values
    layers: str  # attribute path of the encoder blocks under the base model
    #: how the quantization-friendly wrappers pass the mask: "additive-4d" = ``inputs_embeds`` plus a
    #: [batch, 1, 1, seq] float bias the model adds to the attention scores
    mask_form: str
    tasks: tuple[str, ...] = ALL
    stages: tuple[str, ...] = ALL
    targets: tuple[str, ...] = ALL
    #: why an undeclared task, recipe stage or target is not supported, one line each (shown by
    #: ``edgepack targets --models`` and in the refusal); a cell without one was simply not verified yet
    reasons: dict[str, str] = field(default_factory=dict)
    #: why a student cut from the teacher's layers must begin with the teacher's first block (None: any layers)
    first_layer_fixed: str | None = None

    def reason(self, cell: str) -> str:
        return self.reasons.get(cell, "not declared: no tiny-model check of it recorded yet (scripts/verify_model_family.py)")

    def supports_task(self, task: str) -> bool:
        return self.tasks == ALL or task in self.tasks

    def supports_stage(self, stage: str) -> bool:
        return self.stages == ALL or stage in self.stages

    def supports_target(self, target: str) -> bool:
        return self.targets == ALL or target in self.targets

    def encoder_layers(self, model: Any) -> list[Any]:
        node = getattr(model, model.base_model_prefix, model)
        for part in self.layers.split("."):
            node = getattr(node, part)
        return list(node)

    def layer_prefix(self, model: Any) -> str:
        """State-dict key prefix of the encoder blocks, e.g. ``bert.encoder.layer.``."""
        base = model.base_model_prefix if hasattr(model, model.base_model_prefix) else ""
        return f"{base}.{self.layers}." if base else f"{self.layers}."


FAMILIES: Registry[ModelFamily] = Registry("model family")


def register(family: ModelFamily) -> ModelFamily:
    """Add a family; its model types must be its own and the targets it declares must exist (checked here, at
    import: a family naming a target no module registers is an error, not a silently empty cell)."""
    for other in FAMILIES.values():
        if set(other.model_types) & set(family.model_types):
            raise ValueError(f"model type claimed by both {other.name} and {family.name}")
    if family.targets != ALL:
        from targets import TARGETS

        TARGETS.check_names(family.targets, f"model family {family.name}")
    return FAMILIES.add(family.name, family)


#: what a block that shares its weights across every layer cannot give: the layers to pick or cut
_SHARED_LAYERS = "ALBERT shares one block's weights across all its layers: there are no per-layer blocks to {}"
_COMPRESSION = ("distill", "prune", "trim_vocab")

register(ModelFamily(
    name="bert", model_types=("bert", "edgepack_pruned_bert"), layers="encoder.layer", mask_form="additive-4d"))
# Every family below is declared after packing tiny random models of it to every target, per task
# (scripts/verify_model_family.py MODEL_TYPE prints each verdict), and `finetune` after running it on one
# (tests/test_model_families.py): fine-tuning needs nothing of a family's layout. distill (a student cut from the
# teacher's layers), structured prune and trim_vocab are declared where tests/test_family_compression.py runs them.
register(ModelFamily(
    name="roberta", model_types=("roberta", "xlm-roberta", "edgepack_pruned_roberta"), layers="encoder.layer",
    mask_form="additive-4d"))
register(ModelFamily(
    name="electra", model_types=("electra", "edgepack_pruned_electra"), layers="encoder.layer",
    mask_form="additive-4d"))
register(ModelFamily(
    name="albert", model_types=("albert",), layers="encoder.albert_layer_groups", mask_form="additive-4d",
    stages=("finetune", "trim_vocab", "calibrate"),
    reasons={"distill": _SHARED_LAYERS.format("pick for a student cut from the teacher"),
             "prune": _SHARED_LAYERS.format("cut heads or FFN neurons from one by one")}))
register(ModelFamily(
    name="deberta-v2", model_types=("deberta-v2", "edgepack_pruned_deberta_v2"), layers="encoder.layer",
    mask_form="additive-4d",
    targets=("mediapipe-text", "onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8", "torchscript-mobile",
             "torchscript-mobile-fp32"),
    reasons={"tflite-int8-full": "DeBERTa's disentangled attention does not take the additive mask the "
                                 "full-integer wrapper feeds it",
             "executorch": "DeBERTa's ExecuTorch export loses parity",
             "executorch-int8": "DeBERTa's ExecuTorch export loses parity"}))
register(ModelFamily(
    name="mpnet", model_types=("mpnet", "edgepack_pruned_mpnet"), layers="encoder.layer", mask_form="additive-4d",
    targets=("executorch", "mediapipe-text", "onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8",
             "torchscript-mobile", "torchscript-mobile-fp32"),
    reasons={"tflite-int8-full": "MPNet's relative-position bucketing feeds an index op the full-integer TFLite "
                                 "quantizer does not take",
             "executorch-int8": "MPNet's relative-position bucketing feeds an index op the pt2e int8 export does "
                                "not take"}))
register(ModelFamily(
    name="distilbert", model_types=("distilbert", "edgepack_pruned_distilbert"), layers="transformer.layer",
    mask_form="additive-4d"))
register(ModelFamily(
    name="mobilebert", model_types=("mobilebert", "edgepack_pruned_mobilebert"), layers="encoder.layer",
    mask_form="additive-4d",
    targets=("executorch", "mediapipe-text", "onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8",
             "torchscript-mobile", "torchscript-mobile-fp32"),
    reasons={"executorch-int8": "MobileBERT's int8 ExecuTorch export fails (a matmul's reduction dims disagree "
                                "after pt2e quantization)",
             "tflite-int8-full": "MobileBERT's full-integer artifact (bottleneck blocks, no LayerNorm) misses "
                                 "parity on the embedding and sequence-classification outputs"}))
# ModernBERT (rotary positions, GeGLU, alternating local/global attention): every task; every target but the
# full-integer TFLite one, whose wrapper feeds one additive mask to every layer.
register(ModelFamily(
    name="modernbert", model_types=("modernbert", "edgepack_pruned_modernbert"), layers="layers",
    mask_form="additive-4d",
    targets=("executorch", "executorch-int8", "mediapipe-text", "onnx-fp32", "onnx-int8", "tflite-fp32",
             "tflite-int8", "torchscript-mobile", "torchscript-mobile-fp32"),
    reasons={"tflite-int8-full": "the full-integer wrapper feeds every layer one additive mask, so ModernBERT's "
                                 "local (sliding-window) layers attend beyond their window: a tiny model with a "
                                 "16-token window missed parity at 32 tokens"},
    first_layer_fixed="ModernBERT's first block has no attention LayerNorm, so it cannot be swapped for another"))


def family_of(model_type: str) -> ModelFamily | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def model_type_of(source: str) -> str:
    """``config.model_type`` of a folder or Hub id, read from config.json without loading weights."""
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            return str(config.get("model_type", ""))
        from transformers import AutoConfig

        from . import pruned_models  # noqa: F401  (registers edgepack's own model types)

        return str(AutoConfig.from_pretrained(source).model_type)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise EdgepackError(f"--model {source}: cannot read its config ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def check_support(model_type: str, task: str, targets: list[str], stages: list[str] = ()) -> ModelFamily:
    """The model's family, or one line saying what it does not support."""
    family = family_of(model_type)
    if family is None:
        known = ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES.values())
        raise EdgepackError(f"model type {model_type!r} is not a supported model family (supported: {known}; "
                            f"see `edgepack targets --models`)")
    def why(cells: list[str]) -> str:
        return "; ".join(f"{c}: {family.reason(c)}" for c in cells)

    if not family.supports_task(task):
        raise EdgepackError(f"the {family.name} family does not support task {task} ({why([task])}; "
                            f"supported: {', '.join(family.tasks)})")
    refused = [t for t in targets if not family.supports_target(t)]
    if refused:
        raise EdgepackError(f"the {family.name} family does not support target(s) {', '.join(refused)} "
                            f"({why(refused)}; supported: {', '.join(family.targets)})")
    for target, reason in task_refusals(task, targets).items():
        raise EdgepackError(f"target {target} cannot carry task {task}: {reason}")
    refused = [s for s in stages if not family.supports_stage(s)]
    if refused:
        raise EdgepackError(f"the {family.name} family does not support recipe stage(s) {', '.join(refused)} "
                            f"({why(refused)}; supported: {', '.join(family.stages) or 'none'})")
    return family


def task_refusals(task: str, targets: list[str]) -> dict[str, str]:
    """The targets among ``targets`` that cannot carry ``task``'s output, each with its one-line reason (the
    target's own ``refuses_task``; unknown names are left to the target registry's own error)."""
    from targets import TARGETS

    from .tasks import TASKS

    if task not in TASKS:
        return {}
    reasons = {t: TARGETS[t].refuses_task(TASKS[task]) for t in targets if t in TARGETS}
    return {t: reason for t, reason in reasons.items() if reason}


def support_matrix(task_names: list[str], target_names: list[str], stage_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per family: its model types, layout, yes/no for every task, stage and target, and why each no."""
    return [{"family": f.name, "model_types": list(f.model_types), "layers": f.layers, "mask_form": f.mask_form,
             "tasks": {t: f.supports_task(t) for t in task_names},
             "stages": {s: f.supports_stage(s) for s in stage_names},
             "targets": {t: f.supports_target(t) for t in target_names},
             "not_supported": {c: f.reason(c) for c in
                               [t for t in task_names if not f.supports_task(t)]
                               + [s for s in stage_names if not f.supports_stage(s)]
                               + [t for t in target_names if not f.supports_target(t)]}}
            for f in FAMILIES.values()]
