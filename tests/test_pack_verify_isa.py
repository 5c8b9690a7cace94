"""`pack --verify-isa`: every artifact's gates recomputed with other x86 kernel families' kernels (emulated on the
packing host by `edgepack isa-mask`), recorded in the manifest and shown by `inspect`; a profile this host cannot
apply is refused before anything is written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY_SEQ_LEN
from device_bench.manifest import Manifest
from packager.calib import builtin_sample
from packager.errors import EdgepackError
from packager.isa_parity import resolve_isas
from packager.models import load_model
from packager.pack import pack_model
from test_isa_mask import needs_mask


@needs_mask
def test_every_artifact_is_checked_on_every_profile_and_inspect_shows_it(tmp_path, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    result = pack_model(loaded, tmp_path / "b", ["tflite-int8", "onnx-int8"], TINY_SEQ_LEN, builtin_sample()[:12],
                        buckets=[16, TINY_SEQ_LEN], verify_isa=["all"])
    assert result.failed == []
    manifest = Manifest.load(tmp_path / "b")  # as written: the check's records survive the round trip
    profiles = resolve_isas(["all"])  # every profile this host can apply: avx2 on any host the mask runs on
    assert "avx2" in profiles
    for entry in manifest.targets:
        assert [r.isa for r in entry.parity_by_isa] == profiles
        for record in entry.parity_by_isa:
            assert record.error is None and record.emulated_on
            assert record.metrics["mean_cosine"] > 0.9 and record.passed == (not record.shortfalls)
    shown = subprocess.run([sys.executable, "-m", "packager.cli", "inspect", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "tflite-int8: on avx2 kernels (emulated on " in shown.stdout
    assert "onnx-int8: on avx2 kernels (emulated on " in shown.stdout


def test_a_profile_this_host_cannot_apply_is_refused_before_anything_is_written(tmp_path, tiny_model_dir, monkeypatch):
    with pytest.raises(EdgepackError, match="--verify-isa avx9: profile 'avx9': expected one of avx2, avx512_vnni"):
        resolve_isas(["avx9"])
    monkeypatch.setattr("device_bench.isa_mask.launch.cpu_flags", lambda: {"avx2"})  # no cpuid_fault
    assert resolve_isas(["all"]) == []  # every profile this host can apply: none, not an error
    loaded = load_model(str(tiny_model_dir), "feature-extraction")
    with pytest.raises(EdgepackError, match="--verify-isa avx2: "):
        pack_model(loaded, tmp_path / "x", ["tflite-int8"], TINY_SEQ_LEN, ["hi"], verify_isa=["avx2"])
    assert not (tmp_path / "x").exists()


def test_the_cli_flag_is_a_one_line_error_for_an_unknown_profile(tmp_path, tiny_model_dir):
    result = subprocess.run([sys.executable, "-m", "packager.cli", "pack", "--model", str(tiny_model_dir),
                             "--targets", "tflite-int8", "--verify-isa", "avx2,avx9", "-o", str(tmp_path / "y")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--verify-isa avx9: profile 'avx9'" in result.stderr and not (tmp_path / "y").exists()
