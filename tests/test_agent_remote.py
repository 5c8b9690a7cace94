"""The agent on loopback driven by the host: same report as a local run, queueing, disconnects, fleets."""
from __future__ import annotations

import importlib.util
import json
import socket

import pytest
from click.testing import CliRunner

from device_bench.bench import bench_bundle
from device_bench.client import AgentError
from device_bench.host_cli import bench as bench_cmd
from device_bench.host_cli import devices as devices_cmd
from device_bench.report import BenchReport
from test_device_bench_fixture import PINS, agent_client, running_agent, tiny_bundle_dir

TOKEN = "s3cret-token-for-tests"
OPTIONS = {"targets": ["tflite-fp32"], "runs": 10, "min_seconds": 0.0, "warmup": 1, "threads": [1, 2]}


@pytest.fixture(scope="module")
def remote_bundle(tmp_path_factory):
    return tiny_bundle_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with running_agent(root / "wd", "--token-file", str(token_file), "--name", "loopback-agent") as (url, proc):
        yield url, token_file, proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_remote_report_has_the_fields_of_a_local_run(agent, remote_bundle, tmp_path):
    url, token_file, _ = agent
    out = tmp_path / "remote.json"
    res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--device", url, "--fingerprint", PINS[url], "--token-file",
                                         str(token_file), "--targets",
                                         "tflite-fp32", "--threads", "1,2", "--runs", "10", "--min-seconds", "0",
                                         "--warmup", "1", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    remote = BenchReport.from_dict(json.loads(res.stdout))
    assert remote.device == "loopback-agent" and remote.fingerprint["hostname"] == socket.gethostname()
    local = bench_bundle(remote_bundle, **OPTIONS)
    assert [(r.target, r.threads, r.status) for r in remote.results] == [(r.target, r.threads, r.status) for r in local.results]
    assert [r.threads for r in remote.results] == [1, 2]
    for rem, loc in zip(remote.results, local.results):
        assert rem.status == "ok", rem.error
        filled = lambda r: {k for k, v in vars(r).items() if v not in (None, [], {})}  # noqa: E731
        assert filled(rem) == filled(loc)
        assert len(rem.raw_ms) == rem.runs == 10 and rem.energy.kind == "estimated"
        # the pack's parity gates, recomputed by the agent on the device's kernels
        assert rem.device_parity.passed and rem.device_parity.by_length and rem.device_parity.error is None
    assert set(remote.protocol) == set(local.protocol)
    assert json.loads(out.read_text())["results"][0]["target"] == "tflite-fp32"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the .ptl job needs the run-ptl extra (torch)")
def test_agent_process_stays_light(agent, remote_bundle):
    url, token_file, _ = agent
    client = agent_client(url, token_file.read_text().strip())
    report = client.bench(remote_bundle, {**OPTIONS, "threads": [1], "targets": ["torchscript-mobile-fp32"]})
    (ptl,) = report.results
    assert ptl.status == "ok", ptl.error
    assert ptl.output_shape == [1, 64] and ptl.runtime_details["quantized_engine"]
    info = client.info()
    # read from the agent's own sys.modules after it ran a torch-lite job (torch lives only in the worker)
    assert info["agent"]["forbidden_modules_loaded"] == []
    assert info["agent"]["rss_mb"] < 150
    assert info["runtimes"]["tflite"] and info["energy"]["kind"] == "estimated"


@pytest.mark.slow
def test_jobs_queue_and_survive_client_disconnect(agent, remote_bundle):
    url, token_file, _ = agent
    token = token_file.read_text().strip()
    first = agent_client(url, token).submit(remote_bundle, {**OPTIONS, "threads": [1]})
    second = agent_client(url, token).submit(remote_bundle, {**OPTIONS, "threads": [1], "runs": 5})
    # both submitting clients are gone; a new one finds the jobs and their reports
    fresh = agent_client(url, token)
    ids = [j["id"] for j in fresh._request("GET", "/jobs")[1]["jobs"]]
    assert first in ids and second in ids
    assert fresh.wait(second, poll_s=0.2)["status"] == "done"
    assert fresh.status(first)["status"] == "done"  # one at a time, in order
    assert fresh.report(first).results[0].runs == 10 and fresh.report(second).results[0].runs == 5
    with pytest.raises(AgentError, match="no job"):
        fresh.status("20000101T000000-deadbeef")


@pytest.mark.slow
def test_fleet_with_an_unreachable_device(agent, remote_bundle, tmp_path):
    url, token_file, _ = agent
    devices_yaml = tmp_path / "devices.yaml"
    devices_yaml.write_text(
        "devices:\n"
        f"  - {{name: here, url: '{url}', fingerprint: '{PINS[url]}', token_file: '{token_file}'}}\n"
        f"  - {{name: gone, url: 'http://127.0.0.1:{_free_port()}'}}\n"
    )
    res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--devices", str(devices_yaml), "--targets", "tflite-fp32",
                                         "--threads", "1", "--runs", "5", "--min-seconds", "0", "--json"])
    assert res.exit_code == 1, res.output  # report printed, but one device was unreachable
    doc = json.loads(res.stdout)
    assert doc["kind"] == "fleet"
    assert [r["device"] for r in doc["reports"]] == ["here"] and doc["reports"][0]["results"][0]["status"] == "ok"
    assert doc["reports"][0]["results"][0]["device_parity"]["passed"] is True  # per device, across the fleet
    assert doc["errors"][0]["device"] == "gone" and "cannot reach" in doc["errors"][0]["error"]
    table = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--devices", str(devices_yaml), "--targets", "tflite-fp32",
                                           "--threads", "1", "--runs", "3", "--min-seconds", "0"])
    assert "unreachable" in table.stdout and "here" in table.stdout
    check = CliRunner().invoke(devices_cmd, ["check", str(devices_yaml), "--json"])
    rows = {r["name"]: r for r in json.loads(check.stdout)}
    assert check.exit_code == 1
    assert rows["here"]["reachable"] and rows["here"]["api_version"] == 1 and "tflite" in rows["here"]["runtimes"]
    assert not rows["gone"]["reachable"]


def test_host_cli_errors_are_one_line(agent, remote_bundle, tmp_path):
    url, token_file, _ = agent
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--device", url, "--fingerprint", PINS[url], "--token-file",
                                         str(wrong), "--runs", "3"])
    assert res.exit_code == 2 and "rejected the token" in res.stderr and res.stderr.strip().count("\n") == 0
    res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--device", url, "--token-file", str(token_file), "--power-cmd", "x"])
    assert res.exit_code == 2 and "agent" in res.stderr
    bad_yaml = tmp_path / "d.yaml"
    bad_yaml.write_text("devices: [{name: a}]\n")
    res = CliRunner().invoke(devices_cmd, ["check", str(bad_yaml)])
    assert res.exit_code == 2 and "needs a name and a url" in res.stderr


@pytest.mark.slow
def test_texts_are_tokenized_here_and_timed_on_the_agent_at_their_real_lengths(agent, remote_bundle, tmp_path):
    """``bench --texts FILE --device URL``: the host tokenizes (the device needs no tokenizer), the agent times
    those inputs; the report carries their length distribution and the truncation count, like a local run."""
    from device_bench.manifest import Manifest

    url, token_file, _ = agent
    seq_len = Manifest.load(remote_bundle).input_spec.seq_len
    texts = tmp_path / "texts.txt"
    texts.write_text("hi\nturn the lights off in the kitchen\n\n" + " ".join(["word"] * (3 * seq_len)) + "\n")
    reports = {}
    for where, extra in (("local", []), ("remote", ["--device", url, "--fingerprint", PINS[url], "--token-file",
                                                    str(token_file)])):
        res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--texts", str(texts), "--targets", "tflite-fp32",
                                             "--threads", "1", "--runs", "6", "--min-seconds", "0", "--warmup", "1",
                                             "--json", *extra])
        assert res.exit_code == 0, res.output
        (result,) = BenchReport.from_dict(json.loads(res.stdout)).results
        assert result.status == "ok", result.error
        reports[where] = result
    for result in reports.values():
        lengths = result.input_lengths
        assert lengths.n == 3 and lengths.max == seq_len and lengths.truncated == 1
        assert lengths.mean < seq_len  # the short texts ran at their own lengths, not all at seq_len
    assert vars(reports["local"].input_lengths) == vars(reports["remote"].input_lengths)
    assert reports["remote"].raw_ms and len(reports["remote"].raw_ms) >= 6


def test_texts_errors_are_one_line(remote_bundle, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--texts", str(empty)])
    assert res.exit_code != 0 and "no texts" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(bench_cmd, [str(remote_bundle), "--texts", str(tmp_path / "missing.txt")])
    assert res.exit_code != 0 and "cannot read" in res.output and "Traceback" not in res.output
