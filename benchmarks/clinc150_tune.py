"""CLINC150: `edgepack tune` against the hand-made recipe (the MiniLM-L6 teacher chain of ``clinc150.py``).

The recipe is the case study's hand-made chain — the built-in MiniLM-L6 fine-tuned as the teacher, a student
of teacher layers [0, 2, 4] distilled from it, structured pruning (heads −25 %, FFN −50 %, one epoch of
recovery), the vocabulary trimmed to the train+validation tokens + the top 5000 ids, tflite-int8 — plus a
``search_space``. ``edgepack tune`` (the real command, in a subprocess) searches it; its first trial is the
recipe as written. Then, in one run on one machine (or one agent, ``--device``), this script benchmarks the
tuned winner's tflite-int8 and the hand-made recipe's (trial 0, packed with ``--pack-trial 0``) on the
CLINC150 test texts at their real lengths, and says whether the winner dominates: more accurate on the test
split and at least as fast.

Everything is cached under ``--cache``: the study, its stage cache and the two bundles; a rerun after an
interruption continues the study where it stopped. Benchmarks need a quiet machine: check ``uptime``.

    .venv/bin/python benchmarks/clinc150_tune.py --data ../shared/data/clinc150/data_oos_plus.json \\
        --trials 10 --timeout 3h
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from clinc150 import load_clinc, log  # noqa: E402
from packager.tune.records import signed_points  # noqa: E402

#: the hand-made chain of ``clinc150.py --setting minilm`` (its defaults), as recipe stages
HANDMADE_STAGES = [
    {"finetune": {"epochs": 3, "lr": 1.5e-4, "batch_size": 32}},
    {"distill": {"student": {"layers": [0, 2, 4]}, "temperature": 4.0, "alpha": 0.3, "epochs": 2, "lr": 2.0e-4,
                 "batch_size": 32}},
    {"prune": {"method": "structured", "heads": 0.25, "ffn": 0.5, "importance_batches": 64,
               "recovery": {"epochs": 1, "lr": 1.0e-4, "temperature": 4.0, "alpha": 0.3}}},
    {"trim_vocab": {"splits": ["train", "validation"], "keep_top": 5000}},
]
#: what tune may turn (the hand-made values lie inside, so trial 0 is the recipe as written)
SEARCH_SPACE = {
    "distill.alpha": [0.0, 1.0],
    "distill.temperature": [1.0, 8.0],
    "distill.lr": None,
    "distill.epochs": [1, 4],
    "distill.student.layers": [2, 5],
    "prune.heads": [0.0, 0.5],
    "prune.ffn": [0.0, 0.6],
    "trim_vocab.keep_top": [0, 5000],
}


def write_inputs(data_path: Path, cache: Path, seq_len: int, threads: int, intents: int | None) -> Path:
    """CLINC150 as JSONL splits (oos folded in) and the recipe, under ``cache``."""
    data = load_clinc(data_path, intents)
    folder = cache / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        part = getattr(data, split)
        rows = (json.dumps({"text": t, "intent": data.labels[l]}) for t, l in zip(part.texts, part.labels))
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    recipe = {"task": "sequence-classification",
              "data": {"train": "data/train.jsonl", "validation": "data/validation.jsonl", "test": "data/test.jsonl",
                       "text_column": "text", "label_column": "intent"},
              "seq_len": seq_len, "threads": threads, "stages": HANDMADE_STAGES, "targets": ["tflite-int8"],
              "search_space": SEARCH_SPACE,
              # both bundles are packed whatever they lose on test: this script's table is the verdict (the
              # tune's budget applies to the validation split, as always)
              "gate": {"max_accuracy_drop": 1.0}}
    path = cache / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def edgepack(args: list[str], log_path: Path) -> int:
    """``edgepack`` in a subprocess, its output appended to ``log_path`` (and the last lines echoed)."""
    exe = Path(sys.executable).with_name("edgepack")
    log(f"edgepack {' '.join(args)}")
    with open(log_path, "a") as out:
        code = subprocess.call([str(exe), *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    tail = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()][-3:]
    for line in tail:
        print("    " + line[:200])
    return code


def tune_summary(bundle: Path) -> dict:
    from device_bench.manifest import Manifest

    return next(r for r in Manifest.load(bundle).stages if r["stage"] == "tune")["details"]


def bench(bundle: Path, target: str, texts: list[str], runs: int, threads: int, device: str | None,
          token_file: Path | None):
    """p50 ± std of the bundle's ``target`` on ``texts`` (tokenized by the bundle's tokenizer), here or on the
    agent; the same path as ``edgepack bench --texts``."""
    from device_bench.bench import bench_bundle, BenchOptions
    from device_bench.client import AgentClient, read_token
    from device_bench.texts import bundle_with_texts

    texts_file = bundle.parent / f".{bundle.name}-texts.txt"
    texts_file.write_text("\n".join(texts) + "\n")
    try:
        with bundle_with_texts(bundle, texts_file) as view:
            if device is None:
                report = bench_bundle(view, targets=[target], runs=runs, min_seconds=0.0, warmup=20,
                                      threads=[threads])
            else:
                opts = BenchOptions(targets=[target], runs=runs, min_seconds=0.0, warmup=20, threads=[threads])
                report = AgentClient(device, read_token(None, token_file)).bench(view, opts.to_remote())
    finally:
        texts_file.unlink(missing_ok=True)
    (res,) = report.results
    if res.status != "ok":
        raise SystemExit(f"clinc150_tune: benchmark of {bundle}: {res.error or res.status}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="data_oos_plus.json of CLINC150")
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "clinc150-tune")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--timeout", default=None, help="tune's --timeout (2h, 90m)")
    ap.add_argument("--max-accuracy-drop", type=float, default=0.015,
                    help="tune's budget on validation accuracy (the #10 goal for this chain: lose at most 1.5 pt)")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="training threads and every timed run's threads")
    ap.add_argument("--runs", type=int, default=300, help="timed runs of each final bundle")
    ap.add_argument("--device", default=None, help="tune and benchmark on this edgepack-agent")
    ap.add_argument("--token-file", type=Path, default=None)
    ap.add_argument("--skip-tune", action="store_true", help="only pack and benchmark what the study holds")
    ap.add_argument("--intents", type=int, default=None, help="smoke run: the first N intents (+ oos) only")
    ap.add_argument("--same-speed-within", type=float, default=0.02,
                    help="p50s closer than this fraction count as equally fast (two runs of one artifact here "
                         "differ by 1-4%%: a 3-layer bundle measured 0.423 and 0.426 ms, the teacher 8.29 and 8.61)")
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=BUNDLE",
                    help="another tuned bundle (say, another study's --pack-trial) benchmarked in the same run and "
                         "judged against the hand-made one the same way")
    args = ap.parse_args()
    also = []
    for item in args.also:
        label, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "manifest.json").is_file():
            print(f"clinc150_tune: --also {item}: expected LABEL=BUNDLE with a packed bundle", file=sys.stderr)
            return 2
        also.append((label, Path(folder).resolve()))
    if not args.data.is_file():
        print(f"clinc150_tune: --data {args.data}: no such file", file=sys.stderr)
        return 2
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    recipe = write_inputs(args.data, cache, args.seq_len, args.threads, args.intents)
    work, winner, handmade = cache / "work", cache / "winner", cache / "handmade"
    common = ["--recipe", str(recipe), "--max-accuracy-drop", str(args.max_accuracy_drop), "--work", str(work),
              "--bench-runs", "100", "--bench-seconds", "1", "--force"]
    if args.device:
        common += ["--device", args.device] + (["--token-file", str(args.token_file)] if args.token_file else [])
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    log_path = cache / "tune.log"
    if not args.skip_tune:
        started = time.perf_counter()
        code = edgepack(["tune", *common, "--trials", str(args.trials), "-o", str(winner),
                         *(["--timeout", args.timeout] if args.timeout else [])], log_path)
        log(f"tune exited {code} after {time.perf_counter() - started:.0f} s")
        if code not in (0, 1):
            return code
    if args.skip_tune and (handmade / "manifest.json").is_file():
        log(f"hand-made recipe: reusing {handmade}")
    elif edgepack(["tune", *common, "--pack-trial", "0", "-o", str(handmade)], log_path) != 0:
        print("clinc150_tune: packing trial 0 (the recipe as written) failed; see " + str(log_path), file=sys.stderr)
        return 1
    if not (winner / "manifest.json").is_file():
        print("clinc150_tune: no winner bundle (no trial within the budget); see " + str(log_path), file=sys.stderr)
        return 1
    report(args, cache, winner, handmade, also)
    return 0


def teacher_bundle(cache: Path, work: Path, data, seq_len: int) -> Path:
    """The fine-tuned teacher (the study's cached finetune output) as torchscript-mobile-fp32, the fp32 row of
    ``clinc150.py``'s tables; packed once."""
    from packager.models import load_model
    from packager.pack import pack_model

    bundle = cache / "teacher-bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    (folder,) = [p.parent for p in (work / "stages").glob("*/meta.json")
                 if json.loads(p.read_text())["row"]["stage"] == "finetune"]
    loaded = load_model(str(folder / "model"), "sequence-classification", labels=data.labels)
    log("pack the fine-tuned teacher: torchscript-mobile-fp32")
    pack_model(loaded, bundle, ["torchscript-mobile-fp32"], seq_len, data.train.texts[:64],
               labelled=(data.test.texts, data.test.labels), force=True)
    return bundle


def trial_table(summary: dict) -> list[str]:
    lines = ["| trial | knobs | val acc % | Δ val pt | latency ms | size MB | kept float (fallback) | front | state |",
             "|---:|---|---:|---:|---:|---:|---|:-:|---|"]
    for t in summary["trials"]:
        knobs = ", ".join(f"{k.split('.', 1)[1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                          for k, v in t["knobs"].items())
        scored = t["state"] == "complete"
        cells = [f"{t['val_accuracy'] * 100:.2f}", signed_points(-t["accuracy_drop"]), f"{t['latency_ms']:.3f}",
                 f"{t['size_bytes'] / 1e6:.2f}"] if scored else ["-"] * 4
        state = "winner" if t["number"] == summary["winner"] else t["state"] + (f": {t['error']}" if t["error"] else "")
        kept = ", ".join(t.get("float_groups") or []) or "-"
        if t.get("int8_val_accuracy") is not None:
            kept += f" (all-int8 val {t['int8_val_accuracy'] * 100:.2f}%)"
        lines.append(f"| {t['number']} | {knobs} | {' | '.join(cells)} | {kept} | {'★' if t['pareto'] else ''} | "
                     f"{state} |")
    return lines


def report(args, cache: Path, winner: Path, handmade: Path, also: list[tuple[str, Path]]) -> None:
    from device_bench.manifest import Manifest

    data = load_clinc(args.data, args.intents)
    summary = tune_summary(winner)
    rows = []
    teacher_dir = teacher_bundle(cache, cache / "work", data, args.seq_len)
    for name, bundle, target in (("fine-tuned MiniLM-L6 teacher (fp32)", teacher_dir, "torchscript-mobile-fp32"),
                                 ("hand-made recipe (trial 0)", handmade, "tflite-int8"),
                                 (f"tuned (trial {summary['winner']})", winner, "tflite-int8"),
                                 *((label, folder, "tflite-int8") for label, folder in also)):
        manifest = Manifest.load(bundle)
        (entry,) = [t for t in manifest.targets if t.name == target]
        log(f"benchmark {name}: {args.runs} runs on the {len(data.test.texts)} test texts")
        res = bench(bundle, target, data.test.texts, args.runs, args.threads, args.device, args.token_file)
        rows.append({"name": name, "target": target, "bundle": str(bundle), "test_accuracy": entry.parity.accuracy,
                     "size_mb": entry.size_bytes / 1e6, "p50_ms": res.latency_ms.p50, "std_ms": res.latency_ms.std,
                     "peak_rss_mb": res.peak_rss_mb, "noisy": bool(res.noise and res.noise.noisy),
                     "layers": manifest.model.num_layers})
    teacher_row, hand, tuned, *extra = rows
    tolerance = 1.0 + args.same_speed_within
    beats = lambda r: r["test_accuracy"] > hand["test_accuracy"] and r["p50_ms"] <= hand["p50_ms"] * tolerance
    dominates = beats(tuned)
    teacher = teacher_row["test_accuracy"]
    lines = ["# CLINC150: `edgepack tune` against the hand-made recipe (MiniLM-L6 teacher chain)", "",
             f"Teacher: the built-in MiniLM-L6 fine-tuned here (test {teacher * 100:.2f}%). Budget: "
             f"{summary['max_accuracy_drop'] * 100:g} pt of validation accuracy. Benchmarked "
             f"{'on ' + args.device if args.device else 'here'}, {args.threads} thread(s), "
             f"{args.runs} runs over the {len(data.test.texts)} test texts at their real lengths, all in one run.", "",
             "| bundle | artifact | layers | test acc % | Δ vs teacher (pt) | size MB | × smaller | p50 ± std ms | "
             "× faster | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['target']} | {r['layers']} | {r['test_accuracy'] * 100:.2f} | "
                     f"{signed_points(r['test_accuracy'] - teacher)} | {r['size_mb']:.2f} | "
                     f"{teacher_row['size_mb'] / r['size_mb']:.1f} | "
                     f"{r['p50_ms']:.3f} ± {r['std_ms']:.3f}{' (noisy)' if r['noisy'] else ''} | "
                     f"{teacher_row['p50_ms'] / r['p50_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
    for r in [tuned, *extra]:
        lines += ["", f"{r['name']} {'dominates' if beats(r) else 'does NOT dominate'} the hand-made bundle "
                      f"({signed_points(r['test_accuracy'] - hand['test_accuracy'])} pt, "
                      f"{hand['p50_ms'] / r['p50_ms']:.3f}× the speed; at least as fast means a p50 at most "
                      f"{args.same_speed_within * 100:g}% above the hand-made one's, the run-to-run spread here)."]
    lines += ["", "## Trials (validation split)", "", *trial_table(summary)]
    name = "clinc150-tune" if args.intents is None else f"clinc150-tune-{args.intents}intents"
    plots = {}
    for k, (label, folder) in enumerate(also, 1):
        other = tune_summary(folder)
        lines += ["", f"## {label}: its study's trials (validation split)", "", *trial_table(other)]
        if other.get("plot") and Path(other["plot"]).is_file():
            plots[args.out / f"{name}-also{k}.png"] = other["plot"]
            lines += ["", f"Plot: `{name}-also{k}.png`."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"rows": rows, "dominates": dominates,
                                                             "also_dominate": {r["name"]: beats(r) for r in extra},
                                                             "tune": summary}, indent=1, default=str))
    if summary.get("plot") and Path(summary["plot"]).is_file():
        shutil.copy(summary["plot"], args.out / f"{name}.png")
    for target, source in plots.items():
        shutil.copy(source, target)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
