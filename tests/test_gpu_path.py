"""The recipe's GPU path: training moves the model to the GPU once and back once, evaluation and the teacher's
transfer-set labelling batch on the GPU, and latency stays a CPU figure. Runs where CUDA is present."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (the CPU path is covered by test_progress and test_recipe)")


def _tiny(vocab: int = 64, hidden: int = 32, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=2 * hidden,
                                                    max_position_embeddings=32, num_labels=2))


class _Tokenizer:
    """Whitespace words -> ids below 64, enough for the evaluation and training paths."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=16, **_):
        ids = [[2] + [3 + hash(w) % 60 for w in t.split()][: max_length - 2] + [1] for t in texts]
        return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}


def test_training_and_evaluation_run_on_the_gpu_and_the_model_comes_back_to_the_cpu(tmp_path):
    import numpy as np

    from packager.labelled_data import LabelledData, LabelledSplit
    from packager.training.common import PROGRESS_BARS
    from packager.training.distillation import SentenceTarget, train_student
    from packager.training.evaluate import gather_outputs, measure, predict_logits

    texts = [f"{a} {b}" for a in ("rain", "sun", "song", "jazz") for b in ("now", "please", "today", "my")] * 4
    labels = [int(t.split()[0] in ("song", "jazz")) for t in texts]
    data = LabelledData(train=LabelledSplit(texts, labels), validation=LabelledSplit(texts[:16], labels[:16]),
                        labels=["weather", "music"])
    teacher, tokenizer = _tiny(hidden=48, seed=1).eval(), _Tokenizer()
    cpu_logits = predict_logits(teacher, tokenizer, texts, 16)
    logits, vectors = gather_outputs(teacher.to("cuda"), tokenizer, texts, 16)  # labelling on the GPU
    teacher.to("cpu")
    np.testing.assert_allclose(logits, cpu_logits, atol=1e-3)

    moves = []
    student = _tiny(seed=2)
    original_to = student.to

    def counted_to(*args, **kwargs):
        """Record the moves that change the device (a move to where it already is costs nothing)."""
        target = str(args[0] if args else kwargs.get("device", "")).split(":")[0]
        if target in ("cuda", "cpu") and target != next(student.parameters()).device.type:
            moves.append(target)
        return original_to(*args, **kwargs)

    student.to = counted_to
    token = PROGRESS_BARS.set(False)
    try:
        student, trainer = train_student(None, student, tokenizer, data, alpha=0.5, temperature=2.0, epochs=2,
                                         lr=1e-3, batch_size=16, seq_len=16, work_dir=tmp_path, seed=0,
                                         teacher_logits=logits, sentence=SentenceTarget(0.5, "cosine", vectors))
    finally:
        PROGRESS_BARS.reset(token)
    assert str(trainer.args.device).startswith("cuda")
    assert moves == ["cuda", "cpu"], moves  # there once, back once
    assert next(student.parameters()).device.type == "cpu" and trainer.sentence_losses

    row = measure("distill", "", student, tokenizer, 16, validation=data.validation, test=data.validation)
    assert next(student.parameters()).device.type == "cpu"  # latency measured on the CPU
    cpu_accuracy = float((predict_logits(student, tokenizer, texts[:16], 16).argmax(1) == labels[:16]).mean())
    assert row.val_accuracy == pytest.approx(cpu_accuracy) and row.latency_ms > 0 and row.latency_threads >= 1
