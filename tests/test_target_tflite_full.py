"""tflite-int8-full on a tiny random BERT: really integer, agrees with fp32 on held-out texts, float outputs."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402

from conftest import random_token_inputs, tiny_bert_export_context  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tflite_full import float_ops, tensor_dtypes  # noqa: E402
from packager.tasks import get_task  # noqa: E402

SEQ = 24
NAMES = ["input_ids", "attention_mask"]


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids with realistic right padding (lengths 4..SEQ)."""
    return random_token_inputs(n, SEQ, seed, min_length=4, first_token=2)


def _export(work, n_calib: int, calib_samples: int, buckets: list[int]):
    """tflite-int8-full of a tiny random BERT (seed 0): (target, path, result, fp32 wrapper)."""
    ctx, wrapper = tiny_bert_export_context(work, SEQ, _inputs(n_calib, seed=1), options={"calib_samples": calib_samples},
                                            buckets=buckets)
    target = get_target("tflite-int8-full")
    path = work / "model.tflite"
    result = target.export(ctx, path)
    return target, path, result, wrapper


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("full"), 110, 100, [])


@pytest.mark.slow
def test_tensors_are_integer(exported):
    _, path, result, _ = exported
    dtypes = tensor_dtypes(path)
    assert dtypes.get("int8", 0) > 50 and dtypes == result.details["tensor_dtypes"]
    # only the mask cast, the L2-norm's ABS and the output dequantize may be float
    assert dtypes.get("float32", 0) <= 6
    assert set(float_ops(path)) <= {"ABS"}
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    fc_weight_types = set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.FULLY_CONNECTED:
            fc_weight_types.add(graph.Tensors(op.Inputs(1)).Type())
    assert fc_weight_types == {schema.TensorType.INT8}
    assert set(result.details["activations_per_op"].values()) <= {"int8", "int16", "float"}
    assert result.details["calibration_samples"] == 100


def test_agrees_with_fp32_on_held_out_inputs(exported):
    target, path, _, wrapper = exported
    held_out = _inputs(24, seed=7)
    runner = target.load(path)
    with torch.inference_mode():
        ref = wrapper(*(torch.from_numpy(held_out[n]) for n in NAMES)).numpy()
    out = np.concatenate([runner.run({n: held_out[n][i:i + 1] for n in NAMES}) for i in range(24)])
    assert out.dtype == np.float32 and out.shape == ref.shape
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.mean() >= 0.99, cos


def test_output_is_dequantized_from_an_integer_tensor(exported):
    """Either the file ends in DEQUANTIZE(int tensor), or its output is integer and the runner dequantizes."""
    target, path, _, _ = exported
    runner = target.load(path)
    detail = runner.interpreter.get_output_details()[0]
    sample = _inputs(1, seed=3)
    out = runner.run(sample)
    assert out.dtype == np.float32
    if np.dtype(detail["dtype"]).kind == "i":
        raw = runner.interpreter.get_tensor(detail["index"])
        scale, zero = detail["quantization"]
        np.testing.assert_allclose(out, (raw.astype(np.float32) - zero) * scale, rtol=1e-6)
        return
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    output_index = graph.Outputs(0)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.Outputs(0) == output_index:
            code = model.OperatorCodes(op.OpcodeIndex())
            assert max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.DEQUANTIZE
            assert graph.Tensors(op.Inputs(0)).Type() in (schema.TensorType.INT8, schema.TensorType.INT16)
            return
    pytest.fail("no op produces the output tensor")


def test_int8_io_option_gives_an_integer_output_the_runner_dequantizes(exported, tmp_path):
    """``--option tflite-int8-full.io=int8``: the model's own output is int8 (no DEQUANTIZE), with its scale."""
    import shutil

    from targets.tflite_full import integer_outputs

    target, path, _, _ = exported
    copy = tmp_path / "copy.tflite"
    shutil.copy(path, copy)
    outputs = integer_outputs(copy, tmp_path / "int8io.tflite")
    assert outputs[0]["dtype"] == "int8" and outputs[0]["scale"] > 0
    float_runner, int_runner = target.load(path), target.load(tmp_path / "int8io.tflite")
    detail = int_runner.interpreter.get_output_details()[0]
    assert np.dtype(detail["dtype"]) == np.int8
    for seed in range(5):
        sample = _inputs(1, seed=100 + seed)
        expected, got = float_runner.run(sample), int_runner.run(sample)
        assert got.dtype == np.float32
        raw = int_runner.interpreter.get_tensor(detail["index"])
        np.testing.assert_allclose(got, (raw.astype(np.float32) - detail["quantization"][1]) * detail["quantization"][0])
        np.testing.assert_allclose(got, expected, atol=1e-6)  # same int8 values, dequantized outside the model


def test_options_are_checked_by_name_type_and_choice():
    target = get_target("tflite-int8-full")
    assert target.resolve_options({})["io"] == "float"
    assert target.resolve_options({"io": "int8", "calib_samples": "150", "int8_only": "true"}) == {
        "io": "int8", "calib_samples": 150, "int8_only": True}
    with pytest.raises(ValueError, match=r"tflite-int8-full\.io: 'int4' is not one of float, int8"):
        target.resolve_options({"io": "int4"})
    with pytest.raises(ValueError, match=r"tflite-int8-full\.calib: unknown option"):
        target.resolve_options({"calib": "3"})
    with pytest.raises(ValueError, match=r"calib_samples: expected int"):
        target.resolve_options({"calib_samples": "many"})


@pytest.mark.slow
def test_sensitivity_falls_back_to_a_direct_run_when_validation_cannot_read_the_graph(tmp_path, monkeypatch):
    """ai-edge-quantizer's validate() raised "Tensor data is null" on a head-pruned CLINC150 student."""
    import litert_torch
    from ai_edge_quantizer import quantizer

    from targets.tflite_full import FullIntegerQuantizer

    torch.manual_seed(1)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    model = transformers.BertModel(config).eval()
    wrapper = get_task("feature-extraction").make_wrapper(model)
    calib = _inputs(12, seed=5)
    samples = [{k: v[i:i + 1] for k, v in calib.items()} for i in range(12)]
    float_path = tmp_path / "float.tflite"
    litert_torch.convert(wrapper, tuple(torch.from_numpy(samples[0][n]) for n in NAMES)).export(str(float_path))
    fq = FullIntegerQuantizer(float_path, samples[:8], NAMES)
    validated = fq.sensitivity("FULLY_CONNECTED", samples[8:])

    def broken(self, *args, **kwargs):
        raise ValueError("Tensor data is null. Run allocate_tensors() first")

    monkeypatch.setattr(quantizer.Quantizer, "validate", broken)
    direct = fq.sensitivity("FULLY_CONNECTED", samples[8:])
    assert fq.sensitivity_method["FULLY_CONNECTED"].startswith("direct run")
    assert 0.5 < direct <= 1.0 + 1e-6 and abs(direct - validated) < 0.05, (direct, validated)
    assert not list(tmp_path.glob("sensitivity-*"))


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory):
    """The same tiny BERT exported with buckets 8, 16, 24: one signature per bucket in one file."""
    return _export(tmp_path_factory.mktemp("full-buckets"), 60, 40, [8, 16, SEQ])


@pytest.mark.slow
def test_buckets_are_signatures_of_one_file_with_weights_stored_once(bucketed, exported):
    target, path, result, _ = bucketed
    runner = target.load(path, shapes=result.shapes)
    assert sorted(runner.interpreter.get_signature_list()) == ["seq16", "seq24", "seq8"]
    assert result.shapes.buckets == [8, 16, SEQ] and result.shapes.entry_points["8"] == "seq8"
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    assert model.SubgraphsLength() == 3
    constants = []  # per bucket: buffer -> (bytes, shape)
    for g in range(3):
        graph = model.Subgraphs(g)
        constants.append({graph.Tensors(t).Buffer(): (model.Buffers(graph.Tensors(t).Buffer()).DataLength(),
                                                      graph.Tensors(t).ShapeAsNumpy().tolist())
                          for t in range(graph.TensorsLength())
                          if model.Buffers(graph.Tensors(t).Buffer()).DataLength() > 0})
    shared = set(constants[0]).intersection(*constants[1:])
    assert sum(constants[0][b][0] for b in shared) > 100_000  # every weight matrix, stored once
    for length, own in zip((8, 16, SEQ), constants):
        for buffer in set(own) - shared:  # what a bucket holds alone: its position slice and shape constants
            size, shape = own[buffer]
            assert size <= 64 or length in shape, (length, size, shape)
    assert result.details["buffer_sharing"]["subgraphs"] == 3
    # three buckets cost little more than one shape: the weights are not copied per signature
    single = exported[1].stat().st_size
    assert path.stat().st_size < 1.5 * single, (path.stat().st_size, single)


def _cosines_at(runner, wrapper, length: int) -> list[float]:
    """Cosine vs fp32 PyTorch (run at exactly ``length`` tokens) on 8 random inputs of ``length`` real tokens."""
    from device_bench.shapes import fit_to_length

    rng = np.random.default_rng(length)
    cosines = []
    for _ in range(8):
        ids = np.zeros((1, SEQ), np.int32)
        mask = np.zeros((1, SEQ), np.int32)
        ids[0, :length] = rng.integers(5, 1000, length)
        ids[0, 0] = 2
        mask[0, :length] = 1
        sample = {"input_ids": ids, "attention_mask": mask}
        out = runner.run(sample)
        with torch.inference_mode():
            ref = wrapper(*(torch.from_numpy(fit_to_length(sample, length)[n]) for n in NAMES)).numpy()
        cosines.append(float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref))))
    return cosines


@pytest.mark.parametrize("length", [5, 8, 13, 16, 24])
def test_each_bucket_agrees_with_fp32_on_inputs_of_its_length(bucketed, exported, length):
    """Each bucket is as close to fp32 as the single-shape artifact is (both calibrated on the same texts)."""
    target, path, result, wrapper = bucketed
    runner = target.load(path, shapes=result.shapes)
    assert runner.choose_length(length) == min(b for b in (8, 16, SEQ) if b >= length)
    bucketed_cos = _cosines_at(runner, wrapper, length)
    single_cos = _cosines_at(exported[0].load(exported[1]), exported[3], length)
    assert np.mean(bucketed_cos) >= min(0.99, np.mean(single_cos) - 0.005), (bucketed_cos, single_cos)
    assert min(bucketed_cos) >= 0.97, bucketed_cos


def test_int8_io_rewrites_every_bucket(bucketed, tmp_path):
    import shutil

    from targets.tflite_full import integer_outputs

    target, path, result, _ = bucketed
    copy = tmp_path / "copy.tflite"
    shutil.copy(path, copy)
    outputs = integer_outputs(copy, tmp_path / "int8io.tflite")
    assert sorted(o["signature"] for o in outputs) == ["seq16", "seq24", "seq8"]
    assert {o["dtype"] for o in outputs} == {"int8"}
    float_runner = target.load(path, shapes=result.shapes)
    int_runner = target.load(tmp_path / "int8io.tflite", shapes=result.shapes)
    for length in (6, 12, 20):
        sample = {k: v[:1] for k, v in _inputs(1, seed=length).items()}
        sample["attention_mask"][0, length:] = 0
        sample["input_ids"][0, length:] = 0
        np.testing.assert_allclose(int_runner.run(sample), float_runner.run(sample), atol=1e-6)
