"""Upload extraction gives the ``data`` filter's guarantees on every interpreter the package claims.

Python 3.11.2 (Debian 12, Raspberry Pi OS bookworm) has no ``extractall(filter=...)``: there the agent applies
the rules itself. Both paths run here on the same archives and must leave the same tree behind; CI also runs
the agent's hardening and fuzz tests under that interpreter, where the hand-applied path is the one taken.
"""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from device_bench.uploads import HAS_EXTRACTION_FILTERS, UploadRejected, data_filter_mode, extract_archive, extract_members

MEMBERS = [  # (name, mode, data or None for a folder)
    ("bundle", 0o777, None),
    ("bundle/manifest.json", 0o666, b"{}"),
    ("bundle/setuid-exec", 0o4777, b"#!/bin/sh\n"),
    ("bundle/setgid-sticky", 0o3640, b"x"),
    ("bundle/group-exec-only", 0o071, b"y"),
    ("bundle/no-perms", 0o000, b"z"),
    ("bundle/deep/a/b/model.tflite", 0o644, b"\0" * 5000),
    ("bundle/dup", 0o644, b"first"),
    ("bundle/dup", 0o600, b"second, longer"),
]


def tar_bytes(members=MEMBERS, *, uid: int = 4242) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = mode, uid, uid, "evil", "evil", 1_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
        out[str(path.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode) if kind == "file" else None,
                                           path.read_bytes() if kind == "file" else None, st.st_uid,
                                           int(st.st_mtime) if kind == "file" else None)
    return out


def extract(tmp_path: Path, name: str, data: bytes, use_stdlib_filter: bool) -> Path:
    archive = tmp_path / f"{name}.tar.gz"
    archive.write_bytes(data)
    dest = tmp_path / name
    dest.mkdir()
    plain = tmp_path / f"{name}.tar"
    import gzip

    plain.write_bytes(gzip.decompress(data))
    with tarfile.open(plain) as tar:
        extract_members(tar, tar.getmembers(), dest, use_stdlib_filter=use_stdlib_filter)
    return dest


def test_mode_rules_are_the_data_filters():
    for mode in range(0o10000):
        info = tarfile.TarInfo("f")
        info.mode = mode
        if HAS_EXTRACTION_FILTERS:
            assert tarfile.data_filter(info, "/tmp").mode == data_filter_mode(mode), oct(mode)
        kept = data_filter_mode(mode)
        assert not kept & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH), oct(mode)
        assert kept & 0o600 == 0o600


def test_hand_applied_rules_leave_the_same_tree_as_the_stdlib_filter(tmp_path):
    data = tar_bytes()
    by_hand = tree(extract(tmp_path, "by-hand", data, use_stdlib_filter=False))
    assert by_hand["bundle/setuid-exec"][1] == 0o755
    assert by_hand["bundle/setgid-sticky"][1] == 0o640
    assert by_hand["bundle/group-exec-only"][1] == 0o640  # group read kept, its exec dropped
    assert by_hand["bundle/no-perms"][1] == 0o600
    assert by_hand["bundle/dup"][2] == b"second, longer"
    assert by_hand["bundle/deep/a/b/model.tflite"][2] == b"\0" * 5000
    assert by_hand["bundle/manifest.json"][4] == 1_000_000
    assert all(entry[3] == os.getuid() for entry in by_hand.values())  # the archive's owner (4242) never applied
    if not HAS_EXTRACTION_FILTERS:
        pytest.skip("this interpreter's tarfile has no data filter to compare with")
    assert tree(extract(tmp_path, "stdlib", data, use_stdlib_filter=True)) == by_hand


def test_hand_applied_rules_never_write_through_a_link_in_the_destination(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / "bundle").mkdir(parents=True)
    (dest / "bundle" / "escape").symlink_to(outside)
    (dest / "bundle" / "manifest.json").symlink_to(outside / "victim")
    for name in ("bundle/escape/x", "bundle/manifest.json"):
        plain = tmp_path / "one.tar"
        plain.write_bytes(__import__("gzip").decompress(tar_bytes([(name, 0o644, b"payload")])))
        with tarfile.open(plain) as tar, pytest.raises(UploadRejected) as refused:
            extract_members(tar, tar.getmembers(), dest, use_stdlib_filter=False)
        assert refused.value.status == 400 and "outside the bundle folder" in refused.value.reason, refused.value.reason
    assert list(outside.iterdir()) == []


def test_a_truncated_member_is_a_one_line_refusal_on_the_hand_applied_path(tmp_path, monkeypatch):
    import device_bench.uploads as uploads

    monkeypatch.setattr(uploads, "HAS_EXTRACTION_FILTERS", False)
    good = tar_bytes([("bundle/big", 0o644, os.urandom(20000))])
    import gzip

    cut = gzip.compress(gzip.decompress(good)[: 512 + 8000])  # header + part of the data, then nothing
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(cut)
    with pytest.raises(UploadRejected) as refused:
        extract_archive(archive, tmp_path / "dest", 1 << 20)
    assert refused.value.status == 400 and "corrupt or truncated" in refused.value.reason, refused.value.reason
