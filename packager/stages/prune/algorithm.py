"""Pruning: magnitude (global unstructured), movement (Sanh et al. 2020) and structured (heads + FFN).

Unstructured pruning (magnitude, movement) zeroes weights inside dense matrices:
the fp32 file and dense-kernel latency do not change, so the stage reports the
non-zero count and the gzip'd size — what the zeros really save. Structured
pruning physically removes attention heads and FFN neurons, so parameters, file
size and latency all drop; a short distillation from the unpruned model then
recovers accuracy.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from ...errors import EdgepackError
from ...labelled_data import LabelledData
from ...progress import substep
from ...pruned_models import ARCHS, PrunedArch
from ...training.common import (
    PadCollator,
    count_params,
    encode,
    encoder_layer_prefix,
    encoder_layers,
    pad_id,
    seed_all,
    training_record,
)
from ...training.distillation import train_student
from ...training.evaluate import gather_logits, gzip_size_bytes, nonzero_params
from .spec import PruneSpec

UNSTRUCTURED_NOTE = ("unstructured zeros do not shrink the dense fp32 file nor speed up dense kernels; "
                     "nonzero_params and gzip_mb show the real storage gain")


def encoder_linears(model) -> list[nn.Linear]:
    """The Linear layers of the transformer blocks (embeddings, pooler and classifier are left dense)."""
    return [m for layer in encoder_layers(model) for m in layer.modules() if isinstance(m, nn.Linear)]


def linear_sparsity(model) -> float:
    weights = [m.weight for m in encoder_linears(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def _recover(teacher, student, tokenizer, data: LabelledData, *, alpha: float, temperature: float, epochs: float,
             lr: float, batch_size: int, seq_len: int, work_dir: Path, seed: int, best_by_accuracy: bool,
             **trainer_kwargs):
    """Distil the unpruned ``teacher`` (its logits cached) into the pruned ``student``."""
    logits = gather_logits(teacher, tokenizer, data.train.texts, seq_len)
    student, trainer = train_student(
        teacher, student, tokenizer, data, alpha=alpha, temperature=temperature, epochs=epochs, lr=lr,
        batch_size=batch_size, seq_len=seq_len, work_dir=work_dir, seed=seed, teacher_logits=logits,
        best_by_accuracy=best_by_accuracy, **trainer_kwargs)
    return student, trainer


# -- magnitude ---------------------------------------------------------------------

def magnitude_prune(model, sparsity: float) -> list[tuple[nn.Module, str]]:
    """Global L1 unstructured pruning of the encoder Linear weights; the masks stay attached (see ``finalize``)."""
    params = [(m, "weight") for m in encoder_linears(model)]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=float(sparsity))
    return params


def finalize_masks(params: list[tuple[nn.Module, str]]) -> None:
    for module, name in params:
        torch_prune.remove(module, name)


# -- movement ----------------------------------------------------------------------

class _TopKStraightThrough(torch.autograd.Function):
    """Binary mask keeping the top ``keep`` fraction of scores; gradients pass straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: float) -> torch.Tensor:
        k = max(1, int(math.ceil(keep * scores.numel())))
        if k >= scores.numel():
            return torch.ones_like(scores)
        threshold = torch.topk(scores.flatten(), k, sorted=True).values[-1]
        return (scores >= threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class SparsitySchedule:
    """Cubic schedule (Zhu & Gupta 2017, as in Sanh et al.): dense warm-up, cubic ramp, final cool-down."""

    def __init__(self, final: float, warmup: float = 0.1, cooldown: float = 0.1) -> None:
        self.final, self.warmup, self.cooldown = final, warmup, cooldown
        self.current = 0.0

    def at(self, progress: float) -> float:
        ramp = 1.0 - self.warmup - self.cooldown
        t = min(max((progress - self.warmup) / ramp, 0.0), 1.0)
        return self.final * (1.0 - (1.0 - t) ** 3)


class MovementMask(nn.Module):
    """Parametrization ``W -> W * TopK(S)``: the scores S learn ``-sum(dL/dW' * W)``, i.e. movement."""

    def __init__(self, shape: torch.Size, schedule: SparsitySchedule) -> None:
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(shape))
        self.schedule = schedule

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _TopKStraightThrough.apply(self.scores, 1.0 - self.schedule.current)


def _schedule_callback(schedule: SparsitySchedule):
    from transformers import TrainerCallback

    class ScheduleCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            schedule.current = schedule.at(state.global_step / max(1, state.max_steps))

        def on_train_end(self, args, state, control, **kwargs):
            schedule.current = schedule.final

    return ScheduleCallback()


def movement_prune(model, tokenizer, data: LabelledData, spec: PruneSpec, *, seq_len: int, work_dir: Path,
                   seed: int) -> Any:
    """Fine-tune with learned movement scores (distilling from the unpruned model); masks are baked in at the end."""
    teacher = copy.deepcopy(model).eval()
    schedule = SparsitySchedule(spec.sparsity)
    linears = encoder_linears(model)
    for m in linears:
        parametrize.register_parametrization(m, "weight", MovementMask(m.weight.shape, schedule))
    scores = [m.parametrizations.weight[0].scores for m in linears]
    score_ids = {id(s) for s in scores}
    others = [p for p in model.parameters() if id(p) not in score_ids]
    optimizer = torch.optim.AdamW([{"params": others, "lr": spec.lr, "weight_decay": spec.weight_decay},
                                   {"params": scores, "lr": spec.score_lr, "weight_decay": 0.0}])
    # without a recovery the labels alone teach (alpha 1; the temperature then does not matter)
    alpha, temperature = (spec.recovery.alpha, spec.recovery.temperature) if spec.recovery else (1.0, 2.0)
    model, _ = _recover(teacher, model, tokenizer, data, alpha=alpha, temperature=temperature, epochs=spec.epochs,
                        lr=spec.lr, batch_size=spec.batch_size, seq_len=seq_len, work_dir=work_dir, seed=seed,
                        weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio, best_by_accuracy=False,
                        optimizers=(optimizer, None), callbacks=[_schedule_callback(schedule)])
    schedule.current = schedule.final
    for m in linears:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


# -- structured --------------------------------------------------------------------

def layer_head_counts(config) -> list[int]:
    return list(getattr(config, "layer_heads", None) or [config.num_attention_heads] * config.num_hidden_layers)


def importance_scores(model, tokenizer, data: LabelledData, *, seq_len: int, batches: int, batch_size: int,
                      seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """First-order (Taylor) importance of each head and FFN neuron (Michel et al. 2019; Molchanov et al. 2017).

    A gate of ones multiplies each head's context vector and each FFN activation;
    |dL/dgate| accumulated over training batches estimates how much the loss would
    change if that unit were removed.
    """
    seed_all(seed)
    surgery = pruned_arch(model).surgery
    layers = encoder_layers(model)
    head_size = surgery.head_size(model.config)
    head_gates = [torch.ones(n, requires_grad=True) for n in layer_head_counts(model.config)]
    # one gate vector per FFN, layer by layer (a MobileBERT block holds several)
    ffn_outputs = [layer.get_submodule(out) for layer in layers for _, out in surgery.ffns(model.config)]
    ffn_gates = [torch.ones(surgery.intermediate(model.config), requires_grad=True) for _ in ffn_outputs]
    hooks = []
    for layer, hg in zip(layers, head_gates):
        hooks.append(layer.get_submodule(surgery.attention_output).register_forward_pre_hook(
            lambda mod, args, g=hg: (args[0] * g.repeat_interleave(head_size),)))
    for output, fg in zip(ffn_outputs, ffn_gates):
        hooks.append(output.register_forward_pre_hook(lambda mod, args, g=fg: (args[0] * g,)))
    head_imp = [torch.zeros_like(g) for g in head_gates]
    ffn_imp = [torch.zeros_like(g) for g in ffn_gates]
    dataset = encode(tokenizer, data.train, seq_len).shuffle(seed=seed)
    collate = PadCollator(pad_id(tokenizer))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, min(len(dataset), batches * batch_size), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            loss = model(**batch).loss
            grads = torch.autograd.grad(loss, head_gates + ffn_gates)
            for acc, g in zip(head_imp + ffn_imp, grads):
                acc += g.abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    # heads are compared across layers: normalise per layer (Michel et al.)
    head_imp = [h / (h.norm() + 1e-12) for h in head_imp]
    return head_imp, ffn_imp


def select_heads(head_imp: list[torch.Tensor], fraction: float) -> list[list[int]]:
    """Drop the globally least important ``fraction`` of heads, keeping at least one per layer."""
    ranked = sorted(((float(s), l, h) for l, scores in enumerate(head_imp) for h, s in enumerate(scores)))
    n_drop = int(round(fraction * len(ranked)))
    kept = [set(range(len(s))) for s in head_imp]
    for _, l, h in ranked:
        if n_drop == 0:
            break
        if len(kept[l]) > 1:
            kept[l].discard(h)
            n_drop -= 1
    return [sorted(k) for k in kept]


def select_ffn(ffn_imp: list[torch.Tensor], fraction: float) -> list[list[int]]:
    """Keep the same number of most important neurons in every FFN (``intermediate_size`` stays one number)."""
    width = ffn_imp[0].numel()
    keep = max(1, width - int(round(fraction * width)))
    return [sorted(torch.topk(s, keep).indices.tolist()) for s in ffn_imp]


def _base_config_dict(config) -> dict[str, Any]:
    d = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "layer_heads", "layer_head_ids",
                "_attn_implementation_autoset"):
        d.pop(key, None)
    return d


def pruned_arch(model) -> PrunedArch:
    """How the model's family cuts heads and neurons (``packager.pruned_models``), or one line saying it cannot."""
    from ...families import family_of

    family = family_of(str(model.config.model_type))
    arch = ARCHS.get(family.name) if family is not None else None
    if arch is None:
        raise EdgepackError(f"recipe prune: structured pruning does not support {model.config.model_type!r} models "
                            f"(it does: {', '.join(sorted(ARCHS))})")
    return arch


def rebuild(model, keep_heads: list[list[int]], keep_ffn: list[list[int]]):
    """A new model holding only the kept heads / neurons, with a config that ``from_pretrained`` reloads.
    ``keep_heads``: per layer; ``keep_ffn``: per FFN, layer by layer (``LayerSurgery.ffns``: one per block but
    MobileBERT's)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    arch = pruned_arch(model)
    config = model.config
    head_size = arch.surgery.head_size(config)
    per_layer = len(arch.surgery.ffns(config))
    if len(keep_ffn) != per_layer * len(keep_heads):
        raise ValueError(f"keep_ffn: {len(keep_ffn)} FFNs for {len(keep_heads)} layers of {per_layer}")
    widths = {len(k) for k in keep_ffn}
    assert len(widths) == 1, "FFN pruning is uniform across layers"
    heads_changed = [len(k) for k in keep_heads] != [config.num_attention_heads] * config.num_hidden_layers
    cfg_dict = _base_config_dict(config) | {arch.surgery.ffn_width: widths.pop()}
    heads_before = layer_head_counts(config)
    if arch.surgery.shared_head_bias_arg:  # the kept heads' original columns of the shared bias table
        ids_before = getattr(config, "layer_head_ids", None) or [list(range(n)) for n in heads_before]
        cfg_dict["layer_head_ids"] = [[ids_before[i][h] for h in keep] for i, keep in enumerate(keep_heads)]
    if heads_changed or config.model_type == arch.model_type:
        new_config = AutoConfig.for_model(arch.model_type, layer_heads=[len(k) for k in keep_heads], **cfg_dict)
    else:
        new_config = type(config)(**cfg_dict)
    new_model = AutoModelForSequenceClassification.from_config(new_config, attn_implementation="eager")
    state = model.state_dict()
    prefix = encoder_layer_prefix(model)
    for i, heads in enumerate(keep_heads):
        arch.surgery.cut_state(state, f"{prefix}{i}.", heads, heads_before[i], head_size,
                               keep_ffn[i * per_layer:(i + 1) * per_layer], config)
    new_model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    return new_model.eval()


def structured_prune(model, tokenizer, data: LabelledData, spec: PruneSpec, *, seq_len: int,
                     seed: int = 42) -> tuple[Any, dict]:
    surgery = pruned_arch(model).surgery  # refuses a family without one before any scoring
    with substep("importance scoring"):
        head_imp, ffn_imp = importance_scores(model, tokenizer, data, seq_len=seq_len,
                                              batches=spec.importance_batches, batch_size=spec.batch_size, seed=seed)
    keep_heads = select_heads(head_imp, spec.heads) if spec.heads else [list(range(len(h))) for h in head_imp]
    keep_ffn = select_ffn(ffn_imp, spec.ffn) if spec.ffn else [list(range(len(f))) for f in ffn_imp]
    pruned = rebuild(model, keep_heads, keep_ffn)
    details = {"heads_before": layer_head_counts(model.config), "heads_after": [len(k) for k in keep_heads],
               "ffn_before": surgery.intermediate(model.config), "ffn_after": len(keep_ffn[0]),
               "model_type": pruned.config.model_type}
    return pruned, details


# -- entry point -------------------------------------------------------------------

def prune(model, tokenizer, data: LabelledData, spec: PruneSpec, *, seq_len: int, work_dir: Path,
          seed: int = 42) -> tuple[Any, dict[str, Any]]:
    """Run the pruning method of ``spec``; returns the pruned model and what changed."""
    model.eval()
    params_before = count_params(model)
    details: dict[str, Any] = {"method": spec.method}
    if spec.method == "structured":
        original = model
        model, info = structured_prune(model, tokenizer, data, spec, seq_len=seq_len, seed=seed)
        details.update(info, heads_fraction=spec.heads, ffn_fraction=spec.ffn)
        if spec.recovery is not None:
            model, trainer = _recover(original, model, tokenizer, data, **dataclasses.asdict(spec.recovery),
                                      seq_len=seq_len, work_dir=work_dir / "recovery", seed=seed, best_by_accuracy=True)
            details["training"] = training_record(trainer)
            details["recovery"] = {"epochs": spec.recovery.epochs, "lr": spec.recovery.lr,
                                   "alpha": spec.recovery.alpha, "temperature": spec.recovery.temperature}
    else:
        gzip_before = gzip_size_bytes(model)
        if spec.method == "magnitude":
            teacher = copy.deepcopy(model).eval() if spec.recovery is not None else None
            masks = magnitude_prune(model, spec.sparsity)
            if spec.recovery is not None:
                model, trainer = _recover(teacher, model, tokenizer, data, **dataclasses.asdict(spec.recovery),
                                          seq_len=seq_len, work_dir=work_dir / "recovery", seed=seed,
                                          best_by_accuracy=False)
                details["training"] = training_record(trainer)
                details["recovery"] = {"epochs": spec.recovery.epochs, "lr": spec.recovery.lr}
            finalize_masks(masks)
        else:
            model = movement_prune(model, tokenizer, data, spec, seq_len=seq_len, work_dir=work_dir / "movement",
                                   seed=seed)
            details.update(epochs=spec.epochs, score_lr=spec.score_lr)
        details.update(sparsity_target=spec.sparsity, encoder_linear_sparsity=round(linear_sparsity(model), 4),
                       nonzero_params=nonzero_params(model), gzip_mb_before=round(gzip_before / 1e6, 2),
                       gzip_mb_after=round(gzip_size_bytes(model) / 1e6, 2), note=UNSTRUCTURED_NOTE)
    details["params_before"], details["params_after"] = params_before, count_params(model)
    return model.eval(), details
