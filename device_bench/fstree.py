"""File-tree operations whose cost does not depend on how deep a tree is.

``shutil.rmtree`` and ``Path.rglob`` recurse once per directory level, so a
hostile tree thousands of levels deep makes them raise ``RecursionError``
(and a path longer than ``PATH_MAX`` makes path-based calls fail). These walk
with an explicit stack and descend through directory file descriptors
(``dir_fd``), holding one descriptor at a time, never following symlinks.
``write_private`` is the device side's one atomic write (a token, a key, a cache record).
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterator

log = logging.getLogger("edgepack.agent")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def walk(root: Path, max_entries: int | None = None) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry below ``root`` (not following links) with its ``lstat``; iterative, breadth first."""
    pending = [Path(root)]
    seen = 0
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                seen += 1
                if max_entries is not None and seen > max_entries:
                    raise OSError(f"more than {max_entries} entries below {root}")
                st = entry.stat(follow_symlinks=False)
                path = Path(entry.path)
                yield path, st
                if stat.S_ISDIR(st.st_mode):
                    pending.append(path)


def remove_tree(path: Path) -> bool:
    """Delete ``path`` and everything below it, however deep; True when it is gone. Never raises."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return True
        _empty_directory(path)
        os.rmdir(path)
        return True
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False


def _empty_directory(path: Path) -> None:
    """Remove everything inside ``path`` going down and up by file descriptor; one descriptor open at a time."""
    fd = os.open(path, _DIR_FLAGS)
    # one frame per level: (this folder's name in its parent, its subfolders still to remove)
    stack: list[tuple[str | None, list[str]]] = [(None, _clear_files(fd))]
    try:
        while stack:
            name, subdirs = stack[-1]
            if subdirs:
                child = subdirs.pop()
                try:
                    child_fd = os.open(child, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:  # removed meanwhile by someone else
                    continue
                os.close(fd)
                fd = child_fd
                stack.append((child, _clear_files(fd)))
                continue
            stack.pop()
            if name is None:  # back at the top: the caller removes the folder itself
                break
            parent_fd = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent_fd
            try:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in the folder open as ``fd``; return its subfolders' names."""
    subdirs = []
    with os.scandir(fd) as entries:  # scandir works on a duplicate; fd stays ours
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if is_dir:
            subdirs.append(name)
        else:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return subdirs


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, the file never readable by others (0600 from its creation)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
