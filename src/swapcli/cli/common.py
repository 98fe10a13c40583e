"""What every command shares: logging to stderr, --json on stdout, and the
one place that turns exceptions into one-line messages and exit codes."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import Any, Iterator

from swapcli.core.errors import EXIT_FAILURE, EXIT_INTERRUPTED, SwapcliError

log = logging.getLogger("swapcli")


def setup_logging(quiet: bool = False, debug: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("swapcli")
    root.handlers.clear()
    from rich.console import Console

    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def emit_json(payload: dict[str, Any]) -> None:
    write_result(json.dumps(payload, indent=None, default=str) + "\n")


def say_output(path: Any) -> None:
    """The output path on stdout, as the user gave it (scripts read it)."""
    write_result(f"{path}\n")


def write_result(text: str) -> None:
    """Write a result on stdout. A closed or full stdout (`| head -c0`, `> /dev/full`, `>&-`)
    does not undo work that is done: one warning on stderr, and the command's exit code
    stays that of the work (README, exit codes)."""
    try:
        if sys.stdout is None:
            raise OSError(9, "stdout is closed")
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError) as exc:  # EPIPE, ENOSPC, EBADF; ValueError: a closed file object
        import os

        reason = getattr(exc, "strerror", None) or str(exc)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # the interpreter's final flush must not fail again
            os.close(devnull)
        except OSError:
            pass
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives until exit)
        sys.stderr.write(f"swapcli: warning: could not write the result to stdout ({reason}); not printed\n")
        sys.stderr.flush()


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"swapcli: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


@contextlib.contextmanager
def handle_errors(debug: bool = False, json_out: bool = False) -> Iterator[None]:
    """Map failures to exit codes (see README) without tracebacks unless --debug."""
    try:
        yield
    except SwapcliError as exc:
        if debug:
            raise
        if json_out:
            emit_json({"ok": False, "error": str(exc), "exit_code": exc.exit_code})
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("swapcli: interrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except MemoryError:
        fail("out of memory", EXIT_FAILURE)
    except BrokenPipeError:  # `swapcli ... | head`: the reader left; stop quietly as a pipe writer should
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
    except Exception as exc:  # a bug: say so in one line, keep details for --debug
        if debug:
            raise
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        fail(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)", EXIT_FAILURE)


@contextlib.contextmanager
def running(quiet: bool = False, debug: bool = False, json_out: bool = False) -> Iterator[None]:
    """A command's body: logging on stderr at its level, failures as one-line errors (exit codes)."""
    setup_logging(quiet, debug)
    with handle_errors(debug, json_out):
        yield


@contextlib.contextmanager
def progress_bar(quiet: bool, label: str) -> Iterator:
    """A rich progress bar on stderr (frames, fps, ETA); yields advance(done, total)."""
    if quiet:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fps]} fps"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=None, fps="-")
        start = [0.0]

        def advance(done: int, total: int | None) -> None:
            import time

            now = time.perf_counter()
            if done == 1 or not start[0]:
                start[0] = now
            rate = (done - 1) / (now - start[0]) if now > start[0] else 0.0
            progress.update(task, completed=done, total=total, fps=f"{rate:.1f}")

        yield advance
