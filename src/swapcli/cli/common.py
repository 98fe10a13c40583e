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
    sys.stdout.write(json.dumps(payload, indent=None, default=str) + "\n")
    sys.stdout.flush()


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
