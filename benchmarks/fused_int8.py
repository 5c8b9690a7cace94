"""Fused ONNX int8 (issue #23 part 2): edgepack's int8 artifacts against the ONNX Runtime exports a user would make,
fidelity and end-to-end speed side by side in ONE run, at 1 and 2 threads.

    python benchmarks/fused_int8.py [--model DIR] [--n 220] [--rounds 5] [--threads 1,2]

Variants (each text in, embedding out, batch 1):

- edgepack ``onnx-int8`` (blockwise MatMulNBits; ``fuse=none``), ``onnx-int8`` with ``fuse=bert`` (onnxruntime's
  BERT fusion first), ``onnx-int8`` with ``scheme=dynamic,fuse=bert``, and ``tflite-int8``, each through
  ``device_bench.predict.Bundle`` (the bundle's own tokenizer and runner);
- the plain ORT peer: ``torch.onnx.export`` of the model as loaded (SDPA attention), ``quantize_dynamic``;
- the ORT-fused peer: an eager-attention export, ``optimize_model(model_type="bert")``, ``quantize_dynamic``
  (QAttention, QEmbedLayerNormalization, MatMulInteger);
- sentence-transformers ``encode`` (fp32 PyTorch), also the fidelity reference;
- ``Bundle()`` on the default bundle without ``target``, the thread count a budget: what an application gets (the
  artifact and thread count its load-time probe found fastest), timed as its own variant;
- the default bundle's ``tflite-int8`` through LiteRT's ``Interpreter`` (``EDGEPACK_TFLITE_API=interpreter``): the
  runner before its ``CompiledModel`` path, the same artifact in the same run.

Fidelity: cosine against ``SentenceTransformer.encode`` on ``--n`` CLINC150 test texts no pack saw (as
``benchmarks/int8_parity_by_isa.py``). Speed: every variant runs over the same texts round-robin, ``--rounds``
rounds; the figure is the median over rounds of the mean ms per text, with its ratio to the fastest of the run.
Goals (issue #23): the artifact ``Bundle()`` / ``edgepack run`` picks in the default bundle is >= 1.3x faster than
the best of the two ORT peers at equal or better min cosine, and within 5% of the fastest artifact of its bundle.
The host's ISA and load average are recorded with the figures: ratios hold on this host, at this load.
Writes ``benchmarks/results/fused_int8_<int8 kernel family>.{md,json}`` (``_avx2``, ``_amx_int8``, ...; ``_avx2_masked`` under ``edgepack isa-mask avx2``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CLINC = ROOT.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json"
RESULTS = ROOT / "benchmarks" / "results" / "fused_int8"
#: the bundles packed (cached under --cache): name -> (targets, target options)
BUNDLES: dict[str, tuple[list[str], dict[str, dict[str, Any]]]] = {
    "default": (["onnx-int8", "tflite-int8"], {}),
    "fused": (["onnx-int8"], {"onnx-int8": {"fuse": "bert"}}),
    "fused-dynamic": (["onnx-int8"], {"onnx-int8": {"fuse": "bert", "scheme": "dynamic"}}),
}
PEERS = ("ort-int8 (plain export)", "ort-fused-int8 (optimize_model bert)")
INTERPRETER_VARIANT = "edgepack tflite-int8 (default) through LiteRT's Interpreter, the runner before"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pack_bundles(model: str | None, cache: Path, seq_len: int) -> dict[str, Path]:
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    out = {}
    for name, (targets, options) in BUNDLES.items():
        folder = cache / name
        if not (folder / "manifest.json").is_file():
            log(f"packing {name}: {targets} {options}")
            result = pack_model(load_model(model, "feature-extraction"), folder, targets, seq_len, builtin_sample(),
                                force=True, target_options=options)
            for entry in result.manifest.targets:
                log(f"  {entry.name}: {entry.status} {entry.error or ''} {entry.details.get('fused_ops', '')}")
        out[name] = folder
    return out


def export_peers(model_dir: str, cache: Path) -> dict[str, Path]:
    """The two ORT int8 exports a user makes without edgepack: plain (SDPA attention, as transformers loads the
    model) and fused (eager attention, so ``optimize_model`` recognises it; ``DefaultTensorType`` lets the
    quantizer through the fused com.microsoft ops)."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    paths = {PEERS[0]: cache / "peer-int8.onnx", PEERS[1]: cache / "peer-fused-int8.onnx"}
    if all(p.is_file() for p in paths.values()):
        return paths

    class Plain(torch.nn.Module):
        def __init__(self, attention: str | None) -> None:
            super().__init__()
            kwargs = {"attn_implementation": attention} if attention else {}
            self.model = AutoModel.from_pretrained(model_dir, **kwargs).eval()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(1, 16, dtype=torch.int64)
    axes = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    for attention, fp32 in ((None, cache / "peer-fp32.onnx"), ("eager", cache / "peer-eager-fp32.onnx")):
        torch.onnx.export(Plain(attention).eval(), (ids, ids), str(fp32), input_names=list(axes),
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False, dynamic_axes=axes)
    quantize_dynamic(str(cache / "peer-fp32.onnx"), str(paths[PEERS[0]]), weight_type=QuantType.QInt8)
    config = AutoModel.from_pretrained(model_dir).config
    fused = optimize_model(str(cache / "peer-eager-fp32.onnx"), model_type="bert",
                           num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
    log(f"ORT-fused peer: {fused.get_fused_operator_statistics()}")
    fused.save_model_to_file(str(cache / "peer-fused-fp32.onnx"))
    quantize_dynamic(str(cache / "peer-fused-fp32.onnx"), str(paths[PEERS[1]]), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return paths


def peer_fn(path: Path, tokenizer, threads: int, seq_len: int) -> Callable[[str], Any]:
    """Text in, mean-pooled L2-normalized embedding out (all-MiniLM-L6-v2's pipeline), as a user would write it."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run(text: str):
        enc = tokenizer([text], truncation=True, max_length=seq_len, return_tensors="np")
        mask = enc["attention_mask"].astype(np.int64)
        hidden = session.run(None, {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": mask})[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return run


def st_fn(st, threads: int) -> Callable[[str], Any]:
    import torch

    def run(text: str):
        torch.set_num_threads(threads)
        return st.encode([text], convert_to_numpy=True, show_progress_bar=False)
    return run


def fidelity(fn: Callable[[str], Any], texts: list[str], reference) -> dict[str, float]:
    import numpy as np

    from device_bench.parity import cosines

    got = np.concatenate([np.asarray(fn(t), np.float32).reshape(1, -1) for t in texts])
    cos = cosines(reference, got)
    return {"mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5)}


def time_side_by_side(fns: dict[str, Callable[[str], Any]], texts: list[str], rounds: int) -> dict[str, float]:
    """Median over rounds of each variant's mean ms per text; variants alternate within a round, and who goes
    first rotates round by round (the variant after sentence-transformers' big working set found colder caches)."""
    import numpy as np

    per_round: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            started = time.perf_counter()
            for text in texts:
                fn(text)
            per_round[name].append((time.perf_counter() - started) * 1000 / len(texts))
    return {name: float(np.median(v)) for name, v in per_round.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder [default: built-in all-MiniLM-L6-v2]")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--texts", type=Path, default=CLINC)
    ap.add_argument("--n", type=int, default=220)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "fused_int8")
    args = ap.parse_args(argv)
    if not args.texts.is_file():
        ap.error(f"--texts {args.texts}: no such file")
    logging.disable(logging.INFO)
    os.environ["EDGEPACK_SPEED_CACHE"] = tempfile.mkdtemp(prefix="fused-int8-speed-")  # a fresh pick every run

    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from device_bench.fingerprint import cpu_isa, cpu_model, int8_kernel_family, isa_mask, kernel_tag, mask_note
    from device_bench.manifest import Manifest
    from device_bench.predict import Bundle
    from device_bench.runners.tflite import API_ENV as TFLITE_API_ENV
    from int8_parity_by_isa import unseen_texts
    from packager.models import default_model_path

    model_dir = args.model or str(default_model_path())
    cache = args.cache / f"{Path(model_dir).name}-{args.seq_len}"
    cache.mkdir(parents=True, exist_ok=True)
    bundles = pack_bundles(args.model, cache, args.seq_len)
    peers = export_peers(model_dir, cache)
    texts = unseen_texts(args.texts, args.n)
    st = SentenceTransformer(model_dir, device="cpu")
    st.max_seq_length = args.seq_len
    reference = st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    isa = cpu_isa()
    kernel = int8_kernel_family(isa)

    artifacts = [(f"edgepack {entry.name} ({label}: {_options(entry)})", bundle, entry.name)
                 for label, bundle in bundles.items() for entry in Manifest.load(bundle).runnable_targets()]
    runs: list[dict[str, Any]] = []
    for threads in [int(t) for t in args.threads.split(",")]:
        log(f"threads={threads}: loading")
        fns: dict[str, Callable[[str], Any]] = {}
        for name, bundle, target in artifacts:
            runner = Bundle(bundle, target=target, threads=threads)
            fns[name] = lambda text, runner=runner: runner.outputs([text])
        # the default bundle's tflite-int8 through the interpreter's signature runners: the runner before LiteRT's
        # compiled path (see device_bench/runners/tflite.py), same artifact, same run
        os.environ[TFLITE_API_ENV] = "interpreter"
        try:
            before = Bundle(bundles["default"], target="tflite-int8", threads=threads)
        finally:
            os.environ.pop(TFLITE_API_ENV)
        fns[INTERPRETER_VARIANT] = lambda text, runner=before: runner.outputs([text])
        fns.update({name: peer_fn(path, tokenizer, threads, args.seq_len) for name, path in peers.items()})
        fns["sentence-transformers fp32 (PyTorch)"] = st_fn(st, threads)
        picked = Bundle(bundles["default"], threads=threads)  # threads: a budget, the pick runs at its fastest count
        on = picked.run_threads
        pick = (f"edgepack Bundle() pick: {picked.target.name} (default: {_options(picked.target)})"
                f" on {on} of {threads} thread(s)")
        fns[pick] = lambda text, runner=picked: runner.outputs([text])
        earlier = runs[0]["quality"] if runs else {}
        quality = {name: earlier.get(name) or fidelity(fn, texts, reference) for name, fn in fns.items()}
        log(f"threads={threads}: timing {len(fns)} variants x {len(texts)} texts x {args.rounds} rounds")
        load_before = os.getloadavg()[0]
        ms = time_side_by_side(fns, texts, args.rounds)
        runs.append({"threads": threads, "ms_per_text": {k: round(v, 3) for k, v in ms.items()}, "quality": quality,
                     "picked": pick, "picked_how": picked.choice.how if picked.choice else None,
                     "picked_threads": on, "probe": picked.choice.profile.summary() if picked.choice.profile else None,
                     "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                     "goals": goals(ms, quality, pick, [a[0] for a in artifacts if "(default:" in a[0]])})
        for name in fns:
            log(f"  {name:<70} {ms[name]:7.2f} ms/text  min cos {quality[name]['min_cosine']}")
    fused_ops = {label: Manifest.load(b).target("onnx-int8").details.get("fused_ops", {}) for label, b in bundles.items()}
    doc = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:])),
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
           "isa": kernel, "isa_mask": isa_mask(), "isa_note": mask_note(), "isa_flags": [f for f in isa if any(k in f for k in ("avx", "vnni", "amx", "asimd", "i8mm",
                                                                                  "sse4", "fma"))],
           "cores": len(os.sched_getaffinity(0)), "model": model_dir, "texts": len(texts),
           "model_name": args.model or "all-MiniLM-L6-v2 (built-in)",
           "fused_ops": fused_ops, "runs": runs}
    stem = RESULTS.with_name(f"{RESULTS.name}_{kernel_tag(isa)}")  # one table per int8 kernel family: hosts add up
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    print(stem.with_suffix(".md").read_text())
    return 0


def _options(entry) -> str:
    opts = entry.details.get("options", {})
    if entry.name == "onnx-int8":
        return f"{opts.get('scheme', 'blockwise')}, fuse={opts.get('fuse', 'none')}"
    return ", ".join(f"{k}={v}" for k, v in opts.items() if k in ("rotation",)) or "-"


def goals(ms: dict[str, float], quality: dict[str, dict], pick: str, bundle_members: list[str]) -> dict[str, Any]:
    best_peer = min(PEERS, key=lambda p: ms[p])
    fastest_member = min(bundle_members, key=lambda m: ms[m])
    return {
        "picked_speedup_vs_best_ort_peer": {"value": round(ms[best_peer] / ms[pick], 3), "goal": ">= 1.3",
                                            "best_peer": best_peer},
        "picked_min_cosine_vs_best_peer": {"value": quality[pick]["min_cosine"],
                                           "peer": quality[best_peer]["min_cosine"], "goal": ">= peer, >= 0.99 (the int8 gate on unseen texts)"},
        "picked_vs_fastest_in_bundle": {"value": round(ms[pick] / ms[fastest_member], 3), "goal": "<= 1.05",
                                        "fastest": fastest_member},
    }


def markdown(doc: dict) -> str:
    name = doc.get("model_name") or Path(doc["model"]).name
    out = [f"# Fused ONNX int8 vs the ORT exports — {name}, {doc['texts']} unseen CLINC150 texts",
           "", f"`{doc['command']}` ({doc['measured_at']})", "",
           f"Host: {doc['cpu']}, {doc['cores']} CPUs, int8 kernels: **{doc['isa']}** "
           f"(flags: {' '.join(doc['isa_flags'])}){doc.get('isa_note', '')}. Shared host: figures are ratios within one run; the load "
           "average (1 min) before and after each timing is given.", "",
           "Fused ops (onnxruntime BERT fusion) per bundle: " + "; ".join(
               f"{k}: {', '.join(f'{n} {op}' for op, n in v.items()) or 'none'}" for k, v in doc["fused_ops"].items()),
           ""]
    for run in doc["runs"]:
        ms = run["ms_per_text"]
        fastest = min(ms.values())
        out += [f"## {run['threads']} thread(s) — load {run['load_average'][0]} → {run['load_average'][1]}", "",
                "| variant | ms/text (end to end) | × fastest | min cos vs ST | mean cos vs ST |", "|---|---:|---:|---:|---:|"]
        for name, value in sorted(ms.items(), key=lambda kv: kv[1]):
            q = run["quality"][name]
            mark = " **(the pick)**" if name == run["picked"] else ""
            out.append(f"| {name}{mark} | {value:.2f} | {value / fastest:.2f} | {q['min_cosine']} | {q['mean_cosine']} |")
        if run.get("probe"):
            out += ["", f"The pick's load-time probe: {run['probe']}."]
        out += ["", "| goal | measured | target |", "|---|---:|---|"]
        for name, g in run["goals"].items():
            extra = ", ".join(f"{k}: {v}" for k, v in g.items() if k not in ("value", "goal"))
            out.append(f"| {name} ({extra}) | {g['value']} | {g['goal']} |")
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
