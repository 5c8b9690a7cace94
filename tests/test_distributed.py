"""Recipes on a real distributed engine: `torchrun --nproc_per_node 2` (CPU, gloo) and a search shared through sqlite.

The tiny BERT has no dropout, and the single-process reference trains with batch 32 while each of the two
ranks takes batches of 16: the same examples per optimizer step in the same order (accelerate hands rank r
every other batch of the same seeded permutation; DDP averages the two equal halves' gradients), so the
runs differ only by float summation order. See ``ACCURACY_TOLERANCE``.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from device_bench.manifest import Manifest

BIN = Path(sys.executable).parent
WORDS = {"weather": ["rain", "sunny", "forecast"], "music": ["song", "jazz", "album"],
         "bank": ["balance", "transfer", "deposit"], "travel": ["flight", "hotel", "airport"]}
FILLER = ["please", "could", "you", "the", "my", "me", "for", "today", "now", "check", "tell", "what", "is", "a"]
N_TRAIN, PER_RANK_BATCH = 512, 16  # 32 batches of 16 per epoch: 16 for each of two ranks
#: Two runs that take the same optimizer steps on the same examples differ only in float rounding (per-rank
#: padding widths, the gloo all-reduce's summation order: ~1e-7 relative). That can flip a test prediction
#: lying on a decision boundary, or which of two epochs with equal validation accuracy is kept, but not more:
#: at most 2 of the 64 test utterances.
ACCURACY_TOLERANCE = 2 / 64


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    names = list(WORDS)
    rows = []
    for i in range(n):
        words = rng.sample(FILLER, 4) + [rng.choice(WORDS[names[i % len(names)]])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": names[i % len(names)]})
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A 4-layer tiny random BERT without dropout (no task head: the recipe seeds one) and JSONL splits."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("dist")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    tokens += FILLER + [w for ws in WORDS.values() for w in ws]
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(root / "model")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=32, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(root / "model")
    for name, n, seed in (("train", N_TRAIN, 1), ("val", 64, 2), ("test", 64, 3)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n, seed)))
    return root


def _recipe(workspace: Path, name: str, batch_size: int, epochs: int = 3, search: dict | None = None,
            finetune: bool = True) -> Path:
    distill = {"student": {"layers": [0, 2]}, "epochs": epochs, "lr": 5.0e-4, "batch_size": batch_size,
               "warmup_ratio": 0.0, "student_alone": False}
    if search:
        distill["search"] = search
    stages = [{"finetune": {"epochs": epochs, "lr": 5.0e-4, "batch_size": batch_size, "warmup_ratio": 0.0}},
              {"distill": distill}]
    recipe = {"model": "model", "task": "sequence-classification",
              "data": {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"},
              "seq_len": 16, "threads": 1, "calib_samples": 16, "targets": ["onnx-fp32"],
              "precision": "fp32",  # the 1-vs-2-process comparison is about distribution, not bf16 rounding
              "stages": stages if finetune else stages[1:]}
    path = workspace / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", **extra}


def _torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "edgepack"), *args]


def _training_rows(manifest: Manifest) -> dict[str, dict]:
    return {row["stage"]: row["run"] for row in manifest.stages if row["stage"] in ("finetune", "distill")}


@pytest.mark.slow
def test_torchrun_two_ranks_train_and_rank_0_publishes_once(workspace, tmp_path):
    from packager.recipe.spec import load_recipe
    from packager.recipe.run import run_recipe

    search = {"trials": 2, "epochs": [1, 2], "lr": None}  # in a distributed job rank 0 asks optuna, every rank trains
    single = run_recipe(load_recipe(_recipe(workspace, "single.yaml", 2 * PER_RANK_BATCH, search=search)),
                        tmp_path / "single", show_bars=False)
    assert single.exit_code == 0, single.message

    out = tmp_path / "runs" / "two"
    two = _recipe(workspace, "two.yaml", PER_RANK_BATCH, search=search)
    proc = subprocess.run(_torchrun("pack", "--recipe", str(two), "-o", str(out)), env=_env(), capture_output=True,
                          text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count("bundle written to") == 1 and log.count("› publish bundle") == 1, log[-4000:]
    assert "2 processes (gloo, cpu): every rank trains, rank 0 packs" in log
    assert "· trained on 2 processes (gloo, cpu)" in log
    assert sorted(p.name for p in out.parent.iterdir()) == ["two"]  # no staging or second copy left beside it

    manifest = Manifest.load(out)
    assert [t.status for t in manifest.targets] == ["ok"]
    assert {row["run"]["world_size"] for row in manifest.stages if row.get("run")} == {2}
    searched = [next(r for r in m.stages if r["stage"] == "distill")["details"]["search"]
                for m in (single.manifest, manifest)]
    assert searched[0]["trials_run_here"] == searched[1]["trials_run_here"] == [0, 1]
    assert searched[0]["best_params"] == searched[1]["best_params"]  # the seeded sampler, the same trial results
    epochs = {"finetune": 3, "distill": searched[0]["best_params"]["epochs"]}
    two_runs, one_runs = _training_rows(manifest), _training_rows(single.manifest)
    for stage in ("finetune", "distill"):
        two, one = two_runs[stage], one_runs[stage]
        assert (two["backend"], two["device"], two["precision"]) == ("gloo", "cpu", "fp32")
        assert (one["world_size"], one["backend"]) == (1, None)
        # each rank trained on half of the batches of 16, and both runs took the same 32-example steps
        assert two["batches_per_epoch_by_rank"] == [N_TRAIN // PER_RANK_BATCH // 2] * 2
        assert one["batches_per_epoch_by_rank"] == [N_TRAIN // (2 * PER_RANK_BATCH)]
        assert two["effective_batch_size"] == one["effective_batch_size"] == 2 * PER_RANK_BATCH
        assert two["optimizer_steps"] == one["optimizer_steps"] == epochs[stage] * N_TRAIN // (2 * PER_RANK_BATCH)
    one_acc = {r["stage"]: r["test_accuracy"] for r in single.manifest.stages}
    two_acc = {r["stage"]: r["test_accuracy"] for r in manifest.stages}
    assert one_acc["distill"] > one_acc["input"] + 0.2  # it learned, so the comparison means something
    for stage in ("finetune", "distill", "target onnx-fp32"):
        assert abs(two_acc[stage] - one_acc[stage]) <= ACCURACY_TOLERANCE + 1e-9, (stage, one_acc, two_acc)
    # the same steps: the fine-tuning loss agrees to rounding (it also catches a loss scaled by the process count)
    loss = lambda m: next(r for r in m.stages if r["stage"] == "finetune")["details"]["train_loss"]
    assert loss(manifest) == pytest.approx(loss(single.manifest), rel=1e-3)


def _worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of torchrun's workers (read from their environment)."""
    import psutil

    found = {}
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            rank = child.environ().get("RANK")
        except (psutil.Error, OSError):
            continue
        if rank is not None and child.environ().get("LOCAL_RANK") is not None:
            found[int(rank)] = child.pid
    return found


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_within_bounded_time(workspace, tmp_path):
    out = tmp_path / "runs" / "killed"
    recipe = _recipe(workspace, "long.yaml", PER_RANK_BATCH, epochs=200)
    proc = subprocess.Popen(_torchrun("pack", "--recipe", str(recipe), "-o", str(out)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any("stage 1/2: finetune" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # inside the training loop
        os.kill(_worker_pids(proc)[1], 9)
        killed = time.monotonic()
        rc = proc.wait(timeout=120)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc != 0
    assert elapsed < 60, elapsed
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_with_disjoint_trials(workspace, tmp_path):
    """Two `edgepack pack` processes on one study: disjoint trial numbers, all visible to both; then resumed."""
    from packager.recipe.spec import load_recipe
    from packager.recipe.run import run_recipe

    db = tmp_path / "search.db"
    search = {"trials": 4, "epochs": [1, 1], "lr": None, "pruner": "none", "storage": f"sqlite:///{db}",
              "study": "shared"}
    recipe = _recipe(workspace, "search.yaml", PER_RANK_BATCH, epochs=1, search=search, finetune=False)
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    procs = [subprocess.Popen([str(BIN / "edgepack"), "pack", "--recipe", str(recipe), "-o", str(o)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for o in outs]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    infos = [next(r for r in Manifest.load(o).stages if r["stage"] == "distill")["details"]["search"] for o in outs]
    ran = [set(i["trials_run_here"]) for i in infos]
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == set(range(4)), ran
    # (which worker draws how many depends on start-up timing: on a loaded machine one may find them all taken;
    # the resumed worker below shows deterministically that a second process continues the first's study)
    assert infos[0]["best_params"] == infos[1]["best_params"]  # each waited for the other's last trial
    assert infos[0]["storage"] == f"sqlite:///{db}" and infos[0]["completed_trials"] == 4

    # resumable: a later worker with a bigger budget runs only the missing trial
    resumed = load_recipe(recipe)
    resumed.stages[0].spec.search.trials = 5
    outcome = run_recipe(resumed, tmp_path / "worker2", show_bars=False)
    assert outcome.exit_code == 0, outcome.message
    info = next(r for r in outcome.manifest.stages if r["stage"] == "distill")["details"]["search"]
    assert info["trials_run_here"] == [4] and info["completed_trials"] == 5


@pytest.mark.parametrize("search, key, message", [
    ({"storage": "sqlite:///s.db"}, "search.study", "storage and study go together"),
    ({"study": "s"}, "search.storage", "storage and study go together"),
    ({"storage": "s.db", "study": "s"}, "search.storage", "expected a database URL"),
])
def test_a_shared_search_needs_a_storage_url_and_a_study_name(workspace, search, key, message):
    from packager.recipe.spec import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=rf"^recipe stages\[0\]\.distill\.{key}: {message}"):
        load_recipe(_recipe(workspace, "bad.yaml", 16, search=search, finetune=False))
