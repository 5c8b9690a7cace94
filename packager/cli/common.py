"""What every `edgepack` command shares: exit codes and the consoles (rich, imported when first used)."""
from __future__ import annotations

import sys

EXIT_BAD_INPUT = 2  # usage errors: one line on stderr
EXIT_TARGET_FAILED = 1  # a target failed / a bundle is not intact; the output still comes out


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def stdout_console():
    """Tables stay readable when piped: no wrapping at 80 columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)
