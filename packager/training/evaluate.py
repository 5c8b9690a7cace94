"""What is measured after every stage: accuracy, parameters, size, a quick latency.

These are host-side PyTorch fp32 numbers that show where a recipe gains and loses;
the artifacts' own accuracy and latency come from their device runners.
"""
from __future__ import annotations

import gzip
import io
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..labelled_data import LabelledSplit
from ..progress import substep
from ..threads import latency_threads
from .common import count_params, eval_device, mean_pooled, to_cpu

STAGE_ROW_SCHEMA_VERSION = 1


@torch.inference_mode()
def predict_outputs(model, tokenizer, texts: list[str], seq_len: int, batch_size: int | None = None,
                    pooled: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """fp32 logits for ``texts`` (and with ``pooled`` their mean-pooled last hidden states), on the model's
    device; batches of similar length, padded per batch (same result as static padding)."""
    model.eval()
    enc = tokenizer(texts, truncation=True, max_length=seq_len)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    batch_size = batch_size or (256 if device.type == "cuda" else 64)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    vectors = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) if pooled else None
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(enc["input_ids"][i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(enc["input_ids"][i])
            ids[row, :n] = torch.as_tensor(enc["input_ids"][i])
            mask[row, :n] = 1
        result = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=pooled)
        out[idx] = result.logits.float().cpu().numpy()
        if vectors is not None:
            vectors[idx] = mean_pooled(result.hidden_states[-1].float(), mask.to(device)).cpu().numpy()
    return out, vectors


def predict_logits(model, tokenizer, texts: list[str], seq_len: int, batch_size: int | None = None) -> np.ndarray:
    """fp32 logits for ``texts`` (see ``predict_outputs``)."""
    return predict_outputs(model, tokenizer, texts, seq_len, batch_size)[0]


def gather_logits(model, tokenizer, texts: list[str], seq_len: int) -> np.ndarray:
    """``predict_logits`` of all ``texts``, each rank of a distributed run computing a share (a collective:
    every rank calls it at the same point); a plain run computes them all."""
    return distributed.sharded_rows(len(texts), model.config.num_labels,
                                    lambda idx: predict_logits(model, tokenizer, [texts[i] for i in idx], seq_len))


def gather_outputs(model, tokenizer, texts: list[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``gather_logits`` and the texts' pooled sentence vectors, from one pass of ``model`` (a collective)."""
    n_labels = model.config.num_labels

    def rows(idx) -> np.ndarray:
        logits, vectors = predict_outputs(model, tokenizer, [texts[i] for i in idx], seq_len, pooled=True)
        return np.concatenate([logits, vectors], axis=1)

    both = distributed.sharded_rows(len(texts), n_labels + model.config.hidden_size, rows)
    return both[:, :n_labels], both[:, n_labels:]


def accuracy(model, tokenizer, split: LabelledSplit, seq_len: int) -> float:
    """Accuracy on ``split``; in a distributed run each rank scores a share and the counts are summed
    (a collective: every rank calls it at the same point)."""
    ranks = distributed.current()
    mine = range(ranks.rank, len(split.texts), ranks.world_size)
    correct = 0.0
    if len(mine):
        logits = predict_logits(model, tokenizer, [split.texts[i] for i in mine], seq_len)
        correct = float((logits.argmax(axis=1) == np.asarray(split.labels)[list(mine)]).sum())
    correct, total = distributed.all_sum([correct, float(len(mine))])
    return correct / total if total else float("nan")


@torch.inference_mode()
def latency_ms(model, seq_len: int, runs: int = 30, warmup: int = 5,
               threads: int | None = None) -> tuple[float, float]:
    """Batch-1 fp32 eager latency on the CPU at the static ``seq_len`` (p50, std), in milliseconds, with
    ``threads`` torch threads (default ``threads.latency_threads()``: a fixed small count, so figures of runs
    side by side and of different hosts compare)."""
    model.eval()
    ids = torch.full((1, seq_len), 1000 % model.config.vocab_size, dtype=torch.long)
    mask = torch.ones((1, seq_len), dtype=torch.long)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or latency_threads())
    try:
        for _ in range(warmup):
            model(input_ids=ids, attention_mask=mask)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(before)
    return float(statistics.median(times)), float(statistics.pstdev(times))


def fp32_size_bytes(model: torch.nn.Module) -> int:
    return int(sum(p.numel() * 4 for p in model.parameters()))


def nonzero_params(model: torch.nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def gzip_size_bytes(model: torch.nn.Module) -> int:
    """Size of the fp32 weights after gzip: what unstructured zeros actually save on disk/over the air."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    raw = save(state)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as fh:
        fh.write(raw)
    return len(buf.getvalue())


@dataclass
class StageRow:
    """One line of the stage table (also stored in the manifest's ``stages``)."""

    stage: str
    description: str
    params: int
    fp32_mb: float
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    latency_ms: float | None = None
    latency_std_ms: float | None = None
    #: file size of an exported artifact (target rows)
    artifact_mb: float | None = None
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: wall seconds of the row's sub-steps (labelling, training, evaluation, latency; export, parity), by name
    step_seconds: dict[str, float] = field(default_factory=dict)
    #: torch threads the latency was measured with (``threads.LATENCY_THREADS``)
    latency_threads: int | None = None
    #: where the stage ran: world_size, backend, device; training stages add precision, per-device and
    #: effective batch size, optimizer steps and the batches each rank trained on per epoch
    run: dict[str, Any] | None = None
    schema_version: int = STAGE_ROW_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(stage: str, description: str, model, tokenizer, seq_len: int, *, validation: LabelledSplit | None,
            test: LabelledSplit | None = None, seconds: float | None = None,
            details: dict[str, Any] | None = None, latency_runs: int = 30) -> StageRow:
    """Measure a model after a stage (test accuracy only when ``test`` is given).

    Accuracy batches on the GPU when there is one (the model goes there once and comes back once); the
    latency is a CPU figure with a fixed small thread count. In a distributed run every rank calls it
    (accuracy is sharded); only rank 0 times the latency. Returns the model on the CPU."""
    val_acc = test_acc = None
    if validation is not None or test is not None:
        with substep("evaluate"):
            device = eval_device()
            if device != "cpu":
                model.to(device)
            try:
                val_acc = accuracy(model, tokenizer, validation, seq_len) if validation is not None else None
                test_acc = accuracy(model, tokenizer, test, seq_len) if test is not None else None
            finally:
                to_cpu(model)
    p50 = std = threads = None
    with substep("size + latency"):
        params, fp32_mb = count_params(model), round(fp32_size_bytes(model) / 1e6, 2)
        if distributed.current().is_main:
            threads = latency_threads(torch.get_num_threads())
            p50, std = latency_ms(model, seq_len, runs=latency_runs, threads=threads)
    return StageRow(
        stage=stage,
        description=description,
        params=params,
        fp32_mb=fp32_mb,
        val_accuracy=val_acc,
        test_accuracy=test_acc,
        latency_ms=round(p50, 3) if p50 is not None else None,
        latency_std_ms=round(std, 3) if std is not None else None,
        seconds=round(seconds, 1) if seconds is not None else None,
        details=dict(details or {}),
        latency_threads=threads,
    )
