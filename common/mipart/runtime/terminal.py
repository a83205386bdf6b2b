"""What every mipart command-line tool does alike: its name when kubectl runs it as a
plugin, and a quiet end when the reader of its output goes away (``| head``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

# What a tool killed by SIGPIPE exits with (128 + 13). Python ignores SIGPIPE, so a closed
# pipe arrives as BrokenPipeError instead.
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


def program_name(argv0: str, default: str) -> str:
    """``kubectl mipart queue`` when kubectl runs this as its plugin ``kubectl-mipart-queue``
    (kubectl runs ``kubectl-a-b`` for ``kubectl a b``), else ``default``."""
    name = Path(argv0).name
    if name.startswith("kubectl-"):
        return " ".join(["kubectl", *name.removeprefix("kubectl-").split("-")])
    return default


def run_quietly(body: Callable[[], int]) -> int:
    """Run ``body``; when its reader goes away, stop without a traceback (and without the
    interpreter's own complaint when it flushes stdout at exit); Ctrl-C ends a --watch."""
    try:
        try:
            return body()
        finally:
            sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
    except BrokenPipeError:
        # Whatever is still buffered would fail again at exit: send it nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
