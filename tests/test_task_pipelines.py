"""The models and tasks users bring: embedding models packed with their own sentence-transformers pipeline,
token classification and multi-label classification, and the model-family table.

Sentence-transformers folders are written by hand (no sentence-transformers needed to build them) around a
tiny random BERT; each packed artifact is compared on texts the pack never saw with
``SentenceTransformer(folder).encode`` when the package is installed, and always with the same configuration
applied by hand here (an independent, gather/masked-fill implementation).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SEQ_LEN, save_tiny_model

HAS_ST = importlib.util.find_spec("sentence_transformers") is not None
ST_SKIP_REASON = "sentence-transformers is not installed: compared with the configuration applied by hand only"
UNSEEN = ["The lighthouse keeper logged every passing ship.", "Our invoice was paid two days late.",
          "Can you recommend a quiet restaurant near the harbour?", "A frost damaged the apple blossoms.",
          "He repaired the bicycle chain with a borrowed tool.", "book a table for six on friday"]
CALIB = 24
TOKEN_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
MULTI_LABELS = ["urgent", "billing", "travel", "complaint"]


def save_model(out: Path, seed: int = 0) -> Path:
    return save_tiny_model(out, seed=seed)


def st_folder(base: Path, out: Path, pooling: tuple[str, ...], normalize: bool, dense: int | None = None,
              legacy: bool = False) -> Path:
    """A sentence-transformers folder around ``base``, written file by file like sentence-transformers does."""
    import torch
    from safetensors.torch import save_file

    shutil.copytree(base, out)
    st_names = {"cls": "cls", "mean": "mean", "max": "max", "mean-sqrt-len": "mean_sqrt_len_tokens",
                "weighted-mean": "weightedmean", "last-token": "lasttoken"}
    legacy_keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
                   "mean-sqrt-len": "pooling_mode_mean_sqrt_len_tokens",
                   "weighted-mean": "pooling_mode_weightedmean_tokens", "last-token": "pooling_mode_lasttoken"}
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (out / "1_Pooling").mkdir()
    if legacy:
        config = {"word_embedding_dimension": 64, **{key: mode in pooling for mode, key in legacy_keys.items()}}
    else:
        names = [st_names[m] for m in pooling]
        config = {"embedding_dimension": 64, "pooling_mode": names[0] if len(names) == 1 else names}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(config))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    if dense:
        (out / "2_Dense").mkdir()
        width = 64 * len(pooling)
        (out / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": width, "out_features": dense, "bias": True,
             "activation_function": "torch.nn.modules.activation.Tanh"}))
        generator = torch.Generator().manual_seed(7)
        save_file({"linear.weight": torch.randn(dense, width, generator=generator) * 0.2,
                   "linear.bias": torch.randn(dense, generator=generator) * 0.1}, str(out / "2_Dense" / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:
        index = len(modules)
        (out / f"{index}_Normalize").mkdir()
        modules.append({"idx": index, "name": str(index), "path": f"{index}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules))
    return out


def by_hand(folder: Path, texts: list[str], seq_len: int, pooling: tuple[str, ...], normalize: bool,
            dense: bool) -> np.ndarray:
    """The configuration applied to the HF model directly: dynamic padding, gathers and -inf fills."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=seq_len, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"]
        m = mask.unsqueeze(-1).float()
        last = mask.sum(1) - 1
        parts = {"cls": hidden[:, 0],
                 "max": hidden.masked_fill(m == 0, float("-inf")).max(1).values,
                 "mean": (hidden * m).sum(1) / m.sum(1),
                 "mean-sqrt-len": (hidden * m).sum(1) / m.sum(1).sqrt(),
                 "weighted-mean": (hidden * m * torch.arange(1, hidden.shape[1] + 1).view(1, -1, 1)).sum(1)
                 / (m * torch.arange(1, hidden.shape[1] + 1).view(1, -1, 1)).sum(1),
                 "last-token": hidden[torch.arange(len(texts)), last]}
        out = torch.cat([parts[p] for p in pooling], dim=-1)
        if dense:
            weights = load_file(str(folder / "2_Dense" / "model.safetensors"))
            out = torch.tanh(out @ weights["linear.weight"].T + weights["linear.bias"])
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
    return out.numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def artifact_outputs(bundle: Path, name: str, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    from device_bench.manifest import Manifest
    from device_bench.runners import load_target
    from packager.calib import tokenize
    from device_bench.parity import run_rows as run_artifact

    manifest = Manifest.load(bundle)
    runner = load_target(bundle, manifest, name)  # runs each text at its real length / smallest bucket
    inputs = tokenize(AutoTokenizer.from_pretrained(str(bundle / manifest.tokenizer)), texts, manifest.input_spec.seq_len)
    return run_artifact(runner, inputs)  # per-token outputs padded back to seq_len


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("st-base") / "model")


def _pack(folder: Path, out: Path, targets: list[str], task: str = "feature-extraction", seq_len: int = TINY_SEQ_LEN,
          **load):
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    loaded = load_model(str(folder), task, **load)
    return pack_model(loaded, out, targets, seq_len, builtin_sample()[:CALIB], force=True)


def _expected(folder: Path, pooling, normalize, dense) -> np.ndarray:
    hand = by_hand(folder, UNSEEN, TINY_SEQ_LEN, pooling, normalize, bool(dense))
    if HAS_ST:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu")
        model.max_seq_length = TINY_SEQ_LEN
        encoded = model.encode(UNSEEN, convert_to_numpy=True)
        assert cosines(encoded, hand).min() > 0.99999  # the hand-applied configuration is sentence-transformers'
        return encoded
    return hand


# ------------------------------------------------------------ reading the pipeline (no export)
def test_reads_the_pipeline_from_the_folder_files(base_model, tmp_path):
    from packager.embedding_pipeline import read_pipeline
    from packager.errors import EdgepackError

    new = read_pipeline(str(st_folder(base_model, tmp_path / "a", ("cls", "max"), True, dense=16)))
    assert new.pooling == ("cls", "max") and new.normalize and new.source == "sentence-transformers"
    assert [(d.in_features, d.out_features, d.activation.rsplit(".", 1)[1]) for d in new.dense] == [(128, 16, "Tanh")]
    legacy = read_pipeline(str(st_folder(base_model, tmp_path / "b", ("last-token",), False, legacy=True)))
    assert legacy.pooling == ("last-token",) and not legacy.normalize and not legacy.dense
    plain = read_pipeline(str(base_model))
    assert (plain.pooling, plain.normalize, plain.source) == (("mean",), True, "default")
    overridden = read_pipeline(str(tmp_path / "a"), "max")
    assert overridden.pooling == ("max",) and overridden.source == "--pooling" and overridden.dense
    modules = json.loads((tmp_path / "a" / "modules.json").read_text())
    modules.append({"idx": 9, "name": "9", "path": "9_X", "type": "sentence_transformers.models.LayerNorm"})
    (tmp_path / "a" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(EdgepackError, match="LayerNorm.*not supported"):
        read_pipeline(str(tmp_path / "a"))


# ------------------------------------------------------------ every pooling mode on a cheap target
POOLING_CASES = [
    (("cls",), True, None, False),
    (("cls",), False, None, True),
    (("mean",), False, None, False),
    (("max",), True, None, True),
    (("mean-sqrt-len",), True, None, False),
    (("weighted-mean",), True, None, False),
    (("last-token",), True, None, False),
    (("cls",), True, 16, False),
    (("mean", "max"), True, 24, False),  # concatenated in the order the config lists them
    (("max", "mean"), True, None, True),  # the boolean keys: sentence-transformers' fixed order
]


@pytest.mark.parametrize("pooling,normalize,dense,legacy", POOLING_CASES,
                         ids=["+".join(c[0]) + ("-norm" if c[1] else "") + (f"-dense{c[2]}" if c[2] else "")
                              + ("-legacy" if c[3] else "") for c in POOLING_CASES])
@pytest.mark.slow
def test_each_pooling_mode_matches_the_models_own_pipeline(base_model, tmp_path, pooling, normalize, dense, legacy):
    folder = st_folder(base_model, tmp_path / "st", pooling, normalize, dense, legacy)
    result = _pack(folder, tmp_path / "bundle", ["onnx-fp32"])
    assert result.ok, [t.error for t in result.manifest.targets]
    spec = result.manifest.input_spec
    assert (spec.pooling, spec.normalize, spec.pooling_source) == ("+".join(pooling), normalize, "sentence-transformers")
    assert spec.outputs[0].shape == [1, dense or 64 * len(pooling)]
    assert [d["out_features"] for d in spec.dense] == ([dense] if dense else [])
    assert result.manifest.parity_reference.startswith("sentence-transformers" if HAS_ST else "fp32 PyTorch")
    got = artifact_outputs(tmp_path / "bundle", "onnx-fp32", UNSEEN)
    assert cosines(got, _expected(folder, pooling, normalize, dense)).min() > 0.9999


@pytest.mark.skipif(not HAS_ST, reason=ST_SKIP_REASON)
def test_default_prompt_left_out_of_the_pooling(base_model, tmp_path):
    """A default prompt is prepended (the manifest says which) and, with include_prompt false, not pooled."""
    from sentence_transformers import SentenceTransformer

    folder = st_folder(base_model, tmp_path / "st", ("mean",), True)
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**config, "include_prompt": False}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: "}, "default_prompt_name": "query"}))
    result = _pack(folder, tmp_path / "bundle", ["onnx-fp32"])  # stops if the wrapper departs from encode
    spec = result.manifest.input_spec
    assert result.ok and (spec.prompt, spec.include_prompt) == ("query: ", False)
    got = artifact_outputs(tmp_path / "bundle", "onnx-fp32", [spec.prompt + t for t in UNSEEN])
    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = TINY_SEQ_LEN
    expected = model.encode(UNSEEN, convert_to_numpy=True)
    assert cosines(got, expected).min() > 0.9999
    without_prompt = model.encode(UNSEEN, prompt="", convert_to_numpy=True)
    assert cosines(got, without_prompt).min() < 0.999  # the prompt really changes the embedding


def test_plain_encoder_keeps_the_default_and_says_so(base_model, tmp_path):
    result = _pack(base_model, tmp_path / "bundle", ["onnx-fp32"])
    spec = result.manifest.input_spec
    assert (spec.pooling, spec.normalize, spec.pooling_source) == ("mean", True, "default")
    assert "default mean + normalize" in result.manifest.parity_reference
    got = artifact_outputs(tmp_path / "bundle", "onnx-fp32", UNSEEN)
    assert cosines(got, by_hand(base_model, UNSEEN, TINY_SEQ_LEN, ("mean",), True, False)).min() > 0.9999


def test_without_sentence_transformers_the_configuration_is_applied_by_hand(base_model, tmp_path, monkeypatch):
    folder = st_folder(base_model, tmp_path / "st", ("cls",), True)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    result = _pack(folder, tmp_path / "bundle", ["onnx-fp32"])
    assert result.ok and "sentence-transformers not installed" in result.manifest.parity_reference
    got = artifact_outputs(tmp_path / "bundle", "onnx-fp32", UNSEEN)
    assert cosines(got, by_hand(folder, UNSEEN, TINY_SEQ_LEN, ("cls",), True, False)).min() > 0.9999


@pytest.mark.skipif(not HAS_ST, reason=ST_SKIP_REASON)
def test_a_wrapper_that_departs_from_the_models_pipeline_is_refused(base_model, tmp_path):
    """The issue's failure mode: the reference is the model's own encode, never edgepack's own wrapper."""
    from dataclasses import replace

    from packager.calib import builtin_sample
    from packager.errors import EdgepackError
    from packager.models import load_model
    from packager.pack import pack_model

    loaded = load_model(str(st_folder(base_model, tmp_path / "st", ("cls",), True)), "feature-extraction")
    loaded.task.pipeline = replace(loaded.task.pipeline, pooling=("mean",))  # what edgepack used to do
    with pytest.raises(EdgepackError, match="does not reproduce the model's own pipeline"):
        pack_model(loaded, tmp_path / "bundle", ["onnx-fp32"], TINY_SEQ_LEN, builtin_sample()[:CALIB])
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_cli_pooling_override_and_its_errors(base_model, tmp_path):
    folder = st_folder(base_model, tmp_path / "st", ("cls",), True)
    edgepack = str(Path(sys.executable).parent / "edgepack")
    base = [edgepack, "pack", "--model", str(folder), "--targets", "onnx-fp32", "--seq-len", str(TINY_SEQ_LEN),
            "--calib-limit", "12"]
    done = subprocess.run(base + ["--pooling", "max", "-o", str(tmp_path / "b"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)["input_spec"]
    assert (spec["pooling"], spec["pooling_source"], spec["normalize"]) == ("max", "--pooling", True)
    assert "embedding pipeline: max pooling + Normalize (--pooling)" in done.stderr
    for extra, message in ((["--pooling", "median"], "--pooling 'median': expected one of"),
                           (["--pooling", "cls", "--task", "sequence-classification"], "applies to --task feature-extraction")):
        bad = subprocess.run(base + extra + ["-o", str(tmp_path / "x")], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


# ------------------------------------------------------------ one sweep over every target
def _all_targets(quantized_only: bool = False, task: str = "feature-extraction") -> list[str]:
    """Every target this host can export for ``task`` (a target may refuse a task's output, e.g. MediaPipe's
    per-token one); ``quantized_only`` leaves out the fp32 baselines, which share the export path of their
    quantized sibling (the full sweep is done once, for embeddings)."""
    from packager.tasks import TASKS
    from targets import TARGETS

    return sorted(name for name, cls in TARGETS.items() if not cls().missing_requirements()
                  and cls.refuses_task(TASKS[task]) is None
                  and not (quantized_only and (name.endswith("-fp32") or name == "executorch")))


@pytest.mark.slow
def test_every_target_matches_the_models_own_pipeline(base_model, tmp_path):
    pooling, normalize, dense = ("cls",), True, 16
    folder = st_folder(base_model, tmp_path / "st", pooling, normalize, dense)
    targets = _all_targets()
    result = _pack(folder, tmp_path / "bundle", targets)
    assert result.ok, {t.name: t.error for t in result.manifest.targets if t.error}
    expected = _expected(folder, pooling, normalize, dense)
    for entry in result.manifest.targets:
        got = artifact_outputs(tmp_path / "bundle", entry.name, UNSEEN)
        floor = 0.9999 if entry.precision == "fp32" else 0.97
        assert cosines(got, expected).min() > floor, (entry.name, cosines(got, expected))


# ------------------------------------------------------------ token classification and multi-label
def _classifier(out: Path, kind: str) -> Path:
    """A tiny BERT with a decisive random head (scaled so int8 noise does not flip near-ties)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    save_model(out)
    labels = TOKEN_LABELS if kind == "token" else MULTI_LABELS
    config = BertConfig.from_pretrained(str(out), num_labels=len(labels), id2label=dict(enumerate(labels)),
                                        label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(3)
    if kind == "token":
        model = BertForTokenClassification(config)
    else:
        config.problem_type = "multi_label_classification"
        model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(25.0)
    model.save_pretrained(out)
    return out


@pytest.mark.slow
def test_token_classifier_packs_to_every_quantized_target_with_per_token_parity(tmp_path):
    folder = _classifier(tmp_path / "tok", "token")
    result = _pack(folder, tmp_path / "bundle",
                   _all_targets(quantized_only=True, task="token-classification") + ["onnx-fp32"],
                   task="token-classification")
    manifest = result.manifest
    assert result.ok, {t.name: t.error for t in manifest.targets if t.error}
    assert manifest.labels == TOKEN_LABELS and manifest.input_spec.outputs[0].shape == [1, TINY_SEQ_LEN, 5]
    for entry in manifest.targets:
        assert entry.parity.token_agreement >= 0.98 and entry.parity.thresholds == {"min_agreement": 0.98}
        assert_gate_held_or_fallback_said_so(entry)
    got = artifact_outputs(tmp_path / "bundle", "onnx-fp32", UNSEEN)
    assert got.shape == (len(UNSEEN), TINY_SEQ_LEN, 5)


def assert_gate_held_or_fallback_said_so(entry) -> None:
    """int8 numerics depend on the host's kernels (AVX2 vs AVX-512 VNNI vs ARM): the product promises the gate
    holds, with every op int8 or with the precision fallback engaged, and then the bundle says so."""
    record = (entry.details or {}).get("precision_fallback")
    if record is None:
        return
    assert record["passed"] and record["float_groups"] and record["host_isa"] is not None, record
    assert any(note.startswith("precision fallback:") for note in entry.notes), entry.notes


def test_token_parity_counts_real_tokens_only():
    from packager.tasks import TokenClassification

    reference = np.zeros((2, 4, 3))
    reference[..., 0] = 1.0
    candidate = reference.copy()
    candidate[:, 3] = [0.0, 5.0, 0.0]  # disagreement on the last position, which is padding
    inputs = {"attention_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]])}
    assert TokenClassification().parity(reference, candidate, inputs)["token_agreement"] == 1.0
    candidate[0, 1] = [0.0, 5.0, 0.0]  # one of the 5 real tokens
    assert TokenClassification().parity(reference, candidate, inputs)["token_agreement"] == pytest.approx(0.8)


@pytest.mark.slow
def test_multi_label_classifier_packs_to_every_quantized_target_with_per_label_parity(tmp_path):
    folder = _classifier(tmp_path / "ml", "multi")
    # the model's problem_type turns sequence-classification into the multi-label task
    result = _pack(folder, tmp_path / "bundle", _all_targets(quantized_only=True) + ["onnx-fp32"],
                   task="sequence-classification")
    manifest = result.manifest
    assert result.ok, {t.name: t.error for t in manifest.targets if t.error}
    assert manifest.task == "multi-label-classification" and manifest.labels == MULTI_LABELS
    assert manifest.label_thresholds == [0.5] * 4 and manifest.input_spec.output_activation == "sigmoid"
    for entry in manifest.targets:
        assert entry.parity.label_agreement >= 0.98
    scores = artifact_outputs(tmp_path / "bundle", "onnx-fp32", UNSEEN)
    assert scores.shape == (len(UNSEEN), 4) and ((scores > 0) & (scores < 1)).all()
    decisions = scores >= 0.5
    assert decisions.any() and not decisions.all()  # a real mix of labels on and off


# ------------------------------------------------------------ families and recipe stages
@pytest.mark.slow
def test_targets_models_prints_the_support_matrix():
    edgepack = str(Path(sys.executable).parent / "edgepack")
    done = subprocess.run([edgepack, "targets", "--models", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {r["family"]: r for r in json.loads(done.stdout)}
    assert rows["bert"]["layers"] == "encoder.layer" and all(rows["bert"]["targets"].values())
    assert rows["bert"]["tasks"]["token-classification"] and rows["bert"]["stages"]["prune"]
    assert "xlm-roberta" in rows["roberta"]["model_types"] and "modernbert" in rows["modernbert"]["model_types"]
    for family in ("roberta", "modernbert"):
        assert all(rows[family]["stages"].values())
    assert all(rows["roberta"]["targets"].values())
    # every cell a family leaves out carries its reason, shown beside the table
    for row in rows.values():
        for kind in ("targets", "tasks", "stages"):
            for name, supported in row[kind].items():
                assert supported or row["not_supported"].get(name), (row["family"], name)
    assert "tflite-int8-full" in rows["modernbert"]["not_supported"]
    assert "shares one block's weights" in rows["albert"]["not_supported"]["prune"]
    table = subprocess.run([edgepack, "targets", "--models"], capture_output=True, text=True)
    assert table.returncode == 0 and "edgepack model families" in table.stdout and "token-classification" in table.stdout
    assert "albert / prune: ALBERT shares one block's weights" in table.stdout


@pytest.mark.slow
def test_pack_refuses_an_undeclared_family_before_loading(tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))  # no weights: loading would fail
    edgepack = str(Path(sys.executable).parent / "edgepack")
    done = subprocess.run([edgepack, "pack", "--model", str(folder), "--targets", "onnx-fp32", "-o",
                           str(tmp_path / "b")], capture_output=True, text=True)
    assert done.returncode == 2 and "model type 'gpt2' is not a supported model family" in done.stderr
    assert not (tmp_path / "b").exists()


def test_families_check_targets_and_stages(monkeypatch):
    import dataclasses

    from packager.errors import EdgepackError
    from packager.families import FAMILIES, check_support

    assert check_support("edgepack_pruned_bert", "feature-extraction", ["tflite-int8"]).name == "bert"
    assert check_support("xlm-roberta", "sequence-classification", ["onnx-int8"], ["finetune", "prune"]).name == "roberta"
    with pytest.raises(EdgepackError, match=r"albert family does not support recipe stage\(s\) prune \(prune: "
                                            r"ALBERT shares one block's weights .*; supported: finetune, trim_vocab, calibrate\)"):
        check_support("albert", "sequence-classification", ["onnx-int8"], ["finetune", "prune"])
    with pytest.raises(EdgepackError, match=r"mpnet family does not support target\(s\) tflite-int8-full "
                                            r"\(tflite-int8-full: MPNet's relative-position bucketing"):
        check_support("mpnet", "sequence-classification", ["tflite-int8-full"])
    assert check_support("electra", "token-classification", ["onnx-int8"]).name == "electra"
    # every family declares all four tasks today; a family that leaves one out refuses it with the reason
    monkeypatch.setitem(FAMILIES, "electra", dataclasses.replace(FAMILIES["electra"], tasks=("feature-extraction",)))
    with pytest.raises(EdgepackError, match="electra family does not support task token-classification "
                                            r"\(token-classification: not declared: no tiny-model check"):
        check_support("electra", "token-classification", ["onnx-int8"])
    # a target that carries one vector per text refuses a per-token task up front, before any weights load
    with pytest.raises(EdgepackError, match="target mediapipe-text cannot carry task token-classification: "
                                            "MediaPipe's text tasks give one vector per text"):
        check_support("bert", "token-classification", ["onnx-fp32", "mediapipe-text"])
    assert check_support("bert", "multi-label-classification", ["mediapipe-text"]).name == "bert"


@pytest.mark.parametrize("task,message", [
    ("token-classification", "recipe task: token-classification supports none of the recipe stages"),
    ("feature-extraction", "recipe task: feature-extraction supports none of the recipe stages"),
    ("multi-label-classification", "recipe task: multi-label-classification supports none"),
])
def test_recipe_validation_says_which_stages_a_task_lacks(tmp_path, task, message):
    from packager.recipe.spec import RecipeError, parse_recipe

    raw = {"task": task, "data": {"train": "t.csv", "validation": "v.csv"}, "stages": [{"finetune": {}}]}
    with pytest.raises(RecipeError) as err:
        parse_recipe(raw, tmp_path)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def _config_only(folder: Path, model_type: str) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(folder)


def test_recipe_support_follows_the_model_each_stage_acts_on(tmp_path):
    """A distill with a pretrained student only asks the teacher for logits; later stages and the targets act on
    the student, so a RoBERTa/DeBERTa teacher distils into a BERT student, but nobody prunes an ALBERT student
    (one block shared by all its layers)."""
    from packager.errors import EdgepackError
    from packager.recipe.spec import parse_recipe
    from packager.recipe.run import check_recipe_support

    teacher = _config_only(tmp_path / "teacher", "xlnet")  # no family of its own: it only scores texts
    student = _config_only(tmp_path / "student", "bert")
    data = {"train": "t.csv", "validation": "v.csv", "test": "x.csv"}

    def recipe(stages):
        return parse_recipe({"model": teacher, "data": data, "stages": stages}, tmp_path)

    check_recipe_support(recipe([{"distill": {"student": {"model": student}}}, {"prune": {"heads": 0.25}}]), ["tflite-int8"])
    with pytest.raises(EdgepackError, match=r"^recipe model: model type 'xlnet' is not a supported"):
        check_recipe_support(recipe([{"prune": {"heads": 0.25}}, {"distill": {"student": {"model": student}}}]), ["tflite-int8"])
    albert = _config_only(tmp_path / "albert", "albert")
    with pytest.raises(EdgepackError, match=r"^recipe stages\[0\]\.distill\.student\.model: the albert family does "
                                            r"not support recipe stage\(s\) prune"):
        check_recipe_support(recipe([{"distill": {"student": {"model": albert}}}, {"prune": {"heads": 0.25}}]), ["onnx-int8"])
    mpnet = _config_only(tmp_path / "mpnet", "mpnet")
    with pytest.raises(EdgepackError, match="mpnet family does not support target.*tflite-int8-full"):
        check_recipe_support(recipe([{"distill": {"student": {"model": mpnet}}}]), ["tflite-int8-full"])


# ------------------------------------------------------------ edgepack run on the new tasks
RUN_TEXT = "Yesterday Anna Smith flew to Johannesburg."  # "Johannesburg" is many word pieces in the tiny vocab


def _fixed_head(folder: Path, bias: list[float]) -> Path:
    """Make the head's decision known: near-zero weights, a bias that picks the labels."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoConfig

    config = AutoConfig.from_pretrained(str(folder))
    auto = AutoModelForTokenClassification if config.architectures[0].endswith("TokenClassification") \
        else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(folder))
    with torch.no_grad():
        model.classifier.weight.mul_(1e-4)
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    return folder


def _run_json(bundle: Path, target: str, text: str) -> dict:
    edgepack = str(Path(sys.executable).parent / "edgepack")
    done = subprocess.run([edgepack, "run", str(bundle), text, "--target", target, "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["results"][0]


@pytest.mark.slow
def test_run_prints_entities_with_character_spans_over_multi_piece_words(tmp_path):
    from tokenizers import Tokenizer

    folder = _fixed_head(_classifier(tmp_path / "tok", "token"), [0.0, 0.0, 0.0, 5.0, 0.0])  # every word B-LOC
    result = _pack(folder, tmp_path / "bundle", ["onnx-fp32", "tflite-int8"], task="token-classification",
                   seq_len=48)  # room for the whole sentence: nothing truncated
    assert result.ok, {t.name: t.error for t in result.manifest.targets if t.error}
    encoding = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(RUN_TEXT)
    pieces = [encoding.offsets[i] for i, w in enumerate(encoding.word_ids) if w is not None]
    words = {}
    for (start, end), word in zip(pieces, [w for w in encoding.word_ids if w is not None]):
        words.setdefault(word, [start, end])[1] = end
    expected = [(RUN_TEXT[s:e], s, e) for s, e in words.values()]
    johannesburg = next(w for w, o in zip(encoding.word_ids, encoding.offsets) if w is not None and o[0] == 29)
    assert encoding.word_ids.count(johannesburg) > 1  # several pieces, merged back into one word
    for target in ("onnx-fp32", "tflite-int8"):
        got = _run_json(tmp_path / "bundle", target, RUN_TEXT)
        assert not got["truncated"]
        assert [(e["text"], e["start"], e["end"]) for e in got["entities"]] == expected
        assert all(e["label"] == "LOC" and e["score"] > 0.9 for e in got["entities"])
        assert ("Johannesburg", 29, 41) in expected


def test_run_prints_every_label_above_its_threshold(tmp_path):
    folder = _fixed_head(_classifier(tmp_path / "ml", "multi"), [3.0, -3.0, 2.0, -2.0])
    result = _pack(folder, tmp_path / "bundle", ["onnx-int8"], task="sequence-classification")
    assert result.ok, {t.name: t.error for t in result.manifest.targets if t.error}
    got = _run_json(tmp_path / "bundle", "onnx-int8", "my invoice is wrong and I need it fixed today")
    assert [item["label"] for item in got["labels"]] == ["urgent", "travel"]
    assert got["labels"][0]["score"] == pytest.approx(1 / (1 + np.exp(-3.0)), abs=0.01)
