"""The agent on a shared network, tried as an attacker would, over loopback (issue #26).

Pinning: a client without the pin sends nothing; a man-in-the-middle with another certificate gets nothing (not
even the request line); a plain-HTTP request to the TLS port gets a JSON 400 and nothing else. Tokens: a
brute-force loop of wrong tokens from one address is locked out (429 + Retry-After, growing) while the right
token from another address works; a rotated token replaces the old one without a restart. Each "caller" is a
different loopback address (127.0.0.x: Linux routes all of 127/8 to lo).
"""
from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from device_bench.auth import AuthThrottle, TokenSource
from device_bench.cli import main as agent_main
from device_bench.client import AgentClient, AgentError
from device_bench.fleet import bench_fleet, load_devices
from device_bench.host_cli import bench as bench_cmd
from device_bench.host_cli import devices as devices_cmd
from device_bench.tls import FingerprintError, ensure_certificate, normalize_fingerprint, tls_dir_for
from test_agent_security import _bundle_files, _request
from test_device_bench_fixture import PINS, agent_client, running_agent, tiny_bundle_dir

FREE_FAILURES = 3


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    token_file = root / "token"
    CliRunner().invoke(agent_main, ["token", "rotate", "--token-file", str(token_file), "--quiet"])
    with running_agent(root / "wd", "--token-file", str(token_file), "--auth-free-failures", str(FREE_FAILURES),
                       "--name", "tls-agent") as (url, proc):
        yield url, proc, root, token_file


def _token(agent) -> str:
    return agent[3].read_text().strip()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the certificate -----------------------------------------------------------------------------------

def test_certificate_is_made_once_beside_the_workdir_with_a_private_key(tmp_path):
    from cryptography import x509

    tls_dir = tls_dir_for(tmp_path / "wd")
    assert tls_dir == tmp_path / "wd.tls"
    first = ensure_certificate(tls_dir, hostname="board-7")
    assert first.created and stat.S_IMODE(first.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_dir.stat().st_mode) & 0o077 == 0
    der = ssl.PEM_cert_to_DER_cert(first.cert.read_text())
    assert first.fingerprint == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "board-7"} <= set(san.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    again = ensure_certificate(tls_dir)
    assert not again.created and again.fingerprint == first.fingerprint
    first.key.chmod(0o644)  # someone loosened it: made private again, and said so
    assert ensure_certificate(tls_dir).key_mode_fixed and stat.S_IMODE(first.key.stat().st_mode) == 0o600


def test_fingerprints_are_accepted_with_or_without_colons():
    canonical = ":".join(["AB"] * 32)
    assert normalize_fingerprint("ab" * 32) == normalize_fingerprint(canonical.lower()) == canonical
    for bad in ("", "AB:CD", "zz" * 32, "ab" * 33):
        with pytest.raises(FingerprintError):
            normalize_fingerprint(bad)


def test_the_agent_prints_its_fingerprint_and_serves_tls_on_loopback_by_default(agent):
    url, _, root, _ = agent
    assert url.startswith("https://127.0.0.1:")
    assert PINS[url] == ensure_certificate(tls_dir_for(root / "wd")).fingerprint


def test_insecure_http_is_explicit_and_logged(tmp_path):
    with running_agent(tmp_path / "wd", "--insecure-http") as (url, _):
        assert url.startswith("http://") and AgentClient(url).info()["api_version"] == 1
        with pytest.raises(AgentError, match="TLS: .*plain-HTTP agent"):  # a pinned https client meets plain HTTP
            AgentClient(url.replace("http:", "https:"), fingerprint="ab" * 32).info()
    assert "--insecure-http: serving plain HTTP" in (tmp_path / "wd.agent.log").read_text()
    assert not (tmp_path / "wd.tls").exists()


# -- pinning: the host refuses what it cannot pin, before sending anything ------------------------------

class _Impostor:
    """A TLS server with another certificate on the device's "address": records every byte a client sends it."""

    def __init__(self, tls_dir: Path) -> None:
        self.certificate = ensure_certificate(tls_dir)
        self.received = b""
        self.handshakes = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        ctx = self.certificate.server_context()
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        self.handshakes += 1
                        while chunk := tls.recv(1 << 16):
                            self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def impostor(tmp_path):
    server = _Impostor(tmp_path / "impostor.tls")
    yield server
    server.close()


def test_a_client_without_the_pin_is_refused_before_connecting(agent):
    url = agent[0]
    with pytest.raises(AgentError, match="no pinned certificate fingerprint"):
        AgentClient(url, _token(agent)).info()
    with pytest.raises(AgentError, match="not a SHA-256"):
        AgentClient(url, _token(agent), fingerprint="12:34")
    # the pin in either spelling works
    assert AgentClient(url, _token(agent), fingerprint=PINS[url].replace(":", "").lower()).info()["api_version"] == 1


def test_a_man_in_the_middle_with_another_certificate_gets_nothing(agent, impostor, tmp_path):
    url, token = agent[0], _token(agent)
    client = AgentClient(impostor.url, token, fingerprint=PINS[url])  # the device's pin, someone else answering
    with pytest.raises(AgentError) as caught:
        client.info()
    message = str(caught.value)
    assert "certificate changed" in message and PINS[url] in message and impostor.certificate.fingerprint in message
    assert "\n" not in message
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, data in _bundle_files().items():
        (bundle / name).write_bytes(data)
    with pytest.raises(AgentError, match="certificate changed"):
        client.submit(bundle)  # an upload is refused as early
    time.sleep(0.3)
    assert impostor.handshakes >= 2 and impostor.received == b""  # no request line, no token, no bundle
    # through the fleet and the CLI: a one-line refusal, the rest of the fleet unaffected
    devices_yaml = tmp_path / "devices.yaml"
    devices_yaml.write_text(yaml.safe_dump({"devices": [{"name": "spoofed", "url": impostor.url, "fingerprint": PINS[url],
                                                         "token": token}]}))
    fleet = bench_fleet(bundle, load_devices(devices_yaml), {})
    assert "certificate changed" in fleet.errors[0].error
    res = CliRunner().invoke(bench_cmd, [str(bundle), "--device", impostor.url, "--fingerprint", PINS[url],
                                         "--token", token])
    assert res.exit_code == 2 and "certificate changed" in res.stderr and res.stderr.strip().count("\n") == 0
    assert impostor.received == b""


def test_plain_http_to_the_tls_port_gets_no_token_bearing_answer(agent):
    url, token = agent[0], _token(agent)
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/info", headers=_auth(token))
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 400 and resp.getheader("Content-Type") == "application/json"
    payload = json.loads(body)
    assert set(payload) == {"error"} and "HTTPS only" in payload["error"]
    assert token.encode() not in body and b"api_version" not in body
    with pytest.raises(AgentError, match="speaks HTTPS only"):
        AgentClient(url.replace("https:", "http:"), token).info()
    assert agent_client(url, token).info()["api_version"] == 1


def test_a_garbage_handshake_does_not_stall_other_clients(agent):
    url = agent[0]
    port = int(url.rsplit(":", 1)[1])
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"\x16\x03\x01")  # a handshake that never completes
    try:
        assert agent_client(url, _token(agent)).info()["agent"]["name"] == "tls-agent"
    finally:
        stalled.close()


# -- tokens: throttled per address, rotated without a restart -----------------------------------------

def test_a_brute_force_loop_is_locked_out_while_another_address_works(agent):
    url, token = agent[0], _token(agent)
    answers = []
    for i in range(40):
        code, payload = _request(url, "GET", "/v1/info", headers=_auth(f"guess-{i}"), source="127.0.0.2")
        assert "error" in payload and "\n" not in payload["error"]
        answers.append(code)
        # the right token from another address is unaffected, at every step
        if i % 10 == 0:
            assert _request(url, "GET", "/v1/info", headers=_auth(token), source="127.0.0.1")[0] == 200
    assert answers[:FREE_FAILURES + 1] == [401] * (FREE_FAILURES + 1)
    assert answers.count(401) <= FREE_FAILURES + 2 and answers.count(429) >= 35  # the rest refused unread
    # locked: even the right token waits, told for how long
    conn = _connection(url, "127.0.0.2")
    conn.request("GET", "/v1/info", headers=_auth(token))
    resp = conn.getresponse()
    assert resp.status == 429 and int(resp.getheader("Retry-After")) >= 1
    assert "too many wrong tokens" in json.loads(resp.read())["error"]
    conn.close()
    assert agent_client(url, token).info()["api_version"] == 1  # from 127.0.0.1
    assert _request(url, "GET", "/v1/info", headers=_auth(token), source="127.0.0.3")[0] == 200


def _connection(url: str, source: str) -> http.client.HTTPConnection:
    from test_device_bench_fixture import http_connection

    return http_connection(url, timeout=10, source=source)


def test_the_lockout_grows_and_then_expires(agent):
    url, token = agent[0], _token(agent)
    source = "127.0.0.5"
    for _ in range(FREE_FAILURES):
        assert _request(url, "GET", "/v1/info", headers=_auth("nope"), source=source)[0] == 401
    locks = []
    for _ in range(2):
        conn = _connection(url, source)
        conn.request("GET", "/v1/info", headers=_auth("nope"))
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 401
        locks.append(int(resp.getheader("Retry-After")))
        assert _request(url, "GET", "/v1/info", headers=_auth(token), source=source)[0] == 429
        time.sleep(locks[-1] + 0.2)
    assert locks[1] > locks[0] >= 1  # 1 s, then 2 s
    assert _request(url, "GET", "/v1/info", headers=_auth(token), source=source)[0] == 200  # served again


def test_the_token_rotates_without_a_restart(agent):
    url, proc, _, token_file = agent
    old = _token(agent)
    res = CliRunner().invoke(agent_main, ["token", "rotate", "--token-file", str(token_file)])
    assert res.exit_code == 0, res.output
    new = res.stdout.strip()
    assert new != old and token_file.read_text().strip() == new and len(new) >= 40
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert _request(url, "GET", "/v1/info", headers=_auth(old), source="127.0.0.4")[0] == 401
    assert _request(url, "GET", "/v1/info", headers=_auth(new), source="127.0.0.4")[0] == 200
    assert proc.poll() is None
    res = CliRunner().invoke(agent_main, ["token", "rotate", "--token-file", str(token_file / "nested")])
    assert res.exit_code == 2 and res.stderr.startswith("edgepack-agent: error: token file")


def test_token_source_follows_its_file_and_fails_closed(tmp_path):
    path = tmp_path / "token"
    path.write_text("first\n")
    source = TokenSource(path=path)
    assert source.check("first") and not source.check("second")
    path.unlink()
    assert not source.check("first")  # gone: nothing is accepted
    path.write_text("second\n")
    assert source.check("second") and not source.check("first")
    assert TokenSource(token="fixed").check("fixed") and not TokenSource().required


def test_throttle_bookkeeping_is_bounded_and_grows_exponentially():
    now = [0.0]
    throttle = AuthThrottle(free_failures=2, window_s=60, base_lock_s=1, max_lock_s=8, max_addresses=100,
                            clock=lambda: now[0])
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100  # the least recently failing were forgotten
    assert [throttle.failed("192.0.2.1") for _ in range(7)] == [0, 0, 1, 2, 4, 8, 8]
    assert throttle.retry_after("192.0.2.1") == 8 and throttle.retry_after("192.0.2.2") == 0
    # an IPv6 attacker cannot walk its /64; a mapped IPv4 address is that address
    assert throttle.key("2001:db8::1") == throttle.key("2001:db8::ffff:1") != throttle.key("2001:db8:0:1::1")
    assert throttle.key("::ffff:192.0.2.1") == "192.0.2.1"
    throttle.succeeded("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 0
    throttle.failed("192.0.2.9")
    now[0] = 61.0  # outside the window: counted afresh
    assert [throttle.failed("192.0.2.9") for _ in range(3)] == [0, 0, 1]


# -- devices add: pin by fingerprint, or trust on first use ------------------------------------------

def test_devices_add_pins_the_fingerprint(agent, impostor, tmp_path, monkeypatch):
    url = agent[0]
    devices_yaml = tmp_path / "devices.yaml"
    def run(*args: str):
        return CliRunner().invoke(devices_cmd, ["add", *args, "--file", str(devices_yaml)])
    res = run("pi", url)  # not interactive, no --fingerprint: refused, told what to pass
    assert res.exit_code == 2 and f"--fingerprint {PINS[url]}" in res.stderr and res.stderr.count("\n") == 1
    assert not devices_yaml.exists()
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "pi").write_text(_token(agent))
    res = run("pi", url, "--fingerprint", PINS[url].replace(":", "").lower(), "--token-file", "tokens/pi")
    assert res.exit_code == 0 and "added pi" in res.stdout, res.output
    (spec,) = load_devices(devices_yaml)
    assert spec.fingerprint == PINS[url] and yaml.safe_load(devices_yaml.read_text())["devices"][0]["token_file"] == "tokens/pi"
    res = run("fake", impostor.url, "--fingerprint", PINS[url])
    assert res.exit_code == 2 and impostor.certificate.fingerprint in res.stderr and PINS[url] in res.stderr
    res = run("tofu", impostor.url, "--yes")  # trust on first use, explicitly
    assert res.exit_code == 0 and impostor.certificate.fingerprint in res.stdout
    assert [d.fingerprint for d in load_devices(devices_yaml)] == [PINS[url], impostor.certificate.fingerprint]
    monkeypatch.setattr("device_bench.host_cli._interactive", lambda: True)  # trust on first use, asked
    res = CliRunner().invoke(devices_cmd, ["add", "asked", url, "--file", str(devices_yaml)], input="n\n")
    assert res.exit_code == 2 and PINS[url] in res.stderr and "not confirmed" in res.stderr
    res = CliRunner().invoke(devices_cmd, ["add", "asked", url, "--file", str(devices_yaml)], input="y\n")
    assert res.exit_code == 0 and load_devices(devices_yaml)[-1].fingerprint == PINS[url]
    res = run("bad", url, "--fingerprint", "xyz")
    assert res.exit_code == 2 and "not a SHA-256" in res.stderr
    res = run("plain", url.replace("https:", "http:"), "--fingerprint", PINS[url])
    assert res.exit_code == 2 and "plain http" in res.stderr
    devices_yaml.write_text("devices:\n  - {name: x, url: 'http://a:1', fingerprint: 'ab'}\n")
    res = CliRunner().invoke(devices_cmd, ["check", str(devices_yaml)])
    assert res.exit_code == 2 and "not a SHA-256" in res.stderr


# -- end to end: a fleet bench over TLS with pinned fingerprints ------------------------------------

@pytest.mark.slow
def test_a_fleet_bench_over_tls_with_pinned_fingerprints(agent, tmp_path_factory, tmp_path):
    url, token = agent[0], _token(agent)
    bundle = tiny_bundle_dir(tmp_path_factory)
    second_token = tmp_path / "second.token"
    CliRunner().invoke(agent_main, ["token", "rotate", "--token-file", str(second_token), "--quiet"])
    devices_yaml = tmp_path / "devices.yaml"
    with running_agent(tmp_path / "wd2", "--token-file", str(second_token), "--name", "second") as (url2, _):
        for name, u, tok in (("one", url, None), ("two", url2, str(second_token))):
            args = ["add", name, u, "--yes", "--file", str(devices_yaml)] + (["--token-file", tok] if tok else [])
            assert CliRunner().invoke(devices_cmd, args).exit_code == 0
        doc = yaml.safe_load(devices_yaml.read_text())
        doc["devices"][0]["token"] = token
        devices_yaml.write_text(yaml.safe_dump(doc))
        assert [d.fingerprint for d in load_devices(devices_yaml)] == [PINS[url], PINS[url2]]
        res = CliRunner().invoke(bench_cmd, [str(bundle), "--devices", str(devices_yaml), "--targets", "tflite-fp32",
                                             "--threads", "1", "--runs", "3", "--min-seconds", "0", "--warmup", "0",
                                             "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["kind"] == "fleet" and not doc["errors"]
        assert sorted(r["device"] for r in doc["reports"]) == ["one", "two"]
        assert all(r["results"][0]["status"] == "ok" for r in doc["reports"])
        check = CliRunner().invoke(devices_cmd, ["check", str(devices_yaml), "--json"])
        assert check.exit_code == 0 and all(r["reachable"] for r in json.loads(check.stdout))
