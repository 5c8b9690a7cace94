"""Writing a bundle atomically: build in a temp dir beside the destination, then rename."""
from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import EdgepackError


def check_destination(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgepackError(f"-o {out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise EdgepackError(f"-o {out_dir}: directory exists and is not empty (use --force to replace it)")


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A temp dir on the same filesystem as ``out_dir``; removed unless ``publish`` moved it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``staged`` (the old one is removed only once the new one is in place)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{staged.name.rsplit('-', 1)[-1]}")
        out_dir.rename(old)
    staged.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_archive(bundle_dir: Path, archive_path: Path | None = None) -> Path:
    """`<bundle>.tar.gz` with the bundle folder's contents at the archive root (written atomically)."""
    archive_path = archive_path or bundle_dir.with_name(bundle_dir.name + ".tar.gz")
    tmp = archive_path.with_name(f".{archive_path.name}.partial")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(bundle_dir)), recursive=False)
    tmp.replace(archive_path)
    return archive_path
