#!/usr/bin/env python3
"""Pack a tiny random model of one HF architecture to every target, per task, and print what passed.

How a model family earns its line in ``packager/families.py``: run this for its ``model_type`` with the
layout it would declare; the targets and tasks that pack *and pass parity* are the ones to declare.

    .venv/bin/python scripts/verify_model_family.py mpnet --layers encoder.layer
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = ("feature-extraction", "sequence-classification", "token-classification", "multi-label-classification")
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             max_position_embeddings=130)


def save_tiny(model_type: str, task: str, out: Path, vocab: list[str]) -> Path:
    import torch
    import transformers
    from transformers import AutoConfig, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=128)
    extra = {"embedding_size": 64} if model_type in ("albert", "electra") else {}
    config = AutoConfig.for_model(model_type, vocab_size=len(vocab), pad_token_id=0, **SMALL, **extra)
    config.num_labels = 4
    if task == "multi-label-classification":
        config.problem_type = "multi_label_classification"
    auto = {"feature-extraction": "AutoModel", "sequence-classification": "AutoModelForSequenceClassification",
            "multi-label-classification": "AutoModelForSequenceClassification",
            "token-classification": "AutoModelForTokenClassification"}[task]
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_type")
    ap.add_argument("--layers", default="encoder.layer", help="where the encoder blocks live under the base model")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--targets", default=None, help="comma list [default: every registered target]")
    ap.add_argument("--json", type=Path, default=None, help="also write the verdicts here")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_vocab  # the suite's tiny WordPiece vocab over the built-in texts
    from packager import families
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model
    from targets import TARGETS

    if families.family_of(args.model_type) is None:
        families.register(families.ModelFamily(name=f"candidate-{args.model_type}", model_types=(args.model_type,),
                                               layers=args.layers, mask_form="additive-4d"))
    targets = args.targets.split(",") if args.targets else sorted(TARGETS)
    verdicts: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            model_dir = save_tiny(args.model_type, task, Path(tmp) / task / "model", tiny_vocab())
            loaded = load_model(str(model_dir), task)
            result = pack_model(loaded, Path(tmp) / task / "bundle", targets, 32, builtin_sample()[:20],
                                allow_parity_failure=True, force=True)
            verdicts[task] = {t.name: t.status if t.status != "failed" else f"failed: {(t.error or '')[:120]}"
                              for t in result.manifest.targets}
            for name, verdict in verdicts[task].items():
                print(f"{args.model_type:12s} {task:28s} {name:24s} {verdict}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model_type": args.model_type, "verdicts": verdicts}, indent=2))
    ok = all(v == "ok" for task in verdicts.values() for v in task.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
