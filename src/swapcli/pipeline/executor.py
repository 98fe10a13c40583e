"""One executor for the commands that spread work over workers: ``batch --workers N``, ``--device
cuda:0,1`` (batch and the video split) and ``--cluster`` (Ray).

The caller gives an *app*: ``factory(setup, paths) -> app`` builds a worker's state once (models,
analysed sources) and ``app.run(payload, progress, paths) -> result`` does one item. ``paths(p)``
is where the driver's file ``p`` is on this worker (itself with one filesystem). The executor
builds one app per *slot* (a worker process, or a Ray actor) and hands the items out one at a
time to whichever slot is free. Every result comes back to the driver, which alone records it.

Backends
    :class:`Inline` (one slot, in this process), :class:`LocalPool` (spawned processes) and
    ``cluster.RayPool`` (one long-lived Ray actor per slot). All three report to the driver
    through ``on_event(kind, ...)``: ("start", item), ("progress", item, done, total),
    ("log", level, message), ("result", item, result).

Failures
    An exception out of a factory or ``run`` stops everything and is raised on the driver as
    :class:`WorkerError` (its exit code and one-line message). A worker process that dies is a
    WorkerError too (a Ray actor that dies has its item retried on another one: cluster.py).

Stopping (Ctrl-C, SIGTERM, a failure)
    The driver sets the stop event and sends SIGINT to every worker: the running item gets
    KeyboardInterrupt (writers delete their temp files, kill their ffmpeg), an idle worker just
    ends. Results that still arrive are delivered; after 60 s what is left is killed with its
    children. ``abandon(item)`` is called for every unfinished item once no process can still
    write for it; then the exception is re-raised. A worker is born deaf to SIGINT (spawned under
    ``sigint_ignored``); its handler only *records* a signal until the worker is inside its
    reporting ``try`` and checks the record there first, so a stop at any moment of its life is
    reported as "interrupted", never as a traceback (tests/test_devices.py makes this happen).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from swapcli.core.errors import EXIT_FAILURE, SwapcliError
from swapcli.core.signals import sigint_ignored

log = logging.getLogger("swapcli")

Progress = Callable[[int, "int | None"], None]
Paths = Callable[[str], str]
Event = Callable[..., None]
STOP_WAIT_S = 60.0


@dataclass
class Item:
    """One unit of work. ``send``: driver files the worker reads; ``receive``: files it writes
    (with a cluster and no shared filesystem they travel through Ray's object store)."""

    key: int
    payload: Any
    send: tuple[str, ...] = ()
    receive: tuple[str, ...] = ()


@dataclass
class Slot:
    """One worker: a label for messages (its device, or its node), the factory's setup argument,
    the driver files that setup reads (source photos), and what it asks a cluster for."""

    label: str
    setup: Any
    send: tuple[str, ...] = ()
    num_cpus: float = 1
    num_gpus: float = 0


@dataclass(frozen=True)
class SlotSpec:
    """Where a slot runs, decided by the backend (``plan``): its device and engine threads."""

    label: str
    device: str
    threads: int = 0
    num_cpus: float = 1
    num_gpus: float = 0


class WorkerError(SwapcliError):
    """A worker's failure, re-raised on the driver with its exit code and one-line message."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):
        return (WorkerError, (str(self), self.exit_code))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C arrived just after an item's output was committed: deliver ``result``, then stop."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


def one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:500]


def describe(exc: BaseException, where: str = "") -> tuple[int, str]:
    """(exit code, one-line message) of a worker's exception."""
    if isinstance(exc, SwapcliError):
        return int(getattr(exc, "exit_code", EXIT_FAILURE)), one_line(str(exc))
    if isinstance(exc, MemoryError):
        return EXIT_FAILURE, f"out of memory{' on ' + where if where else ''}"
    return EXIT_FAILURE, f"internal error{' on ' + where if where else ''}: {type(exc).__name__}: {one_line(str(exc)) or '-'}"


def same_path(path: str) -> str:
    return path


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_plan(workers: int, devices: Sequence[str], items: int) -> list[SlotSpec]:
    """``workers`` slots (at most one per item), devices dealt round robin, the cores shared."""
    n = max(1, min(workers, items or 1))
    threads = max(1, cpu_count() // n) if n > 1 else 0
    return [SlotSpec(label=devices[i % len(devices)], device=devices[i % len(devices)], threads=threads)
            for i in range(n)]


def local(slots: int) -> "Inline | LocalPool":
    return Inline() if slots <= 1 else LocalPool()


# --------------------------------------------------------------------------- in this process


class Inline:
    """One slot in this process: no start-up cost, Ctrl-C is a KeyboardInterrupt right here."""

    name = "local"
    shared_fs = True

    def run(self, factory: Callable, slots: Sequence[Slot], items: Sequence[Item], on_event: Event, *,
            deliver: Callable | None = None, abandon: Callable[[Item], None] | None = None) -> None:
        if not items:
            return
        try:
            app = factory(slots[0].setup, same_path)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - one line and its exit code
            raise WorkerError(*reversed(describe(exc))) from None
        for item in items:
            on_event("start", item)
            try:
                result = app.run(item.payload, lambda d, t, i=item: on_event("progress", i, d, t), same_path)
            except Interrupted as exc:
                on_event("result", item, exc.result)
                raise KeyboardInterrupt from None
            except KeyboardInterrupt:
                if abandon is not None:
                    with sigint_ignored():
                        abandon(item)
                raise
            except BaseException as exc:  # noqa: BLE001
                raise WorkerError(*reversed(describe(exc))) from None
            on_event("result", item, result)


# --------------------------------------------------------------------------- worker processes

_EVENTS: Any = None
_STOPPING = False  # a signal arrived (or the worker is done): the next ones are ignored
_GUARDED = False  # inside the reporting try: a signal there raises KeyboardInterrupt
_PARENT = 0


class _QueueLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _put(("log", record.levelno, record.getMessage()))


def _put(event: tuple) -> None:
    with contextlib.suppress(Exception):  # a closed queue never turns into a traceback
        _EVENTS.put_nowait(event)


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM in a worker: the first one aborts the running item (cleanly) or, before the
    worker can report, is only recorded; later ones are ignored."""
    global _STOPPING
    if not _GUARDED and _PARENT and os.getppid() != _PARENT:
        os._exit(130)  # the driver is gone (PR_SET_PDEATHSIG) and nothing runs: nothing to clean
    if _STOPPING:
        return
    _STOPPING = True
    if _GUARDED:
        raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the driver dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _forward_logs(level: int) -> None:
    logger = logging.getLogger("swapcli")
    logger.handlers[:] = [_QueueLog()]
    logger.setLevel(level)
    logger.propagate = False


def worker_main(index: int, factory: Callable, setup: Any, inbox: Any, events: Any, stop: Any,
                log_level: int = logging.INFO) -> None:
    """A worker process: build the app, then run items from ``inbox`` until None; report on ``events``."""
    global _EVENTS, _PARENT, _STOPPING, _GUARDED
    signal.signal(signal.SIGINT, _on_signal)  # first: from here on a stop is never a traceback
    signal.signal(signal.SIGTERM, _on_signal)
    _EVENTS, _PARENT = events, os.getppid()
    _die_with_parent()
    _forward_logs(log_level)
    _put(("pid", index, os.getpid()))
    current: list[Any] = [None]
    try:
        try:
            outcome = _serve(index, factory, setup, inbox, stop, current)
        except KeyboardInterrupt:  # a signal inside an except clause of _serve
            outcome = KeyboardInterrupt()
        _GUARDED = False
        if isinstance(outcome, Interrupted):
            _put(("interrupted", index, current[0], outcome.result))
        elif isinstance(outcome, KeyboardInterrupt):
            import gc

            gc.collect()  # an orphaned writer's __del__ aborts it now (kills ffmpeg, deletes its temp file)
            _put(("interrupted", index, current[0], None))
        elif outcome is not None:
            log.debug("worker %d failed", index, exc_info=outcome)
            _put(("error", index, current[0], *describe(outcome)))
    finally:
        _STOPPING = True  # from now on a signal is ignored: nothing left to clean up, no traceback
        _GUARDED = False


def _serve(index: int, factory: Callable, setup: Any, inbox: Any, stop: Any, current: list) -> BaseException | None:
    global _GUARDED
    try:
        _GUARDED = True
        if _STOPPING:  # told to stop while starting up
            raise KeyboardInterrupt
        app = factory(setup, same_path)
        _put(("ready", index))
        while True:
            item = inbox.get()
            if item is None:
                return None
            current[0] = item.key
            if _STOPPING or stop.is_set():
                raise KeyboardInterrupt
            _put(("start", index, item.key))
            result = app.run(item.payload, _progress(index, item.key, stop), same_path)
            _GUARDED = False  # reporting the result: a signal now is only recorded, the result is not lost
            _put(("done", index, item.key, result))
            current[0] = None
            _GUARDED = True
            if _STOPPING:
                raise KeyboardInterrupt
    except BaseException as exc:  # noqa: BLE001 - reported by worker_main
        return exc


def _progress(index: int, key: int, stop: Any) -> Progress:
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # the driver gave up (another worker failed, or Ctrl-C)
        now = time.monotonic()
        if now - last[0] >= 0.2 or (total and done >= total):
            last[0] = now
            _put(("progress", index, key, done, total))

    return progress


def kill_tree(pid: int | None) -> None:
    if not pid:
        return
    try:
        import psutil

        kids = psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already
        kids = []
    for p in [pid, *(k.pid for k in kids)]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


@dataclass
class _State:
    items: dict[int, Item]
    on_event: Event
    busy: dict[int, int] = field(default_factory=dict)  # slot -> item key
    done: set[int] = field(default_factory=set)
    pids: dict[int, int] = field(default_factory=dict)
    failure: tuple[int, str] | None = None
    interrupted: bool = False
    finished: set[int] = field(default_factory=set)  # slots that reported their end


class LocalPool:
    """Spawned worker processes on this machine (spawn: onnxruntime, CUDA and fork do not mix)."""

    name = "local"
    shared_fs = True

    def run(self, factory: Callable, slots: Sequence[Slot], items: Sequence[Item], on_event: Event, *,
            deliver: Callable | None = None, abandon: Callable[[Item], None] | None = None) -> None:
        import multiprocessing
        import queue as queue_mod

        if not items:
            return
        ctx = multiprocessing.get_context("spawn")
        events = ctx.Queue()
        stop = ctx.Event()
        inboxes = [ctx.Queue() for _ in slots]
        pending = deque(items)
        st = _State({item.key: item for item in items}, on_event)
        procs: list[Any] = []
        level = logging.getLogger("swapcli").level

        def hand_out(slot: int) -> None:
            if pending:
                item = pending.popleft()
                st.busy[slot] = item.key
                inboxes[slot].put(item)
            else:
                inboxes[slot].put(None)

        def handle(event: tuple, stopping: bool = False) -> None:
            kind, slot = event[0], event[1]
            if kind == "pid":
                st.pids[slot] = event[2]
            elif kind == "start":
                on_event("start", st.items[event[2]])
            elif kind == "progress":
                on_event("progress", st.items[event[2]], event[3], event[4])
            elif kind == "done":
                key = event[2]
                st.busy.pop(slot, None)
                st.done.add(key)
                on_event("result", st.items[key], event[3])
                if not stopping:
                    hand_out(slot)
            elif kind == "interrupted":
                st.finished.add(slot)
                if event[3] is not None:  # finished as the interrupt arrived: delivered, not abandoned
                    st.busy.pop(slot, None)
                    st.done.add(event[2])
                    on_event("result", st.items[event[2]], event[3])
                st.interrupted = True
            elif kind == "error":
                st.finished.add(slot)
                if st.failure is None:
                    st.failure = (event[3], event[4])  # (exit code, message)

        def drain(timeout: float = 0.0, stopping: bool = False) -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    event = events.get(timeout=max(0.0, deadline - time.monotonic())) if timeout else events.get_nowait()
                except (queue_mod.Empty, OSError, ValueError, EOFError):
                    return
                if event[0] == "log":
                    on_event("log", event[1], event[2])
                else:
                    handle(event, stopping)

        def check() -> None:
            if st.failure is not None:
                raise WorkerError(st.failure[1], st.failure[0])
            if st.interrupted:  # a worker got the signal (Ctrl-C reaches the whole process group)
                raise KeyboardInterrupt
            for i, proc in enumerate(procs):
                if proc.exitcode is not None and i not in st.finished and (i in st.busy or pending):
                    drain(1.0)  # its last words may still be in the pipe
                    if st.failure is not None or st.interrupted:
                        return check()
                    if proc.exitcode == 0 and i not in st.busy:
                        st.finished.add(i)
                        continue
                    code = proc.exitcode
                    why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                    raise WorkerError(f"the worker on {slots[i].label} died ({why}); out of memory? "
                                      "try fewer workers or devices", EXIT_FAILURE)

        try:
            with sigint_ignored():  # born deaf to Ctrl-C until their own handler is installed
                for i, slot in enumerate(slots):
                    hand_out(i)
                    proc = ctx.Process(target=worker_main, args=(i, factory, slot.setup, inboxes[i], events, stop, level),
                                       name=f"swapcli-{slot.label}", daemon=True)
                    proc.start()
                    procs.append(proc)
            while len(st.done) < len(items):
                drain(0.2)
                check()
        except BaseException:
            with sigint_ignored():
                self._stop(procs, st, stop, drain)
                for key in st.busy.values():
                    if key not in st.done and abandon is not None:
                        with contextlib.suppress(Exception):
                            abandon(st.items[key])
                _close(events, inboxes)
            raise
        for inbox in inboxes:
            with contextlib.suppress(Exception):
                inbox.put(None)
        for proc in procs:
            proc.join(10)
            if proc.exitcode is None:
                kill_tree(proc.pid)
                proc.join(5)
        drain()
        _close(events, inboxes)

    @staticmethod
    def _stop(procs: Sequence[Any], st: _State, stop: Any, drain: Callable) -> None:
        """SIGINT every worker (writers delete their temp files, kill their ffmpeg), deliver what
        still finishes, then SIGKILL what is left with its children."""
        stop.set()
        drain(stopping=True)
        for proc in procs:
            if proc.exitcode is None and proc.pid:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and any(p.exitcode is None for p in procs):
            with contextlib.suppress(Exception):
                drain(0.1, stopping=True)
        for proc in procs:
            if proc.exitcode is None:
                kill_tree(proc.pid)
        for proc in procs:
            proc.join(5)
        with contextlib.suppress(Exception):
            drain(stopping=True)


def _close(events: Any, inboxes: Sequence[Any]) -> None:
    for q in (events, *inboxes):
        with contextlib.suppress(Exception):
            q.close()
            q.join_thread()
