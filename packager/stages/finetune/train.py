"""Fine-tune a sequence classifier with the Hugging Face Trainer.

The Trainer (not a hand-written loop) is what lets the same stage run on several
GPUs or nodes through ``accelerate launch`` unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...labelled_data import LabelledData
from ...progress import substep
from ...training.common import (
    PadCollator,
    accuracy_metric,
    encode,
    last_checkpoint,
    pad_id,
    resume_callbacks,
    run_info,
    seed_all,
    trained_model,
    training_args,
    training_record,
)
from .spec import FinetuneSpec


def finetune(model, tokenizer, data: LabelledData, spec: FinetuneSpec, *, seq_len: int, work_dir: Path,
             seed: int = 42, resume: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` in place on data.train; returns it (best validation epoch) and a details dict.

    ``resume``: checkpoint every epoch whole and continue from the last one ``work_dir`` holds (a long
    fine-tune, e.g. a base-size teacher on a CPU, survives an interrupted session); ``work_dir`` must then
    belong to this configuration alone."""
    from transformers import Trainer

    seed_all(seed)
    train = encode(tokenizer, data.train, seq_len)
    val = encode(tokenizer, data.validation, seq_len) if data.validation is not None else None
    args = training_args(work_dir, **spec.trainer_options(), seed=seed, evaluate=val is not None, n_train=len(train),
                         resumable=resume)
    model.train()
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      data_collator=PadCollator(pad_id(tokenizer)), compute_metrics=accuracy_metric,
                      callbacks=resume_callbacks(resume))
    start = last_checkpoint(work_dir) if resume else None
    with substep("train on labels"):
        result = trainer.train(resume_from_checkpoint=start)
    model = trained_model(trainer)
    details: dict[str, Any] = {"epochs": spec.epochs, "lr": spec.lr, "batch_size": spec.batch_size,
                               "train_loss": round(float(result.training_loss), 4), "seed": seed, **run_info(args)}
    best = trainer.state.best_metric
    if best is not None:
        details["best_val_accuracy"] = round(float(best), 4)
        details["best_checkpoint"] = Path(trainer.state.best_model_checkpoint or "").name or None
    details["training"] = training_record(trainer)
    if start is not None:
        details["resumed_from"] = Path(start).name
    return model, details
