"""Progress of a recipe run: every stage and sub-step says when it starts and ends, on stderr, flushed, with
--json too (stdout then carries the manifest alone); rows carry their sub-steps' wall times; pools are sized to the
process's CPUs (or --threads / $EDGEPACK_THREADS), latency to a fixed few."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAMP = r"\(\d\d:\d\d:\d\d, \+\d+:\d\d:\d\d\)$"


def _workspace(root: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["rain", "sunny", "song", "jazz", "the", "please", "now", "my"]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(root / "model")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(root / "model")
    rows = [{"text": f"{f} {k}", "label": "weather" if k in ("rain", "sunny") else "music"}
            for f in ("the", "please", "now", "my") for k in ("rain", "sunny", "song", "jazz")]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    recipe = {"model": str(root / "model"), "task": "sequence-classification",
              "data": {"train": "train.jsonl", "validation": "val.jsonl", "test": "val.jsonl"},
              "seq_len": 8, "calib_samples": 8, "targets": ["onnx-fp32"],
              "stages": [{"finetune": {"epochs": 1, "batch_size": 16}},
                         {"distill": {"student": {"layers": [0]}, "epochs": 1, "batch_size": 16,
                                      "student_alone": False, "sentence_weight": 0.5}}]}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_json_pack_prints_every_sub_step_start_and_end_on_stderr_in_order(tmp_path):
    recipe = _workspace(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEPACK_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-m", "packager.cli", "pack", "--recipe", str(recipe), "-o",
                           str(tmp_path / "out"), "--json", "--threads", "1"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(done.stdout)  # stdout: the manifest alone
    lines = [line for line in done.stderr.splitlines() if line.startswith("› ")]
    for line in lines:
        assert re.search(STAMP, line), line
    expected = [
        "1 threads per pool", "load data", "load model", "measure input model", "evaluate …", "evaluate done in",
        "size + latency …", "size + latency done in",
        "stage 1/2: finetune", "stage 1/2: finetune: train on labels …", "stage 1/2: finetune: train on labels done in",
        "stage 1/2: finetune: evaluate …", "stage 1/2: finetune: size + latency done in",
        "stage 2/2: distill", "stage 2/2: distill: label the transfer set (32 texts) with the teacher …",
        "stage 2/2: distill: label the transfer set (32 texts) with the teacher done in",
        "stage 2/2: distill: train …", "stage 2/2: distill: train done in", "stage 2/2: distill: evaluate done in",
        "pack", "fp32 reference …", "fp32 reference done in", "onnx-fp32: export + verify",
        "onnx-fp32: export …", "onnx-fp32: export done in", "onnx-fp32: parity …", "onnx-fp32: parity done in",
        "publish bundle"]
    at = 0
    for want in expected:  # in this order (other lines may come between)
        found = next((i for i in range(at, len(lines)) if lines[i][2:].startswith(want)), None)
        assert found is not None, f"{want!r} not after line {at}:\n" + "\n".join(lines)
        at = found + 1
    rows = {r["stage"]: r for r in manifest["stages"]}
    assert set(rows["distill"]["step_seconds"]) >= {"label the transfer set (32 texts) with the teacher", "train",
                                                    "evaluate", "size + latency"}
    assert all(v >= 0 for v in rows["distill"]["step_seconds"].values())
    assert set(rows["target onnx-fp32"]["step_seconds"]) == {"onnx-fp32: export", "onnx-fp32: parity"}
    assert rows["distill"]["latency_threads"] == 1 and rows["input"]["latency_threads"] == 1
    assert rows["distill"]["details"]["sentence"]["teacher_dim"] == 32
    assert "sub-steps s" in done.stderr and "train on labels" in done.stderr.split("Recipe stages", 1)[1]


def test_pool_threads_follow_the_flag_the_environment_and_the_affinity(monkeypatch):
    from packager.errors import EdgepackError
    from packager.threads import THREADS_ENV, affinity_cpus, latency_threads, limit_native_pools, pool_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert pool_threads() == affinity_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, "3")
    assert pool_threads() == 3 and pool_threads(5) == 5
    assert latency_threads(16) == 2 and latency_threads(1) == 1
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    assert limit_native_pools(4) == 4 and os.environ["OMP_NUM_THREADS"] == "4"
    assert os.environ["MKL_NUM_THREADS"] == "7"  # one already set is left as it is
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(EdgepackError, match=r"^EDGEPACK_THREADS='many': expected a whole number"):
        pool_threads()
