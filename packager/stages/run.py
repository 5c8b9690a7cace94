"""One stage run, the same for a recipe run and for each of a tune's trials: run it, time it, measure what it
made, and record where and how it trained."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from .base import Stage, StageContext

if TYPE_CHECKING:
    from .. import distributed
    from ..training.evaluate import StageRow


def run_record(ranks: "distributed.Ranks", details: dict[str, Any] | None) -> dict[str, Any]:
    """A stage row's ``run``: where it ran, plus how it trained (``details['training']``, moved out; rows
    without training are measured in fp32)."""
    training = (details or {}).pop("training", None) or {}
    return {**ranks.record(), "precision": "fp32", "effective_batch_size": None, **training}


def run_stage(stage: Stage, model: Any, tokenizer: Any, ctx: StageContext, *, explain: bool = True,
              emit: Callable[["StageRow"], None] = lambda _row: None) -> tuple[Any, Any, "StageRow"]:
    """Run ``stage`` on ``model`` and measure its output: returns (the new model, its tokenizer, the stage's row).

    ``explain``: also measure the rows that explain the stage (a distillation's teacher before it, its student
    trained on the labels alone after it); a tune's trials leave them out. Every row, the stage's own last, goes
    to ``emit`` as soon as it is measured. In a distributed run every rank calls this: rank 0's weights are
    broadcast to the others before the output is measured."""
    from .. import distributed
    from ..progress import rounded, timing
    from ..training.evaluate import measure

    if explain:
        for extra in stage.rows_before(ctx.rows[-1]):
            emit(extra)
    with timing() as steps:  # the sub-steps' wall times (labelling, training, evaluation, latency): the row's
        started = time.perf_counter()
        output = stage.run(model, tokenizer, ctx)
        seconds = time.perf_counter() - started
        if explain:
            with timing() as alone_steps:  # the explaining rows keep their own times
                for extra in stage.rows_after(model, tokenizer, output, ctx):
                    extra.step_seconds = rounded(alone_steps)
                    emit(extra)
        model, tokenizer, details = output  # the input's memory is free for the later stages
        del output
        distributed.broadcast_model(model)
        description = stage.describe(details)
        run = run_record(distributed.current(), details)
        row = measure(stage.kind, description, model, tokenizer, ctx.seq_len, validation=ctx.data.validation,
                      test=ctx.data.test, seconds=seconds, details=details)
    row.run = run
    row.step_seconds = rounded(steps)
    emit(row)
    return model, tokenizer, row
