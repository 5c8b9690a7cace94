"""The agent's defences, over real HTTPS (pinned) on loopback: auth, upload limits, safe extraction, bundle validation.

After every rejection: a 4xx with a one-line reason, no job directory left
behind, nothing written outside the job directory, and the agent still healthy.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from device_bench.client import OPTIONS_HEADER, AgentError
from device_bench.manifest import InputSpec, Manifest, ModelInfo, TargetEntry, TensorSpec
from test_device_bench_fixture import agent_client, http_connection, running_agent

TOKEN = "correct-horse-battery-staple"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _bundle_files(schema_version: int = 1, corrupt: bool = False) -> dict[str, bytes]:
    model = b"\x00not-really-a-model\x00" * 64
    buf = io.BytesIO()
    np.savez(buf, input_ids=np.zeros((1, 4), np.int32), attention_mask=np.ones((1, 4), np.int32))
    manifest = Manifest(
        created_at="2026-01-01T00:00:00+00:00", edgepack_version="0.1.0", tool_versions={},
        model=ModelInfo(source="x", architecture="x", model_type="x", num_parameters=0, fp32_size_bytes=0),
        task="feature-extraction",
        input_spec=InputSpec(seq_len=4, inputs=[TensorSpec("input_ids", "int32", [1, 4]),
                                                TensorSpec("attention_mask", "int32", [1, 4])],
                             outputs=[TensorSpec("embedding", "float32", [1, 4])]),
        tokenizer=None,
        targets=[TargetEntry(name="t", status="ok", runtime="tflite", file="model.tflite",
                             sha256=hashlib.sha256(model).hexdigest(), size_bytes=len(model))],
    ).to_dict()
    manifest["schema_version"] = schema_version
    return {"manifest.json": json.dumps(manifest).encode(), "samples.npz": buf.getvalue(),
            "model.tflite": model[:-1] + b"\x01" if corrupt else model}


def _tar(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return out.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    with running_agent(root / "wd", "--token", TOKEN, "--max-upload-mb", "1") as (url, proc):
        yield url, proc, root


def _request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             send_body: bool = True, source: str | None = None) -> tuple[int, dict]:
    conn = http_connection(url, timeout=30, source=source)
    try:
        conn.putrequest(method, path)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None and send_body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent may answer and close before reading a refused body
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".agent.log")}


def _assert_rejected(agent, body: bytes | None, status: int, reason: str, headers: dict | None = None, **kw) -> None:
    url, proc, root = agent
    before = _files_under(root)
    jobs_before = set((root / "wd" / "jobs").iterdir())
    code, payload = _request(url, "POST", "/v1/jobs", body, {**AUTH, **(headers or {})}, **kw)
    assert code == status, payload
    assert reason in payload["error"] and "\n" not in payload["error"]
    assert _files_under(root) == before  # nothing written anywhere, job dir removed
    assert set((root / "wd" / "jobs").iterdir()) == jobs_before
    assert proc.poll() is None and _request(url, "GET", "/v1/info", headers=AUTH)[0] == 200


def test_token_required_and_checked(agent):
    url, _, root = agent
    body = _tar(_bundle_files())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN}):
        assert _request(url, "GET", "/v1/info", headers=headers)[0] == 401
        code, payload = _request(url, "POST", "/v1/jobs", body, headers)
        assert code == 401 and payload == {"error": "missing or wrong token"}
    assert not any((root / "wd" / "jobs").iterdir())
    with pytest.raises(AgentError, match="rejected the token"):
        agent_client(url, "wrong").info()
    assert agent_client(url, TOKEN).info()["api_version"] == 1


@pytest.mark.parametrize("extra, reason", [
    ([_member("../../../../escape.txt")], "'..' is not allowed"),
    ([_member("/tmp/edgepack-abs-escape.txt")], "absolute paths are not allowed"),
    ([_member("evil-link", tarfile.SYMTYPE, "/etc/passwd")], "links are not allowed"),
    ([_member("hard-link", tarfile.LNKTYPE, "manifest.json")], "links are not allowed"),
    ([_member("null-device", tarfile.CHRTYPE)], "only regular files and folders"),
    ([_member("fifo", tarfile.FIFOTYPE)], "only regular files and folders"),
], ids=["traversal", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_unsafe_archive_members(agent, extra, reason):
    _assert_rejected(agent, _tar(_bundle_files(), extra), 400, reason)
    assert not Path("/tmp/edgepack-abs-escape.txt").exists()


def test_size_limit_and_framing(agent):
    _assert_rejected(agent, b"x" * (2 << 20), 413, "over this agent's limit of 1 MB",
                     headers={"Content-Length": str(2 << 20)}, send_body=False)
    _assert_rejected(agent, None, 411, "Content-Length", headers={"Transfer-Encoding": "chunked"})
    _assert_rejected(agent, b"", 400, "both Transfer-Encoding and Content-Length",
                     headers={"Transfer-Encoding": "chunked"}, send_body=False)


def test_corrupt_archives_and_bad_bundles(agent):
    good = _tar(_bundle_files())
    _assert_rejected(agent, good[: len(good) // 2], 400, "corrupt or truncated archive")
    _assert_rejected(agent, b"definitely not a tarball" * 10, 415, "not gzip-compressed")
    _assert_rejected(agent, _tar(_bundle_files(corrupt=True)), 400, "sha256 mismatch")
    _assert_rejected(agent, _tar(_bundle_files(schema_version=99)), 400, "bad manifest: manifest: schema_version 99")
    _assert_rejected(agent, _tar({"samples.npz": b"x"}), 400, "no manifest.json")
    _assert_rejected(agent, good, 400, "unknown option", headers={OPTIONS_HEADER: json.dumps({"shell": "rm -rf /"})})
    _assert_rejected(agent, good, 400, "not in this bundle", headers={OPTIONS_HEADER: json.dumps({"targets": ["zzz"]})})
    _assert_rejected(agent, good, 400, "--threads", headers={OPTIONS_HEADER: json.dumps({"threads": [0]})})


def test_a_clean_upload_is_accepted(agent, tmp_path):
    url, proc, root = agent
    code, payload = _request(url, "POST", "/v1/jobs", _tar(_bundle_files()), AUTH)
    assert code == 202 and payload["status"] == "queued"
    client = agent_client(url, TOKEN)
    state = client.wait(payload["id"], poll_s=0.1, timeout_s=60)
    report = client.report(payload["id"])  # a garbage model fails its row, not the agent
    assert state["status"] == "done" and report.results[0].status == "failed"
    # the client refuses to send what the agent would refuse, before uploading
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob").write_bytes(np.random.default_rng(0).bytes(2 << 20))
    with pytest.raises(AgentError, match="over the agent's limit of 1 MB"):
        client.submit(big)
