"""Signal handling shared by the commands that run worker processes (batch, --device lists)."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside: a second Ctrl-C during cleanup is not a traceback, and workers
    spawned here start deaf to it (each installs its own handler once it can clean up)."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def sigterm_interrupts() -> None:
    """SIGTERM (kill, Slurm's scancel, a container stop) cleans up like Ctrl-C."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests calling the app in-process)
        pass


def pid_alive(pid: int) -> bool:
    """Is there a process with this pid (signal 0: nothing is sent)? One we may not signal is alive."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
