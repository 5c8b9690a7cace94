"""Variants of the ``tflite-int8`` graph packed from one model and timed side by side in ONE run: ops per
signature, fidelity and end-to-end speed at 1 and 2 threads.

    python benchmarks/tflite_variants.py [--study layer_norm|rotation_block] [--model DIR] [--n 220] [--rounds 8]

Studies (each one question about the graph the target writes today against what it wrote before):

- ``layer_norm``: litert-torch's own LayerNorm lowering (``lean_layer_norms`` replaced by a plain copy for that pack)
  against ``targets.tflite.lean_layer_norms``.
- ``rotation_block``: the Hadamard rotation of the attention's input in ai-edge-quantizer's own blocks (the input
  width's largest power-of-two factor: 128 for a 384-wide model) against ``rotation_block`` 64 (today's default)
  and 32.

The model (default: the built-in all-MiniLM-L6-v2) is packed once per variant with the default buckets, each in a
process of its own (the fp32 conversion cache must not hand one pack's graph to another). The bundles then run
through ``device_bench.predict.Bundle`` on ``--n`` CLINC150 test texts no pack saw, interleaved round by round (who
goes first rotating), and are compared with ``SentenceTransformer.encode``. Writes
``benchmarks/results/tflite_<study>_<int8 kernel family>.md`` with the host's ISA and load.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


@dataclass(frozen=True)
class Variant:
    """One pack of the study: its cache folder's name, whether LayerNorms are lean, the target's options."""
    name: str
    lean_norms: bool = True
    options: dict[str, Any] = field(default_factory=dict)


#: study -> (title, {label: variant}); the first variant is the baseline the others are divided by
STUDIES: dict[str, tuple[str, dict[str, Variant]]] = {
    "layer_norm": ("the converter's LayerNorm ops vs `lean_layer_norms`", {
        "converter's LayerNorm ops": Variant("stock", lean_norms=False),
        "lean_layer_norms (today's default)": Variant("lean"),
    }),
    "rotation_block": ("the Hadamard rotation's block", {
        "rotation_block 128 (ai-edge-quantizer's own on 384 wide)": Variant("rotation-128",
                                                                           options={"rotation_block": 128}),
        "rotation_block 64 (today's default)": Variant("rotation-64", options={"rotation_block": 64}),
        "rotation_block 32": Variant("rotation-32", options={"rotation_block": 32}),
    }),
}


def pack(model: str | None, folder: Path, variant: Variant) -> None:
    """One ``tflite-int8`` pack (run in a process of its own per variant)."""
    import targets.tflite as tflite
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    if not variant.lean_norms:
        tflite.lean_layer_norms = lambda module: copy.deepcopy(module)
    pack_model(load_model(model, "feature-extraction"), folder, ["tflite-int8"], 128, builtin_sample(), force=True,
               target_options={"tflite-int8": dict(variant.options)})


def ops_per_signature(bundle: Path) -> int:
    from ai_edge_litert import interpreter

    (path,) = bundle.glob("*.tflite")
    return len(interpreter.Interpreter(model_path=str(path))._get_ops_details())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", choices=tuple(STUDIES), default="rotation_block")
    ap.add_argument("--model", default=None, help="model folder [default: built-in all-MiniLM-L6-v2]")
    ap.add_argument("--n", type=int, default=220)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "tflite_variants")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--pack-only", help=argparse.SUPPRESS)  # the per-variant pack process: the variant's label
    args = ap.parse_args(argv)
    title, variants = STUDIES[args.study]
    # one folder per model: a --model run never times another model's cached packs
    args.cache = args.cache / ("builtin" if args.model is None else
                               hashlib.sha256(str(Path(args.model).resolve()).encode()).hexdigest()[:12])
    if args.pack_only:
        variant = variants[args.pack_only]
        pack(args.model, args.cache / variant.name, variant)
        return 0

    from fused_int8 import CLINC, fidelity, time_side_by_side
    from report import publish
    from int8_parity_by_isa import unseen_texts

    if not CLINC.is_file():
        print(f"tflite_variants: {CLINC}: no CLINC150 data", file=sys.stderr)
        return 2
    for label, variant in variants.items():
        if not (args.cache / variant.name / "manifest.json").is_file():
            print(f"packing {label} …", file=sys.stderr, flush=True)
            extra = ["--model", args.model] if args.model else []
            subprocess.run([sys.executable, __file__, "--study", args.study, "--pack-only", label,
                            "--cache", str(args.cache.parent), *extra], check=True)

    from sentence_transformers import SentenceTransformer

    from device_bench.fingerprint import cpu_isa, kernel_tag, mask_note
    from device_bench.manifest import Manifest
    from device_bench.predict import Bundle
    from packager.models import default_model_path

    texts = unseen_texts(CLINC, args.n)
    st = SentenceTransformer(args.model or str(default_model_path()), device="cpu")
    st.max_seq_length = 128
    reference = st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    del st
    folders = {label: args.cache / variant.name for label, variant in variants.items()}
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

    family = kernel_tag(cpu_isa())
    baseline, *others = variants
    lines = [f"# tflite-int8: {title}, side by side", "",
             f"{args.n} unseen CLINC150 test texts, batch 1, end to end through `Bundle`, median over {args.rounds} "
             f"interleaved rounds of the mean ms per text. Host ISA: {' '.join(cpu_isa())} (int8 family `{family}`{mask_note()}); "
             f"load average {load[0]} → {load[1]}.", "",
             "| variant | ops per signature | 1 thread ms/text | 2 threads ms/text | unseen min cos | pack parity min cos |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {label} | {ops[label]} | {speed[1][label]:.3f} | {speed[2][label]:.3f} | "
              f"{quality[label]['min_cosine']:.5f} | {parity[label].min_cosine:.5f} |" for label in variants]
    lines += [""] + [f"{label} ÷ {baseline}: 1 thread {speed[1][label] / speed[1][baseline]:.3f}, 2 threads "
                     f"{speed[2][label] / speed[2][baseline]:.3f}." for label in others]
    publish(args.out, f"tflite_{args.study}_{family}.md", lines, "tflite_variants.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
