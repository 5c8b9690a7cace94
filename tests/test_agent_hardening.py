"""Issue #12: one regression test per defect class an outside fuzz run found, over real HTTPS on loopback.

1. a deep archive bricked the work dir      -> test_class1_*  (+ test_restart_with_hostile_leftovers)
2. requests that got no HTTP answer         -> test_class2_*
3. NaN/unbounded options, leaked workers    -> test_class3_*
4. memory blow-up in the agent process      -> test_class4_*
5. invalid input accepted with 202          -> test_class5_*
6. auth and protocol edges                  -> test_class6_*
The generated-input property test is tests/test_agent_fuzz.py.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import socket
import tarfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from device_bench import manifest as manifest_module
from device_bench.bench import BenchError, BenchOptions, WorkerCrash, run_worker
from device_bench.client import OPTIONS_HEADER
from device_bench.fstree import remove_tree
from device_bench.manifest import Manifest, ManifestError, TargetEntry, verify_files
from device_bench.worker import WorkerArgs
from test_agent_security import AUTH, TOKEN, _bundle_files, _request, _tar
from test_device_bench_fixture import PINS, half_close, raw_connect, running_agent


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    with running_agent(root / "wd", "--token", TOKEN, "--max-upload-mb", "1") as (url, proc):
        yield url, proc, root


def raw_http(url: str, data: bytes, method: str = "GET", timeout: float = 30) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes, half-close, and return (status line, headers, body) of the first final answer."""
    with raw_connect(url, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            half_close(sock)
        except OSError:
            pass
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    while lines[0].startswith("HTTP/1.1 100"):  # an interim answer, then the real one
        head, _, body = body.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if method != "HEAD":
        body = body[: int(headers.get("content-length", len(body)))]
    return lines[0], headers, body


def assert_json_error(status_line: str, headers: dict, body: bytes, status: int, reason: str = "") -> None:
    assert re.fullmatch(rf"HTTP/1\.[01] {status} .*", status_line), (status_line, body)
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert reason in error and "\n" not in error, error


def post_jobs(url: str, body: bytes, extra_headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return _request(url, "POST", "/v1/jobs", body, {**AUTH, **(extra_headers or {})})


def assert_healthy(agent) -> None:
    url, proc, root = agent
    assert proc.poll() is None
    assert _request(url, "GET", "/v1/info", headers=AUTH)[0] == 200
    assert not any((root / "wd" / "jobs").glob("*/upload*")), "a rejected upload left files behind"


def job_dirs(agent) -> set[Path]:
    return set((agent[2] / "wd" / "jobs").iterdir())


def with_manifest(mutate=None, raw: str | None = None) -> bytes:
    """A bundle archive whose manifest is changed by ``mutate(dict)``, or replaced by the raw JSON text ``raw``."""
    files = _bundle_files()
    data = json.loads(files["manifest.json"])
    if mutate:
        mutate(data)
    files["manifest.json"] = raw.encode() if raw is not None else json.dumps(data).encode()
    return _tar(files)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _bundle_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [file_member(name, data) for name, data in _bundle_files().items()]


# -- class 1: depth and path length bounded; cleanup and start-up survive any tree -------------

def test_class1_deep_archive_is_refused_and_leaves_nothing(agent):
    url = agent[0]
    deep = [(tarfile.TarInfo("a/" * i), None) for i in range(1, 1201)]
    for info, _ in deep:
        info.type = tarfile.DIRTYPE
    body = gzip.compress(tar_bytes(deep))
    assert len(body) < 64 << 10  # tiny uploads bricked the agent before
    before = job_dirs(agent)
    code, payload = post_jobs(url, body)
    assert code == 400 and "more than 32 folder levels" in payload["error"]
    long_name = "/".join(["n" * 200] * 6)  # 6 levels, 1,205 bytes
    code, payload = post_jobs(url, gzip.compress(tar_bytes([*_bundle_members(), file_member(long_name)])))
    assert code == 400 and "longer than 1024 bytes" in payload["error"]
    assert job_dirs(agent) == before
    assert_healthy(agent)


def test_class1_cleanup_does_not_depend_on_depth(tmp_path):
    """A tree deeper than Python's recursion limit, with paths far longer than PATH_MAX, is removed."""
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(1500):
            os.mkdir("d" * 100, dir_fd=fd)
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            child = os.open("d" * 100, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.symlink(tmp_path / "keep", "link", dir_fd=fd)  # a link is removed, never followed
    finally:
        os.close(fd)
    (tmp_path / "keep").write_text("outside")
    assert remove_tree(root) and not root.exists()
    assert (tmp_path / "keep").read_text() == "outside"


def _job_id(n: int) -> str:
    return f"20260101T000000{n:06d}-{n:08x}"


def _deep_dirs(base: Path, levels: int) -> None:
    fd = os.open(base, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("a", dir_fd=fd)
            child = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _job_json(job_id: str, status: str) -> str:
    return json.dumps({"id": job_id, "bundle": "x", "options": {}, "status": status})


def test_restart_with_hostile_leftovers(tmp_path):
    """A work dir full of hostile leftovers: the agent quarantines each with one log line and keeps serving."""
    wd, outside = tmp_path / "wd", tmp_path / "outside"
    jobs = wd / "jobs"
    jobs.mkdir(parents=True)
    outside.mkdir()
    (outside / "job.json").write_text(_job_json(_job_id(3), "running"))
    (outside / "bundle").mkdir()
    (outside / "bundle" / "precious").write_text("keep me")

    running = jobs / _job_id(1)  # the original brick: a job's bundle 1,200 levels deep
    (running / "bundle").mkdir(parents=True)
    _deep_dirs(running / "bundle", 1200)
    (running / "job.json").write_text(_job_json(_job_id(1), "running"))
    cut_off = jobs / _job_id(2)  # an upload cut off mid-way, as deep
    (cut_off / "bundle").mkdir(parents=True)
    (cut_off / "upload.tar").write_bytes(b"partial")
    _deep_dirs(cut_off / "bundle", 1200)
    (jobs / _job_id(3)).symlink_to(outside, target_is_directory=True)
    fifo = jobs / _job_id(4)
    fifo.mkdir()
    os.mkfifo(fifo / "job.json")  # reading it would block start-up forever
    (jobs / _job_id(5)).mkdir()
    (jobs / _job_id(5) / "job.json").write_text("{not json")
    (jobs / _job_id(6)).mkdir()
    (jobs / _job_id(6) / "job.json").write_text("[" * 100_000 + "]" * 100_000)
    (jobs / _job_id(7)).mkdir()
    (jobs / _job_id(7) / "job.json").write_text(_job_json(_job_id(99), "done"))
    (jobs / "not-a-job").write_text("?")
    done = jobs / _job_id(8)
    done.mkdir()
    (done / "job.json").write_text(_job_json(_job_id(8), "done"))
    (done / "report.json").write_text('{"kept": true}')
    hostile = {_job_id(3), _job_id(4), _job_id(5), _job_id(6), _job_id(7), "not-a-job"}
    try:
        _restart_and_check(tmp_path, wd, outside, hostile)
    finally:
        remove_tree(wd)  # pytest's own clean-up of old temp dirs recurses, and would choke on a deep leftover


def _restart_and_check(tmp_path: Path, wd: Path, outside: Path, hostile: set[str]) -> None:
    jobs, running, cut_off = wd / "jobs", wd / "jobs" / _job_id(1), wd / "jobs" / _job_id(2)
    with running_agent(wd, "--token", TOKEN, "--max-upload-mb", "1") as (url, proc):
        assert _request(url, "GET", f"/v1/jobs/{_job_id(8)}/report", headers=AUTH) == (200, {"kept": True})
        code, state = _request(url, "GET", f"/v1/jobs/{_job_id(1)}", headers=AUTH)
        assert code == 200 and state["status"] == "failed" and "restarted" in state["error"]
        assert not (running / "bundle").exists() and not cut_off.exists()
        code, payload = post_jobs(url, _tar(_bundle_files()))
        assert code == 202, payload
        assert proc.poll() is None
    quarantined = sorted(p.name for p in (wd / "quarantine").iterdir())
    assert sorted(name.split("-", 2)[2] for name in quarantined) == sorted(hostile)
    log_lines = [ln for ln in (tmp_path / "wd.agent.log").read_text().splitlines() if "quarantined" in ln]
    assert len(log_lines) == len(hostile)
    assert sorted(p.name for p in jobs.iterdir()) == sorted([_job_id(1), _job_id(8), payload["id"]])
    assert (outside / "bundle" / "precious").read_text() == "keep me"  # never followed the link
    assert json.loads((outside / "job.json").read_text())["status"] == "running"


# -- class 2: every request gets an answer (JSON 4xx; a last-resort JSON 500) ------------------

def _pax_record(length: str, key: str, value: str) -> bytes:
    return f"{length} {key}={value}\n".encode()


def _raw_pax_archive(record: bytes) -> bytes:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = len(record)
    return tar_bytes([(pax, record), *_bundle_members()], fmt=tarfile.USTAR_FORMAT)


@pytest.mark.parametrize("make, reason", [
    (lambda: with_manifest(raw='{"schema_version": 1, "created_at": ' + "1" * 5000 + "}"), "more than 30 digits"),
    (lambda: with_manifest(raw="[" * 100_000 + "]" * 100_000), "nested deeper than"),
    (lambda: with_manifest(lambda m: m["targets"][0].update(file="model\x00.tflite")), "without NUL bytes"),
    (lambda: with_manifest(lambda m: m["targets"][0].update(name=["a", "list"])), "targets[0].name must be a string"),
    (lambda: gzip.compress(tar_bytes([(_pax_info("a\x00b"), b"x"), *_bundle_members()])), "control characters"),
    (lambda: gzip.compress(_raw_pax_archive(_pax_record("9" * 5000, "path", "x"))), "corrupt or truncated archive"),
], ids=["manifest-5000-digit-int", "manifest-100000-deep", "nul-in-target-file", "name-is-a-list", "nul-in-pax-path",
        "pax-5000-digit-length"])
def test_class2_malformed_bundles_get_a_json_400(agent, make, reason):
    before = job_dirs(agent)
    code, payload = post_jobs(agent[0], make())
    assert code == 400 and reason in payload["error"], payload
    assert job_dirs(agent) == before
    assert_healthy(agent)


def _pax_info(path: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo("placeholder")
    info.size = 1
    info.pax_headers = {"path": path}
    return info


@pytest.mark.parametrize("options, status, reason", [
    ("[" * 60_000 + "]" * 60_000, 431, "Line too long"),  # a header line over 64 KiB
    ("[" * 30_000 + "]" * 30_000, 400, "over the limit of 8192"),
    ("[" * 1000 + "]" * 1000, 400, "nested deeper than"),
    ('{"runs": ' + "7" * 5000 + "}", 400, "more than 30 digits"),
    ('{"targets": [[]]}', 400, "wrong type"),
    ("{", 400, "not valid JSON"),
], ids=["60000-deep", "30000-deep", "1000-deep", "5000-digits", "list-in-list", "truncated"])
def test_class2_malformed_options_get_a_json_4xx(agent, options, status, reason):
    code, payload = post_jobs(agent[0], _tar(_bundle_files()), {OPTIONS_HEADER: options})
    assert code == status and reason in payload["error"], payload
    assert_healthy(agent)


def test_class2_an_exception_in_a_handler_is_a_json_500_and_the_agent_serves_on(tmp_path, monkeypatch):
    from device_bench.server import AgentConfig, AgentServer

    server = AgentServer(("127.0.0.1", 0), AgentConfig(workdir=tmp_path / "wd", token=TOKEN))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        monkeypatch.setattr(server.store, "list", lambda: (_ for _ in ()).throw(RecursionError("boom")))
        line, headers, body = raw_http(url, f"GET /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert_json_error(line, headers, body, 500, "internal error (RecursionError)")
        assert _request(url, "GET", "/v1/info", headers=AUTH)[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        server.store.stop()


# -- class 3: options finite and bounded (one definition); no worker outlives a failure ---------

@pytest.mark.parametrize("options, reason", [
    ('{"timeout_s": NaN}', "NaN is not allowed"),
    ('{"min_seconds": Infinity}', "Infinity is not allowed"),
    ('{"min_seconds": 1e999}', "out of range"),
    ('{"warmup": 1000000000000000, "timeout_s": 2}', "--warmup 1000000000000000: must be between 0 and 10000"),
    ('{"threads": [1099511627776]}', "--threads 1099511627776: must be between 1 and 1024"),
    ('{"runs": true}', "--runs True: has the wrong type"),
    ('{"memory_runs": 5}', "unknown option 'memory_runs'"),
], ids=["nan", "infinity", "overflow", "huge-warmup", "huge-threads", "bool-runs", "local-only-option"])
def test_class3_options_must_be_finite_and_bounded(agent, options, reason):
    code, payload = post_jobs(agent[0], _tar(_bundle_files()), {OPTIONS_HEADER: options})
    assert code == 400 and reason in payload["error"], payload
    assert_healthy(agent)


def test_class3_bench_options_are_the_one_definition():
    for bad in (dict(timeout_s=float("nan")), dict(min_seconds=float("inf")), dict(warmup=10**15), dict(threads=[2**40]),
                dict(runs=True), dict(memory_limit_mb=1)):
        with pytest.raises(BenchError):
            BenchOptions(**bad).validate()
    agent = BenchOptions(timeout_s=60, memory_limit_mb=1024)
    wire = BenchOptions(runs=5, timeout_s=30, memory_limit_mb=4096).to_remote(limits=["timeout_s", "memory_limit_mb"])
    assert "memory_runs" not in wire  # a local-only option never goes over the wire
    parsed = BenchOptions.from_remote(json.loads(json.dumps(wire)), agent)
    assert (parsed.runs, parsed.timeout_s, parsed.memory_limit_mb) == (5, 30, 1024)  # limits only lowered
    assert "timeout_s" not in BenchOptions().to_remote()  # unset limits: the agent's own apply


def test_class3_a_failing_worker_call_leaves_no_process(tmp_path):
    args = WorkerArgs(mode="timing", runtime="tflite", artifact=str(tmp_path / "none"), samples=str(tmp_path / "none"),
                      input_names=["x"])
    before = set(psutil.Process().children(recursive=True))  # e.g. this module's agent
    with pytest.raises(ValueError):
        run_worker(args, float("nan"))  # fails after the worker started: it used to wait on stdin forever
    with pytest.raises(WorkerCrash, match="timed out"):
        run_worker(args, 0.01)
    assert set(psutil.Process().children(recursive=True)) <= before


# -- class 4: gzip only, bounded decompression, capped manifest, bounded uploads in flight ----------

def _rss_mb(proc) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


@pytest.mark.parametrize("compress", [lzma.compress, bz2.compress, lambda b: b], ids=["xz", "bz2", "plain-tar"])
def test_class4_only_gzip_is_decompressed(agent, compress):
    code, payload = post_jobs(agent[0], compress(tar_bytes(_bundle_members())))
    assert code == 415 and "not gzip-compressed" in payload["error"]
    assert_healthy(agent)


def test_class4_manifest_and_unpacked_size_are_capped(agent):
    url, proc, _ = agent
    rss_before = _rss_mb(proc)
    big_manifest = with_manifest(lambda m: m.update(recipe={"pad": "x" * (2 << 20)}))
    assert len(big_manifest) < 64 << 10
    code, payload = post_jobs(url, big_manifest)
    assert code == 413 and "over the limit of 1048576" in payload["error"]
    bomb = gzip.compress(tar_bytes([*_bundle_members(), file_member("zeros", bytes(8 << 20))]))
    code, payload = post_jobs(url, bomb)
    assert code == 413 and "unpacks to more than 4 MB" in payload["error"]
    assert _rss_mb(proc) < rss_before + 30
    assert_healthy(agent)


def test_class4_the_queue_is_bounded_and_the_envelope_is_reported(agent, tmp_path):
    from device_bench.jobs import Job, JobStore, QueueFull

    release = threading.Event()

    def slow_bench(*_):
        release.wait(10)
        raise RuntimeError("done waiting")

    store = JobStore(tmp_path, bench=slow_bench, keep=5, max_pending=1)
    try:
        first = Job(id=store.new_job_dir()[0], bundle="x", options={})
        assert store.submit(first) == 0
        with pytest.raises(QueueFull, match="limit is 1"):
            store.submit(Job(id=store.new_job_dir()[0], bundle="x", options={}))
    finally:
        release.set()
        store.stop()
    limits = _request(agent[0], "GET", "/v1/info", headers=AUTH)[1]["agent"]["limits"]
    assert limits == {"max_upload_mb": 1, "max_unpacked_mb": 4, "max_manifest_bytes": 1 << 20, "max_members": 10_000,
                      "max_depth": 32, "max_path_bytes": 1024, "max_options_bytes": 8192, "max_jobs_queued": 16,
                      "max_inflight_uploads": 2, "max_connections": 64}


def test_class4_uploads_in_flight_are_bounded(tmp_path):
    from device_bench.server import AgentConfig, AgentServer

    server = AgentServer(("127.0.0.1", 0), AgentConfig(workdir=tmp_path / "wd", token=TOKEN, max_inflight_uploads=1,
                                                       upload_wait_s=0.5))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slow = socket.create_connection(server.server_address, timeout=10)  # holds the only slot: sends half a body
        slow.sendall(f"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 10)
        time.sleep(0.3)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        line, headers, body = raw_http(url, f"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                                            f"Content-Length: 5\r\n\r\nhello".encode())
        assert_json_error(line, headers, body, 503, "uploads are already being received")
        assert headers["retry-after"] == "5"
        slow.close()
    finally:
        server.shutdown()
        server.server_close()
        server.store.stop()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_class4_connections_are_bounded(tmp_path, scheme):
    """Slow clients cannot make the agent start a thread per connection without bound (nor stall it in TLS
    handshakes: the idle connections below never send a byte)."""
    from device_bench.server import AgentConfig, AgentServer
    from device_bench.tls import ensure_certificate

    certificate = ensure_certificate(tmp_path / "tls") if scheme == "https" else None
    server = AgentServer(("127.0.0.1", 0), AgentConfig(workdir=tmp_path / "wd", token=TOKEN, max_connections=2,
                                                       tls=certificate.server_context() if certificate else None))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    if certificate:
        PINS[url] = certificate.fingerprint
    idle = [socket.create_connection(server.server_address, timeout=10) for _ in range(2)]
    try:
        time.sleep(0.3)
        line, headers, body = raw_http(url, f"GET /v1/info HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert_json_error(line, headers, body, 503, "2 connections are open")
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            line, _, _ = raw_http(url, f"GET /v1/info HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            if " 200 " in line:
                break
            time.sleep(0.1)
        assert " 200 " in line
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()
        server.store.stop()


# -- class 5: invalid input is refused, not accepted with 202 -----------------------------------

def test_class5_schema_version_true_is_refused(agent):
    code, payload = post_jobs(agent[0], with_manifest(lambda m: m.update(schema_version=True)))
    assert code == 400 and "schema_version True is not supported" in payload["error"]
    with pytest.raises(ManifestError, match="schema_version"):
        Manifest.from_dict({**json.loads(_bundle_files()["manifest.json"]), "schema_version": True})


def test_class5_two_content_lengths_are_refused(agent):
    body = _tar(_bundle_files())
    for second in (len(body) + 1, len(body)):
        request = (f"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n"
                   f"Content-Length: {second}\r\n\r\n").encode() + body
        assert_json_error(*raw_http(agent[0], request), 400, "more than one Content-Length")
    for bad in ("+12", "1_0", "-1", "0x10", "١٢"):
        request = f"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {bad}\r\n\r\n".encode("utf-8")
        assert_json_error(*raw_http(agent[0], request), 400, "is not a number of bytes")


def test_class5_gzip_without_its_trailer_is_refused(agent):
    good = _tar(_bundle_files())
    for cut, reason in ((good[:-8], "ends before its CRC/size trailer"), (good[:-4], "ends before its CRC/size trailer"),
                        (good[:-4] + b"\0\0\0\0", "incorrect length check"),
                        (good[:-8] + b"\0\0\0\0" + good[-4:], "incorrect data check"),
                        (good + b"junk", "data after the end of the gzip stream")):
        code, payload = post_jobs(agent[0], cut)
        assert code == 400 and reason in payload["error"], payload
    assert_healthy(agent)


# -- class 6: auth first for every method, no 100 Continue before auth, JSON everywhere, hash once ----

@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "CONNECT", "BREW"])
def test_class6_every_method_needs_the_token(agent, method):
    line, headers, body = raw_http(agent[0], f"{method} /v1/info HTTP/1.1\r\nHost: x\r\n\r\n".encode(), method)
    assert line.startswith("HTTP/1.1 401 ") and headers["content-type"] == "application/json"
    if method == "HEAD":
        assert body == b""
    else:
        assert json.loads(body) == {"error": "missing or wrong token"}
    authed = f"{method} /v1/info HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    line, headers, body = raw_http(agent[0], authed, method)
    if method == "HEAD":
        assert line.startswith("HTTP/1.1 200 ") and body == b"" and int(headers["content-length"]) > 0
    else:
        assert_json_error(line, headers, body, 405, "is not supported")


def test_class6_no_100_continue_before_the_token(agent):
    body = _tar(_bundle_files())
    request = f"POST /v1/jobs HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with raw_connect(agent[0], timeout=10) as sock:
        sock.sendall(request)
        first = sock.recv(1 << 16).split(b"\r\n", 1)[0]
    assert first.startswith(b"HTTP/1.1 401 ")
    authed = (f"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\n"
              f"Content-Length: {len(body)}\r\n\r\n").encode()
    with raw_connect(agent[0], timeout=30) as sock:
        sock.sendall(authed)
        assert sock.recv(1 << 16).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        assert sock.recv(1 << 16).startswith(b"HTTP/1.1 202 ")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /v1/info\r\n\r\n", 400),                            # HTTP/0.9 form: used to get no status line
    (b"GET /v1/info HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET /v1/info HTTP/2.0\r\n\r\n", 400),
    (b"GET /v1/info HTTP/0.9\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /v1/info HTTP/x.y\r\n\r\n", 400),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /v1/info HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /v1/info HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n", 400),  # a TLS hello
    (b"GET http://[x/v1/info HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n", 400),
], ids=["http09", "four-words", "http2", "http09-long-header", "bad-version", "uri-too-long", "header-too-long",
        "too-many-headers", "tls", "broken-ipv6-target"])
def test_class6_protocol_errors_are_json_with_a_status_line(agent, request_bytes, status):
    assert_json_error(*raw_http(agent[0], request_bytes), status)
    assert_healthy(agent)


def test_class6_an_artifact_listed_many_times_is_hashed_once(tmp_path, monkeypatch):
    files = _bundle_files()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    manifest = Manifest.load(tmp_path)
    base = manifest.targets[0]
    manifest.targets = [TargetEntry(**{**vars(base), "name": f"t{i}"}) for i in range(200)]
    calls = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: calls.append(p) or real(p))
    assert verify_files(tmp_path, manifest) == [] and len(calls) == 1
    manifest.targets.append(TargetEntry(**{**vars(base), "name": "t0"}))
    with pytest.raises(ManifestError, match="'t0' is listed twice"):
        Manifest.from_dict(manifest.to_dict())
