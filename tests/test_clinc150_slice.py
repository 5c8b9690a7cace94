"""A small recipe on a 10-intent slice of CLINC150 with the built-in MiniLM-L6 (real data, real model)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from device_bench.manifest import Manifest

CLINC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clinc150" / "data_oos_plus.json"
INTENTS = 10


def _slice(rows: list, keep: list[str], per_intent: int) -> list[dict]:
    out, seen = [], {k: 0 for k in keep}
    for text, label in rows:
        if label in seen and seen[label] < per_intent:
            seen[label] += 1
            out.append({"text": text, "label": label})
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_recipe_on_a_clinc150_slice(tmp_path):
    if not CLINC.is_file():
        pytest.skip(f"CLINC150 not found at {CLINC} (the shared data folder is absent)")
    from packager.cli.recipe import pack_from_recipe

    raw = json.loads(CLINC.read_text())
    keep = sorted({label for _, label in raw["train"]})[:INTENTS]
    for name, rows, n in (("train", raw["train"], 30), ("val", raw["val"], 10), ("test", raw["test"], 20)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _slice(rows, keep, n)))
    recipe = {
        "task": "sequence-classification",
        "data": {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"},
        "seq_len": 32, "threads": 1, "calib_samples": 50,
        "stages": [{"finetune": {"epochs": 3, "lr": 3.0e-4, "batch_size": 16}},
                   {"prune": {"method": "structured", "heads": 0.25, "ffn": 0.3,
                              "recovery": {"epochs": 2, "lr": 1.0e-4, "batch_size": 16}}},
                   {"trim_vocab": {}}],
        "targets": ["torchscript-mobile"],
        "gate": {"max_accuracy_drop": 0.15},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert pack_from_recipe(path, tmp_path / "bundle", force=False, archive=False, progress=False) == 0
    manifest = Manifest.load(tmp_path / "bundle")
    rows = {r["stage"]: r for r in manifest.stages}
    assert rows["finetune"]["test_accuracy"] >= 0.85
    assert "prune" in rows and rows["prune"]["params"] < rows["finetune"]["params"]
    assert manifest.model.vocab_size < 5000
    assert manifest.targets[0].parity.accuracy >= rows["finetune"]["test_accuracy"] - 0.15
    assert rows["gate"]["details"]["passed"] is True
