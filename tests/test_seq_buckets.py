"""Real-length inference: buckets and dynamic sequence lengths, self-describing runners, manifest evolution,
the real-length bench with its per-length table and noise guard. Tiny random BERTs throughout."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from device_bench.manifest import SCHEMA_MINOR, Manifest, ManifestError, Shapes
from device_bench.report import BenchReport, ReportError
from device_bench.runners import load_runner, load_target
from device_bench.shapes import choose_length, padded_length
from device_bench.worker import noise_verdict
from packager.errors import EdgepackError
from packager.pack import default_buckets, parse_buckets

TEXTS_SEQ = 32


# -- manifest evolution ---------------------------------------------------------------

def _manifest_doc(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_newer_minor_bundle_is_read_and_unknown_fields_are_named(tiny_bundle):
    doc = _manifest_doc(tiny_bundle)
    doc["schema_minor"] = SCHEMA_MINOR + 1
    doc["future_top"] = {"x": 1}
    doc["input_spec"]["future_spec"] = 3
    doc["targets"][0]["future_target"] = "y"
    doc["targets"][0]["shapes"]["future_shape"] = True
    manifest = Manifest.from_dict(doc)
    assert manifest.targets[0].shapes is not None
    assert sorted(manifest.ignored_fields) == ["future_top", "input_spec.future_spec", "targets[0].future_target",
                                              "targets[0].shapes.future_shape"]


def test_older_minor_bundle_is_read_with_defaults(tiny_bundle):
    doc = _manifest_doc(tiny_bundle)
    doc.pop("schema_minor")  # bundles before the rule had none: minor 0
    for key in ("buckets", "bucket_choice", "token_lengths"):
        doc["input_spec"].pop(key)
    for target in doc["targets"]:
        target.pop("shapes")
        target.pop("parity_by_length")
    manifest = Manifest.from_dict(doc)
    assert manifest.ignored_fields == [] and manifest.input_spec.buckets is None
    entry = manifest.targets[0]
    assert entry.shapes is None and padded_length(entry, manifest.input_spec.seq_len, 5) == manifest.input_spec.seq_len


def test_new_major_is_refused(tiny_bundle):
    doc = _manifest_doc(tiny_bundle)
    doc["schema_version"] = 2
    with pytest.raises(ManifestError, match="schema_version 2 is not supported"):
        Manifest.from_dict(doc)


def test_report_reader_follows_the_same_rule():
    doc = BenchReport(device="d", fingerprint={}, protocol={}, bundle={}).to_dict()
    doc["schema_minor"] += 1
    doc["future"] = 1
    assert BenchReport.from_dict(doc).ignored_fields == ["future"]
    doc["schema_version"] = 2
    with pytest.raises(ReportError, match="schema_version 2"):
        BenchReport.from_dict(doc)


# -- choosing buckets -------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [("32,16", "ascending"), ("16,64", "above --seq-len"), ("0,16", "positive"),
                                          ("16,16", "twice"), ("a,b", "comma-separated")])
def test_bad_buckets_are_refused(text, message):
    with pytest.raises(EdgepackError, match=message):
        parse_buckets(text, 32)


@pytest.mark.slow
def test_bad_buckets_exit_2_with_one_line(tmp_path):
    from test_cli import assert_one_line_error, run

    proc = run("pack", "--seq-len", "32", "--buckets", "32,16", "-o", str(tmp_path / "b"))
    assert_one_line_error(proc, "--buckets '32,16': lengths must be in ascending order")
    assert not (tmp_path / "b").exists()


def test_bucket_choices():
    assert parse_buckets("16,32", 64) == [16, 32, 64]  # --seq-len stays the maximum
    assert parse_buckets("none", 64) is None and parse_buckets("auto", 64) == "auto"
    # half-octave steps up to the length holding 90% of the calibration texts, powers of two above it
    texts_to_16 = np.array(list(range(5, 17)) * 10 + [19])
    assert default_buckets(texts_to_16, 128)[0] == [8, 12, 16, 32, 64, 128]
    buckets, why = default_buckets(np.array(list(range(5, 20)) * 10), 128)  # 90% hold 18 tokens: 24 joins
    assert buckets == [8, 12, 16, 24, 32, 64, 128] and "half-octave steps from 8 to 24" in why
    assert default_buckets(np.array([10, 14, 13, 19, 300]), 128)[0] == [8, 12, 16, 24, 32, 48, 64, 96, 128]
    assert default_buckets(np.array([5, 6]), 100)[0] == [8, 16, 32, 64, 100]
    assert default_buckets(np.array([9]), 10)[0] == [8, 10] and default_buckets(np.array([], int), 64)[0] == \
        [8, 16, 32, 64]
    assert choose_length([16, 32], None, 5) == 16 and choose_length([16, 32], None, 17) == 32
    assert choose_length([16, 32], None, 40) == 32  # longer inputs run (truncated) at the largest
    assert choose_length([], (2, 32), 1) == 2 and choose_length([], (2, 32), 17) == 17


# -- the multi-signature TFLite file ------------------------------------------------------

def _tflite_model(path: Path):
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(path.read_bytes(), 0)


@pytest.mark.parametrize("name", ["tflite-int8", "tflite-fp32"])
def test_one_signature_per_bucket_weights_stored_once(tiny_bundle, name):
    manifest = Manifest.load(tiny_bundle)
    entry = manifest.target(name)
    assert manifest.input_spec.buckets == [16, 32] and entry.shapes.buckets == [16, 32]
    model = _tflite_model(tiny_bundle / entry.file)
    assert sorted(model.SignatureDefs(i).SignatureKey().decode() for i in range(model.SignatureDefsLength())) == \
        ["seq16", "seq32"]
    # every weight (a constant buffer of > 1 KB that does not depend on the length) is one buffer, used by both
    # signatures, and no two buffers hold the same bytes
    users: dict[int, set[int]] = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            users.setdefault(graph.Tensors(t).Buffer(), set()).add(g)
    digests = []
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if buffer.DataLength() > 1024:
            digests.append(hashlib.sha256(buffer.DataAsNumpy().tobytes()).hexdigest())
    assert len(digests) == len(set(digests))
    shared = [b for b, gs in users.items() if gs == {0, 1} and model.Buffers(b).DataLength() > 1024]
    assert len(shared) >= 2 * 6  # per layer at least the attention and FFN matrices, stored once


def test_embedding_tables_have_one_scale_so_buckets_do_not_repeat_a_scale_per_row(tiny_bundle):
    """Quantization parameters live in each signature's own tensor table (the schema cannot share them):
    a per-row scale of a 30k-row embedding table cost ~0.37 MB per bucket; tflite-int8 keeps one per table."""
    from ai_edge_litert import schema_py_generated as schema

    entry = Manifest.load(tiny_bundle).target("tflite-int8")
    assert entry.details["embedding_scales"] == "tensorwise"
    model = _tflite_model(tiny_bundle / entry.file)
    tables = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != schema.BuiltinOperator.EMBEDDING_LOOKUP:
                continue
            table = graph.Tensors(op.Inputs(1))
            if table.Type() == schema.TensorType.INT8:
                tables += 1
                assert table.Quantization().ScaleLength() == 1
    assert tables >= model.SubgraphsLength()  # at least the word embeddings, int8, in every bucket


def test_each_bucket_agrees_with_pytorch_and_the_runner_picks_the_smallest(tiny_bundle):
    import torch

    from packager.models import load_model

    manifest = Manifest.load(tiny_bundle)
    for entry in manifest.targets:
        assert {p.length for p in entry.parity_by_length} >= {16, 32}, entry.name
        assert all(p.passed for p in entry.parity_by_length), entry.name
    runner = load_target(tiny_bundle, manifest, "tflite-int8")
    assert runner.lengths() == ([16, 32], None)
    assert runner.choose_length(3) == 16 and runner.choose_length(16) == 16 and runner.choose_length(17) == 32
    loaded = load_model(str(tiny_bundle.parent / "tiny-bundle-model"), "feature-extraction")
    wrapper = loaded.task.make_wrapper(loaded.model)
    for n in (5, 16, 23, 32):
        ids = np.arange(5, 5 + n, dtype=np.int32)[None, :]
        mask = np.ones_like(ids)
        with torch.inference_mode():
            ref = wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        out = runner.run({"input_ids": ids, "attention_mask": mask})
        cos = float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref)))
        assert cos > 0.99, (n, cos)


def test_runner_checks_the_manifest_against_the_artifact(tiny_bundle):
    from device_bench.runners import ArtifactMismatch

    manifest = Manifest.load(tiny_bundle)
    entry = manifest.target("tflite-int8")
    with pytest.raises(ArtifactMismatch, match="buckets"):
        load_runner("tflite", tiny_bundle / entry.file, shapes=Shapes(buckets=[8, 16, 32]),
                    input_spec=manifest.input_spec)
    bad_spec = copy.deepcopy(manifest.input_spec)
    bad_spec.inputs = bad_spec.inputs[:1]
    with pytest.raises(ArtifactMismatch, match="inputs"):
        load_runner("tflite", tiny_bundle / entry.file, input_spec=bad_spec)
    runner = load_target(tiny_bundle, manifest, "tflite-int8")
    out = runner.run_named({"input_ids": np.array([[2, 9, 3]], np.int32), "attention_mask": np.ones((1, 3), np.int32)})
    assert list(out) == ["embedding"] and out["embedding"].shape == (1, 64)


# -- dynamic targets ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory, tiny_bundle):
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    loaded = load_model(str(tiny_bundle.parent / "tiny-bundle-model"), "feature-extraction")
    texts = builtin_sample()[:20] + [" ".join(builtin_sample()[20:40])]  # the last one is longer than seq_len
    out = tmp_path_factory.mktemp("dyn") / "bundle"
    targets = ["onnx-int8", "executorch"] if _has("executorch") else ["onnx-int8"]
    result = pack_model(loaded, out, targets, TEXTS_SEQ, texts, force=True)
    assert result.ok, [t.error for t in result.manifest.targets]
    return out, loaded


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_dynamic_targets_accept_the_lengths_they_claim(dynamic_bundle):
    import torch

    bundle, loaded = dynamic_bundle
    manifest = Manifest.load(bundle)
    wrapper = loaded.task.make_wrapper(loaded.model)
    for entry in manifest.targets:
        assert entry.shapes.dynamic and entry.shapes.dynamic["max"] == TEXTS_SEQ, entry.name
        assert {9, 17, 16, 32} <= {p.length for p in entry.parity_by_length}
        runner = load_target(bundle, manifest, entry.name)
        for n in (3, 17, TEXTS_SEQ):
            assert runner.choose_length(n) == n
            ids = (np.arange(n, dtype=np.int32) % 40 + 5)[None, :]
            mask = np.ones_like(ids)
            with torch.inference_mode():
                ref = wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            out = runner.run({"input_ids": ids, "attention_mask": mask})
            assert float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref))) > 0.99, (entry.name, n)


def test_ptl_runs_any_length(tiny_bundle):
    manifest = Manifest.load(tiny_bundle)
    entry = manifest.target("torchscript-mobile")
    assert entry.shapes.dynamic == {"min": 2, "max": 32}
    assert {9, 17} <= {p.length for p in entry.parity_by_length if p.passed}


def test_truncation_is_counted_and_reported(dynamic_bundle):
    from device_bench.bench import bench_bundle

    bundle, _ = dynamic_bundle
    manifest = Manifest.load(bundle)
    assert manifest.input_spec.token_lengths.truncated == 1
    with np.load(bundle / "samples.npz") as samples:
        assert samples["lengths"].max() == TEXTS_SEQ and samples["token_counts"].max() > TEXTS_SEQ
    report = bench_bundle(bundle, targets=["onnx-int8"], runs=3, min_seconds=0, warmup=1, threads=[1])
    (r,) = report.results
    assert r.status == "ok", r.error
    assert r.input_lengths.truncated == 1 and r.latency_inputs == "real-length"


# -- bench ---------------------------------------------------------------------------------------

def test_bench_reports_real_length_and_per_bucket(tiny_bundle, tmp_path):
    from device_bench.bench import bench_bundle
    from packager.length_plot import length_series, plot_latency_vs_length

    report = bench_bundle(tiny_bundle, targets=["tflite-int8"], runs=3, min_seconds=0, warmup=1, threads=[1])
    (r,) = report.results
    assert r.status == "ok", r.error
    assert r.latency_inputs == "real-length" and r.input_lengths.max <= 32
    assert set(r.input_lengths.padded_to) <= {"16", "32"} and sum(r.input_lengths.padded_to.values()) == 30
    assert [(row.length, row.padded_to) for row in r.by_length] == [(16, 16), (32, 32)]
    assert r.noise is not None and r.noise.thresholds == {"other_processes_cores": 0.1, "cv": 0.1}
    again = BenchReport.from_dict(json.loads(report.to_json()))
    assert again.results[0].by_length[1].p50 == r.by_length[1].p50
    assert plot_latency_vs_length(length_series([again]), tmp_path / "p.png").stat().st_size > 0


def test_noise_verdict():
    assert noise_verdict(0.5, 0.01).noisy and noise_verdict(None, 0.2).noisy
    quiet = noise_verdict(0.05, 0.05)
    assert not quiet.noisy and quiet.reasons == []


@pytest.mark.slow
def test_old_samples_and_static_bundle_still_bench(tiny_bundle, tmp_path):
    """A bundle from before minor 1 (padded samples without lengths, no shapes) runs at seq_len as before."""
    from device_bench.bench import bench_bundle

    bundle = tmp_path / "old"
    shutil.copytree(tiny_bundle, bundle)
    with np.load(bundle / "samples.npz") as s:
        np.savez(bundle / "samples.npz", input_ids=s["input_ids"], attention_mask=s["attention_mask"])
    doc = _manifest_doc(bundle)
    doc.pop("schema_minor")
    for target in doc["targets"]:
        target.pop("shapes")
        target.pop("parity_by_length")
    (bundle / "manifest.json").write_text(json.dumps(doc))
    report = bench_bundle(bundle, targets=["torchscript-mobile"], runs=3, min_seconds=0, warmup=1, threads=[1])
    (r,) = report.results
    assert r.status == "ok", r.error
    assert r.input_lengths.padded_to == {"32": 30}


def test_buckets_none_gives_one_static_shape(tmp_path, tiny_bundle):
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    loaded = load_model(str(tiny_bundle.parent / "tiny-bundle-model"), "feature-extraction")
    result = pack_model(loaded, tmp_path / "b", ["onnx-int8"], TEXTS_SEQ, builtin_sample()[:12], buckets=None)
    assert result.ok, [t.error for t in result.manifest.targets]
    entry = result.manifest.target("onnx-int8")
    assert result.manifest.input_spec.buckets is None and entry.shapes.buckets == [TEXTS_SEQ]
    runner = load_target(tmp_path / "b", result.manifest, "onnx-int8")
    assert runner.lengths() == ([TEXTS_SEQ], None) and runner.choose_length(5) == TEXTS_SEQ


def test_edgepack_run_pads_only_to_the_shape_the_artifact_needs(tiny_bundle, dynamic_bundle):
    """`Bundle.predict` (edgepack run): the smallest fitting bucket on a bucketed file, the text's own length on a
    dynamic axis — and the same embedding as the full static width would give on the dynamic artifact."""
    from device_bench.predict import Bundle

    texts = ["a short one", " ".join(["the weather in paris and the music of vienna"] * 2)]
    bucketed = Bundle(tiny_bundle, target="tflite-int8")
    widths = [bucketed.inputs_for(t)["input_ids"].shape[1] for t in bucketed.tokenize(texts)]
    assert widths == [16 if t.n_tokens <= 16 else 32 for t in bucketed.tokenize(texts)] and 16 in widths

    bundle_dir, _ = dynamic_bundle
    dynamic = Bundle(bundle_dir, target="onnx-int8")
    tokens = dynamic.tokenize(texts)
    assert [dynamic.inputs_for(t)["input_ids"].shape[1] for t in tokens] == [t.n_tokens for t in tokens]
    full = np.concatenate([dynamic.runner.run(dynamic.tokenizer.pad(t, TEXTS_SEQ)) for t in tokens])
    cos = (dynamic.outputs(texts) * full).sum(axis=1)
    assert (cos > 0.999).all(), cos
