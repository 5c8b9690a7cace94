"""One recipe, one process vs N processes: wall time, steps per rank and accuracy, side by side in one run.

    python benchmarks/distributed_recipe.py                       # examples/clinc10, 1 vs 2 CPU processes
    python benchmarks/distributed_recipe.py --recipe r.yaml --nproc 4 --launchers torchrun,accelerate

Runs ``edgepack pack --recipe`` plainly, then under each launcher (``torchrun --standalone
--nproc_per_node N``; ``accelerate launch --multi_gpu --num_processes N``), each into its own bundle,
and prints a table read back from the manifests plus the wall-time ratios. Timings are worthless while
anything else runs on the machine (check ``uptime``).
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def launch_line(launcher: str, nproc: int, recipe: Path, out: Path, sets: list[str]) -> list[str]:
    pack = [str(BIN / "edgepack"), "pack", "--recipe", str(recipe), "-o", str(out), "--force"]
    pack += [arg for value in sets for arg in ("--set", value)]
    if launcher == "single":
        return pack
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(nproc), *pack]
    if launcher == "accelerate":
        return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(nproc),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *pack]
    raise SystemExit(f"unknown launcher {launcher!r} (single, torchrun, accelerate)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "examples" / "clinc10" / "recipe.yaml")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--launchers", default="torchrun,accelerate")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "distributed-bench")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every `edgepack pack` (e.g. a shorter run: --set stages.0.finetune.epochs=1)")
    parser.add_argument("--write", type=Path, default=ROOT / "benchmarks" / "results" / "distributed_recipe.md",
                        help="the markdown table (empty string: do not write)")
    args = parser.parse_args()
    if args.write is not None and str(args.write) in ("", "."):
        args.write = None
    start_load = os.getloadavg()

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    results = []
    for launcher in ["single", *[l.strip() for l in args.launchers.split(",") if l.strip()]]:
        out = args.out / launcher
        shutil.rmtree(out, ignore_errors=True)
        cmd = launch_line(launcher, args.nproc, args.recipe, out, args.sets)
        print("$", " ".join(cmd), flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        last = [l for l in (proc.stdout + proc.stderr).splitlines() if "bundle written" in l or "error" in l.lower()]
        print(f"  exit {proc.returncode}, {wall:.0f} s; {last[-1].strip() if last else '(no final line)'}", flush=True)
        if not (out / "manifest.json").is_file():  # exit 1 with a bundle (a failed gate or target) still counts
            print((proc.stdout + proc.stderr)[-3000:])
            return 1
        manifest = json.loads((out / "manifest.json").read_text())
        stages = {r["stage"]: r for r in manifest["stages"]}
        training = [r for r in manifest["stages"] if r.get("run") and r["run"].get("optimizer_steps") is not None]
        results.append({"launcher": launcher, "wall_s": wall,
                        "world_size": training[0]["run"]["world_size"] if training else 1,
                        "batches": {r["stage"]: r["run"]["batches_per_epoch_by_rank"] for r in training},
                        "train_s": sum(r.get("seconds") or 0.0 for r in training) + ((stages.get("student alone") or {}).get("seconds") or 0.0),
                        "test": {k: v.get("test_accuracy") for k, v in stages.items() if k.startswith("target")}})
    base, base_train = results[0]["wall_s"], results[0]["train_s"]
    lines = ["| launcher | processes | wall s | vs single | training s | vs single | batches/epoch by rank | test accuracy per target |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        batches = "; ".join(f"{k} {v}" for k, v in r["batches"].items())
        accs = ", ".join(f"{k.split(' ', 1)[1]} {v * 100:.2f}" for k, v in r["test"].items() if v is not None)
        lines.append(f"| {r['launcher']} | {r['world_size']} | {r['wall_s']:.0f} | {base / r['wall_s']:.2f}x | "
                     f"{r['train_s']:.0f} | {base_train / max(r['train_s'], 1e-9):.2f}x | {batches} | {accs} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()
        args.write.write_text(
            f"# One recipe, one process vs {args.nproc}\n\n`python benchmarks/distributed_recipe.py "
            + " ".join(sys.argv[1:]) + f"`\n\nMachine: {os.cpu_count()} logical CPUs, load average before the run "
            f"{start_load[0]:.2f}, after {load[0]:.2f}. Wall = the whole `edgepack pack` (training, export, verification, "
            "publishing by rank 0); training = the stage rows' own seconds (fine-tune, teacher logits, student alone, "
            "distil, prune recovery).\n\n" + table + "\n")
        print(f"written {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
