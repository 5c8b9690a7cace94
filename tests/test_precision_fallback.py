"""Precision fallback on tiny random BERTs, real conversion: ``float_ops`` really leaves the named ops unquantized
(ONNX graph, TFLite file), every quantized op group is ranked with a finite error, the fallback loop reverts
groups worst first until a budget holds and records them, and a tune trial over budget records its fallback."""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model
from test_tune import _recipe, _tune, workspace  # noqa: F401  (workspace: test_tune's keyword data and tiny BERT)

SEQ = 32
LAYERS = 2
GROUPS = {"embeddings", "layer.0", "layer.1", "head"}


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory):
    from packager.models import load_model

    path = save_tiny_model(tmp_path_factory.mktemp("fallback") / "model", classifier=True, layers=LAYERS, seed=3)
    return load_model(str(path), "sequence-classification")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from packager.calib import builtin_sample

    return builtin_sample()[:12]


def _pack(loaded, out: Path, target: str, texts, options: dict | None = None, buckets=None):
    from packager.pack import pack_model

    result = pack_model(loaded, out, [target], SEQ, texts, force=True, buckets=buckets,
                        target_options={target: options} if options else None)
    (entry,) = result.manifest.targets
    return entry


def _onnx_weights(path: Path) -> dict[str, str]:
    """Op type of each node of an ONNX graph that reads a constant weight (MatMulInteger: int8)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return {n.name: n.op_type for n in graph.node if n.op_type in ("MatMul", "MatMulInteger", "MatMulNBits", "Gemm")}


# -- the option ---------------------------------------------------------------------------------------------

def test_float_ops_option_takes_a_list_or_comma_separated_patterns_and_rejects_bad_ones():
    from targets import get_target

    target = get_target("onnx-int8")
    assert target.resolve_options({})["float_ops"] == []
    assert target.resolve_options({"float_ops": "layer\\.1/, classifier"})["float_ops"] == ["layer\\.1/", "classifier"]
    assert target.resolve_options({"float_ops": ["pooler"]})["float_ops"] == ["pooler"]
    with pytest.raises(ValueError, match=r"^onnx-int8\.float_ops: '\(' is not a regular expression"):
        target.resolve_options({"float_ops": "("})
    with pytest.raises(ValueError, match=r"^tflite-int8\.float_ops: expected a list of strings"):
        get_target("tflite-int8").resolve_options({"float_ops": [3]})


@pytest.mark.parametrize("scheme", ["blockwise", "dynamic"])
def test_onnx_float_ops_stay_float_in_the_graph_and_are_recorded(tiny_cls, texts, tmp_path, scheme):
    """Both int8 schemes: the named ops stay float MatMul/Gemm under their own names, the rest are int8
    (MatMulNBits blocks, or MatMulInteger); blockwise leaves the 2-D classifier Gemm float on its own."""
    int8_op, int8_name = {"blockwise": ("MatMulNBits", "{}_Q8"), "dynamic": ("MatMulInteger", "{}_quant")}[scheme]
    full = _pack(tiny_cls, tmp_path / "int8", "onnx-int8", texts, {"scheme": scheme})
    assert full.status == "ok" and full.details["float_ops"] == [] and full.details["scheme"] == scheme
    nodes = _onnx_weights(tmp_path / "int8" / "onnx_int8.onnx")
    assert not any(n.endswith("/MatMul") and "layer." in n and "/self/MatMul" not in n for n in nodes)
    assert full.runtime_requirement == ("onnxruntime>=1.22" if scheme == "blockwise" else "onnxruntime>=1.17")

    patterns = ["layer\\.1/"] + (["classifier"] if scheme == "dynamic" else [])
    kept = _pack(tiny_cls, tmp_path / "fb", "onnx-int8", texts, {"scheme": scheme, "float_ops": patterns})
    assert kept.status == "ok", kept.error
    float_ops = kept.details["float_ops"]
    assert len(float_ops) == 6 + len(patterns) - 1 and all("layer.1/" in n or "classifier" in n for n in float_ops)
    assert kept.details["int8_op_count"] == full.details["int8_op_count"] - len(float_ops)
    assert kept.details["options"]["float_ops"] == patterns
    graph = _onnx_weights(tmp_path / "fb" / "onnx_int8.onnx")
    for name in float_ops:  # the node is there under its own name, in float; no int8 copy of it
        assert graph[name] in ("MatMul", "Gemm") and int8_name.format(name) not in graph
    query = "/model/bert/encoder/layer.0/attention/self/query/MatMul"
    assert graph[int8_name.format(query)] == int8_op
    assert any(f"{len(float_ops)} of" in note for note in kept.notes)

    missing = _pack(tiny_cls, tmp_path / "bad", "onnx-int8", texts, {"scheme": scheme, "float_ops": ["decoder"]})
    assert missing.status == "failed"
    count = full.details["int8_op_count"]
    assert re.match(rf"onnx-int8\.float_ops: 'decoder' matches no quantized op \({count} ops, such as '/model/bert/",
                    missing.error)


@pytest.mark.slow
def test_tflite_float_ops_stay_float_in_the_file_and_are_recorded(tiny_cls, texts, tmp_path):
    from targets.tflite import quantized_ops

    kept = _pack(tiny_cls, tmp_path / "fb", "tflite-int8", texts, {"float_ops": ["BertLayer_1/"]})
    assert kept.status == "ok", kept.error
    float_ops = kept.details["float_ops"]
    assert float_ops and all("BertLayer_1/" in op for op in float_ops)
    int8 = quantized_ops((tmp_path / "fb" / "tflite_int8.tflite").read_bytes())  # one signature: names kept
    assert len(int8) == kept.details["int8_op_count"] > 0
    assert not set(int8) & set(float_ops)
    assert any("BertLayer_0/" in op for op in int8) and not any("BertLayer_1/" in op for op in int8)


@pytest.mark.slow
def test_tflite_reexports_of_one_model_convert_it_once(tiny_cls, texts, tmp_path, monkeypatch):
    """The fallback exports one model many times: litert-torch converts it once per module and shapes."""
    import torch

    import targets.tflite as tflite

    monkeypatch.setattr(tflite, "FP32_CACHE", tflite._Fp32Cache())
    conversions = []
    convert = tflite.convert_fp32
    monkeypatch.setattr(tflite, "convert_fp32", lambda ctx, out, module=None: conversions.append(1) or convert(ctx, out))
    first = _pack(tiny_cls, tmp_path / "a", "tflite-int8", texts)
    second = _pack(tiny_cls, tmp_path / "b", "tflite-int8", texts, {"float_ops": ["BertLayer_0/"]})
    assert first.status == second.status == "ok" and len(conversions) == 1
    assert second.details["int8_op_count"] < first.details["int8_op_count"]
    with torch.no_grad():  # other weights: converted again
        tiny_cls.model.classifier.bias += 1.0
    try:
        assert _pack(tiny_cls, tmp_path / "c", "tflite-int8", texts).status == "ok" and len(conversions) == 2
    finally:
        with torch.no_grad():
            tiny_cls.model.classifier.bias -= 1.0


# -- ranking ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx-int8", "tflite-int8"])
def test_ranking_returns_every_group_with_a_finite_error(tiny_cls, texts, target):
    from packager.precision_fallback import rank_groups

    ranking = rank_groups(tiny_cls, target, SEQ, texts, buckets=None, samples=6)
    # onnx-int8's default blockwise scheme quantizes MatMuls: the 2-D head (pooler, classifier: Gemm) stays float
    groups = GROUPS - {"head"} if target == "onnx-int8" else GROUPS
    assert {g.group for g in ranking} == groups
    errors = [g.error for g in ranking]
    assert all(math.isfinite(e) and e >= 0 for e in errors) and max(errors) > 0
    assert errors == sorted(errors, reverse=True)
    ops = [op for g in ranking for op in g.ops]
    assert len(ops) == len(set(ops))
    if target == "onnx-int8":
        assert len(ops) == 15  # 6 MatMuls per layer, 3 embedding tables
        assert "ai-edge-quantizer" not in ranking[0].method
    else:
        assert "ai-edge-quantizer validate" in ranking[0].method
    # ops a recipe already keeps in float are not ranked again
    rest = rank_groups(tiny_cls, target, SEQ, texts, buckets=None, samples=6,
                       options={"float_ops": ["layer\\.1/" if target == "onnx-int8" else "BertLayer_1/"]})
    assert {g.group for g in rest} == groups - {"layer.1"}


# -- the loop -----------------------------------------------------------------------------------------------

def _groups(*errors: float):
    from targets.fallback import GroupError

    return [GroupError(f"g{i}", [f"op{i}a", f"op{i}b"], e, "test") for i, e in enumerate(errors)]


def test_the_loop_reverts_worst_first_until_the_budget_holds():
    from packager.precision_fallback import run_fallback

    accuracy = {0: 0.80, 2: 0.85, 4: 0.91, 6: 0.95}
    calls = []

    def score(float_ops):
        calls.append(list(float_ops))
        return accuracy[len(float_ops)], f"artifact-{len(float_ops)}"

    result = run_fallback(_groups(3.0, 2.0, 1.0), score, 0.80, 0.90)
    assert [s.group for s in result.steps] == ["g0", "g1"] and [s.accuracy for s in result.steps] == [0.85, 0.91]
    assert result.float_ops == ["op0a", "op0b", "op1a", "op1b"] and result.float_groups == ["g0", "g1"]
    assert result.met and result.artifact == "artifact-4" and calls[-1] == result.float_ops
    exhausted = run_fallback(_groups(3.0, 2.0, 1.0), score, 0.80, 0.99)
    assert len(exhausted.steps) == 3 and not exhausted.met and len(exhausted.float_ops) == 6
    within = run_fallback(_groups(3.0), score, 0.95, 0.90)
    assert within.steps == [] and within.float_ops == [] and within.met and within.artifact is None


@pytest.mark.slow
def test_fallback_on_a_real_onnx_artifact_reverts_groups_until_its_error_budget_holds(tiny_cls, texts, tmp_path):
    """The score is minus the output MSE against fp32; the budget halves the all-int8 error, so at least one
    group must be reverted; the artifact of the last step keeps exactly the recorded ops in float."""
    from device_bench.runners import load_runner
    from packager.calib import tokenize
    from device_bench.parity import run_rows as run_artifact
    from packager.pack import run_reference
    from packager.precision_fallback import float_ops_option, rank_groups, run_fallback

    task = tiny_cls.task
    calib = tokenize(tiny_cls.tokenizer, task.prepare_texts(texts), SEQ)
    reference = run_reference(task.make_wrapper(tiny_cls.model), calib)
    exports = iter(range(100))

    def score(float_ops):
        out = tmp_path / f"step{next(exports)}"
        entry = _pack(tiny_cls, out, "onnx-int8", texts, float_ops_option("onnx-int8", None, float_ops))
        assert entry.status == "ok", entry.error
        outputs = run_artifact(load_runner("onnxruntime", out / entry.file, threads=1), calib)
        return -float(np.mean((outputs - reference) ** 2)), (out / entry.file, entry)

    start, _ = score([])
    assert start < 0
    ranking = rank_groups(tiny_cls, "onnx-int8", SEQ, texts, buckets=None, samples=6)
    result = run_fallback(ranking, score, start, start / 2)
    assert result.met and 1 <= len(result.steps) <= len(ranking)
    assert [s.group for s in result.steps] == [g.group for g in ranking[: len(result.steps)]]
    assert all(s.accuracy < start / 2 for s in result.steps[:-1]) and result.steps[-1].accuracy >= start / 2
    assert result.float_ops == [op for g in ranking[: len(result.steps)] for op in g.ops]
    path, entry = result.artifact
    assert sorted(entry.details["float_ops"]) == sorted(result.float_ops)
    graph = _onnx_weights(path)
    assert all(graph[op] in ("MatMul", "Gemm") for op in result.float_ops if op in graph)


# -- tune ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outlier_workspace(workspace, tmp_path_factory) -> Path:
    """test_tune's keyword data and tiny BERT, with one embedding row ([MASK]: never in the texts, kept by
    trim_vocab as a special token) set far out: fp32 never reads it, but an int8 table with one scale per tensor
    rounds every other row to zero, so the int8 artifact loses the words and the fallback has work to do."""
    import shutil

    import torch
    from transformers import BertModel

    root = tmp_path_factory.mktemp("outlier")
    shutil.copytree(workspace / "data", root / "data")
    shutil.copytree(workspace / "model", root / "model")
    model = BertModel.from_pretrained(root / "model")
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[4] = 40.0
    model.save_pretrained(root / "model")
    return root


def _int8_recipe(workspace: Path, name: str, **stages) -> Path:
    """A one-layer student whose prune.ffn is searched (a tune needs one knob), packed to onnx-int8."""
    path = _recipe(workspace, name, **stages,
                   space={"distill.epochs": None, "distill.student.layers": [1, 1], "prune.heads": None,
                          "prune.ffn": [0.2, 0.3], "trim_vocab.keep_top": None})
    path.write_text(path.read_text().replace("- onnx-fp32", "- onnx-int8"))
    return path


@pytest.mark.slow
def test_tune_falls_back_until_within_budget_and_packs_the_winner_with_the_float_ops(outlier_workspace, tmp_path,
                                                                                       capsys):
    """A budget of zero loss: the student matches the teacher in float, but its int8 artifact lost the words
    (the outlier embedding row). The fallback ranks the embeddings worst, keeps them in float, and the trial is
    within the budget; the bundle's onnx-int8 keeps exactly the recorded ops in float."""
    from device_bench.manifest import Manifest

    out = tmp_path / "best"
    code, err = _tune(["--recipe", str(_int8_recipe(outlier_workspace, "fit.yaml")), "--trials", "1",
                       "--max-accuracy-drop", "0", "--work", str(tmp_path / "work"), "-o", str(out)], capsys)
    assert code == 0, err[-3000:]
    assert re.search(r"trial 0: precision fallback: onnx-int8 val \d+\.\d+% misses the budget \(100\.00%\); rank", err)
    manifest = Manifest.load(out)
    summary = next(r for r in manifest.stages if r["stage"] == "tune")
    (record,) = summary["details"]["trials"]
    assert record["within_budget"] and summary["details"]["winner"] == 0
    assert record["int8_val_accuracy"] < record["val_accuracy"] == 1.0
    steps = record["fallback_steps"]
    assert [s["group"] for s in steps] == record["float_groups"] and steps[0]["group"] == "embeddings"
    assert steps[-1]["accuracy"] == record["val_accuracy"] and all(s["passed"] for s in steps[-1:])
    assert len(record["float_ops"]) == sum(s["ops"] for s in steps)
    assert "kept in float by the precision fallback: embeddings" in summary["description"]
    (target,) = manifest.targets
    assert target.name == "onnx-int8" and target.status == "ok"
    assert target.details["float_ops"] == record["float_ops"]  # the bundle holds what was scored
    assert manifest.recipe["target_options"]["onnx-int8"]["float_ops"]
    import onnx

    graph = onnx.load(str(out / target.file)).graph
    gathers = {n.name: n for n in graph.node if n.op_type == "Gather"}
    initializers = {i.name: i.data_type for i in graph.initializer}
    for op in record["float_ops"]:  # the embedding tables stay float32
        assert initializers[gathers[op].input[0]] == onnx.TensorProto.FLOAT
    assert "kept" in err[err.index("Tune trials"):]  # the column (its cells wrap in a narrow console)
    assert re.fullmatch(r"embeddings(, [\w.]+)* \(\d+ ops; all-int8 val \d+\.\d+%\)", _kept_float_cell(summary["details"]))


def _kept_float_cell(details: dict) -> str:
    """The Pareto table's "kept float" cell of the only trial, rendered wide from the manifest's summary."""
    from rich.console import Console

    from packager.precision_fallback import FallbackStep
    from packager.tune.records import TrialRecord, TuneSummary
    from packager.cli.tune import pareto_table

    trials = [TrialRecord(**{**t, "fallback_steps": [FallbackStep(**s) for s in t["fallback_steps"]]})
              for t in details["trials"]]
    summary = TuneSummary(**{**details, "trials": trials})
    sink = io.StringIO()
    Console(width=1000, file=sink).print(pareto_table(summary))
    lines = sink.getvalue().splitlines()
    (row,) = [line for line in lines if line.startswith("│ ")]
    header = next(line for line in lines if "kept float" in line)
    column = [c.strip() for c in header.split("┃")].index("kept float")
    return row.split("│")[column].strip()


@pytest.mark.slow
def test_tune_falls_back_on_tflite_through_ai_edge_quantizer_across_bucket_signatures(outlier_workspace, tmp_path,
                                                                                      capsys):
    """The same on tflite-int8 (one signature per bucket): ranked with ai-edge-quantizer's validation, the
    embedding lookups of every signature kept in float in the packed file."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from device_bench.manifest import Manifest

    path = _int8_recipe(outlier_workspace, "tflite.yaml")
    path.write_text(path.read_text().replace("- onnx-int8", "- tflite-int8"))
    out = tmp_path / "best"
    code, err = _tune(["--recipe", str(path), "--trials", "1", "--max-accuracy-drop", "0", "--work",
                       str(tmp_path / "work"), "-o", str(out)], capsys)
    assert code == 0, err[-3000:]
    assert "(output MSE against fp32 with only this group int8 (ai-edge-quantizer validate))" in err
    manifest = Manifest.load(out)
    (record,) = next(r for r in manifest.stages if r["stage"] == "tune")["details"]["trials"]
    assert record["within_budget"] and record["float_groups"][0] == "embeddings"
    (target,) = manifest.targets
    assert target.status == "ok" and len(target.shapes.buckets) > 1
    assert target.details["float_ops"] == record["float_ops"]
    model = flatbuffer_utils.read_model(str(out / target.file))
    lookup = [i for i, c in enumerate(model.operatorCodes)
              if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.EMBEDDING_LOOKUP]
    tables = [graph.tensors[op.inputs[1]] for graph in model.subgraphs for op in graph.operators
              if op.opcodeIndex in lookup]
    assert len(tables) == len(target.shapes.buckets)  # the word table's lookup, in each signature
    assert all(t.type == schema.TensorType.FLOAT32 for t in tables)


@pytest.mark.slow
def test_a_tune_trial_still_over_budget_with_every_group_in_float_records_them(outlier_workspace, tmp_path, capsys):
    """A student that cannot learn misses a zero-loss budget even in float: every group is reverted, in ranking
    order, the trial stays over budget (exit 1, no bundle), and the study keeps which ops stayed float."""
    import optuna

    path = _int8_recipe(outlier_workspace, "strict.yaml", distill={"lr": 1.0e-9}, prune={"heads": 0.5, "ffn": 0.6})
    work = tmp_path / "work"
    code, err = _tune(["--recipe", str(path), "--trials", "1", "--max-accuracy-drop", "0", "--work", str(work),
                       "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and not (tmp_path / "o").exists(), err[-3000:]
    (trial,) = optuna.load_study(study_name="tune", storage=f"sqlite:///{work / 'study.db'}").trials
    attrs = trial.user_attrs
    steps = attrs["fallback_steps"]
    assert [s["group"] for s in steps] == attrs["float_groups"]
    # the student's one layer; its head (Gemm) is float in onnx-int8's blockwise scheme already
    assert sorted(attrs["float_groups"]) == ["embeddings", "layer.0"]
    assert len(attrs["float_ops"]) == sum(s["ops"] for s in steps) == 3 + 6
    assert all(0 <= s["accuracy"] <= 1 and math.isfinite(s["error"]) for s in steps)
    assert attrs["val_accuracy"] == steps[-1]["accuracy"] and attrs["accuracy_drop"] > 0
    table = err[err.index("Tune trials"):]
    assert "kept float" in table and "embeddings" in table  # the cell (groups, op count) may wrap


@pytest.mark.slow
def test_no_fallback_keeps_every_op_int8(outlier_workspace, tmp_path, capsys):
    import optuna

    path = _int8_recipe(outlier_workspace, "nofallback.yaml")
    work = tmp_path / "work"
    code, err = _tune(["--recipe", str(path), "--trials", "1", "--work", str(work), "--max-accuracy-drop", "0",
                       "--no-fallback", "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and "precision fallback" not in err and not (tmp_path / "o").exists()
    (trial,) = optuna.load_study(study_name="tune", storage=f"sqlite:///{work / 'study.db'}").trials
    # the all-int8 artifact as it is: below the recipe's parity (the fallback would have mended it), so it fails
    assert trial.state == optuna.trial.TrialState.FAIL and "parity below threshold" in trial.user_attrs["error"]
    assert "float_ops" not in trial.user_attrs and "kept float" not in err[err.index("Tune trials"):]


def test_op_groups_follow_the_ops_own_module_path():
    from targets.fallback import op_group

    tflite = ("pkg.TaskWrapper/bert.BertModel_model/bert.BertEmbeddings_embeddings/torch.nn.LayerNorm_LayerNorm;;"
              "pkg.TaskWrapper/bert.BertModel_model/bert.BertEncoder_encoder/bert.BertLayer_0/"
              "bert.BertSelfAttention_self/torch.nn.modules.linear.Linear_query;1")
    assert op_group(tflite) == "layer.0"  # fused with the embeddings' LayerNorm, but the query of layer 0
    assert op_group("pkg.TaskWrapper/bert.BertModel_model/bert.BertEmbeddings_embeddings/"
                    "torch.nn.modules.sparse.Embedding_word_embeddings;2") == "embeddings"
    assert op_group("seq16_output_0_output") == "head"
    assert op_group("/model/bert/encoder/layer.11/attention/self/query/MatMul") == "layer.11"
    assert op_group("/model/bert/encoder/layer.3/attention/self/MatMul_1") == "layer.3"
    assert op_group("/model/bert/embeddings/word_embeddings/Gather") == "embeddings"
    assert op_group("/model/classifier/Gemm_MatMul") == "head"
    assert op_group("/model/bert/pooler/dense/Gemm_MatMul") == "head"


@pytest.mark.slow
def test_pack_falls_back_to_float_ops_until_parity_holds_and_says_so(tmp_path, tiny_model_dir):
    """A gate no all-int8 artifact meets on any CPU (mean cosine 0.99999): `edgepack pack` keeps the worst op groups
    in float until parity holds and records what and why; `--no-fallback` fails the target as before."""
    import json

    from test_cli import run

    args = ["pack", "--model", str(tiny_model_dir), "--task", "feature-extraction", "--targets", "onnx-int8",
            "--seq-len", str(SEQ), "--min-cosine", "0.99999", "--json"]
    proc = run(*args, "-o", str(tmp_path / "fallback"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (entry,) = json.loads(proc.stdout)["targets"]
    assert entry["status"] == "ok" and entry["parity"]["passed"] and entry["parity"]["mean_cosine"] >= 0.99999
    record = entry["details"]["precision_fallback"]
    assert record["passed"] and record["float_groups"] and record["float_ops"] == len(entry["details"]["float_ops"])
    assert record["why"].startswith("parity below threshold with every quantizable op int8: mean_cosine=")
    assert {g["group"] for g in record["ranking"]} == GROUPS - {"head"}  # a feature extractor has no head
    assert [s["group"] for s in record["steps"]] == record["float_groups"] and record["steps"][-1]["passed"]
    assert all(not s["passed"] for s in record["steps"][:-1])
    assert "avx2" in record["host_isa"] or "asimd" in record["host_isa"]
    note = next(n for n in entry["notes"] if n.startswith("precision fallback:"))
    assert f"({record['float_ops']} of {entry['details']['int8_op_count'] + record['float_ops']} quantizable ops)" in note
    assert entry["details"]["int8_op_count"] > 0  # groups not needed stay int8

    refused = run(*args, "--no-fallback", "-o", str(tmp_path / "no-fallback"))
    assert refused.returncode != 0 and "onnx-int8 failed: parity below threshold" in refused.stderr, refused.stderr[-2000:]
    (failed,) = json.loads(refused.stdout)["targets"]
    assert failed["status"] == "failed" and "precision_fallback" not in failed["details"]


@pytest.mark.parametrize("scheme", ["blockwise", "dynamic"])
def test_onnx_fused_graph_passes_its_gate_and_falls_back_by_layer(tiny_cls, texts, tmp_path, scheme):
    """fuse=bert through the real pack (dynamic sequence axis): the fused graph passes the parity gate, the manifest
    records the fused ops, and a layer's float_ops pattern reaches its fused Attention (dynamic: left float, not
    QAttention) as it reaches its MatMuls."""
    import onnx

    entry = _pack(tiny_cls, tmp_path / "fused", "onnx-int8", texts, {"scheme": scheme, "fuse": "bert",
                                                                     "float_ops": ["layer\\.1/"]}, buckets="auto")
    assert entry.status == "ok" and entry.parity.passed, entry.error
    assert entry.details["fused_ops"] == {"EmbedLayerNormalization": 1, "Attention": LAYERS,
                                          "SkipLayerNormalization": 2 * LAYERS, "BiasGelu": LAYERS}
    kept = entry.details["float_ops"]
    assert kept and all("layer.1/" in op for op in kept)
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "fused" / "onnx_int8.onnx")).graph.node}
    attention_1 = "/model/bert/encoder/layer.1/attention/self/Attention"
    assert (attention_1 in kept) == (scheme == "dynamic") and ops[attention_1] == "Attention"
    if scheme == "dynamic":
        assert ops["/model/bert/encoder/layer.0/attention/self/Attention_quant"] == "QAttention"


@pytest.mark.slow
def test_executorch_int8_keeps_float_ops_out_of_the_quantizer_and_ranks_every_group(tiny_cls, texts, tmp_path):
    """executorch-int8 takes the fallback too: ``float_ops`` (Linear module paths) leaves those layers float in the
    ``.pte``, and every group is ranked with a finite error (what ``pack``'s fallback reverts worst first)."""
    from packager.precision_fallback import rank_groups

    everything = _pack(tiny_cls, tmp_path / "all", "executorch-int8", texts)
    kept = _pack(tiny_cls, tmp_path / "fb", "executorch-int8", texts, {"float_ops": ["layer\\.1/"]})
    assert everything.status == kept.status == "ok", kept.error
    assert kept.details["float_ops"] and all("layer.1/" in op for op in kept.details["float_ops"])
    assert kept.details["quantized_linear_layers"] == everything.details["quantized_linear_layers"] - 6
    assert kept.details["int8_op_count"] == kept.details["quantized_linear_layers"]
    ranking = rank_groups(tiny_cls, "executorch-int8", SEQ, texts, buckets=None, samples=6)
    # its quantizer takes Linear layers only: BERT's embedding tables stay float, so there is no embeddings group
    assert {g.group for g in ranking} == GROUPS - {"embeddings"} and "pt2e" in ranking[0].method
    assert all(math.isfinite(g.error) and g.error >= 0 for g in ranking) and max(g.error for g in ranking) > 0

