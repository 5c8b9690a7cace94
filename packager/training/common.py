"""Shared plumbing of the training stages: encoded datasets, a padding collator, Trainer arguments.

Training pads each batch only to its longest row (intent-style utterances are far
shorter than ``seq_len``), which is what makes CPU training affordable.
"""
from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..labelled_data import LabelledSplit

#: whether the Trainer shows its progress bars (the CLI turns them off for --json)
PROGRESS_BARS: ContextVar[bool] = ContextVar("edgepack_progress_bars", default=True)
#: training precision asked for by the recipe ("auto", "bf16", "fp32"); see ``resolve_precision``
TRAIN_PRECISION: ContextVar[str] = ContextVar("edgepack_train_precision", default="auto")
#: /proc/cpuinfo flags of CPUs with native bf16 arithmetic (without them bf16 is emulated and slower than fp32)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): only then does bf16 autocast pay on a CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in CPU_BF16_FLAGS)
    except OSError:
        pass
    return False


def resolve_precision(requested: str | None = None) -> tuple[str, str]:
    """(precision, device) training runs in: a GPU when there is one; bf16 where the hardware has it."""
    requested = requested or TRAIN_PRECISION.get()
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        device = "cuda"
    else:
        bf16 = cpu_has_bf16()
        device = "cpu"
    if requested == "fp32" or (requested == "auto" and not bf16):
        return "fp32", device
    return "bf16", device


def encode(tokenizer, split: LabelledSplit, seq_len: int, teacher_logits: np.ndarray | None = None,
           teacher_vectors: np.ndarray | None = None):
    """A `datasets.Dataset` of unpadded input_ids/attention_mask (truncated to seq_len) and labels (and the
    teacher's cached logits / pooled sentence vectors of each row, when given)."""
    import datasets

    enc = tokenizer(split.texts, truncation=True, max_length=seq_len)
    columns: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                               "labels": list(split.labels)}
    if teacher_logits is not None:
        columns["teacher_logits"] = teacher_logits.astype(np.float32).tolist()
    if teacher_vectors is not None:
        columns["teacher_vectors"] = teacher_vectors.astype(np.float32).tolist()
    return datasets.Dataset.from_dict(columns)


@dataclass
class PadCollator:
    """Right-pads input_ids/attention_mask to the batch's longest row; stacks the rest."""

    pad_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"])
            mask[i, :n] = torch.as_tensor(r["attention_mask"])
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.as_tensor([r["labels"] for r in rows], dtype=torch.long)}
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.as_tensor([r["teacher_logits"] for r in rows], dtype=torch.float32)
        if "teacher_vectors" in rows[0]:
            batch["teacher_vectors"] = torch.as_tensor([r["teacher_vectors"] for r in rows], dtype=torch.float32)
        return batch


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sentence vector: the last hidden state averaged over the real tokens (sentence-transformers' pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def pad_id(tokenizer) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def accuracy_metric(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def training_args(work_dir: Path, *, epochs: float, lr: float, batch_size: int, seed: int,
                  weight_decay: float = 0.0, warmup_ratio: float = 0.0, best_by_accuracy: bool = True,
                  evaluate: bool = True, n_train: int | None = None, resumable: bool = False):
    """TrainingArguments shared by every stage: no external reporting, epoch-wise eval.

    ``best_by_accuracy`` keeps the checkpoint with the best validation accuracy
    (saved each epoch, one kept on disk); stages that change the model along
    training (movement pruning's sparsity schedule) turn it off. ``resumable``
    saves a whole checkpoint (optimizer, scheduler, RNG) each epoch, so a run
    stopped mid-way continues from its last epoch (see ``last_checkpoint``).
    """
    from transformers import TrainingArguments

    from .. import distributed

    warmup_steps = 0
    if n_train and warmup_ratio:  # batch_size is per process: each optimizer step takes one batch per rank
        steps = math.ceil(math.ceil(n_train / batch_size) / distributed.current().world_size) * epochs
        warmup_steps = int(steps * warmup_ratio)
    keep_best = best_by_accuracy and evaluate
    precision, device = resolve_precision()
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(64, batch_size),
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        seed=seed,
        data_seed=seed,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch" if keep_best or resumable else "no",
        # resumable: the best epoch's and the two newest (a session that ends during a save leaves one whole)
        save_total_limit=(3 if resumable else 1) if keep_best or resumable else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model="accuracy" if keep_best else None,
        greater_is_better=True,
        save_only_model=not resumable,
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=not PROGRESS_BARS.get(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        # the Trainer multiplies the loss by the process count for models taking **kwargs, assuming their loss
        # divides by the batch's items summed over all ranks; BERT's classification loss is a plain mean, so
        # under DDP that doubled the gradient of a 2-process run. Each rank's mean, averaged by DDP, is right.
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=False,  # every parameter of these models takes part in the loss
    )


#: how often (wall seconds) a resumable run also checkpoints inside an epoch: a base-size model's epoch on a
#: 2-core CPU takes an hour or more, longer than what is left of a session; 0 turns it off
CHECKPOINT_SECONDS_ENV = "EDGEPACK_CHECKPOINT_SECONDS"


def resume_callbacks(resumable: bool) -> list[Any]:
    """Trainer callbacks of a resumable run: a whole checkpoint every ``EDGEPACK_CHECKPOINT_SECONDS`` (default
    600) of training, between the epoch ones, so a run stopped mid-epoch loses at most that much."""
    import os
    import time

    from transformers import TrainerCallback

    seconds = float(os.environ.get(CHECKPOINT_SECONDS_ENV, "600") or 0)
    if not resumable or seconds <= 0:
        return []

    class CheckpointByTime(TrainerCallback):
        def __init__(self) -> None:
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.last >= seconds:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()
            return control

    return [CheckpointByTime()]


def last_checkpoint(work_dir: Path) -> str | None:
    """The newest whole checkpoint a stopped run left in ``work_dir`` (None: start from the beginning)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(work_dir).is_dir():
        return None
    found = get_last_checkpoint(str(work_dir))
    return found if found and (Path(found) / "optimizer.pt").is_file() else None


def run_info(args) -> dict[str, str]:
    """What a training stage ran on, for its stage row: device and precision."""
    return {"device": str(args.device), "precision": "bf16 autocast" if args.bf16 else "fp32"}


def eval_device() -> str:
    """Where evaluation batches run: this process's GPU when there is one (``LOCAL_RANK``'s under torchrun)."""
    if not torch.cuda.is_available():
        return "cpu"
    import os

    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def to_cpu(model):
    """Models go back to the CPU, where they are measured and exported."""
    return model.to("cpu") if next(model.parameters()).device.type != "cpu" else model


def trained_model(trainer):
    """The Trainer's model, ready to measure and export: on the CPU, in eval mode, and without the autocast
    wrapper that mixed-precision training leaves around ``forward`` (an exported graph would keep its casts)."""
    from accelerate.utils import extract_model_from_parallel

    return to_cpu(extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False)).eval()


def training_record(trainer) -> dict[str, Any]:
    """How a finished Trainer ran, for the manifest's stage row: processes, backend, device, precision,
    batch sizes, and per rank the batches of one epoch it trained on (a collective in a distributed run)."""
    from .. import distributed

    args = trainer.args
    ranks = distributed.current()
    mine = len(trainer.get_train_dataloader())  # this rank's shard, as the Trainer iterates it
    return {**run_info(args), **ranks.record(),
            "per_device_batch_size": int(args.per_device_train_batch_size),
            "effective_batch_size": int(args.per_device_train_batch_size * args.gradient_accumulation_steps
                                        * args.world_size),
            "optimizer_steps": int(trainer.state.global_step),
            "batches_per_epoch_by_rank": [int(b) for b in distributed.all_gather_object(mine)]}


def set_threads(threads: int | None) -> int:
    """Size torch's intra-op pool to ``threads``, else to this process's CPUs (``threads.pool_threads``: an
    affinity mask or $EDGEPACK_THREADS, not the host's cores; more threads than cores only thrash). Returns it."""
    from ..threads import pool_threads

    count = pool_threads(threads)
    torch.set_num_threads(count)
    return count


def seed_all(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def count_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def encoder_layers(model) -> list[torch.nn.Module]:
    """The transformer blocks, where the model's family declares them (``packager.families``)."""
    from ..errors import EdgepackError
    from ..families import family_of

    family = family_of(str(getattr(model.config, "model_type", "")))
    if family is None:
        raise EdgepackError(f"{type(model).__name__}: compression stages need a declared model family "
                            f"(see `edgepack targets --models`)")
    return family.encoder_layers(model)


def encoder_layer_prefix(model) -> str:
    """State-dict key prefix of the encoder blocks (``bert.encoder.layer.`` for BERT)."""
    from ..families import family_of

    return family_of(str(model.config.model_type)).layer_prefix(model)
