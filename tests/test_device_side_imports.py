"""The device side stays light: device_bench and its TFLite runner never pull in torch or transformers."""
from __future__ import annotations

import subprocess
import sys

CHECK = r"""
import sys, numpy as np
import device_bench, device_bench.manifest, device_bench.runners
from device_bench.manifest import Manifest
from device_bench.runners import load_runner
bundle = sys.argv[1]
m = Manifest.load(bundle)
entry = m.target("tflite-int8")
samples = np.load(f"{bundle}/samples.npz")
out = load_runner(entry.runtime, f"{bundle}/{entry.file}").run({k: samples[k][:1] for k in ("input_ids", "attention_mask")})
assert out.shape == (1, 64), out.shape
heavy = sorted(m for m in ("torch", "transformers", "litert_torch", "ai_edge_quantizer", "packager", "targets") if m in sys.modules)
print(",".join(heavy) or "clean")
"""


def test_tflite_runner_leaves_torch_and_transformers_out(tiny_bundle):
    proc = subprocess.run([sys.executable, "-c", CHECK, str(tiny_bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "clean"
