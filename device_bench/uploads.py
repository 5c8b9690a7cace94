"""Receiving a bundle upload safely: bounded body, safe tar extraction, manifest and checksums.

Every check that can fail raises ``UploadRejected`` with an HTTP status and a
one-line reason; the caller deletes the job directory, so nothing of a
rejected upload stays on the device. Extraction never writes outside the
job directory: absolute names, ``..``, links and device/FIFO members are
refused before anything is written, then tarfile's ``data`` filter checks
again while extracting.
"""
from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .manifest import MANIFEST_NAME, Manifest, ManifestError, verify_files

CHUNK = 1 << 16
MAX_MEMBERS = 10_000


class UploadRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def receive_body(rfile: BinaryIO, length: int, dest: Path) -> None:
    """Copy exactly ``length`` bytes of the request body to ``dest``."""
    remaining = length
    with open(dest, "wb") as out:
        while remaining > 0:
            try:
                block = rfile.read(min(CHUNK, remaining))
            except (TimeoutError, ConnectionError) as exc:
                raise UploadRejected(408, f"upload stalled or dropped after {length - remaining} of {length} bytes ({type(exc).__name__})") from None
            if not block:
                raise UploadRejected(400, f"upload ended early: got {length - remaining} of {length} bytes")
            out.write(block)
            remaining -= len(block)


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UploadRejected(400, f"archive member {name!r}: absolute paths are not allowed")
    if ".." in path.parts or ".." in name.split("\\"):
        raise UploadRejected(400, f"archive member {name!r}: '..' is not allowed")
    if m.issym() or m.islnk():
        raise UploadRejected(400, f"archive member {name!r}: links are not allowed")
    if not (m.isreg() or m.isdir()):
        raise UploadRejected(400, f"archive member {name!r}: only regular files and folders are allowed")


def extract_archive(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract a (gzip/bz2/xz/plain) tar into ``dest`` after checking every member."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members: list[tarfile.TarInfo] = []
            total = 0
            for m in tar:
                _check_member(m)
                total += m.size
                if total > max_bytes:
                    raise UploadRejected(413, f"archive unpacks to more than {max_bytes >> 20} MB")
                members.append(m)
                if len(members) > MAX_MEMBERS:
                    raise UploadRejected(400, f"archive has more than {MAX_MEMBERS} members")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: the member checks above are the whole defence
                tar.extractall(dest, members=members)
    except UploadRejected:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UploadRejected(400, f"corrupt or truncated archive ({detail})") from None
    root = dest.resolve()
    for p in dest.rglob("*"):
        if p.is_symlink() or root not in p.resolve().parents:
            raise UploadRejected(400, f"archive produced {p.relative_to(dest)!s} outside the job folder")


def bundle_root(extracted: Path) -> Path:
    """The folder holding manifest.json: the archive root, or its single top-level folder."""
    if (extracted / MANIFEST_NAME).is_file():
        return extracted
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise UploadRejected(400, f"archive has no {MANIFEST_NAME} at its root (is it an edgepack bundle?)")


def validate_bundle(root: Path, targets: list[str] | None) -> Manifest:
    try:
        manifest = Manifest.load(root)
    except ManifestError as exc:
        raise UploadRejected(400, f"bad manifest: {exc}") from None
    problems = verify_files(root, manifest)
    if problems:
        raise UploadRejected(400, f"bundle integrity check failed: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    if not manifest.samples or not (root / manifest.samples).is_file():
        raise UploadRejected(400, f"bundle has no {manifest.samples or 'samples.npz'} (needed as benchmark inputs)")
    if targets:
        known = {t.name for t in manifest.targets}
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise UploadRejected(400, f"target {unknown[0]!r} is not in this bundle (it has: {', '.join(sorted(known))})")
    return manifest
