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
    args = parser.parse_args()

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
                        "test": {k: v.get("test_accuracy") for k, v in stages.items() if k.startswith("target")}})
    base = results[0]["wall_s"]
    print(f"\n{'launcher':<11} {'procs':>5} {'wall s':>7} {'vs single':>9}  batches/epoch by rank; target test accuracy")
    for r in results:
        batches = "; ".join(f"{k} {v}" for k, v in r["batches"].items())
        accs = ", ".join(f"{k.split(' ', 1)[1]} {v * 100:.2f}" for k, v in r["test"].items() if v is not None)
        print(f"{r['launcher']:<11} {r['world_size']:>5} {r['wall_s']:>7.0f} {base / r['wall_s']:>8.2f}x  {batches}; {accs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
