"""`edgepack tune` end to end on a tiny random BERT and a synthetic keyword data set: trials share the cached
teacher, the budget decides (a budget nobody meets: exit 1, no bundle), every trial is in the Pareto table and
the manifest, and a resumed study runs only the trials it lacks."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from device_bench.manifest import Manifest

from test_recipe import FILLER, KEYWORDS
from test_recipe import _rows as _keyword_rows


def _rows(n: int, seed: int) -> list[dict]:
    """Texts of 2 to 8 words (real lengths differ) around one keyword of the label."""
    return _keyword_rows(n, seed, fillers=(1, 7))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("tune")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    tokens += FILLER + [w for ws in KEYWORDS.values() for w in ws]
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(root / "model")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=64)).save_pretrained(root / "model")
    data = root / "data"
    data.mkdir()
    for name, n, seed in (("train", 320, 1), ("val", 64, 2), ("test", 64, 3)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n, seed)))
    return root


def _recipe(workspace: Path, name: str, *, distill: dict | None = None, prune: dict | None = None,
            space: dict | None = None, trim: dict | None = None) -> Path:
    raw = {"model": str(workspace / "model"), "task": "sequence-classification",
           "data": {"train": "data/train.jsonl", "validation": "data/val.jsonl", "test": "data/test.jsonl",
                    "label_column": "intent"},
           "seq_len": 16, "threads": 1, "calib_samples": 32, "targets": ["onnx-fp32"],
           "stages": [{"finetune": {"epochs": 8, "lr": 2.0e-3, "batch_size": 16}},
                      {"distill": {"student": {"layers": [0, 2]}, "epochs": 1, "lr": 1.0e-3, "batch_size": 16,
                                   **(distill or {})}},
                      {"prune": {"method": "structured", "heads": 0.25, "ffn": 0.2, "importance_batches": 4,
                                 "batch_size": 16, "recovery": None, **(prune or {})}},
                      {"trim_vocab": trim or {}}],
           # a small space: seconds per trial (the declared ranges are for real models)
           "search_space": {"distill.alpha": None, "distill.temperature": None, "distill.lr": None,
                            "distill.sentence_weight": None, "distill.epochs": [1, 2], "distill.student.layers": [1, 3],
                            "trim_vocab.keep_top": [0, 20], **(space or {})}}
    path = workspace / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture()
def counted(monkeypatch) -> dict[str, int]:
    """How often the teacher is fine-tuned and scored for its logits, and how many trials are scored."""
    import packager.stages.distill.train as distill_mod
    import packager.stages.finetune.train as finetune_mod
    from packager.tune.search import Tuner

    counts = {"finetune": 0, "transfer_set": 0, "score": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(finetune_mod, "finetune", counting("finetune", finetune_mod.finetune))
    monkeypatch.setattr(distill_mod, "transfer_set", counting("transfer_set", distill_mod.transfer_set))
    monkeypatch.setattr(Tuner, "score", counting("score", Tuner.score))
    return counts


def _tune(args: list[str], capsys) -> tuple[int, str]:
    from packager.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--bench-runs", "5", "--bench-seconds", "0", *args])
    return exit_info.value.code, capsys.readouterr().err


def _trial_rows(err: str) -> list[int]:
    """Trial numbers of the Pareto table printed on stderr."""
    table = err[err.index("Tune trials"):]
    return [int(m) for m in re.findall(r"^│\s*(\d+)(?: ★)?\s*│", table, re.M)]


@pytest.mark.slow
def test_three_trials_pack_the_fastest_within_budget_and_train_the_teacher_once(workspace, tmp_path, counted, capsys):
    out = tmp_path / "best"
    code, err = _tune(["--recipe", str(_recipe(workspace, "tune.yaml")), "--max-accuracy-drop", "0.5",
                       "--trials", "3", "-o", str(out)], capsys)
    assert code == 0, err[-3000:]
    assert counted["finetune"] == 1  # the teacher trains once across the trials
    assert "warning: stages[3].trim_vocab" not in err  # trimming to the train split's tokens only: no caveat
    assert counted["transfer_set"] == 1  # and its logits are computed once
    assert counted["score"] == 3
    manifest = Manifest.load(out)
    rows = {r["stage"]: r for r in manifest.stages}
    assert [r["stage"] for r in manifest.stages] == ["input", "finetune", "tune", "distill", "prune", "trim_vocab",
                                                     "target onnx-fp32", "gate"]
    summary = rows["tune"]["details"]
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2] and all(t["state"] == "complete" for t in trials)
    for t in trials:
        assert set(t["knobs"]) == {"1.distill.epochs", "1.distill.student.layers", "2.prune.heads", "2.prune.ffn",
                                   "3.trim_vocab.keep_top"}
        assert 0 <= t["val_accuracy"] <= 1 and t["latency_ms"] > 0 and t["size_bytes"] > 0
        assert t["trained"] and "finetune" not in t["trained"]
    # trial 0 is the recipe as written: 2 student layers, 1 epoch, the recipe's pruning fractions
    assert trials[0]["knobs"] == {"1.distill.epochs": 1, "1.distill.student.layers": 2, "2.prune.heads": 0.25,
                                  "2.prune.ffn": 0.2, "3.trim_vocab.keep_top": 0}
    within = [t for t in trials if t["within_budget"]]
    winner = min(within, key=lambda t: (t["latency_ms"], -t["val_accuracy"], t["number"]))
    assert summary["winner"] == winner["number"]
    assert any(t["pareto"] for t in trials) and next(t for t in trials if t["number"] == winner["number"])["pareto"]
    # the winner's stages are what the bundle holds, packed through the recipe path (test split, gate)
    layers = winner["knobs"]["1.distill.student.layers"]
    assert manifest.model.num_layers == layers
    assert manifest.recipe["stages"][1]["distill"]["student"]["layers"] == [i * 4 // layers for i in range(layers)]
    assert manifest.recipe["stages"][2]["prune"]["heads"] == winner["knobs"]["2.prune.heads"]
    assert manifest.recipe["stages"][3]["trim_vocab"]["keep_top"] == winner["knobs"]["3.trim_vocab.keep_top"]
    assert manifest.model.vocab_size == rows["trim_vocab"]["details"]["vocab_after"]  # the trimmed tokenizer came back
    (target,) = manifest.targets
    assert target.status == "ok" and target.parity.accuracy is not None
    assert rows["gate"]["details"]["max_accuracy_drop"] == 0.5
    assert _trial_rows(err) == [0, 1, 2]  # the Pareto table lists every trial
    assert f"tune: trial #{winner['number']} won" in err


@pytest.mark.slow
def test_a_budget_no_trial_meets_fails_naming_the_best_trial_and_writes_no_bundle(workspace, tmp_path, counted,
                                                                                  capsys):
    # a student that cannot learn (lr 1e-9, one epoch) and heavy pruning: far below a budget of zero loss
    path = _recipe(workspace, "hopeless.yaml", distill={"lr": 1.0e-9}, prune={"heads": 0.5, "ffn": 0.6},
                   space={"distill.epochs": None, "distill.student.layers": [1, 1], "prune.heads": None,
                          "prune.ffn": [0.5, 0.6]}, trim={"splits": ["train", "validation"]})
    out = tmp_path / "best"
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0", "--trials", "2", "-o", str(out)], capsys)
    assert code == 1
    # trimming to the validation texts' tokens hides its cost from the split the trials are ranked by: said
    assert re.search(r"warning: stages\[3\]\.trim_vocab: splits keeps the validation texts' tokens", err)
    assert not out.exists()
    line = next(l for l in err.splitlines() if "no trial within the budget" in l)
    assert re.search(r"the best trial #[01] reached 0\.\d+ \(-\d+\.\d+ pt\)", line)
    assert _trial_rows(err) == [0, 1]
    assert counted["finetune"] == 1


@pytest.mark.slow
def test_a_trial_whose_fp32_model_misses_the_budget_gets_no_precision_fallback(workspace, tmp_path, counted,
                                                                                capsys):
    """int8 is not the cause when the float model already misses the budget: no op is reverted to float."""
    import optuna

    path = _recipe(workspace, "hopeless-int8.yaml", distill={"lr": 1.0e-9}, prune={"heads": 0.5, "ffn": 0.6},
                   space={"distill.epochs": None, "distill.student.layers": [1, 1], "prune.heads": None,
                          "prune.ffn": None, "trim_vocab.keep_top": None, "distill.alpha": [0.1, 0.9]})
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "targets": ["onnx-int8"], "parity": {"min_agreement": 0.0}}))
    work = tmp_path / "work"
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0", "--trials", "1", "--work", str(work),
                       "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and not (tmp_path / "o").exists()
    assert "trial 0: no precision fallback: the fp32 model already misses the budget" in err
    assert "rank its int8 op groups" not in err
    (trial,) = optuna.load_study(study_name="tune", storage=f"sqlite:///{work / 'study.db'}").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and "float_ops" not in trial.user_attrs


@pytest.mark.slow
def test_a_resumed_study_runs_only_the_trials_it_lacks(workspace, tmp_path, counted, capsys):
    work = tmp_path / "work"
    path = _recipe(workspace, "resume.yaml")
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "2", "-o",
                       str(tmp_path / "first"), "--work", str(work)], capsys)
    assert code == 0, err[-3000:]
    first = {t["number"]: t for t in next(r for r in Manifest.load(tmp_path / "first").stages
                                          if r["stage"] == "tune")["details"]["trials"]}
    assert counted == {"finetune": 1, "transfer_set": 1, "score": 2}
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "3", "-o",
                       str(tmp_path / "second"), "--work", str(work)], capsys)
    assert code == 0, err[-3000:]
    assert counted["score"] == 3  # one new trial, not three
    assert counted["finetune"] == 1  # the teacher came from the stage cache
    second = next(r for r in Manifest.load(tmp_path / "second").stages if r["stage"] == "tune")["details"]["trials"]
    assert [t["number"] for t in second] == [0, 1, 2]
    for t in second[:2]:
        assert t["knobs"] == first[t["number"]]["knobs"] and t["latency_ms"] == first[t["number"]]["latency_ms"]
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "3", "-o",
                       str(tmp_path / "third"), "--work", str(work)], capsys)
    assert code == 0 and counted["score"] == 3 and "nothing to run" in err
    # another point of the front: a scored trial packed from the cache, no trial run, no stage trained
    other = next(n for n in (0, 1, 2) if n != next(r for r in Manifest.load(tmp_path / "third").stages
                                                   if r["stage"] == "tune")["details"]["winner"])
    trained_before = counted["finetune"], counted["transfer_set"]
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "3", "--pack-trial",
                       str(other), "-o", str(tmp_path / "other"), "--work", str(work)], capsys)
    assert code == 0, err[-3000:]
    assert counted["score"] == 3 and (counted["finetune"], counted["transfer_set"]) == trained_before
    summary = next(r for r in Manifest.load(tmp_path / "other").stages if r["stage"] == "tune")["details"]
    assert summary["packed"] == other != summary["winner"]
    assert Manifest.load(tmp_path / "other").model.num_layers == second[other]["knobs"]["1.distill.student.layers"]
    assert f"tune: trial #{other} packed (--pack-trial)" in err
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--pack-trial", "7", "-o",
                       str(tmp_path / "none"), "--work", str(work)], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        "edgepack: error: --pack-trial 7: not a scored trial of study 'tune' (scored trials: 0, 1, 2)")
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "3", "--objective", "size",
                       "-o", str(tmp_path / "fourth"), "--work", str(work)], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        "edgepack: error: --study tune: holds the trials of another tune (the recipe, its search space, --objective, "
        "the benchmark device or the primary target changed); name a new --study or --work")
    assert counted["score"] == 3 and not (tmp_path / "fourth").exists()
    # another study in the same work folder shares the stage cache and keeps its own plot
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "1", "--objective", "size",
                       "--study", "by size", "-o", str(tmp_path / "fifth"), "--work", str(work)], capsys)
    assert code == 0, err[-3000:]
    assert (counted["finetune"], counted["transfer_set"]) == trained_before
    plot = next(r for r in Manifest.load(tmp_path / "fifth").stages if r["stage"] == "tune")["details"]["plot"]
    assert Path(plot) == work / "tune-trials-by_size.png" and (work / "tune-trials.png").is_file()


@pytest.mark.slow
def test_trials_benchmarked_on_an_agent_rank_by_its_energy_and_are_plotted(workspace, tmp_path, counted, capsys,
                                                                          monkeypatch):
    """Through an edgepack-agent on loopback (a subprocess): no trial is benchmarked in this process, each trial
    carries the agent's latency and energy figures, the winner is the least energy within the budget."""
    import device_bench.bench as local_bench

    from test_device_bench_fixture import PINS, running_agent

    def no_local_bench(*args, **kwargs):
        raise AssertionError("a trial was benchmarked here, not on the agent")

    monkeypatch.setattr(local_bench, "bench_bundle", no_local_bench)
    token_file = tmp_path / "token"
    token_file.write_text("tune-token-for-tests\n")
    token_file.chmod(0o600)
    out, work = tmp_path / "best", tmp_path / "work"
    with running_agent(tmp_path / "agent", "--token-file", str(token_file), "--name", "loopback-pi") as (url, _):
        code, err = _tune(["--recipe", str(_recipe(workspace, "agent.yaml")), "--max-accuracy-drop", "0.5",
                           "--trials", "2", "--objective", "energy", "--device", url, "--fingerprint", PINS[url],
                           "--token-file", str(token_file), "-o", str(out), "--work", str(work)], capsys)
    assert code == 0, err[-3000:]
    assert "agent loopback-pi" in err and f"benchmark onnx-fp32 on {url}" in err
    summary = next(r for r in Manifest.load(out).stages if r["stage"] == "tune")["details"]
    assert summary["device"] == url and summary["objective"] == "energy"
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete"]
    for t in trials:
        assert t["latency_ms"] > 0 and t["energy_mj"] > 0 and t["energy_kind"] == "estimated"
    within = [t for t in trials if t["within_budget"]]
    assert summary["winner"] == min(within, key=lambda t: (t["energy_mj"], -t["val_accuracy"], t["number"]))["number"]
    assert "energy mJ" in err and _trial_rows(err) == [0, 1]
    plot = Path(summary["plot"])
    assert plot == work / "tune-trials.png" and plot.stat().st_size > 10_000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unreachable_agent_fails_before_any_training(workspace, tmp_path, counted, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _tune(["--recipe", str(_recipe(workspace, "gone.yaml")), "--max-accuracy-drop", "0.1", "--device",
                       f"http://127.0.0.1:{port}", "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and counted["finetune"] == 0
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"edgepack: error: --device http://127.0.0.1:{port}: ") and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_trial_whose_process_was_killed_runs_again_with_its_knobs_and_cached_stages(workspace, tmp_path, capsys,
                                                                                    monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time

    import packager.tune.search as tune_mod

    work, path = tmp_path / "work", _recipe(workspace, "killed.yaml")
    args = ["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "1", "--work", str(work)]
    proc = subprocess.Popen([sys.executable, "-m", "packager.cli", "tune", "--bench-runs", "5", "--bench-seconds", "0",
                             *args, "-o", str(tmp_path / "first")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:  # kill it once trial 0 has cached its first stage (input, finetune, then distill)
        deadline = time.monotonic() + 240
        while len(list((work / "stages").glob("*/meta.json"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the tune ended before it could be killed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list((work / "stages").glob("*/meta.json"))) >= 3
    monkeypatch.setattr(tune_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune_mod, "GRACE_S", 1)
    time.sleep(2)  # the killed trial's heartbeat is now stale
    code, err = _tune([*args, "-o", str(tmp_path / "second")], capsys)
    assert code == 0, err[-3000:]
    trials = next(r for r in Manifest.load(tmp_path / "second").stages if r["stage"] == "tune")["details"]["trials"]
    assert [(t["number"], t["state"]) for t in trials] == [(0, "failed"), (1, "complete")]  # --trials 1: the retry
    assert trials[0]["error"] == "its process stopped; run again as trial 1"
    # the knobs trial 0 had sampled before it died (define-by-run: the later stages' were not sampled yet)
    assert trials[0]["knobs"] and trials[0]["knobs"].items() <= trials[1]["knobs"].items()
    assert trials[1]["cached"][0] == "distill"  # its finished stage came from the cache


@pytest.mark.parametrize("args, message", [
    (["--token", "t"], "--token/--token-file need --device"),
    (["--device-name", "pi"], "--device-name needs --devices"),
    (["--devices", "DEVICES"], "--devices needs --device-name (one of: pi5, jetson)"),
    (["--devices", "DEVICES", "--device-name", "phone"], "--device-name 'phone': not in"),
    (["--devices", "DEVICES", "--device", "http://x:1"], "give --device or --devices, not both"),
])
def test_bad_device_flags_are_one_line_errors(workspace, tmp_path, capsys, args, message):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  - {name: pi5, url: 'http://pi5.local:8765'}\n"
                       "  - {name: jetson, url: 'http://jetson.local:8765'}\n")
    args = [str(devices) if a == "DEVICES" else a for a in args]
    base = ["--recipe", str(_recipe(workspace, "devflags.yaml")), "--max-accuracy-drop", "0.1", "-o", str(tmp_path / "o")]
    code, err = _tune([*base, *args], capsys)
    assert code == 2
    assert err.strip().startswith(f"edgepack: error: {message}") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--max-accuracy-drop", "2"], "--max-accuracy-drop: 2.0 is outside [0, 1]"),
    (["--trials", "0"], "--trials: 0 must be at least 1"),
    (["--timeout", "soon"], "--timeout 'soon': expected a duration"),
    (["--storage", "tune.db", "--study", "s"], "--storage: expected a database URL"),
])
def test_bad_tune_flags_are_one_line_errors(workspace, tmp_path, capsys, args, message):
    base = ["--recipe", str(_recipe(workspace, "flags.yaml")), "--max-accuracy-drop", "0.1", "-o", str(tmp_path / "o")]
    code, err = _tune([*base, *args], capsys)
    assert code == 2
    assert err.strip().startswith(f"edgepack: error: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_bad_search_space_names_the_key(workspace, tmp_path, capsys):
    path = _recipe(workspace, "space.yaml", space={"distill.temprature": [1, 2]})
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.1", "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.strip() == ("edgepack: error: recipe search_space.distill.temprature: distill has no knob "
                           "'temprature' (knobs: alpha, temperature, epochs, lr, sentence_weight, student.layers)")


@pytest.mark.slow
def test_bucket_layouts_are_a_knob_and_the_winner_is_packed_with_its_own(workspace, tmp_path, counted, capsys):
    path = _recipe(workspace, "buckets.yaml", space={"distill.epochs": None, "distill.student.layers": [2, 2],
                                                     "trim_vocab.keep_top": None, "buckets": [[4, 16], "none"]})
    out = tmp_path / "best"
    code, err = _tune(["--recipe", str(path), "--max-accuracy-drop", "0.5", "--trials", "3", "-o", str(out)], capsys)
    assert code == 0, err[-3000:]
    assert "buckets: one of 4,16, none" in err
    manifest = Manifest.load(out)
    summary = next(r for r in manifest.stages if r["stage"] == "tune")["details"]
    layouts = [t["knobs"]["pack.buckets"] for t in summary["trials"]]
    assert set(layouts) <= {"4,16", "none"} and len(layouts) == 3
    winner = next(t for t in summary["trials"] if t["number"] == summary["winner"])
    assert manifest.input_spec.buckets == ([4, 16] if winner["knobs"]["pack.buckets"] == "4,16" else None)  # one shape
    assert manifest.recipe["buckets"] == ([4, 16] if winner["knobs"]["pack.buckets"] == "4,16" else "none")


@pytest.mark.parametrize("change, message", [
    ({"buckets": [16, 8]}, "recipe buckets: lengths must be positive, distinct and ascending, got [16, 8]"),
    ({"buckets": [8, 32]}, "recipe buckets: 32 is above seq_len 16 (the maximum length)"),
    ({"buckets": "some"}, "recipe buckets: expected auto, none or a list of lengths such as [16, 32, 64], got 'some'"),
    ({"search_space": {"buckets": [8, 16]}}, "recipe search_space.buckets: expected a list of layouts to choose "
                                             "among, e.g. [auto, none, [16, 64]], got [8, 16]"),
    ({"search_space": {"buckets": ["auto", [8, 99]]}}, "recipe search_space.buckets[1]: 99 is above seq_len 16"),
])
def test_bad_bucket_layouts_name_the_key(workspace, change, message):
    from packager.errors import RecipeError
    from packager.recipe.spec import load_recipe

    path = _recipe(workspace, "badbuckets.yaml")
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, **change}))
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert str(error.value).startswith(message)


def test_pareto_front_keeps_the_trials_nothing_beats():
    from packager.tune.records import pareto_front

    points = {0: (0.90, 2.0), 1: (0.95, 3.0), 2: (0.85, 2.5), 3: (0.95, 3.5), 4: (0.80, 1.0)}
    assert pareto_front(points) == {0, 1, 4}


def test_each_stage_declares_its_knobs_and_the_distill_search_reads_them():
    from packager.stages import STAGES
    from packager.stages.distill.spec import TRAINING_KNOBS, SearchSpec

    assert list(STAGES) == ["finetune", "distill", "prune", "trim_vocab", "calibrate"]
    assert {k.option for k in STAGES["distill"].search_space} == {"alpha", "temperature", "epochs", "lr",
                                                                   "sentence_weight", "student.layers"}
    assert {k.option for k in STAGES["prune"].search_space} == {"heads", "ffn"}
    assert {k.option for k in STAGES["trim_vocab"].search_space} == {"keep_top"}
    assert STAGES["finetune"].search_space == () and not STAGES["finetune"].compresses
    assert STAGES["calibrate"].search_space == () and not STAGES["calibrate"].compresses
    search = SearchSpec(lr=None)
    assert [(k.option, b) for k, b in search.searched()] == [(k.option, list(k.bounds)) for k in TRAINING_KNOBS[:3]]


@pytest.mark.parametrize("text, seconds", [("2h", 7200.0), ("90m", 5400.0), ("45s", 45.0), ("3600", 3600.0)])
def test_timeout_durations(text, seconds):
    from packager.tune.options import parse_duration

    assert parse_duration(text) == seconds
