"""Where a CLINC150 student's points go against its teacher: in-scope accuracy, ``oos`` recall, and how often the
student agrees with the teacher off the labelled data (the texts a distillation's transfer set may add).

    python benchmarks/clinc150_gap.py --data ../shared/data/clinc150/data_oos_plus.json \
        --cache benchmarks/.cache/clinc150-book --teacher mpnet-teacher \
        --students mpnet-lever-9136ef98b1c9,mpnet-lever-296eedf2a7b5 [--probe 500]

Each model is a folder under ``--cache`` (what ``benchmarks/clinc150.py`` caches: a saved sequence-classification
model and its tokenizer). fp32 PyTorch, test split (5,500 texts, 1,000 of them ``oos``). Probes (``--probe`` texts
each, seeded): splices of two training texts (``augment.splice``), word strings as long as a training text drawn
from the training words (``augment.words``), both with another seed than a transfer set's, so no student trained
on them, and in-scope validation texts; for each, the share the teacher labels ``oos`` and the share where the
student's argmax equals the teacher's. Writes ``<out>/<name>.md`` and ``.json`` with the host's ISA.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def probes(data, oos: int, count: int, seed: int = 0) -> dict[str, list[str]]:
    """The off-data texts the students are compared with the teacher on (seeded)."""
    from packager.stages.distill.augment import splice_texts, word_strings

    rng = random.Random(seed)
    # another seed than a transfer set's (42): texts no student trained on
    spliced, strings = splice_texts(data.train.texts, 2, seed), word_strings(data.train.texts, 1, seed)
    in_scope = [t for t, y in zip(data.validation.texts, data.validation.labels) if y != oos]
    return {"splices of two training texts": rng.sample(spliced, min(count, len(spliced))),
            "word strings of the training words": rng.sample(strings, min(count, len(strings))),
            "in-scope validation texts": rng.sample(in_scope, min(count, len(in_scope)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="data_oos_plus.json of CLINC150")
    ap.add_argument("--cache", type=Path, required=True, help="the folder the models are cached in")
    ap.add_argument("--teacher", required=True, help="the teacher's folder under --cache")
    ap.add_argument("--students", required=True, help="comma-separated student folders under --cache")
    ap.add_argument("--probe", type=int, default=500, help="texts per probe")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="clinc150-book-gap")
    args = ap.parse_args(argv)
    names = [args.teacher] + [s.strip() for s in args.students.split(",") if s.strip()]
    missing = [n for n in names if not (args.cache / n / "config.json").is_file()]
    if not args.data.is_file() or missing:
        print(f"clinc150_gap: {'no model folder ' + ', '.join(missing) if missing else f'--data {args.data}: no such file'}",
              file=sys.stderr)
        return 2

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from clinc150 import load_clinc
    from device_bench.fingerprint import cpu_isa
    from packager.training.evaluate import gather_logits

    torch.set_num_threads(args.threads)
    data = load_clinc(args.data, None)
    oos = data.labels.index("oos")
    truth = np.array(data.test.labels)
    in_scope = truth != oos
    texts = probes(data, oos, args.probe)
    rows: list[dict[str, Any]] = []
    teacher_argmax: dict[str, np.ndarray] = {}
    for name in names:
        folder = args.cache / name
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        predicted = gather_logits(model, tokenizer, data.test.texts, args.seq_len).argmax(1)
        row = {"model": name, "accuracy": float((predicted == truth).mean()),
               "in_scope_accuracy": float((predicted[in_scope] == truth[in_scope]).mean()),
               "oos_recall": float((predicted[~in_scope] == oos).mean()),
               "oos_on_in_scope": float((predicted[in_scope] == oos).mean()), "probes": {}}
        for probe, batch in texts.items():
            argmax = gather_logits(model, tokenizer, batch, args.seq_len).argmax(1)
            if name == args.teacher:
                teacher_argmax[probe] = argmax
            row["probes"][probe] = {"labelled_oos": float((argmax == oos).mean()),
                                    "agrees_with_teacher": float((argmax == teacher_argmax[probe]).mean())}
        rows.append(row)
        print(f"{name}: test {row['accuracy']:.4f}, in-scope {row['in_scope_accuracy']:.4f}, "
              f"oos recall {row['oos_recall']:.4f}", file=sys.stderr, flush=True)

    lines = ["# CLINC150: where a student's points go against its teacher", "",
             f"fp32 PyTorch, test split ({len(truth)} texts, {int((~in_scope).sum())} `oos`); probes of "
             f"{args.probe} texts each. Host ISA: {' '.join(cpu_isa())}.", "",
             "| model | test acc % | in-scope acc % | `oos` recall % | `oos` predicted on in-scope % |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['accuracy'] * 100:.2f} | {r['in_scope_accuracy'] * 100:.2f} | "
              f"{r['oos_recall'] * 100:.1f} | {r['oos_on_in_scope'] * 100:.2f} |" for r in rows]
    lines += ["", "Off the labelled data: share labelled `oos` / share agreeing with the teacher's argmax, %", "",
              "| model | " + " | ".join(texts) + " |", "|---|" + "---:|" * len(texts)]
    lines += [f"| {r['model']} | " + " | ".join(f"{p['labelled_oos'] * 100:.1f} / {p['agrees_with_teacher'] * 100:.1f}"
                                                for p in r["probes"].values()) + " |" for r in rows]
    command = "python benchmarks/clinc150_gap.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += ["", "```", command, "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    (args.out / f"{args.name}.json").write_text(json.dumps({"rows": rows, "isa": cpu_isa(), "command": command},
                                                           indent=1))
    print(f"wrote {args.out / args.name}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
