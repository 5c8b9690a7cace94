"""A long fine-tune survives an interrupted session: whole checkpoints each epoch, resumed from the last one."""
from __future__ import annotations

import shutil

import pytest
import torch

from packager.compress.common import PROGRESS_BARS, TRAIN_PRECISION
from packager.compress.finetune import finetune
from packager.stages.finetune import FinetuneSpec
from test_compress_stages import SEQ_LEN, make_data, make_model, make_tokenizer


@pytest.fixture(autouse=True)
def one_thread_fp32():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bars, precision = PROGRESS_BARS.set(False), TRAIN_PRECISION.set("fp32")
    yield
    TRAIN_PRECISION.reset(precision)
    PROGRESS_BARS.reset(bars)
    torch.set_num_threads(threads)


def _logits(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model.eval()(**enc).logits


def test_a_stopped_fine_tune_resumes_from_its_last_epoch_and_ends_where_an_uninterrupted_one_does(tmp_path):
    data, tokenizer = make_data(), make_tokenizer()
    spec = FinetuneSpec(epochs=2, lr=2e-3, batch_size=16)
    full, full_details = finetune(make_model(len(tokenizer)), tokenizer, data, spec, seq_len=SEQ_LEN,
                                  work_dir=tmp_path / "full", seed=0, resume=True)
    checkpoints = sorted(p.name for p in (tmp_path / "full").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-20", "checkpoint-40"], checkpoints  # 320 texts / 16 per step, each epoch
    assert (tmp_path / "full" / "checkpoint-20" / "optimizer.pt").is_file()
    assert "resumed_from" not in full_details

    # the session ended during epoch 2: only epoch 1's checkpoint is on disk
    shutil.copytree(tmp_path / "full" / "checkpoint-20", tmp_path / "stopped" / "checkpoint-20")
    resumed, details = finetune(make_model(len(tokenizer)), tokenizer, data, spec, seq_len=SEQ_LEN,
                                work_dir=tmp_path / "stopped", seed=0, resume=True)
    assert details["resumed_from"] == "checkpoint-20"
    assert details["best_val_accuracy"] == full_details["best_val_accuracy"]
    texts = data.test.texts[:16]
    torch.testing.assert_close(_logits(resumed, tokenizer, texts), _logits(full, tokenizer, texts), atol=1e-4, rtol=1e-4)


def test_without_resume_a_fine_tune_keeps_only_the_best_weights(tmp_path):
    data, tokenizer = make_data(), make_tokenizer()
    finetune(make_model(len(tokenizer)), tokenizer, data, FinetuneSpec(epochs=1, lr=2e-3, batch_size=16),
             seq_len=SEQ_LEN, work_dir=tmp_path / "plain", seed=0)
    (checkpoint,) = (tmp_path / "plain").glob("checkpoint-*")
    assert not (checkpoint / "optimizer.pt").exists()  # no resume state written: half the disk of a whole one
