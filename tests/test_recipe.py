"""Recipes: validation naming the bad key, `recipe show`, and whole recipes packed end to end."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from device_bench.manifest import Manifest
from packager.errors import EdgepackError
from packager.recipe.spec import RecipeError, load_recipe, parse_recipe
from packager.cli.recipe import pack_from_recipe, recipe

KEYWORDS = {"weather": ["rain", "sunny", "forecast"], "music": ["song", "jazz", "album"],
            "bank": ["balance", "transfer", "deposit"], "travel": ["flight", "hotel", "airport"]}
FILLER = ["please", "could", "you", "the", "my", "me", "for", "today", "now", "check", "tell", "what", "is", "a"]
UNUSED = [f"word{chr(97 + i)}" for i in range(26)]


def _rows(n: int, seed: int, fillers: tuple[int, int] = (4, 4)) -> list[dict]:
    """Keyword texts: ``fillers`` (low, high) filler words around one keyword of the label."""
    rng = random.Random(seed)
    names = list(KEYWORDS)
    rows = []
    for i in range(n):
        label = names[i % len(names)]
        count = fillers[0] if fillers[0] == fillers[1] else rng.randint(*fillers)
        words = rng.sample(FILLER, count) + [rng.choice(KEYWORDS[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "intent": label})
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny random BERT without a task head (like the built-in model) and JSONL/CSV splits."""
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("recipe")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    tokens += FILLER + [w for ws in KEYWORDS.values() for w in ws] + UNUSED
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(root / "model")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=64)).save_pretrained(root / "model")
    data = root / "data"
    data.mkdir()
    for name, n, seed in (("train", 320, 1), ("val", 64, 2)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n, seed)))
    test = _rows(64, 3)
    (data / "test.csv").write_text("text,intent\n" + "".join(f"{r['text']},{r['intent']}\n" for r in test))
    return root


def _recipe(workspace: Path, stages: list, **extra) -> dict:
    return {"model": str(workspace / "model"), "task": "sequence-classification",
            "data": {"train": "data/train.jsonl", "validation": "data/val.jsonl", "test": "data/test.csv",
                     "label_column": "intent"},
            "seq_len": 16, "threads": 1, "stages": stages, "targets": ["torchscript-mobile"], **extra}


def _write(workspace: Path, name: str, content: dict) -> Path:
    path = workspace / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


FINETUNE = {"finetune": {"epochs": 10, "lr": 2.0e-3, "batch_size": 16}}


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r["stages"].append({"distill": {"temprature": 3}}), "stages[1].distill.temprature"),
    (lambda r: r["stages"].append({"prune": {"method": "random"}}), "stages[1].prune.method"),
    (lambda r: r["stages"].append({"prune": {"method": "structured", "heads": 1.5}}), "stages[1].prune.heads"),
    (lambda r: r["stages"].append({"prune": {"method": "magnitude", "ffn": 0.5}}), "stages[1].prune.ffn"),
    (lambda r: r["stages"].append({"distill": {"student": {"layers": [0], "model": "x"}}}), "stages[1].distill.student"),
    (lambda r: r["stages"].append({"quantise": {}}), "stages[1].quantise"),
    (lambda r: r["stages"][0]["finetune"].update(epochs="three"), "stages[0].finetune.epochs"),
    (lambda r: r["stages"][0]["finetune"].update(batch_size=0), "stages[0].finetune.batch_size"),
    (lambda r: r.update(seq_len=1), "seq_len"),
    (lambda r: r.update(sequence_length=64), "sequence_length"),
    (lambda r: r.update(gate={"max_drop": 0.1}), "gate.max_drop"),
    (lambda r: r.update(task="feature-extraction"), "task"),
    (lambda r: r["data"].pop("train"), "data.train"),
    (lambda r: r["data"].pop("validation"), "data.validation"),
    (lambda r: r["stages"].append({"trim_vocab": {"splits": ["dev"]}}), "stages[1].trim_vocab.splits[0]"),
    (lambda r: r["stages"].append({"calibrate": {}}), "stages[1].calibrate.label"),
    (lambda r: r["stages"].append({"calibrate": {"label": "travel", "bound": 0}}), "stages[1].calibrate.bound"),
    (lambda r: r.update(parity={"isas": ["avx9"]}), "parity.isas"),
    (lambda r: r.update(target_options={"tflite-int8": {"io": "int8"}}), "target_options.tflite-int8"),
    (lambda r: r.update(targets=["tflite-int8-full"], target_options={"tflite-int8-full": {"io": "int4"}}),
     "target_options.tflite-int8-full.io"),
    (lambda r: r.update(targets=["onnx-int8"], target_options={"onnx-int8": {"per_chanel": False}}),
     "target_options.onnx-int8.per_chanel"),
])
def test_validation_errors_name_the_key(workspace, mutate, key):
    raw = _recipe(workspace, [json.loads(json.dumps(FINETUNE))])
    mutate(raw)
    with pytest.raises(RecipeError) as err:
        parse_recipe(raw, workspace)
    assert str(err.value).startswith(f"recipe {key}:"), str(err.value)
    assert "\n" not in str(err.value)


def test_recipe_show_fills_defaults(workspace):
    path = _write(workspace, "show.yaml", _recipe(workspace, [FINETUNE, {"distill": {"student": {"layers": [0, 2]}}},
                                                             {"prune": {"method": "structured", "heads": 0.25}},
                                                             "trim_vocab"]))
    result = CliRunner().invoke(recipe, ["show", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["stages"][1]["distill"]["temperature"] == 2.0
    assert shown["stages"][2]["prune"]["recovery"]["epochs"] == 1.0
    assert "sparsity" not in shown["stages"][2]["prune"]  # irrelevant to structured pruning
    assert shown["stages"][3] == {"trim_vocab": {"splits": ["train"], "keep_ascii_chars": False, "keep_top": 0}}
    assert shown["gate"] == {"max_accuracy_drop": None}
    bad = CliRunner().invoke(recipe, ["show", str(workspace / "missing.yaml")])
    assert bad.exit_code != 0


def test_bad_data_column_is_a_one_line_error(workspace, tmp_path):
    raw = _recipe(workspace, [FINETUNE])
    raw["data"]["label_column"] = "label"
    with pytest.raises(EdgepackError, match=r"^recipe data.label_column: train.jsonl has no column 'label'"):
        pack_from_recipe(_write(workspace, "badcol.yaml", raw), tmp_path / "out", force=False, archive=False,
                         progress=False)


@pytest.mark.slow
def test_full_recipe_packs_a_smaller_model_with_its_stage_table(workspace, tmp_path, capsys):
    stages = [FINETUNE,
              {"distill": {"student": {"layers": [1, 3]}, "temperature": 4, "alpha": 0.5, "epochs": 3, "lr": 1.0e-3,
                           "batch_size": 16}},
              {"prune": {"method": "structured", "heads": 0.25, "ffn": 0.5, "importance_batches": 8, "batch_size": 16,
                         "recovery": {"epochs": 2, "lr": 5.0e-4, "batch_size": 16}}},
              {"trim_vocab": {}}]
    path = _write(workspace, "full.yaml", _recipe(workspace, stages, gate={"max_accuracy_drop": 0.1}, calib_samples=32))
    out = tmp_path / "bundle"
    capsys.readouterr()
    assert pack_from_recipe(path, out, force=False, archive=True, as_json=True) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # --json: stdout is the manifest alone, stage table on stderr
    # and the progress lines too, each with its clock time and the time since the start
    assert re.search(r"› stage 1/4: finetune \(\d\d:\d\d:\d\d, \+0:\d\d:\d\d\)", captured.err), captured.err[-2000:]
    assert "✓ distill:" in captured.err and "› publish bundle" in captured.err
    manifest = Manifest.load(out)
    assert printed == manifest.to_dict()
    rows = {r["stage"]: r for r in manifest.stages}
    assert [r["stage"] for r in manifest.stages] == ["input", "finetune", "teacher", "student alone", "distill",
                                                     "prune", "trim_vocab", "target torchscript-mobile", "gate"]
    assert rows["finetune"]["test_accuracy"] >= 0.9
    assert rows["distill"]["params"] < rows["finetune"]["params"]
    assert rows["prune"]["details"]["heads_after"] != rows["prune"]["details"]["heads_before"]
    assert rows["trim_vocab"]["details"]["vocab_after"] < rows["trim_vocab"]["details"]["vocab_before"]
    assert manifest.model.vocab_size == rows["trim_vocab"]["details"]["vocab_after"]
    assert manifest.model.num_layers == 2
    assert rows["gate"]["details"]["passed"] is True
    (target,) = manifest.targets
    assert target.status == "ok" and target.parity.accuracy >= 0.85
    assert manifest.recipe["stages"][1]["distill"]["student"] == {"layers": [1, 3]}
    assert (tmp_path / "bundle.tar.gz").is_file()
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(out / "tokenizer")) == manifest.model.vocab_size


@pytest.mark.slow
def test_a_calibrated_recipe_packs_the_bias_into_every_target(workspace, tmp_path):
    """calibrate after finetune: its row says the bias it fit, and the exported artifact carries it (parity
    against the calibrated fp32 model)."""
    stages = [FINETUNE, {"calibrate": {"label": "travel"}}]
    path = _write(workspace, "calibrate.yaml", _recipe(workspace, stages, calib_samples=32))
    out = tmp_path / "bundle"
    assert pack_from_recipe(path, out, force=False, archive=False, progress=False) == 0
    manifest = Manifest.load(out)
    rows = {r["stage"]: r for r in manifest.stages}
    assert [r["stage"] for r in manifest.stages][:3] == ["input", "finetune", "calibrate"]
    details = rows["calibrate"]["details"]
    assert details["label"] == "travel" and details["validation_share"] == 0.25 and not details["at_bound"]
    assert rows["calibrate"]["description"] == f"calibrate 'travel' logit {details['bias']:+.2f} on validation"
    (target,) = manifest.targets
    assert target.status == "ok" and target.parity.accuracy >= 0.85


def test_a_calibrate_label_the_data_lacks_fails_before_any_training(workspace, tmp_path):
    path = _write(workspace, "calibrate-bad.yaml", _recipe(workspace, [FINETUNE, {"calibrate": {"label": "travl"}}]))
    out = tmp_path / "out"
    with pytest.raises(EdgepackError, match=r"^recipe calibrate.label: 'travl' is not one of the data's labels "
                                            r"\(did you mean 'travel'\?\)$"):
        pack_from_recipe(path, out, force=False, archive=False, progress=False)
    assert not out.exists()


def test_gate_fails_a_recipe_that_destroys_accuracy(workspace, tmp_path):
    stages = [FINETUNE, {"prune": {"method": "magnitude", "sparsity": 0.95, "recovery": None}}]
    path = _write(workspace, "bad.yaml", _recipe(workspace, stages, gate={"max_accuracy_drop": 0.02}))
    out = tmp_path / "bundle"
    from packager.recipe.run import run_recipe

    outcome = run_recipe(load_recipe(path), out, show_bars=False)
    assert outcome.exit_code == 1 and not outcome.gate.passed
    assert "final fp32" in outcome.gate.failures[0]
    assert outcome.rows[-1].stage == "gate" and outcome.rows[-2].stage == "prune"
    assert outcome.rows[-2].test_accuracy < outcome.reference_accuracy - 0.02
    assert not out.exists()  # nothing is converted or written once the fp32 model misses the line


def test_pack_cli_reports_a_bad_recipe_in_one_line(workspace, tmp_path, capsys):
    from packager.cli import main

    raw = _recipe(workspace, [{"prune": {"method": "structured", "heads": 0.3, "sparsity": 0.5}}])
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", "--recipe", str(_write(workspace, "cli.yaml", raw)), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("edgepack: error: recipe stages[0].prune.sparsity: structured pruning takes heads and ffn "
                   "fractions")


def test_unknown_target_names_the_recipe_key(workspace, tmp_path):
    path = _write(workspace, "target.yaml", _recipe(workspace, [FINETUNE], targets=["tflite-int9"]))
    with pytest.raises(EdgepackError, match=r"^recipe targets: unknown target 'tflite-int9'"):
        pack_from_recipe(path, tmp_path / "out", force=False, archive=False, progress=False)


def test_search_flag_turns_on_the_distill_search_and_needs_a_distill_stage(workspace):
    from packager.errors import EdgepackError
    from packager.cli.recipe import enable_search

    with_distill = parse_recipe(_recipe(workspace, [FINETUNE, {"distill": {"search": {"alpha": [0.2, 0.4]}}}]), workspace)
    enable_search(with_distill, 3)
    search = with_distill.stages[1].spec.search
    assert search.trials == 3 and search.alpha == [0.2, 0.4]  # the recipe's ranges are kept
    assert with_distill.to_dict()["stages"][1]["distill"]["search"]["trials"] == 3
    without = parse_recipe(_recipe(workspace, [FINETUNE]), workspace)
    with pytest.raises(EdgepackError, match="no distill stage"):
        enable_search(without, 3)
    with pytest.raises(EdgepackError, match="at least 1 trial"):
        enable_search(with_distill, 0)


# ---------------------------------------------------------------- recipe keys as pack flags
@pytest.mark.slow
def test_a_recipe_written_as_pack_flags_runs_end_to_end(workspace, tmp_path, capsys, monkeypatch):
    """No YAML file: stages, data, gate, runtimes and target options all from the command line."""
    from packager.cli import main

    monkeypatch.chdir(workspace)  # --train etc. are relative to where the command runs
    out = tmp_path / "flags"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", "--model", str(workspace / "model"), "--task", "sequence-classification",
              "--train", "data/train.jsonl", "--validation", "data/val.jsonl", "--test", "data/test.csv",
              "--label-column", "intent", "--seq-len", "16",
              "--stage", "finetune={epochs: 10, lr: 2e-3, batch_size: 16}",  # 2e-3: YAML 1.1 reads it as a string
              "--stage", "trim_vocab", "--targets", "tflite-int8", "--runtime", "tflite-int8=ai-edge-litert>=2.3",
              "--gate-max-drop", "0.1", "--set", "threads=1", "--set", "calib_samples=32",
              "--calib-limit", "24", "-o", str(out), "--json"])
    assert exit_info.value.code == 0
    manifest = Manifest.load(out)
    assert json.loads(capsys.readouterr().out) == manifest.to_dict()
    assert [list(s) for s in manifest.recipe["stages"]] == [["finetune"], ["trim_vocab"]]
    assert manifest.recipe["stages"][0]["finetune"]["lr"] == 2e-3
    assert manifest.recipe["data"]["train"] == str(workspace / "data" / "train.jsonl")
    assert manifest.recipe["calib_samples"] == 32  # --calib-limit 24 maps to calib_samples; --set is applied last
    (target,) = manifest.targets
    assert target.status == "ok" and target.details["compatibility"]["compatible"] is True
    assert target.details["compatibility"]["declared"] == "ai-edge-litert>=2.3"
    assert [r["stage"] for r in manifest.stages][-1] == "gate"


def test_explicit_pack_flags_and_set_override_a_recipe_file(workspace):
    from packager.recipe.flags import cli_overrides

    path = _write(workspace, "base.yaml", _recipe(workspace, [FINETUNE, {"distill": {"temperature": 4}}]))
    overrides = cli_overrides(explicit={"target_list": "onnx-int8,tflite-int8", "seq_len": 24, "min_agreement": 0.9,
                                        "target_options": {"onnx-int8": {"per_channel": "false"}}},
                              sets=("stages.1.distill.temperature=7", "data.test=data/test.csv"),
                              data_paths={"validation": None}, data_columns={}, gate_max_drop=0.05)
    recipe_ = load_recipe(path, overrides)
    assert recipe_.targets == ["onnx-int8", "tflite-int8"] and recipe_.seq_len == 24
    assert recipe_.parity.min_agreement == 0.9 and recipe_.gate.max_accuracy_drop == 0.05
    assert recipe_.stages[1].spec.temperature == 7.0
    assert recipe_.target_options == {"onnx-int8": {"per_channel": "false"}}
    assert recipe_.data_path("test") == (Path.cwd() / "data" / "test.csv").resolve()  # --set paths: from the cwd
    assert recipe_.data_path("train") == workspace / "data" / "train.jsonl"  # file paths: from the file

    shown = CliRunner().invoke(recipe, ["show", str(path), "--set", "seq_len=48", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["seq_len"] == 48


@pytest.mark.parametrize("args, message", [
    (["--calib", "x.txt"], "--calib: not used with a recipe (a recipe calibrates on its training split"),
    (["--allow-parity-failure"], "--allow-parity-failure: not used with a recipe"),
    (["--stage", "prune=[1, 2]"], "--stage 'prune=[1, 2]': the part after '=' must be a mapping"),
    (["--stage", "squash={x: 1}"], "recipe stages[0].squash: unknown key (known: finetune, distill"),
    (["--set", "stages.5.distill.alpha=1"], "--set stages.5.distill.alpha: stages.5: no such list item (the list has 1)"),
    (["--set", "gate.max_accuracy_drop=2"], "recipe gate.max_accuracy_drop: 2"),
    (["--set", "seq_len"], "--set 'seq_len': expected KEY=VALUE"),
    (["--runtime", "onnx-int8=onnxruntime>=1.17"], "recipe runtimes: onnx-int8=onnxruntime>=1.17: that target is not being packed"),
])
def test_bad_recipe_flags_are_one_line_errors_naming_the_flag_or_key(workspace, tmp_path, capsys, args, message):
    from packager.cli import main

    path = _write(workspace, "flags.yaml", _recipe(workspace, [FINETUNE]))
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", "--recipe", str(path), "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert err.startswith("edgepack: error: ") and message in err and "\n" not in err, err


def test_recipe_flags_without_data_say_which_flags_are_missing(tmp_path, capsys):
    from packager.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["pack", "--stage", "trim_vocab", "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "without --recipe, give --train" in capsys.readouterr().err


@pytest.mark.slow
def test_the_random_task_head_is_seeded_by_the_recipe(workspace, tmp_path):
    """A checkpoint without a task head gets a random one at load time: the recipe's seed must fix it, or two
    runs of the same recipe train from different starting points."""
    from packager.recipe.run import run_recipe

    def packed_sha(seed: int, name: str) -> str:
        raw = _recipe(workspace, [], seed=seed, targets=["onnx-fp32"], calib_samples=8)
        outcome = run_recipe(parse_recipe(raw, workspace), tmp_path / name, show_bars=False)
        assert outcome.exit_code == 0, outcome.message
        return Manifest.load(tmp_path / name).targets[0].sha256

    assert packed_sha(7, "a") == packed_sha(7, "b")
    assert packed_sha(7, "a2") != packed_sha(8, "c")
