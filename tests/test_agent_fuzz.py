"""Property test of the agent (issue #12): generated archives, manifests, option headers and raw HTTP
against a live agent on loopback, with a fixed seed and a bounded number of examples (well under 60 s).

For every request: a well-formed HTTP answer (status line, headers, a JSON body — none for HEAD), a
status below 500 (every generated request is a client fault or a valid request), the agent alive and its
RSS under a bound. Afterwards: nothing was written outside the agent's work dir, and once its queue is
idle no worker process of a job is left.
"""
from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import zlib
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_bench.bench import BenchOptions
from test_agent_security import TOKEN, _bundle_files
from test_device_bench_fixture import half_close, raw_connect, running_agent

RSS_BOUND_MB = 150
ESCAPE_MARKER = "/tmp/edgepack-fuzz-escape"  # absolute member names point here; it must never appear
OPTION_KEYS = [f.name for f in __import__("dataclasses").fields(BenchOptions)] + ["shell", "", "runs "]


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    # a third of the generated requests present a wrong token: the lockout (tested in test_agent_tls) would answer
    # the rest 429 without parsing them, so it starts later here
    with running_agent(root / "wd", "--token", TOKEN, "--max-upload-mb", "1", "--max-jobs-queued", "1000",
                       "--auth-free-failures", "1000000") as (url, proc):
        yield url, proc, root
    from device_bench.fstree import remove_tree

    remove_tree(root / "wd")


# -- generators --------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20), st.sampled_from(["a\x00b", "../../x", "/etc/passwd", "é" * 3]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
#: raw JSON text no serializer produces: huge or non-finite numbers, deep nesting
hostile_json_text = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "[" * 5000 + "]" * 5000,
                                     '"\\u0000"', "true", "{", '"' + "x" * 3000 + '"'])


@st.composite
def option_headers(draw) -> str:
    if draw(st.booleans()):
        return draw(hostile_json_text)
    options = draw(st.dictionaries(st.sampled_from(OPTION_KEYS), json_values, max_size=4))
    text = json.dumps(options)
    if options and draw(st.booleans()):  # splice raw hostile text in as one option's value
        key = draw(st.sampled_from(sorted(options)))
        text = json.dumps({**options, key: "@@"}).replace('"@@"', draw(hostile_json_text))
    return text


@st.composite
def manifests(draw) -> bytes:
    data = json.loads(_bundle_files()["manifest.json"])
    data["targets"][0]["runtime"] = "no-such-runtime"  # accepted bundles are skipped quickly (no worker needed)
    for _ in range(draw(st.integers(0, 3))):
        containers = {"top": data}  # what is still an object after earlier changes
        targets = data.get("targets")
        if isinstance(targets, list) and targets and isinstance(targets[0], dict):
            containers["target"] = targets[0]
        containers.update({k: data[k] for k in ("model", "input_spec") if isinstance(data.get(k), dict)})
        obj = containers[draw(st.sampled_from(sorted(containers)))]
        key = draw(st.sampled_from(sorted(obj) + ["unknown_field"]))
        obj[key] = draw(json_values)
    text = json.dumps(data)
    if draw(st.integers(0, 4)) == 0:
        text = text.replace('"schema_version": 1', '"schema_version": ' + draw(hostile_json_text), 1)
    return text.encode()


_NAME_PARTS = ["manifest.json", "samples.npz", "model.tflite", "a", "..", ".", "", "x\x00y", "é", "d" * 300, "\\..\\x",
               "C:", ESCAPE_MARKER.lstrip("/")]


@st.composite
def member_names(draw) -> str:
    name = "/".join(draw(st.lists(st.sampled_from(_NAME_PARTS), min_size=1, max_size=4)))
    if draw(st.integers(0, 6)) == 0:
        name = "/" + name
    if draw(st.integers(0, 8)) == 0:
        name = "/".join(["q"] * draw(st.integers(30, 200)))
    return name


_KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE,
          tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE]


@st.composite
def archives(draw) -> bytes:
    files = _bundle_files()
    manifest = draw(manifests())
    files["manifest.json"] = manifest
    out = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        if draw(st.booleans()):
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for _ in range(draw(st.integers(0, 4))):
            info = tarfile.TarInfo(draw(member_names()))
            info.type = draw(st.sampled_from(_KINDS))
            info.linkname = draw(st.sampled_from(["", "/etc/passwd", "../../x", "manifest.json"]))
            data = draw(st.binary(max_size=64)) if info.type in (tarfile.REGTYPE, tarfile.CONTTYPE) else b""
            info.size = len(data)
            if draw(st.integers(0, 4)) == 0 and fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {draw(st.sampled_from(["path", "size", "GNU.sparse.major", "comment", "linkpath"])):
                                    draw(st.sampled_from(["a\x00b", "1", "-5", "9" * 40, "x" * 9000, "ok"]))}
            try:
                tar.addfile(info, io.BytesIO(data) if data else None)
            except (ValueError, tarfile.TarError, UnicodeError):
                pass  # tarfile would not write that member: generate the rest
    plain = out.getvalue()
    framing = draw(st.sampled_from(["gzip", "gzip", "gzip", "plain", "cut-trailer", "cut-middle", "trailing-junk",
                                    "raw-deflate", "bomb"]))
    if framing == "plain":
        return plain
    if framing == "raw-deflate":
        return zlib.compress(plain)
    if framing == "bomb":
        return gzip.compress(plain + bytes(8 << 20))
    packed = gzip.compress(plain)
    return {"gzip": packed, "cut-trailer": packed[:-draw(st.integers(1, 8))],
            "cut-middle": packed[: len(packed) // 2], "trailing-junk": packed + b"junk"}[framing]


_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT", "BREW", "get"]
_PATHS = ["/v1/info", "/v1/jobs", "/v1/jobs/20260101T000000-deadbeef", "/v1/jobs/../../etc/passwd/report",
          "/v1/jobs/x/report", "/", "*", "/v2/info", "/v1/info?x=1#f", "http://evil/v1/info", "http://[x/v1/info", "/v1/%00", "/" + "a" * 5000]


@st.composite
def raw_requests(draw) -> tuple[str, bytes]:
    method = draw(st.sampled_from(_METHODS))
    path = draw(st.sampled_from(_PATHS))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "", "HTTP/1.1 x", "FOO"]))
    headers = []
    auth = draw(st.sampled_from(["good", "good", "none", "wrong", "basic", "empty"]))
    headers += {"good": [f"Authorization: Bearer {TOKEN}"], "none": [], "wrong": ["Authorization: Bearer nope"],
                "basic": [f"Authorization: Basic {TOKEN}"], "empty": ["Authorization:"]}[auth]
    body = draw(st.one_of(st.binary(max_size=256), archives().map(bytes)))
    length = draw(st.sampled_from(["exact", "exact", "none", "double", "double-same", "negative", "garbage", "huge",
                                   "short"]))
    headers += {"exact": [f"Content-Length: {len(body)}"], "none": [],
                "double": [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"],
                "double-same": [f"Content-Length: {len(body)}"] * 2, "negative": ["Content-Length: -1"],
                "garbage": ["Content-Length: 1e3"], "huge": ["Content-Length: 99999999999999999999999"],
                "short": [f"Content-Length: {len(body) + 100}"]}[length]
    extra = draw(st.lists(st.sampled_from(["Transfer-Encoding: chunked", "Expect: 100-continue", "Expect: nonsense",
                                           "Connection: close", "Connection: keep-alive", "X-Edgepack-Options: {}",
                                           "X-Edgepack-Options: " + draw(option_headers()), "Host: x", ": novalue",
                                           "Bad Header Name: x", "X: " + "y" * 70_000]), max_size=3))
    head = f"{method} {path} {version}".rstrip() + "\r\n" + "".join(h + "\r\n" for h in headers + extra) + "\r\n"
    return method, head.encode("latin-1", "replace") + body


def _upload(body: bytes, options: str | None = None) -> tuple[str, bytes]:
    headers = [f"Authorization: Bearer {TOKEN}", f"Content-Length: {len(body)}"]
    if options is not None:
        headers.append(f"X-Edgepack-Options: {options}")
    return "POST", ("POST /v1/jobs HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1", "replace") + body


requests = st.one_of(
    raw_requests(),
    archives().map(_upload),
    st.builds(lambda m: _upload(_bundle_with_manifest(m)), manifests()),
    option_headers().map(lambda o: _upload(_bundle_with_manifest(None), o)),
)


def _bundle_with_manifest(manifest: bytes | None) -> bytes:
    files = _bundle_files()
    if manifest is None:
        data = json.loads(files["manifest.json"])
        data["targets"][0]["runtime"] = "no-such-runtime"
        manifest = json.dumps(data).encode()
    files["manifest.json"] = manifest
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- the exchange and the checks ----------------------------------------------------------

def exchange(url: str, method: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send, half-close, read everything; parse exactly one final HTTP answer (after any 100 Continue)."""
    with raw_connect(url, timeout=40) as sock:
        try:
            sock.sendall(data)
            half_close(sock)
        except OSError:
            pass  # the agent may answer and close before reading everything
        received = b""
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    while True:
        head, sep, rest = received.partition(b"\r\n\r\n")
        assert sep, f"no complete HTTP answer: {received[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = (lines[0].split(" ", 2) + [""])[:3]
        assert version in ("HTTP/1.0", "HTTP/1.1") and status.isdigit(), lines[0]
        if status != "100":
            break
        received = rest
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert headers.get("content-type") == "application/json", headers
    length = int(headers["content-length"])
    body = b"" if method == "HEAD" else rest[:length]
    assert len(body) == (0 if method == "HEAD" else length)
    return int(status), headers, body


@pytest.fixture(scope="module")
def watch(agent):
    url, proc, root = agent
    outside_before = {p for p in root.rglob("*") if not str(p).startswith(str(root / "wd"))}
    state = {"max_rss_mb": 0.0, "count": 0, "statuses": {}}
    yield state
    # nothing written outside the work dir (the agent's log is written by the test harness)
    outside_after = {p for p in root.rglob("*") if not str(p).startswith(str(root / "wd"))}
    assert outside_after - outside_before <= {root / "wd.agent.log"}
    assert not Path(ESCAPE_MARKER).exists()


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@pytest.mark.slow
@given(request=requests)
def test_every_request_gets_a_json_answer_and_the_agent_holds(agent, watch, request):
    url, proc, _ = agent
    method, data = request
    status, headers, body = exchange(url, method, data)
    assert status < 500, (status, body, data[:300])
    if method != "HEAD" or status == 100:
        payload = json.loads(body)
        if status >= 400:
            assert isinstance(payload["error"], str) and "\n" not in payload["error"]
    assert proc.poll() is None, "the agent died"
    rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    watch["max_rss_mb"] = max(watch["max_rss_mb"], rss)
    watch["statuses"][status] = watch["statuses"].get(status, 0) + 1
    assert rss < RSS_BOUND_MB, f"agent RSS {rss:.0f} MB"


def test_concurrent_uploads_are_all_answered_within_the_memory_bound(agent, watch):
    """Many clients at once, half of them decompression bombs: every one answered, RSS bounded."""
    from concurrent.futures import ThreadPoolExecutor

    url, proc, _ = agent
    bomb = gzip.compress(bytes(64 << 20), compresslevel=1)  # 64 MB of zeros in well under the 1 MB upload limit
    good = _bundle_with_manifest(None)
    bodies = [bomb if i % 2 else good for i in range(16)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: exchange(url, "POST", _upload(b)[1]), bodies))
    for (status, _, body), sent in zip(answers, bodies):
        assert status in ((413, 503) if sent is bomb else (202, 503)), (status, body)
        assert json.loads(body)
    assert proc.poll() is None
    watch["max_rss_mb"] = max(watch["max_rss_mb"], psutil.Process(proc.pid).memory_info().rss / 2**20)
    assert watch["max_rss_mb"] < RSS_BOUND_MB


@pytest.mark.slow  # reads what the fuzz test (slow) left behind
def test_after_the_fuzz_no_worker_outlives_its_job(agent, watch):
    url, proc, _ = agent
    # a job that really spawns workers (the tflite target on a garbage model fails its row)
    body = _bundle_with_manifest(_bundle_files()["manifest.json"])
    status, _, payload = exchange(url, "POST", _upload(body, '{"runs": 1, "warmup": 0, "min_seconds": 0}')[1])
    assert status == 202, payload
    deadline = time.monotonic() + 60
    agent_proc = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        status, _, info = exchange(url, "GET", f"GET /v1/info HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        if json.loads(info)["agent"]["jobs_pending"] == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the agent's queue did not drain")
    time.sleep(0.3)
    assert agent_proc.children(recursive=True) == []
    assert proc.poll() is None and watch["max_rss_mb"] < RSS_BOUND_MB
    print("fuzz answers by status:", dict(sorted(watch["statuses"].items())), "max RSS MB", round(watch["max_rss_mb"]))
    assert len(watch["statuses"]) > 5, watch["statuses"]  # the generator reached many different answers
