"""The fastest verified artifact by measurement: the load-time probe, its cache, the bench's profile, and how
`edgepack run`, `inspect` and the bench report show the choice.

A target is made genuinely slower by giving it a runtime that sleeps 20 ms before each run (``SlowRunner``,
registered through ``EDGEPACK_EXTRA_RUNNERS`` like any device owner's runner): the tiny bundle's artifacts run
in a fraction of a millisecond, so no load on the machine makes the slow one look faster.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from device_bench.manifest import Manifest
from device_bench.predict import Bundle, BundleError
from device_bench.report import BenchReport, fastest_lines
from device_bench.runners.tflite import TFLiteRunner
from device_bench import speed_profile as speed
from test_base_install import REPO, edgepack, one_line_error

TESTS = Path(__file__).resolve().parent
SLOW_MS = 20.0
EXTRA = ("slow-tflite=test_speed_profile:SlowRunner,broken-tflite=test_speed_profile:BrokenRunner,"
         "taxed-tflite=test_speed_profile:ThreadTaxedRunner,spinning-tflite=test_speed_profile:SpinningRunner")


class SlowRunner(TFLiteRunner):
    """A .tflite runner that sleeps before each run: an artifact that is slower on this device."""

    runtime = "slow-tflite"

    def run(self, inputs: dict[str, np.ndarray], length: int | None = None) -> np.ndarray:
        time.sleep(SLOW_MS / 1000)
        return super().run(inputs, length)


class ThreadTaxedRunner(TFLiteRunner):
    """Slower on more than one thread, as XNNPACK is on short inputs (each op's hand-off between threads)."""

    runtime = "taxed-tflite"

    def run(self, inputs: dict[str, np.ndarray], length: int | None = None) -> np.ndarray:
        if (self.threads or 1) > 1:
            time.sleep(SLOW_MS / 1000)
        return super().run(inputs, length)


class SpinningRunner(TFLiteRunner):
    """A runtime whose idle workers busy-wait unless told not to (as onnxruntime's): records each load's ``spin``."""

    runtime = "spinning-tflite"
    spins = True
    loads: list[bool] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        SpinningRunner.loads.append(self.spin)


class BrokenRunner(TFLiteRunner):
    """Loads, then fails every run."""

    runtime = "broken-tflite"

    def run(self, inputs: dict[str, np.ndarray], length: int | None = None) -> np.ndarray:
        raise RuntimeError("kernel exploded")


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """The extra runners registered and this test's own speed cache, here and in subprocesses."""
    cache = tmp_path / "speed"
    monkeypatch.setenv(speed.CACHE_ENV, str(cache))
    monkeypatch.setenv("EDGEPACK_EXTRA_RUNNERS", EXTRA)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]))
    return dict(os.environ)


def variant(tiny_bundle: Path, out: Path, runtimes: dict[str, str] | None = None, created_at: str | None = None) -> Path:
    """A copy of the tiny bundle (torchscript-mobile, -fp32, tflite-int8, tflite-fp32) with some targets' runtime
    replaced (same artifact file) or another pack time."""
    shutil.copytree(tiny_bundle, out)
    data = json.loads((out / "manifest.json").read_text())
    for t in data["targets"]:
        t["runtime"] = (runtimes or {}).get(t["name"], t["runtime"])
    if created_at:
        data["created_at"] = created_at
    (out / "manifest.json").write_text(json.dumps(data, indent=2))
    return out


@pytest.fixture
def slow_int8(tiny_bundle, tmp_path, env) -> Path:
    """tflite-int8, first in the fixed order, made 20 ms slower per run."""
    return variant(tiny_bundle, tmp_path / "slow-int8", {"tflite-int8": "slow-tflite"})


def test_the_probe_picks_the_faster_artifact_and_caches_it(slow_int8):
    assert Bundle(slow_int8, choose="order").target.name == "tflite-int8"  # the old fixed order
    first = Bundle(slow_int8)
    assert (first.target.name, first.choice.how) == ("tflite-fp32", speed.HOW_PROBE)
    profile = first.choice.profile
    assert profile.source == speed.SOURCE_PROBE and profile.chosen == "tflite-fp32"
    assert {s.target for s in profile.speeds} == {"tflite-int8", "tflite-fp32"}  # torch-free ones: no torch import
    assert profile.speed("tflite-int8").p50_ms >= SLOW_MS > profile.speed("tflite-fp32").p50_ms
    assert all(s.runs >= speed.PROBE_MIN_RUNS for s in profile.speeds)
    path = Path(first.choice.path)
    assert path.parent == Path(os.environ[speed.CACHE_ENV]) and speed.read_profile(path) == profile
    stamp = path.stat().st_mtime_ns
    assert first.predict("play some jazz")[0].embedding is not None  # the probe's runner is the one kept

    second = Bundle(slow_int8)  # a cache hit: no probe, the stored record unchanged
    assert (second.target.name, second.choice.how) == ("tflite-fp32", speed.HOW_PROFILE)
    assert second.choice.profile.measured_at == profile.measured_at and path.stat().st_mtime_ns == stamp
    assert "cached probe" in "\n".join(second.choice.describe())

    asked = Bundle(slow_int8, target="tflite-int8")  # --target still wins
    assert (asked.target.name, asked.choice.how) == ("tflite-int8", speed.HOW_TARGET)
    other_threads = Bundle(slow_int8, threads=1)  # another thread count is another device key: probed again
    assert other_threads.choice.how == speed.HOW_PROBE and other_threads.choice.device_key != first.choice.device_key


def test_an_artifact_that_fails_the_probe_is_left_out(tiny_bundle, tmp_path, env):
    bundle = variant(tiny_bundle, tmp_path / "broken", {"tflite-fp32": "broken-tflite"})
    loaded = Bundle(bundle)
    assert (loaded.target.name, loaded.choice.how) == ("tflite-int8", speed.HOW_PROBE)
    assert "kernel exploded" in loaded.choice.profile.excluded["tflite-fp32"]
    assert len(loaded.predict(["hello", "book a table"])) == 2


@pytest.mark.parametrize("content", ["not json {", '{"schema_version": 9, "chosen": "x"}', '[1, 2]',
                                     '{"schema_version": 1, "chosen": "tflite-int8"}'])
def test_a_corrupt_or_foreign_profile_is_ignored_with_one_line(slow_int8, content):
    first = Bundle(slow_int8)
    Path(first.choice.path).write_text(content)
    again = Bundle(slow_int8)
    assert (again.target.name, again.choice.how) == ("tflite-fp32", speed.HOW_PROBE)  # measured afresh, re-stored
    (note,) = again.choice.notes
    assert note.startswith(f"ignoring speed profile {first.choice.path}") and "\n" not in note
    assert speed.read_profile(Path(first.choice.path)).chosen == "tflite-fp32"


def test_a_profile_that_did_not_measure_every_candidate_is_not_used(slow_int8):
    first = Bundle(slow_int8)
    partial = first.choice.profile
    partial.speeds = [s for s in partial.speeds if s.target == "tflite-int8"]
    partial.chosen = "tflite-int8"  # e.g. a bench with --targets tflite-int8
    speed.save_profile(partial)
    assert Bundle(slow_int8).choice.how == speed.HOW_PROBE


def test_a_rebuilt_bundle_does_not_reuse_a_stale_profile(tiny_bundle, tmp_path, env):
    old = variant(tiny_bundle, tmp_path / "old", {"tflite-int8": "slow-tflite"})
    new = variant(tiny_bundle, tmp_path / "new", {"tflite-fp32": "slow-tflite"}, created_at="2030-01-01T00:00:00+00:00")
    assert Bundle(old).target.name == "tflite-fp32"
    rebuilt = Bundle(new)
    assert (rebuilt.target.name, rebuilt.choice.how) == ("tflite-int8", speed.HOW_PROBE)
    assert speed.bundle_identity(Manifest.load(old)) != speed.bundle_identity(Manifest.load(new))


def test_an_unwritable_cache_still_runs(slow_int8, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(speed.CACHE_ENV, str(tmp_path / "a-file" / "speed"))
    loaded = Bundle(slow_int8)
    assert (loaded.target.name, loaded.choice.path) == ("tflite-fp32", None)
    assert any(n.startswith("speed profile not saved") for n in loaded.choice.notes)


def test_one_verified_artifact_needs_no_probe(tiny_bundle, tmp_path, env):
    bundle = variant(tiny_bundle, tmp_path / "one")
    data = json.loads((bundle / "manifest.json").read_text())
    for t in data["targets"]:
        if t["name"] != "tflite-int8" and t["runtime"] == "tflite":
            t["status"] = "parity-failed"
    (bundle / "manifest.json").write_text(json.dumps(data))
    loaded = Bundle(bundle)
    assert (loaded.target.name, loaded.choice.how) == ("tflite-int8", speed.HOW_ONLY)
    assert not Path(os.environ[speed.CACHE_ENV]).exists()


def test_bench_writes_the_profile_and_run_uses_it(slow_int8):
    from device_bench.bench import bench_bundle

    report = bench_bundle(slow_int8, targets=["tflite-int8", "tflite-fp32"], runs=5, min_seconds=0.0, warmup=1,
                          memory_runs=1)
    assert not report.failed, [r.error for r in report.failed]
    (profile,) = report.fastest
    assert (profile.source, profile.chosen, profile.threads) == (speed.SOURCE_BENCH, "tflite-fp32", None)
    assert profile.speed("tflite-int8").p50_ms >= SLOW_MS
    assert BenchReport.from_dict(json.loads(report.to_json())).fastest == [profile]
    (line,) = fastest_lines(report)
    assert line.startswith("fastest here (threads=default): tflite-fp32 (p50 ") and "vs tflite-int8" in line

    loaded = Bundle(slow_int8)  # no probe: the bench's measurement decides
    assert (loaded.target.name, loaded.choice.how) == ("tflite-fp32", speed.HOW_PROFILE)
    assert loaded.choice.profile == profile
    shown = edgepack("run", str(slow_int8), "hello", "--verbose", env=dict(os.environ))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "target tflite-fp32: fastest here: tflite-fp32 (p50 " in shown.stderr
    assert f"measured by edgepack bench at {profile.measured_at}" in shown.stderr
    inspected = edgepack("inspect", str(slow_int8), env=dict(os.environ))
    assert f"speed here (threads=default, bench at {profile.measured_at}): fastest tflite-fp32" in inspected.stdout


def test_run_json_and_verbose_show_the_choice(slow_int8, env):
    ran = edgepack("run", str(slow_int8), "hello", "--json", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    choice = json.loads(ran.stdout)["choice"]
    assert (choice["target"], choice["how"], choice["profile"]["source"]) == ("tflite-fp32", "probe", "probe")
    verbose = edgepack("run", str(slow_int8), "hello", "-v", env=env)
    assert "target tflite-fp32: fastest here: tflite-fp32" in verbose.stderr and "cached probe" in verbose.stderr
    assert f"device key {choice['device_key']}" in verbose.stderr
    ordered = edgepack("run", str(slow_int8), "hello", "--choose", "order", "-v", env=env)
    assert "target tflite-int8: the fixed order (--choose order)" in ordered.stderr
    Path(choice["path"]).write_text("{")
    warned = edgepack("run", str(slow_int8), "hello", env=env)
    assert warned.returncode == 0 and "Traceback" not in warned.stderr
    (line,) = [ln for ln in warned.stderr.splitlines() if "ignoring speed profile" in ln]
    assert line.startswith(f"edgepack: warning: ignoring speed profile {choice['path']}: not valid JSON (")
    one_line_error(edgepack("run", str(slow_int8), "hello", "--choose", "quickest", env=env),
                   "--choose quickest: expected one of fastest, order")


def test_bad_choose_in_the_api(tiny_bundle):
    with pytest.raises(BundleError, match="--choose random: expected one of fastest, order"):
        Bundle(tiny_bundle, choose="random")


def test_the_agents_bench_keeps_the_profile_on_the_device(slow_int8, tmp_path, env):
    """The agent benches on the device, keeps the profile there, and `edgepack run` there uses it."""
    from test_device_bench_fixture import agent_client, running_agent

    with running_agent(tmp_path / "wd", env=env) as (url, _):
        report = agent_client(url).bench(slow_int8, {"targets": ["tflite-int8", "tflite-fp32"], "runs": 5,
                                                     "min_seconds": 0.0, "warmup": 1})
    (profile,) = report.fastest  # carried back in the report
    assert (profile.source, profile.chosen) == (speed.SOURCE_BENCH, "tflite-fp32")
    stored = speed.profile_path(profile.bundle_id, profile.device_key)
    assert speed.read_profile(stored) == profile  # the uploaded copy is the same bundle: same identity
    ran = edgepack("run", str(slow_int8), "hello", "--json", env=env)
    choice = json.loads(ran.stdout)["choice"]
    assert (choice["target"], choice["how"], choice["profile"]["source"]) == ("tflite-fp32", "profile", "bench")


def test_a_thread_budget_runs_the_artifact_at_the_count_it_was_fastest_with(tiny_bundle, tmp_path, env):
    """--threads N without --target is a budget: each artifact is timed at 1 and N threads, and the winner runs
    at its own count; the probe, its cache, a bench's profile, run --json/--verbose all say so."""
    from device_bench.bench import bench_bundle

    bundle = variant(tiny_bundle, tmp_path / "taxed", {"tflite-int8": "taxed-tflite", "tflite-fp32": "slow-tflite"})
    assert speed.thread_options(2) == [1, 2] and speed.thread_options(6) == [1, 2, 4, 6]
    assert speed.thread_options(None) == [None]
    probed = Bundle(bundle, threads=2)
    assert (probed.target.name, probed.run_threads, probed.runner.threads) == ("tflite-int8", 1, 1)
    profile = probed.choice.profile
    assert (profile.threads, profile.chosen, profile.chosen_threads) == (2, "tflite-int8", 1)
    assert {(s.target, s.threads) for s in profile.speeds} == {(t, n) for t in ("tflite-int8", "tflite-fp32")
                                                              for n in (1, 2)}
    assert profile.speed("tflite-int8", 2).p50_ms >= SLOW_MS > profile.speed("tflite-int8", 1).p50_ms
    assert profile.summary().startswith("tflite-int8 on 1 thread (p50 ")
    assert probed.choice.describe()[0].startswith("target tflite-int8 on 1 thread: fastest here")
    cached = Bundle(bundle, threads=2)
    assert (cached.choice.how, cached.run_threads, cached.runner.threads) == (speed.HOW_PROFILE, 1, 1)
    asked = Bundle(bundle, target="tflite-int8", threads=2)  # with --target the count is used as given
    assert (asked.run_threads, asked.runner.threads) == (2, 2)

    ran = edgepack("run", str(bundle), "hello", "--threads", "2", "--json", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert {k: json.loads(ran.stdout)["choice"][k] for k in ("target", "threads", "how")} == {
        "target": "tflite-int8", "threads": 1, "how": "profile"}
    said = edgepack("run", str(bundle), "hello", "--threads", "2", env=env)
    assert said.stderr.startswith("tflite-int8 (taxed-tflite, dynamic-int8, 1 thread) on feature-extraction")

    old = profile.to_dict() | {"schema_minor": 0}  # a profile written before thread choice: all at the budget
    old.pop("chosen_threads")
    for s in old["speeds"]:
        s.pop("threads")
    old["speeds"] = [s for s in old["speeds"] if s["target"] == "tflite-int8"][:1]
    read = speed.SpeedProfile.from_dict(old)
    assert (read.chosen_threads, read.speeds[0].threads) == (2, 2)

    report = bench_bundle(bundle, targets=["tflite-int8", "tflite-fp32"], threads=[1, 2], runs=5, min_seconds=0.0,
                          warmup=1, memory_runs=1)
    assert not report.failed, [r.error for r in report.failed]
    budget = {p.threads: p for p in report.fastest}
    assert (budget[1].chosen, budget[1].chosen_threads) == ("tflite-int8", 1)
    assert (budget[2].chosen, budget[2].chosen_threads) == ("tflite-int8", 1)  # the 1-thread row beat both 2s
    assert {s.threads for s in budget[1].speeds} == {1}
    benched = Bundle(bundle, threads=2)
    assert (benched.choice.how, benched.choice.profile.source, benched.run_threads) == (
        speed.HOW_PROFILE, speed.SOURCE_BENCH, 1)


def test_the_probe_times_runners_with_idle_workers_asleep_and_the_app_gets_them_spinning(tiny_bundle, tmp_path, env):
    """Beside a spinning onnxruntime session, XNNPACK on 2 of 2 cores measured 1.4-3.6 ms instead of 1.07-1.33
    (Zen 4): the probe loads its runners with spin=False; a winner whose runtime spins is loaded again for the app."""
    bundle = variant(tiny_bundle, tmp_path / "spinning", {"tflite-int8": "spinning-tflite",
                                                         "tflite-fp32": "slow-tflite"})
    SpinningRunner.loads.clear()
    loaded = Bundle(bundle)
    assert (loaded.target.name, loaded.choice.how) == ("tflite-int8", speed.HOW_PROBE)
    assert SpinningRunner.loads == [False, True] and loaded.runner.spin
    assert loaded.predict("play some jazz")[0].embedding is not None


def test_onnxruntime_workers_sleep_between_runs_when_asked(tmp_path):
    onnx = pytest.importorskip("onnx", reason="builds its model with the onnx package (not on a device install)")
    from onnx import TensorProto, helper

    from device_bench.runners.onnx import OnnxRunner

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    key = "session.intra_op.allow_spinning"
    assert OnnxRunner.spins
    asleep = OnnxRunner(path, threads=2, spin=False).session.get_session_options()
    assert asleep.get_session_config_entry(key) == "0"
    default = OnnxRunner(path, threads=2).session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's own default: spinning
        default.get_session_config_entry(key)
