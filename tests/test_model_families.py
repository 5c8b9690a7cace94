"""Model families beyond BERT: every family's declared recipe stages run on a tiny random model of it, and a
teacher of another family (MPNet, the case study's) is fine-tuned by a recipe and distilled into a BERT student
with its own tokenizer, to a verified bundle."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import FAMILY_MODEL_TYPES, save_tiny_model, save_tiny_of_family
from device_bench.manifest import Manifest
from packager.families import FAMILIES, task_refusals
from test_cross_tokenizer_distill import FILLER, KEYWORDS, LETTERS, SPECIALS, SPLITS_DATA, _rows, write_splits

LABELS = sorted(KEYWORDS)


def _vocab() -> list[str]:
    """The keyword data's words, whole, and letters for the rest (a WordPiece vocabulary)."""
    words = [w for w in FILLER + [w for ws in KEYWORDS.values() for w in ws] if w not in LETTERS]
    return SPECIALS + LETTERS + [f"##{c}" for c in LETTERS] + list(dict.fromkeys(words))


def test_every_declared_family_has_a_tiny_model_here():
    assert set(FAMILY_MODEL_TYPES) == set(FAMILIES)
    for family, model_type in FAMILY_MODEL_TYPES.items():
        assert model_type in FAMILIES[family].model_types


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_MODEL_TYPES))
def test_finetune_runs_on_a_tiny_model_of_every_family(family, tmp_path):
    """Fine-tuning needs nothing of a family's layout (the HF Trainer on its sequence-classification head): every
    family declares it, and it runs through the same ``run_stage`` a recipe uses."""
    from packager.labelled_data import LabelledData, LabelledSplit
    from packager.models import load_model
    from packager.stages import STAGES, StageContext
    from packager.stages.run import run_stage

    assert FAMILIES[family].supports_stage("finetune")
    folder = save_tiny_of_family(FAMILY_MODEL_TYPES[family], "sequence-classification", tmp_path / "model", _vocab(),
                                  LABELS)
    loaded = load_model(str(folder), "sequence-classification")

    def split(n: int, seed: int) -> LabelledSplit:
        rows = _rows(n, seed)
        return LabelledSplit([r["text"] for r in rows], [LABELS.index(r["intent"]) for r in rows])

    data = LabelledData(train=split(64, 1), labels=LABELS, validation=split(16, 2), test=split(16, 3))
    stage = STAGES["finetune"].parse({"epochs": 1, "batch_size": 16, "lr": 1.0e-3}, "stages[0].finetune")
    ctx = StageContext(data=data, seq_len=16, seed=0, work_dir=tmp_path / "work", rows=[])
    model, _, row = run_stage(stage, loaded.model, loaded.tokenizer, ctx, explain=False)
    assert row.stage == "finetune" and row.val_accuracy is not None and row.test_accuracy is not None
    assert row.details["epochs"] == 1 and type(model) is type(loaded.model)


@pytest.mark.parametrize("family", sorted(FAMILY_MODEL_TYPES))
def test_calibrate_shifts_one_logit_of_every_family_s_head(family, tmp_path):
    """The calibrate stage needs only the head's logits layer: every family declares it, and through the same
    ``run_stage`` a recipe uses it moves one class's logit, by the bias it reports, and no other."""
    import numpy as np

    from packager.labelled_data import LabelledData, LabelledSplit
    from packager.models import load_model
    from packager.stages import STAGES, StageContext
    from packager.stages.run import run_stage
    from packager.training.evaluate import predict_logits

    assert FAMILIES[family].supports_stage("calibrate")
    folder = save_tiny_of_family(FAMILY_MODEL_TYPES[family], "sequence-classification", tmp_path / "model", _vocab(),
                                  LABELS)
    loaded = load_model(str(folder), "sequence-classification")
    rows = _rows(24, 2)
    split = LabelledSplit([r["text"] for r in rows], [LABELS.index(r["intent"]) for r in rows])
    data = LabelledData(train=split, labels=LABELS, validation=split, test=split)
    before = predict_logits(loaded.model, loaded.tokenizer, split.texts, 16)
    stage = STAGES["calibrate"].parse({"label": LABELS[-1]}, "stages[0].calibrate")
    ctx = StageContext(data=data, seq_len=16, seed=0, work_dir=tmp_path / "work", rows=[])
    model, _, row = run_stage(stage, loaded.model, loaded.tokenizer, ctx, explain=False)
    after = predict_logits(model, loaded.tokenizer, split.texts, 16)
    assert row.stage == "calibrate" and row.test_accuracy is not None
    assert np.allclose(after[:, :-1], before[:, :-1], atol=1e-5)
    assert np.allclose(after[:, -1] - before[:, -1], row.details["bias"], atol=1e-3)


@pytest.mark.slow
def test_an_mpnet_teacher_is_fine_tuned_and_distilled_into_a_bert_student_to_a_verified_bundle(tmp_path):
    """The case study's setting as a user writes it: ``model:`` an MPNet folder, ``finetune``, then ``distill``
    into a pretrained student of another family (its own tokenizer), packed and verified."""
    from packager.cli.recipe import pack_from_recipe

    teacher = save_tiny_of_family("mpnet", "feature-extraction", tmp_path / "mpnet", _vocab(), LABELS)
    assert json.loads((teacher / "config.json").read_text())["model_type"] == "mpnet"
    student = save_tiny_model(tmp_path / "student")  # a tiny BERT with another vocabulary (the suite's)
    write_splits(tmp_path, 160, 40)
    recipe = {"model": str(teacher), "task": "sequence-classification", "data": SPLITS_DATA,
              "seq_len": 16, "threads": 1, "calib_samples": 24, "targets": ["onnx-int8", "tflite-int8"],
              "gate": {"max_accuracy_drop": 0.5},
              "stages": [{"finetune": {"epochs": 6, "lr": 2.0e-3, "batch_size": 16}},
                         {"distill": {"student": {"model": str(student)}, "epochs": 6, "lr": 3.0e-3,
                                      "batch_size": 16, "student_alone": False}}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "bundle"
    assert pack_from_recipe(path, out, force=False, archive=False, progress=False) == 0
    manifest = Manifest.load(out)
    rows = {r["stage"]: r for r in manifest.stages}
    assert [r["stage"] for r in manifest.stages] == ["input", "finetune", "teacher", "distill", "target onnx-int8",
                                                     "target tflite-int8", "gate"]
    assert rows["finetune"]["test_accuracy"] > 0.5  # chance is 0.25
    assert rows["distill"]["details"]["student_tokenizer"].startswith("its own")
    assert manifest.model.model_type == "bert" and manifest.labels == LABELS
    assert {t.name: t.status for t in manifest.targets} == {"onnx-int8": "ok", "tflite-int8": "ok"}
    assert rows["gate"]["details"]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["mobilebert", "distilbert"])
def test_mobilebert_and_distilbert_embeddings_pack_and_verify(model_type, tmp_path):
    """The two phone-sized encoders as a user packs them: `edgepack pack --task feature-extraction`."""
    import subprocess
    import sys

    folder = save_tiny_of_family(model_type, "feature-extraction", tmp_path / "model")
    out = tmp_path / "bundle"
    done = subprocess.run([sys.executable, "-m", "packager.cli", "pack", "--model", str(folder), "--task",
                           "feature-extraction", "--targets", "torchscript-mobile,tflite-int8", "--seq-len", "32",
                           "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = Manifest.load(out)
    assert manifest.model.model_type == model_type and manifest.task == "feature-extraction"
    assert {t.name: t.status for t in manifest.targets} == {"torchscript-mobile": "ok", "tflite-int8": "ok"}


def _declared_cells() -> list[tuple[str, str]]:
    """(family, task): one task each family declares, taken in turn across the families so every task is covered,
    with every target the family declares. The table itself drives the test, so it cannot drift; the other cells of
    the family x task matrix run with ``pytest -m matrix``."""
    from packager.families import ALL
    from packager.tasks import TASKS

    cells, uncovered = [], list(TASKS)
    for index, (family, f) in enumerate(sorted(FAMILIES.items())):
        tasks = list(TASKS) if f.tasks == ALL else list(f.tasks)
        task = next((t for t in uncovered if t in tasks), tasks[index % len(tasks)])
        uncovered = [t for t in uncovered if t != task]
        cells.append((family, task))
    return cells


def _matrix() -> list:
    """Every declared (family, task) cell: the CI tier's cells (``_declared_cells``) as they are, the rest marked
    ``matrix`` (deselected by default, about 20 more minutes on 2 cores: ``pytest -m matrix``)."""
    from packager.families import ALL
    from packager.tasks import TASKS

    ci = set(_declared_cells())
    cells = [(family, task) for family, f in sorted(FAMILIES.items())
             for task in (list(TASKS) if f.tasks == ALL else list(f.tasks))]
    return [pytest.param(*cell, marks=() if cell in ci else pytest.mark.matrix) for cell in cells]


@pytest.mark.slow
@pytest.mark.parametrize("family, task", _matrix())
def test_every_declared_cell_packs_and_passes_parity(family, task, tmp_path):
    """A tiny random model of the family, packed for the task to every target the family declares: each one
    exports and passes its parity gate (what `scripts/verify_model_family.py` checked when the cell was declared)."""
    from packager.calib import builtin_sample
    from packager.families import ALL
    from packager.models import load_model
    from packager.pack import pack_model
    from targets import TARGETS

    declared = FAMILIES[family].targets
    targets = sorted(TARGETS) if declared == ALL else list(declared)
    targets = [t for t in targets if t not in task_refusals(task, targets)]  # e.g. MediaPipe: no per-token output
    folder = save_tiny_of_family(FAMILY_MODEL_TYPES[family], task, tmp_path / "model")
    result = pack_model(load_model(str(folder), task), tmp_path / "bundle", targets, 16, builtin_sample()[:12],
                        allow_parity_failure=True, force=True)
    verdicts = {t.name: t.status if t.status == "ok" else f"{t.status}: {(t.error or '')[:160]}"
                for t in result.manifest.targets}
    assert verdicts == {name: "ok" for name in targets}
