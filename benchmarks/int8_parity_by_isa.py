"""int8 parity by CPU ISA: each int8 artifact of embedding bundles against `SentenceTransformer.encode` on texts the
pack never saw, end to end (the bundle's own tokenizer and runner, batch 1, real lengths), on this host's kernels.

    python benchmarks/int8_parity_by_isa.py --bundle out/minilm --bundle out/mpnet \
        --texts ../shared/data/clinc150/data_oos_plus.json [--n 220] [--rounds 3]

int8 numerics depend on the kernels (x86 AVX2 vs AVX-512 VNNI, ARM dot product), so every row records the host's
ISA; the results file (`benchmarks/results/int8_parity_by_isa.json`) keeps one entry per ISA × bundle × target, so
runs on different hosts add up to the per-ISA table (`.md`). A bundle packed with the precision fallback shows which
op groups stayed float. With ``--rounds N`` every int8 artifact is also timed end to end (text in, output out,
batch 1, one thread), all of them side by side in the same run, round-robin, N rounds over the texts: the table
gives each one's median ms per text and its ratio to the fastest (quantization schemes trade speed for fidelity;
the ratio holds on this host only, so the row keeps the ISA and the load average at the time).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "int8_parity_by_isa"
GATE = 0.99


def unseen_texts(path: Path, n: int) -> list[str]:
    """``n`` CLINC150 test utterances spread over the split (in-scope and out-of-scope), none used at pack time."""
    data = json.loads(path.read_text())
    pool = [t for t, _ in data["test"]] + [t for t, _ in data["oos_test"]]
    step = max(1, len(pool) // n)
    return pool[::step][:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", type=Path, required=True, help="an embedding bundle (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="a name per --bundle (default: the folder name)")
    parser.add_argument("--model", action="append", default=[],
                        help="the model folder of each --bundle, in order, for the sentence-transformers reference; "
                             "'default': the manifest's source when it is a folder, else the built-in all-MiniLM-L6-v2 "
                             "(give one per --bundle, or none)")
    parser.add_argument("--texts", type=Path, required=True, help="CLINC150 data_oos_plus.json")
    parser.add_argument("--n", type=int, default=220)
    parser.add_argument("--rounds", type=int, default=0,
                        help="time each int8 artifact over the texts this many rounds, side by side (0: no timing)")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from device_bench.fingerprint import cpu_isa, cpu_model, kernel_tag
    from device_bench.manifest import Manifest
    from device_bench.parity import cosines
    from device_bench.predict import Bundle

    if not args.texts.is_file():
        parser.error(f"--texts {args.texts}: no such file")
    if args.model and len(args.model) != len(args.bundle):
        parser.error(f"--model: give one per --bundle ({len(args.bundle)}), 'default' for the manifest's own")
    texts = unseen_texts(args.texts, args.n)
    isa = cpu_isa()
    kernel = kernel_tag(isa)  # avx2_masked: `edgepack isa-mask avx2` on a newer CPU, a row of its own
    rows = []
    runners = []
    for i, bundle in enumerate(args.bundle):
        manifest = Manifest.load(bundle)
        if manifest.task != "feature-extraction":
            parser.error(f"{bundle}: a {manifest.task} bundle (this benchmark compares embeddings)")
        label = args.label[i] if i < len(args.label) else bundle.name
        source = args.model[i] if args.model and args.model[i] != "default" else manifest.model.source
        if not Path(source).is_dir():
            from packager.models import default_model_path

            source = str(default_model_path())
        st = SentenceTransformer(source, device="cpu")
        st.max_seq_length = manifest.input_spec.seq_len
        reference = st.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
        for entry in manifest.runnable_targets():
            if "int8" not in entry.precision:
                continue
            runner = Bundle(bundle, target=entry.name, threads=1)
            got = runner.outputs(texts)
            cos = cosines(reference, got)
            fallback = entry.details.get("precision_fallback") or {}
            rows.append({"isa": kernel, "cpu": cpu_model(), "bundle": label, "target": entry.name,
                         "precision": entry.precision, "texts": len(texts),
                         "mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
                         "pack_mean_cosine": round(float(entry.parity.mean_cosine), 4) if entry.parity else None,
                         "float_groups": fallback.get("float_groups", []) if fallback.get("passed") else [],
                         "options": entry.details.get("options", {}),
                         "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            runners.append((rows[-1], runner))
            print(json.dumps(rows[-1]), flush=True)
    if args.rounds:
        _time_side_by_side(runners, texts, args.rounds)
    write_results(rows, len(texts))
    print(RESULTS.with_suffix(".md").read_text())
    return 0


def write_results(rows: list[dict], n_texts: int) -> None:
    """Merge ``rows`` into the results file (one row per ISA × bundle × target) and rewrite its table."""
    path = RESULTS.with_suffix(".json")
    kept = [r for r in (json.loads(path.read_text()) if path.is_file() else [])
            if (r["isa"], r["bundle"], r["target"]) not in {(x["isa"], x["bundle"], x["target"]) for x in rows}]
    table = sorted(kept + rows, key=lambda r: (r["bundle"], r["target"], r["isa"]))
    path.write_text(json.dumps(table, indent=1) + "\n")
    lines = ["| bundle | target | scheme | host ISA (int8 kernels) | precision fallback kept in float | pack mean cos | "
             f"unseen mean cos | unseen min cos | min ≥ {GATE} | ms/text, 1 thread (× fastest of its run) |",
             "|---|---|---|---|---|---:|---:|---:|---|---:|"]
    for r in table:
        timing = (f"{r['ms_per_text']} (×{r['vs_fastest']}, load {r['load_average']})" if r.get("ms_per_text")
                  else "not timed")
        lines.append(f"| {r['bundle']} | {r['target']} | {_scheme(r)} | {r['isa']} ({r['cpu']}) | "
                     f"{', '.join(r['float_groups']) or 'none'} | {r['pack_mean_cosine']} | {r['mean_cosine']} | "
                     f"{r['min_cosine']} | {'yes' if r['min_cosine'] >= GATE else 'no'} | {timing} |")
    RESULTS.with_suffix(".md").write_text(
        f"# int8 parity by ISA: {n_texts} unseen CLINC150 test texts vs SentenceTransformer.encode\n\n"
        "Written by `benchmarks/int8_parity_by_isa.py` (one row per ISA × bundle × target; each row from the host "
        "named; `_masked`: that family's kernels emulated on the CPU named, by `edgepack isa-mask`).\n\n"
        + "\n".join(lines) + "\n")


def _scheme(row: dict) -> str:
    """How the row's artifact was quantized, from its options (rows of older runs: the defaults of then)."""
    options = row.get("options", {})
    if row["target"] == "onnx-int8":
        scheme = options.get("scheme", "dynamic")
        return (f"blockwise {options.get('block_size', 32)}" if scheme == "blockwise"
                else f"dynamic, {options.get('weights', 'int8')} weights")
    if row["target"] in ("tflite-int8", "torchscript-mobile"):
        return f"rotation {options.get('rotation', 'none')}"
    return "-"


def _time_side_by_side(runners: list, texts: list[str], rounds: int) -> None:
    """Median over rounds of each runner's mean ms per text; runners alternate within a round (same conditions)."""
    import numpy as np

    per_round: dict[int, list[float]] = {i: [] for i in range(len(runners))}
    for _ in range(rounds):
        for i, (_row, runner) in enumerate(runners):
            started = time.perf_counter()
            for text in texts:
                runner.outputs([text])
            per_round[i].append((time.perf_counter() - started) * 1000 / len(texts))
    medians = {i: float(np.median(v)) for i, v in per_round.items()}
    fastest = min(medians.values())
    load = round(os.getloadavg()[0], 2)
    for i, (row, _runner) in enumerate(runners):
        row.update(ms_per_text=round(medians[i], 2), vs_fastest=round(medians[i] / fastest, 2), timing_rounds=rounds,
                   load_average=load)
        print(f"{row['bundle']:<36}{row['target']:<13}{medians[i]:8.2f} ms/text  ×{medians[i] / fastest:.2f}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
