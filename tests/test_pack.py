"""pack_model on tiny random BERTs: real conversions, real runners, real parity."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from conftest import TINY_LABELS, TINY_SAMPLES, TINY_SEQ_LEN, TINY_TARGETS, shared_tiny_bundle
from device_bench.manifest import SCHEMA_VERSION, Manifest, verify_files
from device_bench.runners import load_runner
from packager.calib import builtin_sample, tokenize
from packager.errors import EdgepackError
from packager.models import load_model
from packager.pack import pack_model, run_reference

HELD_OUT = [
    "The kettle clicked off just as the phone started ringing.",
    "Which museums are open late on Thursday evenings?",
    "Please move my dentist appointment to next month.",
    "Snow is forecast for the hills but not for the coast.",
]
def test_every_target_converts_and_passes_parity(tiny_bundle):
    manifest = Manifest.load(tiny_bundle)  # packed by conftest with pack_model, all four base targets
    by_name = {t.name: t for t in manifest.targets}
    assert list(by_name) == TINY_TARGETS
    for entry in by_name.values():
        assert entry.status == "ok", entry.error
        assert entry.parity.n_samples == TINY_SAMPLES
        assert entry.parity.mean_cosine >= 0.99 and entry.parity.min_cosine >= 0.98
        assert (tiny_bundle / entry.file).is_file()
    assert by_name["tflite-int8"].precision == "dynamic-int8"
    assert by_name["tflite-int8"].size_bytes < by_name["tflite-fp32"].size_bytes
    assert by_name["torchscript-mobile"].details["optimize_for_mobile"] in (True, False)
    if not by_name["torchscript-mobile"].details["optimize_for_mobile"]:
        assert any("optimize_for_mobile skipped" in n for n in by_name["torchscript-mobile"].notes)


def test_manifest_round_trips_and_hashes_match(tiny_bundle):
    bundle = tiny_bundle
    data = json.loads((bundle / "manifest.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    for key in ("created_at", "edgepack_version", "tool_versions", "model", "task", "input_spec", "tokenizer", "targets"):
        assert key in data
    for tool in ("torch", "transformers", "litert-torch", "ai-edge-quantizer", "ai-edge-litert", "numpy", "python"):
        assert tool in data["tool_versions"]
    manifest = Manifest.load(bundle)
    assert manifest.to_dict() == data
    assert verify_files(bundle, manifest) == []
    spec = manifest.input_spec
    assert spec.seq_len == TINY_SEQ_LEN and [i.name for i in spec.inputs] == ["input_ids", "attention_mask"]
    assert spec.outputs[0].name == "embedding" and spec.outputs[0].shape == [1, 64] and spec.pooling == "mean"
    samples = np.load(bundle / "samples.npz")
    assert samples["input_ids"].shape == (TINY_SAMPLES, TINY_SEQ_LEN) and samples["input_ids"].dtype == np.int32
    assert not list(bundle.parent.glob(f".{bundle.name}.partial-*")), "staging dir left behind"
    with tarfile.open(bundle.with_name(bundle.name + ".tar.gz")) as tar:
        assert sorted(tar.getnames()) == sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())


def test_bundle_tokenizer_and_artifacts_agree_with_hf_on_held_out_text(tiny_bundle):
    from transformers import AutoTokenizer

    manifest = Manifest.load(tiny_bundle)
    loaded = load_model(str(tiny_bundle.with_name("tiny-bundle-model")), "feature-extraction")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bundle / manifest.tokenizer)
    inputs = tokenize(tokenizer, HELD_OUT, TINY_SEQ_LEN)
    reference = run_reference(loaded.task.make_wrapper(loaded.model), inputs)
    for entry in manifest.targets:
        runner = load_runner(entry.runtime, tiny_bundle / entry.file)
        out = np.concatenate([runner.run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(len(HELD_OUT))])
        metrics = loaded.task.parity(reference, out)
        assert metrics["min_cosine"] >= 0.98, (entry.name, metrics)


@pytest.mark.slow
def test_classification_records_labels_agreement_and_accuracy(tmp_path, tiny_classifier_dir):
    loaded = load_model(str(tiny_classifier_dir), "sequence-classification")
    assert loaded.labels == TINY_LABELS
    texts = builtin_sample()[:24]
    labels = [i % len(TINY_LABELS) for i in range(len(texts))]
    result = pack_model(loaded, tmp_path / "cls", ["tflite-int8"], TINY_SEQ_LEN, texts, labelled=(texts, labels))
    entry = result.manifest.targets[0]
    assert entry.status == "ok", entry.error
    assert entry.parity.top1_agreement >= 0.98
    assert result.manifest.labels == TINY_LABELS
    assert result.manifest.input_spec.outputs[0].name == "logits"
    assert result.manifest.input_spec.outputs[0].shape == [1, len(TINY_LABELS)]
    assert 0.0 <= entry.parity.accuracy <= 1.0
    assert abs(entry.parity.accuracy - result.manifest.accuracy["reference"]) <= 1 / len(texts) + 1e-9


def test_a_failing_target_does_not_lose_the_others(tmp_path, tiny_model_dir, monkeypatch):
    from targets.tflite import TFLiteInt8

    def broken(self, ctx, out_path):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(TFLiteInt8, "export", broken)
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    result = pack_model(loaded, tmp_path / "b", ["tflite-int8", "torchscript-mobile-fp32"], TINY_SEQ_LEN,
                        builtin_sample()[:8])
    assert result.failed == ["tflite-int8"]
    failed, ok = result.manifest.targets
    assert failed.status == "failed" and "converter exploded" in failed.error and failed.file is None
    assert ok.status == "ok" and (tmp_path / "b" / ok.file).is_file()
    assert Manifest.load(tmp_path / "b").target("tflite-int8").status == "failed"


@pytest.mark.slow
def test_parity_gate_drops_or_keeps_marked(tmp_path, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    texts = builtin_sample()[:8]
    strict = pack_model(loaded, tmp_path / "strict", ["tflite-int8"], TINY_SEQ_LEN, texts, min_cosine=1.01)
    entry = strict.manifest.targets[0]
    assert strict.failed == ["tflite-int8"] and entry.status == "failed" and entry.file is None
    assert "parity below threshold" in entry.error and entry.parity is not None
    kept = pack_model(loaded, tmp_path / "kept", ["tflite-int8"], TINY_SEQ_LEN, texts, min_cosine=1.01,
                      allow_parity_failure=True)
    entry = kept.manifest.targets[0]
    assert entry.status == "parity-failed" and (tmp_path / "kept" / entry.file).is_file()
    assert kept.failed == [] and any("allow-parity-failure" in n for n in entry.notes)


def test_bad_requests_write_nothing(tmp_path, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    with pytest.raises(EdgepackError, match="unknown target 'nope'"):
        pack_model(loaded, tmp_path / "x", ["nope"], TINY_SEQ_LEN, ["hi"])
    with pytest.raises(EdgepackError, match="at most 128"):
        pack_model(loaded, tmp_path / "x", ["tflite-int8"], 4096, ["hi"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(EdgepackError, match="not empty"):
        pack_model(loaded, tmp_path / "full", ["tflite-int8"], TINY_SEQ_LEN, ["hi"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_interrupted_pack_leaves_no_partial_bundle(tmp_path, tiny_model_dir, monkeypatch):
    import packager.pack as pack_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pack_module, "_export_one", crash)
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    with pytest.raises(KeyboardInterrupt):
        pack_model(loaded, tmp_path / "out", ["tflite-int8"], TINY_SEQ_LEN, ["hello there"])
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_bundle(tmp_path, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    out = tmp_path / "b"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    result = pack_model(loaded, out, ["torchscript-mobile-fp32"], TINY_SEQ_LEN, ["hello there"], force=True)
    assert result.ok and not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_declared_runtimes_are_checked_at_pack_time(tmp_path, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    result = pack_model(loaded, tmp_path / "rt", ["tflite-int8", "torchscript-mobile-fp32"], TINY_SEQ_LEN,
                        builtin_sample()[:4], runtimes={"tflite-int8": "tflite-runtime==2.14",
                                                        "torchscript-mobile-fp32": "torch>=2.13"})
    tfl, ptl = result.manifest.targets
    # today's converter + quantizer emit op versions the last tflite-runtime cannot load
    assert result.failed == ["tflite-int8"] and tfl.file is None
    assert "incompatible with tflite-runtime==2.14" in tfl.error and "version" in tfl.error
    assert tfl.details["compatibility"]["compatible"] is False
    assert ptl.status == "ok" and ptl.details["compatibility"]["compatible"] is True
    assert ptl.details["compatibility"]["declared"] == "torch>=2.13"


def test_incompatibility_error_keeps_whole_problems_and_counts_the_rest():
    from packager.pack import _first_problems

    problems = [f"OP_{i} version 9 is not supported by tflite-runtime 2.14.0 " + "x" * 150 for i in range(6)]
    text = _first_problems(problems)
    assert text.endswith("(+4 more in details.compatibility)")
    assert text.count("is not supported") == 2 and len(text) < 650
    assert _first_problems(problems[:1]) == problems[0]


def test_lean_layer_norms_compute_the_same_in_fewer_tflite_ops(tiny_model_dir):
    """The tflite targets convert LayerNorms written with kept dims (``targets.tflite.lean_layer_norms``): the
    same outputs, every LayerNorm replaced, and fewer builtin ops per LayerNorm than litert-torch's lowering."""
    import collections

    import litert_torch
    from ai_edge_litert import interpreter
    from transformers import AutoModel

    from targets.tflite import lean_layer_norms

    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    lean = lean_layer_norms(model)
    assert not any(type(m) is torch.nn.LayerNorm for m in lean.modules())
    assert any(type(m) is torch.nn.LayerNorm for m in model.modules())  # the original is left as it was
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        assert torch.allclose(lean(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state,
                              atol=1e-5)

    norm = torch.nn.LayerNorm(32).eval()
    counts = {}
    for name, module in (("stock", norm), ("lean", lean_layer_norms(norm))):
        path = tiny_model_dir.parent / f"norm-{name}.tflite"
        litert_torch.convert(module, (torch.randn(1, 5, 32),)).export(str(path))
        ops = interpreter.Interpreter(model_path=str(path))._get_ops_details()
        counts[name] = collections.Counter(op["op_name"] for op in ops)
    assert sum(counts["lean"].values()) < sum(counts["stock"].values()), counts
    assert counts["lean"]["RESHAPE"] < counts["stock"]["RESHAPE"], counts
