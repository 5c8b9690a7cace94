#!/usr/bin/env python3
"""Pack a tiny random model of one HF architecture to every target, per task, and print what passed.

How a model family earns its line in ``packager/families.py``: run this for its ``model_type`` with the
layout it would declare; the targets and tasks that pack *and pass parity* are the ones to declare.

    .venv/bin/python scripts/verify_model_family.py mpnet --layers encoder.layer
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_type")
    ap.add_argument("--layers", default="encoder.layer", help="where the encoder blocks live under the base model")
    ap.add_argument("--tasks", default=None, help="comma list [default: all four]")
    ap.add_argument("--targets", default=None, help="comma list [default: every registered target]")
    ap.add_argument("--json", type=Path, default=None, help="also write the verdicts here")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import TINY_FAMILY_TASKS as TASKS, save_tiny_of_family as save_tiny, tiny_vocab
    from packager import families
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model
    from targets import TARGETS

    declared = families.family_of(args.model_type)
    if declared is None:
        families.register(families.ModelFamily(name=f"candidate-{args.model_type}", model_types=(args.model_type,),
                                               layers=args.layers, mask_form="additive-4d"))
    else:  # try its undeclared cells too: the family as declared, widened to every task and target for this run
        families.FAMILIES[declared.name] = dataclasses.replace(declared, tasks=families.ALL, targets=families.ALL)
    targets = args.targets.split(",") if args.targets else sorted(TARGETS)
    verdicts: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in (args.tasks.split(",") if args.tasks else TASKS):
            model_dir = save_tiny(args.model_type, task, Path(tmp) / task / "model", tiny_vocab())
            loaded = load_model(str(model_dir), task)
            refused = families.task_refusals(task, targets)  # a target that cannot carry the task's output
            result = pack_model(loaded, Path(tmp) / task / "bundle", [t for t in targets if t not in refused], 32,
                                builtin_sample()[:20], allow_parity_failure=True, force=True)
            verdicts[task] = {t.name: t.status if t.status != "failed" else f"failed: {(t.error or '')[:120]}"
                              for t in result.manifest.targets}
            verdicts[task].update({name: f"refused: {why}" for name, why in refused.items()})
            for name, verdict in verdicts[task].items():
                print(f"{args.model_type:12s} {task:28s} {name:24s} {verdict}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model_type": args.model_type, "verdicts": verdicts}, indent=2))
    ok = all(v == "ok" or v.startswith("refused: ") for task in verdicts.values() for v in task.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
