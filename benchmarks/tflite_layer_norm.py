"""tflite-int8 with litert-torch's own LayerNorm ops against ``targets.tflite.lean_layer_norms``, side by side in ONE
run: ops per signature, fidelity and end-to-end speed at 1 and 2 threads.

    python benchmarks/tflite_layer_norm.py [--model DIR] [--n 220] [--rounds 8]

The model (default: the built-in all-MiniLM-L6-v2) is packed twice to ``tflite-int8`` with the default options and
buckets, once with the converter's LayerNorm lowering (``lean_layer_norms`` replaced by a plain copy for that pack,
in its own process: the fp32 conversion cache must not hand one pack's graph to the other) and once as the target
converts today. Both bundles then run through ``device_bench.predict.Bundle`` on ``--n`` CLINC150 test texts no
pack saw, interleaved round by round (who goes first rotating), and are compared with ``SentenceTransformer.encode``.
Writes ``benchmarks/results/tflite_layer_norm_<int8 kernel family>.md`` with the host's ISA and load.
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {"converter's LayerNorm ops": "stock", "lean_layer_norms (today's default)": "lean"}


def pack(model: str | None, folder: Path, lean: bool) -> None:
    """One ``tflite-int8`` pack (run in a process of its own per variant)."""
    import targets.tflite as tflite
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    if not lean:
        tflite.lean_layer_norms = lambda module: copy.deepcopy(module)
    pack_model(load_model(model, "feature-extraction"), folder, ["tflite-int8"], 128, builtin_sample(), force=True)


def ops_per_signature(bundle: Path) -> int:
    from ai_edge_litert import interpreter

    (path,) = bundle.glob("*.tflite")
    return len(interpreter.Interpreter(model_path=str(path))._get_ops_details())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder [default: built-in all-MiniLM-L6-v2]")
    ap.add_argument("--n", type=int, default=220)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "tflite_layer_norm")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--pack-only", choices=("stock", "lean"), help=argparse.SUPPRESS)  # the per-variant pack process
    args = ap.parse_args(argv)
    if args.pack_only:
        pack(args.model, args.cache / args.pack_only, args.pack_only == "lean")
        return 0

    from fused_int8 import CLINC, fidelity, time_side_by_side
    from int8_parity_by_isa import unseen_texts

    if not CLINC.is_file():
        print(f"tflite_layer_norm: {CLINC}: no CLINC150 data", file=sys.stderr)
        return 2
    for label, name in VARIANTS.items():
        if not (args.cache / name / "manifest.json").is_file():
            print(f"packing {label} …", file=sys.stderr, flush=True)
            extra = ["--model", args.model] if args.model else []
            subprocess.run([sys.executable, __file__, "--pack-only", name, "--cache", str(args.cache), *extra],
                           check=True)

    from sentence_transformers import SentenceTransformer

    from device_bench.fingerprint import cpu_isa, int8_kernel_family
    from device_bench.manifest import Manifest
    from device_bench.predict import Bundle
    from packager.models import default_model_path

    texts = unseen_texts(CLINC, args.n)
    st = SentenceTransformer(args.model or str(default_model_path()), device="cpu")
    st.max_seq_length = 128
    reference = st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    del st
    folders = {label: args.cache / name for label, name in VARIANTS.items()}
    ops = {label: ops_per_signature(folder) for label, folder in folders.items()}
    parity = {label: Manifest.load(folder).target("tflite-int8").parity for label, folder in folders.items()}
    quality: dict[str, dict] = {}
    speed: dict[int, dict[str, float]] = {}
    load = [round(os.getloadavg()[0], 2)]
    for threads in (1, 2):
        runners = {label: Bundle(folder, target="tflite-int8", threads=threads) for label, folder in folders.items()}
        fns = {label: (lambda text, runner=runner: runner.outputs([text])) for label, runner in runners.items()}
        quality = quality or {label: fidelity(fn, texts, reference) for label, fn in fns.items()}
        for fn in fns.values():  # warm every signature
            for text in texts[:40]:
                fn(text)
        speed[threads] = time_side_by_side(fns, texts, args.rounds)
    load.append(round(os.getloadavg()[0], 2))

    family = int8_kernel_family(cpu_isa())
    stock, lean = VARIANTS
    lines = ["# tflite-int8: the converter's LayerNorm ops vs `lean_layer_norms`, side by side", "",
             f"{args.n} unseen CLINC150 test texts, batch 1, end to end through `Bundle`, median over {args.rounds} "
             f"interleaved rounds of the mean ms per text. Host ISA: {' '.join(cpu_isa())} (int8 family `{family}`); "
             f"load average {load[0]} → {load[1]}.", "",
             "| variant | ops per signature | 1 thread ms/text | 2 threads ms/text | unseen min cos | pack parity min cos |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {label} | {ops[label]} | {speed[1][label]:.3f} | {speed[2][label]:.3f} | "
              f"{quality[label]['min_cosine']:.5f} | {parity[label].min_cosine:.5f} |" for label in VARIANTS]
    lines += ["", f"Lean ÷ converter's time: 1 thread {speed[1][lean] / speed[1][stock]:.3f}, 2 threads "
              f"{speed[2][lean] / speed[2][stock]:.3f}.", "", "```",
              "python benchmarks/tflite_layer_norm.py " + " ".join(argv if argv is not None else sys.argv[1:]), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tflite_layer_norm_{family}.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
