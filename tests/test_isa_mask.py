"""`edgepack isa-mask`: the runtimes in a masked command pick an older CPU's kernels, and everything that records
the host's ISA says so.

The proof that kernels change is numeric: ONNX Runtime's AVX2 u8s8 kernel multiply-adds byte pairs into 16 bits
(`vpmaddubsw`) and saturates, VNNI and AMX do not, so one MatMulInteger of 255s by 127s tells which ran.
"""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest

from device_bench.fingerprint import cpu_flags, kernel_tag
from device_bench.isa_mask.launch import IsaMaskError, check_host, library, masked_environ, profile_named
from device_bench.isa_mask.profiles import CPUID_BITS, PROFILES, cpuid_mask_spec
from test_device_bench_fixture import tiny_bundle_dir

VNNI_FAMILIES = {"avx512_vnni", "avx_vnni", "amx_int8"}
CAN_MASK = (platform.system() == "Linux" and platform.machine() == "x86_64" and {"cpuid_fault", "avx2"} <= cpu_flags()
            and bool(shutil.which("cc") or shutil.which("gcc")))
needs_mask = pytest.mark.skipif(not CAN_MASK, reason="needs Linux x86-64 with cpuid_fault, AVX2 and a C compiler")


def edgepack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def python_under(profile: str, code: str, *flags: str) -> subprocess.CompletedProcess:
    return edgepack("isa-mask", profile, "--", sys.executable, *flags, "-c", code)


def test_profiles_clear_known_bits_and_keep_their_own_flag():
    for profile in PROFILES.values():
        assert profile.clears <= set(CPUID_BITS) and profile.keeps not in profile.clears
    assert PROFILES["avx512_vnni"].clears < PROFILES["avx2"].clears
    # leaf 7: AVX-512 F/DQ/IFMA/CD/BW/VL in ebx; VBMI…VPOPCNTDQ, GFNI, VAES, VPCLMULQDQ in ecx; AMX and FP16 in edx
    assert cpuid_mask_spec(PROFILES["avx2"]) == "7:0:1:d0230000,7:0:2:5f42,7:0:3:3c00100,7:1:0:a00030,7:1:3:30"


def test_bad_profile_and_missing_command_are_one_line_errors():
    for args, expected in ((["avx3", "--", "true"], "profile 'avx3': expected one of avx2, avx512_vnni"),
                           (["avx2"], "no command to run")):
        result = edgepack("isa-mask", *args)
        assert result.returncode == 2 and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@needs_mask
def test_a_masked_process_reports_the_masked_isa_and_an_unmasked_variable_is_not_believed(tmp_path):
    code = "from device_bench.fingerprint import cpu_isa, isa_mask, kernel_tag; print(cpu_isa(), isa_mask(), kernel_tag())"
    masked = python_under("avx2", code)
    assert masked.returncode == 0, masked.stderr[-2000:]
    assert masked.stdout.split("] ")[1].split() == ["avx2", "avx2_masked"]
    assert "avx512" not in masked.stdout and "amx" not in masked.stdout
    fake = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**masked_environ(profile_named("avx2")), "LD_PRELOAD": ""})
    assert fake.stdout.split("] ")[1].split()[0] == "None"  # the variable alone masks nothing: not reported
    nested = edgepack("isa-mask", "avx2", "--", sys.executable, "-m", "packager.cli", "isa-mask", "avx512_vnni", "--",
                      "true")
    assert nested.returncode == 2 and "(masked to avx2) lacks avx512_vnni" in nested.stderr


@needs_mask
def test_onnxruntime_picks_the_avx2_kernels_under_the_mask():
    onnx = pytest.importorskip("onnx")
    code = "\n".join([
        "import numpy as np, onnx, onnxruntime as ort",
        "from onnx import helper, numpy_helper, TensorProto as T",
        "b = numpy_helper.from_array(np.full((64, 8), 127, np.int8), 'b')",
        "g = helper.make_graph([helper.make_node('MatMulInteger', ['a', 'b'], ['y'])], 'g',",
        "    [helper.make_tensor_value_info('a', T.UINT8, [1, 64])], [helper.make_tensor_value_info('y', T.INT32, [1, 8])], [b])",
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 8",
        "s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])",
        "print(int(s.run(None, {'a': np.full((1, 64), 255, np.uint8)})[0][0, 0]))",
    ])
    assert onnx is not None
    exact, saturated = 255 * 127 * 64, 32767 * 64 // 2
    masked = python_under("avx2", code)
    assert masked.returncode == 0, masked.stderr[-2000:]
    assert int(masked.stdout) == saturated
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert int(here.stdout) == (exact if VNNI_FAMILIES & cpu_flags() else saturated)


@needs_mask
def test_other_segfaults_still_reach_faulthandler_and_end_the_process():
    crash = python_under("avx2", "import ctypes; ctypes.string_at(0)", "-X", "faulthandler")
    assert crash.returncode == -11 and "Fatal Python error: Segmentation fault" in crash.stderr
    handled = python_under("avx2", "import os, signal; signal.signal(signal.SIGSEGV, lambda *a: print('handled')); "
                                   "os.kill(os.getpid(), signal.SIGSEGV); print('went on')")
    assert handled.returncode == 0 and handled.stdout.split() == ["handled", "went", "on"]


@needs_mask
def test_the_device_parity_check_runs_on_masked_kernels(tmp_path_factory):
    bundle = tiny_bundle_dir(tmp_path_factory)
    result = edgepack("check", str(bundle), "--on-device", "--isa", "avx2", "--targets", "tflite-int8,tflite-fp32",
                      "--strict", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["fingerprint"]["isa_mask"] == "avx2" and "avx512f" not in doc["fingerprint"]["isa"]
    assert [r["target"] for r in doc["results"]] == ["tflite-int8", "tflite-fp32"]
    assert all(r["device_parity"]["passed"] for r in doc["results"])
    text = edgepack("check", str(bundle), "--on-device", "--isa", "avx2", "--targets", "tflite-int8")
    assert text.returncode == 0 and text.stdout.startswith("parity on avx2 kernels emulated on ")
    for args, expected in ((["--on-device", "--isa", "avx9"], "--isa avx9: profile 'avx9': expected one of"),
                           (["--isa", "avx2"], "--isa applies to --on-device")):
        bad = edgepack("check", str(bundle), *args)
        assert bad.returncode == 2 and expected in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@needs_mask
def test_the_library_is_built_once_per_source_and_a_missing_compiler_is_named(tmp_path, monkeypatch):
    first = library(tmp_path)
    assert first.is_file() and library(tmp_path) == first and len(list(tmp_path.iterdir())) == 1
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(IsaMaskError, match="no-such-cc could not build the CPUID mask library"):
        library(tmp_path / "other")


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="x86-64 Linux only")
def test_a_host_without_the_kept_flag_or_cpuid_faulting_is_refused(monkeypatch):
    monkeypatch.setattr("device_bench.isa_mask.launch.cpu_flags", lambda: {"cpuid_fault", "avx", "sse4_2"})
    with pytest.raises(IsaMaskError, match="profile avx2: this host lacks avx2"):
        check_host(profile_named("avx2"))
    monkeypatch.setattr("device_bench.isa_mask.launch.cpu_flags", lambda: {"avx2", "avx512_vnni"})
    with pytest.raises(IsaMaskError, match="cannot trap CPUID: no 'cpuid_fault'"):
        check_host(profile_named("avx512_vnni"))


def test_kernel_tag_is_the_family_without_a_mask():
    assert not kernel_tag().endswith("_masked")


def test_an_artifact_below_its_gate_on_this_hosts_family_at_pack_time_is_not_chosen(tmp_path_factory, tmp_path):
    """`pack --verify-isa` recorded tflite-int8 below its gate on this host's int8 family: `Bundle()` and the fixed
    order pass it over and say why; a record whose check could not run, or another family's, changes nothing."""
    from device_bench.fingerprint import int8_kernel_family
    from device_bench.manifest import IsaParity, Manifest
    from device_bench.predict import CHOOSE_ORDER, Bundle, verified_here

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir(tmp_path_factory), copy)
    manifest = Manifest.load(copy)
    family = int8_kernel_family()
    entry = manifest.target("tflite-int8")
    entry.parity_by_isa = [IsaParity(isa="not-this-family", passed=False, shortfalls=["length 16: low"]),
                           IsaParity(isa=family, passed=False, error="the check could not run")]
    manifest.write(copy)
    assert Bundle(copy, choose=CHOOSE_ORDER, threads=1).target.name == "tflite-int8"
    entry.parity_by_isa.append(IsaParity(isa=family, passed=False, metrics={"mean_cosine": 0.98},
                                         shortfalls=["length 16: mean_cosine=0.98 < 0.99"]))
    manifest.write(copy)
    manifest = Manifest.load(copy)
    assert "tflite-int8" not in [t.name for t in verified_here(manifest, {"tflite": "x", "torch-lite": "y"})]
    assert Bundle(copy, choose=CHOOSE_ORDER, threads=1).target.name == "tflite-fp32"
    fastest = Bundle(copy, threads=1)
    assert fastest.target.name != "tflite-int8"
    assert any(f"tflite-int8: below its parity gate on {family} kernels at pack time (length 16: mean_cosine=0.98"
               in note for note in fastest.choice.notes), fastest.choice.notes
    assert Bundle(copy, target="tflite-int8", threads=1).target.name == "tflite-int8"  # asked for: still runs
