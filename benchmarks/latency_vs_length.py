"""Latency against input length: edgepack's targets vs eager PyTorch, sentence-transformers and ONNX Runtime, in ONE run.

    python benchmarks/latency_vs_length.py                       # default model, 1 thread and all cores
    python benchmarks/latency_vs_length.py --runs 3 --min-seconds 0 --targets tflite-int8,onnx-int8   # smoke run

Measured side by side, same threads: eager PyTorch fp32 at the real length;
sentence-transformers (the model's own ``SentenceTransformer`` forward, fp32);
plain ONNX Runtime fp32 and int8 exported the one-line way (``torch.onnx.export``
with a dynamic sequence axis + ``quantize_dynamic``: the peer a user gets
without edgepack); the ORT-fused int8 peer (eager-attention export,
``optimize_model(model_type="bert")``, ``quantize_dynamic``: see
``benchmarks/fused_int8.py``); edgepack's static-128 artifacts as packed before buckets
(``--buckets none``); and every edgepack target of the default pack (buckets /
dynamic). Each is timed at lengths 8, 16, 32, 64, 128 (inputs of exactly N
tokens) and on the real-length distribution of the built-in texts and of
CLINC150 test. edgepack artifacts run in device_bench worker subprocesses
(fresh process, pinned); the peers and eager PyTorch run in this process with
the same warm-up/timing loop. Next to each latency: the MACs the run did
(padded length) and the MACs the input needs (real length), from the bundle
manifest's formula (``device_bench.compute``, counted at pack time), and the
achieved GMAC/s. The host's ISA (``/proc/cpuinfo`` flags) and load average
are recorded with the table. The noise guard
of the worker is applied to every row (other processes' CPU, CV): check
``noisy`` before quoting anything.

Writes ``benchmarks/results/latency_vs_length_<int8 kernel family>.{md,png,json}`` (e.g. ``_avx2``, ``_amx_int8``) with the machine
fingerprint and the command. Bundles and peer exports are cached under
``--cache`` (a rerun reuses them).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

LENGTHS = (8, 16, 32, 64, 128)
DEFAULT_TARGETS = ("tflite-int8", "tflite-fp32", "tflite-int8-full", "onnx-int8", "onnx-fp32", "torchscript-mobile", "executorch",
                   "executorch-int8")
CLINC = ROOT.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json"


@dataclass
class Row:
    variant: str
    threads: int
    inputs: str  # "len=N" or "real:builtin" / "real:clinc150"
    p50_ms: float
    p90_ms: float
    p99_ms: float
    runs: int
    gmac_done: float  # at the length the run padded to
    gmac_needed: float  # at the real length
    noisy: bool
    noise: str = ""
    gmac_per_s: float | None = None  # GMAC done per p50: the distance to the chip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tokenized(tokenizer, texts: list[str], seq_len: int) -> list[dict[str, Any]]:
    import numpy as np

    enc = tokenizer(texts, truncation=True, max_length=seq_len)
    return [{"input_ids": np.asarray([ids], np.int32), "attention_mask": np.ones((1, len(ids)), np.int32)}
            for ids in enc["input_ids"]]


def exact_length(feed: dict[str, Any], n: int) -> dict[str, Any]:
    from device_bench.worker import length_feed

    return length_feed(feed, n)


def clinc_texts(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [t for t, _ in data.get("test", [])][:limit]


def write_samples(path: Path, feeds: list[dict[str, Any]], seq_len: int) -> Path:
    import numpy as np

    n = len(feeds)
    ids = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.int32)
    lengths = np.zeros(n, np.int32)
    for i, f in enumerate(feeds):
        k = f["input_ids"].shape[1]
        ids[i, :k], mask[i, :k], lengths[i] = f["input_ids"][0], 1, k
    np.savez(path, input_ids=ids, attention_mask=mask, lengths=lengths)
    return path


# -- in-process timing (peers, eager PyTorch) -----------------------------------------------------

def time_callable(fn, feeds: list[dict[str, Any]], runs: int, min_seconds: float, warmup: int) -> dict[str, Any]:
    import numpy as np

    from device_bench.worker import _cpu_seconds, _noise, _other_busy_seconds, latency_stats

    for k in range(warmup):
        fn(feeds[k % len(feeds)])
    times: list[int] = []
    busy0, cpu0, start = _other_busy_seconds(), _cpu_seconds(), time.perf_counter_ns()
    k = 0
    while k < max(runs, len(feeds) if len(feeds) > 1 else 0) or time.perf_counter_ns() - start < min_seconds * 1e9:
        t0 = time.perf_counter_ns()
        fn(feeds[k % len(feeds)])
        times.append(time.perf_counter_ns() - t0)
        k += 1
    wall = (time.perf_counter_ns() - start) / 1e9
    lengths = [feeds[j % len(feeds)]["input_ids"].shape[1] for j in range(len(times))]
    noise = _noise(times, lengths, busy0, _other_busy_seconds(), _cpu_seconds() - cpu0, wall)
    return {"stats": asdict(latency_stats(times)), "runs": len(times), "noise": asdict(noise),
            "mean_length": float(np.mean(lengths))}


def eager_fn(wrapper, threads: int):
    import torch

    torch.set_num_threads(threads)

    def run(feed):
        with torch.inference_mode():
            return wrapper(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"]))
    return run


def export_peers(model_dir: str, cache: Path) -> dict[str, Path]:
    """The ORT exports a user would write: the one-line export (dynamic axes, then quantize_dynamic, defaults) and
    the fused one (eager attention, optimize_model, quantize_dynamic): ``benchmarks/fused_int8.py`` makes both."""
    from fused_int8 import PEERS
    from fused_int8 import export_peers as export

    paths = export(model_dir, cache)
    return {"ort-fp32 (peer, dynamic axis)": cache / "peer-fp32.onnx", "ort-int8 (peer, dynamic axis)": paths[PEERS[0]],
            "ort-fused-int8 (peer, optimize_model bert)": paths[PEERS[1]]}


def st_forward_fn(model_dir: str, threads: int):
    """The model's own sentence-transformers pipeline (fp32 PyTorch), fed the same token ids."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu").eval()

    def run(feed):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return st({"input_ids": torch.from_numpy(feed["input_ids"]).long(),
                       "attention_mask": torch.from_numpy(feed["attention_mask"]).long()})["sentence_embedding"]
    return run


def ort_fn(path: Path, threads: int):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run(feed):
        mask = feed["attention_mask"].astype(np.int64)
        hidden = session.run(None, {"input_ids": feed["input_ids"].astype(np.int64), "attention_mask": mask})[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return run


# -- edgepack artifacts through the device worker -----------------------------------------------------

def time_artifact(bundle: Path, target: str, samples: Path, threads: int, lengths: list[int], args,
                  rows: int) -> dict[str, Any]:
    """Timing pass of the device worker: every sample row at least once (real lengths), then each length."""
    import dataclasses

    from device_bench.bench import choose_affinity, run_worker
    from device_bench.manifest import Manifest
    from device_bench.worker import WorkerArgs

    manifest = Manifest.load(bundle)
    entry = manifest.target(target)
    allowed = sorted(os.sched_getaffinity(0))
    wargs = WorkerArgs(mode="timing", runtime=entry.runtime, artifact=str(bundle / entry.file), samples=str(samples),
                       input_names=[t.name for t in manifest.input_spec.inputs], threads=threads, runs=max(args.runs, rows),
                       min_seconds=args.min_seconds, warmup=args.warmup, affinity=choose_affinity(threads, allowed),
                       shapes=dataclasses.asdict(entry.shapes) if entry.shapes else None,
                       seq_len=manifest.input_spec.seq_len, lengths=lengths, length_runs=max(5, args.runs))
    return asdict(run_worker(wargs, timeout_s=1800))


def pack(model: str | None, out: Path, targets: list[str], seq_len: int, buckets) -> Path:
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    if (out / "manifest.json").is_file():
        log(f"reusing {out}")
        return out
    log(f"packing {out.name}: {', '.join(targets)}")
    result = pack_model(load_model(model, "feature-extraction"), out, targets, seq_len, builtin_sample(), force=True,
                        buckets=buckets)
    for entry in result.manifest.targets:
        if entry.error:
            log(f"  {entry.name}: {entry.error}")
    return out


# -- the run ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model id or folder [default: built-in all-MiniLM-L6-v2]")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    ap.add_argument("--threads", default="1,all", help="comma list; 'all' = every allowed CPU")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--clinc", type=Path, default=CLINC)
    ap.add_argument("--clinc-limit", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "latency_vs_length")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    import numpy as np

    from device_bench.compute import gmac_per_s
    from device_bench.fingerprint import cpu_isa, fingerprint, kernel_tag
    from device_bench.manifest import Manifest
    from packager.calib import builtin_sample
    from packager.models import load_model

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    ncpu = len(os.sched_getaffinity(0))
    thread_counts = sorted({ncpu if t == "all" else int(t) for t in args.threads.split(",")})
    lengths = [n for n in LENGTHS if n <= args.seq_len]
    args.cache.mkdir(parents=True, exist_ok=True)
    tag = "default" if args.model is None else Path(args.model).name
    cache = args.cache / f"{tag}-{args.seq_len}"
    cache.mkdir(exist_ok=True)

    loaded = load_model(args.model, "feature-extraction")
    model_dir = loaded.model.name_or_path
    wrapper = loaded.task.make_wrapper(loaded.model)
    datasets = {"builtin": tokenized(loaded.tokenizer, builtin_sample(), args.seq_len)}
    clinc = clinc_texts(args.clinc, args.clinc_limit)
    if clinc:
        datasets["clinc150"] = tokenized(loaded.tokenizer, clinc, args.seq_len)
    samples = {name: write_samples(cache / f"samples-{name}.npz", feeds, args.seq_len) for name, feeds in datasets.items()}

    new = pack(args.model, cache / "buckets", targets, args.seq_len, "auto")
    static_targets = [t for t in ("tflite-int8", "onnx-int8") if t in targets]
    old = pack(args.model, cache / "static", static_targets, args.seq_len, None) if static_targets else None
    peers = export_peers(str(model_dir), cache)

    rows: list[Row] = []

    def add(variant: str, threads: int, inputs: str, stats: dict, runs: int, noise: dict, done: float, needed: float):
        rows.append(Row(variant, threads, inputs, round(stats["p50"], 4), round(stats["p90"], 4), round(stats["p99"], 4),
                        runs, round(done / 1e9, 4), round(needed / 1e9, 4), bool(noise["noisy"]),
                        "; ".join(noise["reasons"]), gmac_per_s(int(done), stats["p50"])))

    formula = Manifest.load(new).model.macs
    if formula is None:
        raise SystemExit(f"{new}: the manifest has no MACs formula (packed before manifest minor 3): delete it")
    real_macs = {name: float(np.mean([formula.at(f["input_ids"].shape[1]) for f in feeds]))
                 for name, feeds in datasets.items()}
    for threads in thread_counts:
        log(f"threads={threads}: eager PyTorch and ONNX Runtime peers")
        in_process = {"pytorch-eager fp32 (real length)": eager_fn(wrapper, threads),
                      "sentence-transformers fp32 (real length)": st_forward_fn(str(model_dir), threads)}
        in_process.update({name: ort_fn(path, threads) for name, path in peers.items()})
        for variant, fn in in_process.items():
            for n in lengths:
                res = time_callable(fn, [exact_length(datasets["builtin"][0], n)], args.runs, args.min_seconds,
                                    args.warmup)
                add(variant, threads, f"len={n}", res["stats"], res["runs"], res["noise"], formula.at(n),
                    formula.at(n))
            for name, feeds in datasets.items():
                res = time_callable(fn, feeds, args.runs, args.min_seconds, args.warmup)
                add(variant, threads, f"real:{name}", res["stats"], res["runs"], res["noise"], real_macs[name],
                    real_macs[name])
        bundles = [(new, "edgepack {}", t) for t in targets]
        if old is not None:
            bundles += [(old, f"edgepack {{}} (static {args.seq_len}, before buckets)", t) for t in static_targets]
        for bundle, label, target in bundles:
            entry = Manifest.load(bundle).target(target)
            if not entry.file:
                log(f"  {target}: not packed ({entry.error})")
                continue
            variant = label.format(target)
            log(f"threads={threads}: {variant}")
            for name, path in samples.items():
                try:
                    res = time_artifact(bundle, target, path, threads, lengths if name == "builtin" else [], args,
                                        len(datasets[name]))
                except Exception as exc:  # a worker crash fails this row only
                    log(f"  {variant} {name}: {exc}")
                    continue
                padded = res["input_lengths"]["padded_to"]
                done = sum(formula.at(int(k) if k != "None" else res["input_lengths"]["mean"]) * v
                           for k, v in padded.items()) / max(1, sum(padded.values()))
                add(variant, threads, f"real:{name}", res["latency_ms"], res["runs"], res["noise"], done, real_macs[name])
                for row in res.get("by_length", []):
                    add(variant, threads, f"len={row['length']}", row, row["runs"], row["noise"],
                        formula.at(row["padded_to"] or row["length"]), formula.at(row["length"]))

    sizes = {}
    for bundle, suffix in ((new, ""), (old, " (static)")):
        if bundle is not None:
            for entry in Manifest.load(bundle).targets:
                if entry.size_bytes:
                    sizes[entry.name + suffix] = entry.size_bytes
    parity = {e.name: {str(p.length): p.mean_cosine for p in e.parity_by_length}
              for e in Manifest.load(new).targets}
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + (argv or sys.argv[1:]))
    isa = cpu_isa()
    doc = {"command": command, "fingerprint": fingerprint(), "model": str(model_dir), "seq_len": args.seq_len,
           "isa": kernel_tag(isa),
           "isa_flags": [f for f in isa if any(k in f for k in ("avx", "vnni", "amx", "asimd", "i8mm", "fma"))],
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "lengths": lengths, "datasets": {k: {"n": len(v), "mean_tokens": float(np.mean([f["input_ids"].shape[1] for f in v]))}
                                            for k, v in datasets.items()},
           "rows": [asdict(r) for r in rows], "file_sizes_bytes": sizes, "parity_mean_cosine_by_length": parity,
           "goals": goals(rows, sizes, parity, thread_counts[0], args.seq_len)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"latency_vs_length_{doc['isa']}"  # one table per int8 kernel family: runs on others add up
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    plot(rows, thread_counts[0], lengths, stem.with_suffix(".png"))
    log(f"wrote {stem}.{{md,png,json}}")
    noisy = sum(r.noisy for r in rows)
    if noisy:
        log(f"WARNING: {noisy} of {len(rows)} rows are noisy (the machine was not quiet): do not quote them")
    return 0


def _p50(rows: list[Row], variant: str, threads: int, inputs: str) -> float | None:
    return next((r.p50_ms for r in rows if r.variant == variant and r.threads == threads and r.inputs == inputs), None)


def goals(rows: list[Row], sizes: dict[str, int], parity: dict, threads: int, seq_len: int) -> dict[str, Any]:
    """The issue's goals, as ratios measured in this run (1 thread, built-in texts)."""
    real = "real:builtin"
    new = _p50(rows, "edgepack tflite-int8", threads, real)
    old = _p50(rows, f"edgepack tflite-int8 (static {seq_len}, before buckets)", threads, real)
    peer = _p50(rows, "ort-int8 (peer, dynamic axis)", threads, real)
    fused_peer = _p50(rows, "ort-fused-int8 (peer, optimize_model bert)", threads, real)
    ours_onnx = _p50(rows, "edgepack onnx-int8", threads, real)

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    size_growth = ratio(sizes.get("tflite-int8"), sizes.get("tflite-int8 (static)"))
    cosines = [c for per in parity.values() for c in per.values() if c is not None]
    return {
        "threads": threads,
        f"tflite_int8_speedup_vs_static_{seq_len}": {"value": ratio(old, new), "goal": ">= 6"},
        "tflite_int8_speedup_vs_ort_int8_peer": {"value": ratio(peer, new), "goal": ">= 1.3"},
        "onnx_int8_vs_ort_int8_peer_latency_ratio": {"value": ratio(ours_onnx, peer), "goal": "<= 1.0"},
        "tflite_int8_speedup_vs_best_ort_peer (plain or fused)": {
            "value": ratio(min(p for p in (peer, fused_peer) if p) if peer or fused_peer else None, new),
            "goal": ">= 1.3"},
        "tflite_int8_file_size_ratio_vs_static": {"value": size_growth, "goal": "<= 1.05"},
        "min_mean_cosine_per_length": {"value": round(min(cosines), 5) if cosines else None, "goal": ">= 0.99"},
    }


def markdown(doc: dict) -> str:
    rows = [Row(**r) for r in doc["rows"]]
    inputs = [f"len={n}" for n in doc["lengths"]] + [f"real:{k}" for k in doc["datasets"]]
    out = [f"# Latency vs input length — {doc['model']}", "",
           f"`{doc['command']}`", "",
           f"Machine: {machine(doc['fingerprint'])}; int8 kernels: {doc.get('isa', '?')} "
           f"({' '.join(doc.get('isa_flags', []))}); load average at the end {doc.get('load_average', '?')}; "
           f"datasets: " + ", ".join(f"{k} (n={v['n']}, mean {v['mean_tokens']:.1f} tokens)" for k, v in doc["datasets"].items()),
           "", "p50 ms (GMAC done / GMAC needed, achieved GMAC/s); `*` = noisy (another process took >10% of a core "
           "or CV >10%).", ""]
    for threads in sorted({r.threads for r in rows}):
        out += [f"## {threads} thread(s)", "", "| variant | " + " | ".join(inputs) + " |",
                "|---|" + "---:|" * len(inputs)]
        for variant in dict.fromkeys(r.variant for r in rows if r.threads == threads):
            cells = []
            for key in inputs:
                r = next((r for r in rows if r.variant == variant and r.threads == threads and r.inputs == key), None)
                cells.append("-" if r is None else f"{r.p50_ms:.2f}{'*' if r.noisy else ''} ({r.gmac_done:.3f}/"
                             f"{r.gmac_needed:.3f}, {r.gmac_per_s if r.gmac_per_s is not None else '-'})")
            out.append(f"| {variant} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Goals (first thread count, built-in texts)", "", "| goal | measured | target |", "|---|---:|---|"]
    for name, g in doc["goals"].items():
        if isinstance(g, dict):
            out.append(f"| {name} | {g['value'] if g['value'] is not None else '-'} | {g['goal']} |")
    out += ["", "File sizes (bytes): " + ", ".join(f"{k} {v}" for k, v in doc["file_sizes_bytes"].items()), ""]
    return "\n".join(out)


def machine(fp: dict) -> str:
    parts = [fp.get("hostname"), fp.get("cpu_model"), f"{fp.get('cores_logical', '?')} logical CPUs",
             f"governor {fp.get('governor')}" if fp.get("governor") else None]
    return ", ".join(str(p) for p in parts if p)


def plot(rows: list[Row], threads: int, lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for variant in dict.fromkeys(r.variant for r in rows if r.threads == threads):
        pts = [(int(r.inputs[4:]), r.p50_ms) for r in rows
               if r.variant == variant and r.threads == threads and r.inputs.startswith("len=")]
        if pts:
            pts.sort()
            ax.plot(*zip(*pts), marker="o", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xlabel("input length (tokens)")
    ax.set_ylabel(f"p50 latency, ms ({threads} thread{'s' if threads > 1 else ''})")
    ax.set_title("latency vs input length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
