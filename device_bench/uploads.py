"""Receiving a bundle upload safely: bounded body, bounded gzip, safe tar extraction, manifest and checksums.

Every check that can fail raises ``UploadRejected`` with an HTTP status and a
one-line reason; the caller deletes the job directory, so nothing of a
rejected upload stays on the device. The limits (the agent's resource
envelope, documented in the README) are the constants below:

* only gzip is accepted (what the client sends): no bzip2/xz/lzma decoder,
  whose dictionaries a header can size at gigabytes, ever runs here;
* the gzip stream is decompressed to a plain tar on disk in bounded chunks
  with a byte budget, and must end with its CRC/size trailer (a truncated
  upload is refused, not silently cut short);
* tar headers are read with bounded extended headers (PAX/GNU long names),
  no sparse members, at most ``MAX_MEMBERS`` members, ``MAX_DEPTH`` folder
  levels and ``MAX_PATH_BYTES`` per name, no NUL or control characters;
* absolute names, ``..``, links and device/FIFO members are refused before
  anything is written, then tarfile's ``data`` filter checks again while
  extracting; on interpreters whose ``tarfile`` has no extraction filters
  (before 3.10.12 / 3.11.4, e.g. Debian 12's and Raspberry Pi OS's 3.11.2)
  ``extract_members`` applies the same rules itself: the target must resolve
  inside the destination, files are created without following links, modes
  lose setuid/setgid/sticky and group/other write, ownership is never applied;
* ``manifest.json`` is at most ``MAX_MANIFEST_BYTES``.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .fstree import walk
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ManifestError, verify_files
from .records import one_line

CHUNK = 1 << 16
MAX_MEMBERS = 10_000
MAX_DEPTH = 32  # folder levels of one member name
MAX_PATH_BYTES = 1024  # one member name, UTF-8
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_EXTENDED_HEADER_BYTES = 8 << 10  # one PAX or GNU long-name header
MAX_EXTENDED_HEADERS_TOTAL = 1 << 20  # all of them in one archive
GZIP_MAGIC = b"\x1f\x8b\x08"
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
             tarfile.GNUTYPE_LONGLINK)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


class UploadRejected(Exception):
    """An upload refused with an HTTP status and a one-line reason (and, for 503, when to retry)."""

    def __init__(self, status: int, reason: str, retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = one_line(reason)
        self.retry_after_s = retry_after_s


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


def gunzip(src: Path, dest: Path, max_bytes: int) -> None:
    """Decompress the single gzip stream ``src`` into ``dest``: bounded output, CRC and size trailer checked."""
    with open(src, "rb") as f, open(dest, "wb") as out:
        if f.read(3) != GZIP_MAGIC:
            raise UploadRejected(415, "the upload is not gzip-compressed: send the bundle as a .tar.gz")
        f.seek(0)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing; zlib verifies CRC-32 and ISIZE
        written = 0
        try:
            while not inflater.eof:
                data = inflater.unconsumed_tail or f.read(CHUNK)
                block = inflater.decompress(data, CHUNK)
                written += len(block)
                if written > max_bytes:
                    raise UploadRejected(413, f"archive unpacks to more than {max_bytes >> 20} MB")
                out.write(block)
                if not data and not block and not inflater.eof:
                    raise UploadRejected(400, "corrupt or truncated archive (the gzip stream ends before its CRC/size trailer)")
        except zlib.error as exc:
            raise UploadRejected(400, f"corrupt or truncated archive (gzip: {exc})") from None
        if inflater.unused_data or f.read(1):
            raise UploadRejected(400, "corrupt archive: data after the end of the gzip stream")


def _bounded_tarinfo() -> type[tarfile.TarInfo]:
    """A TarInfo class that refuses oversized extended headers and sparse members before tarfile buffers them."""

    class BoundedTarInfo(tarfile.TarInfo):
        extended_budget = MAX_EXTENDED_HEADERS_TOTAL

        @classmethod
        def frombuf(cls, buf, encoding, errors):  # type: ignore[override]
            info = super().frombuf(buf, encoding, errors)
            if info.type in _EXTENDED:
                if info.size > MAX_EXTENDED_HEADER_BYTES:
                    raise UploadRejected(400, f"archive has an extended header of {info.size} bytes (limit {MAX_EXTENDED_HEADER_BYTES})")
                cls.extended_budget -= info.size
                if cls.extended_budget < 0:
                    raise UploadRejected(400, f"archive's extended headers exceed {MAX_EXTENDED_HEADERS_TOTAL >> 10} KiB")
            elif info.type == tarfile.GNUTYPE_SPARSE:
                raise UploadRejected(400, "archive has a sparse member (not allowed)")
            return info

        def _refuse_sparse(self, *args, **kwargs):
            raise UploadRejected(400, "archive has a sparse member (not allowed)")

        # tarfile parses GNU sparse maps in these (private, long-stable) hooks; an unbounded map is a memory bomb
        _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse

    return BoundedTarInfo


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    shown = one_line(repr(name), 120)
    if any(not c.isprintable() for c in name):
        raise UploadRejected(400, f"archive member {shown}: control characters (NUL, newline…) are not allowed in names")
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UploadRejected(400, f"archive member {shown}: absolute paths are not allowed")
    if ".." in path.parts or ".." in name.split("\\"):
        raise UploadRejected(400, f"archive member {shown}: '..' is not allowed")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UploadRejected(400, f"archive member {shown}: name longer than {MAX_PATH_BYTES} bytes")
    if len(path.parts) > MAX_DEPTH:
        raise UploadRejected(400, f"archive member {shown}: more than {MAX_DEPTH} folder levels")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in path.parts):
        raise UploadRejected(400, f"archive member {shown}: a name component is longer than {MAX_NAME_BYTES} bytes")
    if m.issym() or m.islnk():
        raise UploadRejected(400, f"archive member {shown}: links are not allowed")
    if not (m.type in _FILE_TYPES or m.isdir()) or m.sparse is not None:
        raise UploadRejected(400, f"archive member {shown}: only regular files and folders are allowed")


def extract_archive(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract the ``.tar.gz`` ``archive`` into ``dest`` after checking every member; removes the plain tar it makes."""
    dest.mkdir(parents=True, exist_ok=True)
    plain = archive.with_suffix(".plain-tar")
    try:
        gunzip(archive, plain, max_bytes + MAX_MEMBERS * 3 * tarfile.BLOCKSIZE + MAX_EXTENDED_HEADERS_TOTAL)
        _extract_plain(plain, dest, max_bytes)
    finally:
        plain.unlink(missing_ok=True)
    # belt and braces: nothing but folders and regular files ended up below dest
    try:
        for path, st in walk(dest, max_entries=MAX_MEMBERS + 1):
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise UploadRejected(400, f"archive produced {path.relative_to(dest)!s}, which is not a regular file")
    except OSError as exc:
        raise UploadRejected(400, f"archive could not be checked after extraction ({one_line(exc, 200)})") from None


def _extract_plain(plain: Path, dest: Path, max_bytes: int) -> None:
    try:
        with tarfile.open(plain, "r:", tarinfo=_bounded_tarinfo()) as tar:
            members: list[tarfile.TarInfo] = []
            entries: set[str] = set()  # members and the folders they imply: what extraction creates
            total = 0
            for m in tar:
                _check_member(m)
                total += m.size
                if total > max_bytes:
                    raise UploadRejected(413, f"archive unpacks to more than {max_bytes >> 20} MB")
                members.append(m)
                parts = PurePosixPath(m.name).parts
                entries.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
                if len(members) > MAX_MEMBERS or len(entries) > MAX_MEMBERS:
                    raise UploadRejected(400, f"archive has more than {MAX_MEMBERS} members (files and folders)")
            end = tar.offset
            extract_members(tar, members, dest)
        _check_end(plain, end)
    except UploadRejected:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, RecursionError, UnicodeError) as exc:
        detail = one_line(str(exc).strip().splitlines()[0], 200) if str(exc).strip() else type(exc).__name__
        raise UploadRejected(400, f"corrupt or truncated archive ({detail})") from None


HAS_EXTRACTION_FILTERS = hasattr(tarfile, "data_filter")  # 3.12, 3.11.4, 3.10.12 and later


def extract_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path,
                    use_stdlib_filter: bool | None = None) -> None:
    """Extract already-checked members with the guarantees of tarfile's ``data`` filter on every interpreter.

    Where the standard library has the filter it does the work (a second, independent check); where it has
    none, the same rules are applied here rather than trusting ``extractall``'s unfiltered defaults, which
    would apply the archive's owners and setuid bits.
    """
    if HAS_EXTRACTION_FILTERS if use_stdlib_filter is None else use_stdlib_filter:
        tar.extractall(dest, members=members, filter="data")
        return
    root = os.path.realpath(dest)
    for member in members:
        target = os.path.realpath(os.path.join(root, *PurePosixPath(member.name).parts))
        if os.path.commonpath([target, root]) != root:
            raise UploadRejected(400, f"archive member {one_line(repr(member.name), 120)}: resolves outside the bundle folder")
        if member.isdir():
            os.makedirs(target, exist_ok=True)
            continue
        if not member.isreg():  # _check_member refused these already; never write one regardless
            raise UploadRejected(400, f"archive member {one_line(repr(member.name), 120)}: only regular files and folders are allowed")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _write_member(tar, member, target)


def data_filter_mode(mode: int) -> int:
    """A regular file's mode as the ``data`` filter leaves it: no setuid/setgid/sticky, no group/other write,
    owner read+write, and executable bits only where the owner's is set."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    source = tar.extractfile(member)
    if source is None:
        raise UploadRejected(400, f"archive member {one_line(repr(member.name), 120)}: has no data")
    fd = os.open(target, flags, 0o600)
    with source, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
        if hasattr(os, "fchmod"):
            os.fchmod(out.fileno(), data_filter_mode(member.mode))
    if not hasattr(os, "fchmod"):
        os.chmod(target, data_filter_mode(member.mode))
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _check_end(plain: Path, end: int) -> None:
    """After the last member only zero blocks may follow; anything else is a corrupt header tarfile stopped at."""
    with open(plain, "rb") as f:
        f.seek(end)
        while block := f.read(CHUNK):
            if block.strip(b"\0"):
                raise UploadRejected(400, "corrupt archive: unreadable data after the last member")


def bundle_root(extracted: Path) -> Path:
    """The folder holding manifest.json: the archive root, or its single top-level folder."""
    if (extracted / MANIFEST_NAME).is_file():
        return extracted
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise UploadRejected(400, f"archive has no {MANIFEST_NAME} at its root (is it an edgepack bundle?)")


def validate_bundle(root: Path, targets: list[str] | None) -> Manifest:
    size = os.lstat(root / MANIFEST_NAME).st_size
    if size > MAX_MANIFEST_BYTES:
        raise UploadRejected(413, f"{MANIFEST_NAME} is {size} bytes, over the limit of {MAX_MANIFEST_BYTES}")
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
