"""A long fine-tune survives an interrupted session: whole checkpoints each epoch and every few minutes between,
resumed from the last one."""
from __future__ import annotations

import shutil
import time

import pytest
import torch

from packager.training.common import PROGRESS_BARS, TRAIN_PRECISION
from packager.stages.finetune.train import finetune
from packager.stages.finetune.spec import FinetuneSpec
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_fine_tune_stopped_mid_epoch_resumes_from_its_timed_checkpoint(tmp_path, monkeypatch):
    """A base-size epoch on a CPU outlasts a session: resumable runs also checkpoint every few minutes (here
    every step), and a run stopped mid-epoch continues from there to the same weights."""
    monkeypatch.setenv("EDGEPACK_CHECKPOINT_SECONDS", "1e-9")
    data, tokenizer = make_data(), make_tokenizer()
    spec = FinetuneSpec(epochs=2, lr=2e-3, batch_size=16)
    full, full_details = finetune(make_model(len(tokenizer)), tokenizer, data, spec, seq_len=SEQ_LEN,
                                  work_dir=tmp_path / "full", seed=0, resume=True)
    checkpoints = {p.name for p in (tmp_path / "full").glob("checkpoint-*")}
    assert "checkpoint-39" in checkpoints, checkpoints  # mid-epoch 2 (20 steps an epoch), not an epoch's end
    assert (tmp_path / "full" / "checkpoint-39" / "optimizer.pt").is_file()

    shutil.copytree(tmp_path / "full" / "checkpoint-39", tmp_path / "stopped" / "checkpoint-39")
    resumed, details = finetune(make_model(len(tokenizer)), tokenizer, data, spec, seq_len=SEQ_LEN,
                                work_dir=tmp_path / "stopped", seed=0, resume=True)
    assert details["resumed_from"] == "checkpoint-39"
    texts = data.test.texts[:16]
    torch.testing.assert_close(_logits(resumed, tokenizer, texts), _logits(full, tokenizer, texts), atol=1e-4, rtol=1e-4)


def test_without_resume_a_fine_tune_keeps_only_the_best_weights(tmp_path):
    data, tokenizer = make_data(), make_tokenizer()
    finetune(make_model(len(tokenizer)), tokenizer, data, FinetuneSpec(epochs=1, lr=2e-3, batch_size=16),
             seq_len=SEQ_LEN, work_dir=tmp_path / "plain", seed=0)
    (checkpoint,) = (tmp_path / "plain").glob("checkpoint-*")
    assert not (checkpoint / "optimizer.pt").exists()  # no resume state written: half the disk of a whole one


@pytest.mark.slow
def test_a_search_trial_whose_worker_died_is_run_again_from_its_last_epoch(tmp_path, monkeypatch):
    """A study kept in a database: the trial a dead worker left running is retried in the first attempt's folder,
    continuing from that attempt's last whole checkpoint, and ends where an uninterrupted trial does."""
    optuna = pytest.importorskip("optuna")
    from packager.stages.distill import search as distill_search
    from packager.stages.distill.train import distill
    from packager.stages.distill.spec import DistillSpec, SearchSpec, StudentSpec

    monkeypatch.setattr(distill_search, "SEARCH_HEARTBEAT_S", 1)
    monkeypatch.setattr(distill_search, "SEARCH_GRACE_S", 1)
    data, tokenizer = make_data(), make_tokenizer()
    teacher, _ = finetune(make_model(len(tokenizer)), tokenizer, data, FinetuneSpec(epochs=1, lr=2e-3, batch_size=16),
                          seq_len=SEQ_LEN, work_dir=tmp_path / "teacher", seed=0)

    def spec(db: str) -> DistillSpec:
        search = SearchSpec(trials=1, alpha=[0.5, 0.5], temperature=[3.0, 3.0], epochs=[2, 2], lr=None,
                            pruner="none", storage=f"sqlite:///{tmp_path / db}", study="s")
        return DistillSpec(student=StudentSpec(layers=[0]), lr=2e-3, batch_size=16, search=search, student_alone=False)

    full, _, full_details = distill(teacher, tokenizer, data, spec("full.db"), seq_len=SEQ_LEN,
                                    work_dir=tmp_path / "full", seed=0)
    trial_dir = tmp_path / "full" / "search" / "s" / "trial-0"  # under the study's name
    assert sorted(p.name for p in trial_dir.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    assert (trial_dir / "checkpoint-20" / "optimizer.pt").is_file()  # whole: a retry can continue from it

    # a worker died during epoch 2 of trial 0: its epoch-1 checkpoint is on disk, the trial still "running"
    shutil.copytree(trial_dir / "checkpoint-20", tmp_path / "died" / "search" / "s" / "trial-0" / "checkpoint-20")
    first = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'full.db'}").trials[0]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'died.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    running = study.ask(fixed_distributions=first.distributions)
    assert running.params == first.params
    storage.record_heartbeat(running._trial_id)
    time.sleep(2)  # its heartbeat is now stale

    resumed, _, details = distill(teacher, tokenizer, data, spec("died.db"), seq_len=SEQ_LEN,
                                  work_dir=tmp_path / "died", seed=0)
    tried = details["search"]["tried"]
    assert [(t["trial"], t["state"]) for t in tried] == [(0, "fail"), (1, "complete")]
    assert not (tmp_path / "died" / "search" / "s" / "trial-1").exists()  # the retry ran in trial 0's folder
    assert (tmp_path / "died" / "search" / "s" / "trial-0" / "checkpoint-40").is_dir()
    assert tried[1]["val_accuracy"] == full_details["search"]["tried"][0]["val_accuracy"]
    texts = data.test.texts[:16]
    torch.testing.assert_close(_logits(resumed, tokenizer, texts), _logits(full, tokenizer, texts), atol=1e-4, rtol=1e-4)
