"""Where the device side keeps what it can rebuild (speed profiles, XNNPACK's packed weights): one rule for all.

``$<env>`` when set, else ``$XDG_CACHE_HOME/edgepack/<name>``, else ``~/.cache/edgepack/<name>``.
"""
from __future__ import annotations

import os
from pathlib import Path


def user_cache(name: str, env: str) -> Path:
    """The cache folder ``name`` (not created: a caller that cannot write there goes on without it)."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "edgepack" / name
