"""``--cluster``: the executor's Ray backend (pipeline/executor.py has the contract).

Imported only when ``--cluster`` is given (``ray`` is the optional extra ``swapcli[cluster]``).

Connecting (:func:`connect`)
    ``auto`` ($RAY_ADDRESS, else the cluster ``ray start`` runs on this machine), ``local`` (a
    private one-node Ray on this machine), ``HOST:PORT`` (the head's GCS port, 6379 by default)
    or ``ray://HOST:PORT`` (Ray Client). A named address is first tried with a plain TCP connect
    (5 s), so a cluster that cannot be reached is one line and exit code 6 before any work; so is
    a failing ``ray.init``.

Workers (:meth:`RayPool.plan`)
    One long-lived actor per slot keeps the models loaded: with GPUs in the cluster (and
    ``--device auto|cuda|tensorrt``) one actor per GPU, each asking Ray for ``num_gpus=1`` (Ray
    sets its CUDA_VISIBLE_DEVICES; the engine sees ``cuda``); else one per 4 CPUs and at least
    one per node, each asking for its share of CPUs, which it also uses as engine threads.
    ``--workers N`` sets the number. Actors are spread over the nodes (SPREAD). Items are handed
    out one at a time to whichever actor is free.

Files (no shared filesystem, the default)
    The driver reads each input in 16 MiB chunks into Ray's object store (``ray.put``); the actor
    writes them into a private temp folder of its own (``$SWAPCLI_WORKER_TMP`` or the node's temp
    folder, ``swapcli-ray-NODE/PID-*``, removed after each item; folders of dead actors are swept
    when an actor starts), runs the item there and streams the outputs back in 16 MiB chunks
    (a Ray streaming generator, which also carries progress and log lines). The driver appends
    them to a hidden temp file beside the final output and the caller publishes it atomically
    (``write/atomic.py``). No file size cap beyond the object store and its spilling. With
    ``--shared-fs`` the actors read and write the driver's paths themselves (the writers are
    atomic); every node must see the same paths.

Faults
    An actor that dies (its node lost, OOM-killed) has its item handed to another actor (up to 3
    attempts per item); the lost attempt's partial transfer is deleted, and the actor is restarted
    by Ray (max_restarts) when resources allow. Errors of the app itself (no face in SOURCE, a
    model problem) stop the run as on one machine. Ctrl-C or SIGTERM on the driver: every actor is
    told to stop (its running item gets KeyboardInterrupt: writers delete their temp files, kill
    ffmpeg), results that still arrive within 30 s are delivered, then every actor is killed and
    partial transfers deleted; nothing is published for unfinished items.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from swapcli.core.errors import EXIT_CLUSTER, SwapcliError, UsageError
from swapcli.core.signals import pid_alive, sigint_ignored
from swapcli.pipeline.executor import (
    Item,
    Slot,
    SlotSpec,
    WorkerError,
    describe,
    one_line,
)

log = logging.getLogger("swapcli")

CHUNK = 16 << 20
MAX_ATTEMPTS = 3  # per item, over lost actors
STOP_WAIT_S = 30.0
CONNECT_TIMEOUT_S = 5.0


class ClusterError(SwapcliError):
    """The Ray cluster cannot be reached or used (exit code 6)."""

    exit_code = EXIT_CLUSTER


def parse_address(text: str | None) -> tuple[str, str | None]:
    """(what the user named, address for ray.init): None starts a private local Ray."""
    spec = (text or "auto").strip()
    if spec == "local":
        return spec, None
    if spec == "auto":
        return spec, os.environ.get("RAY_ADDRESS") or "auto"
    host, sep, port = spec.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--cluster '{spec}': use auto, local, HOST:PORT or ray://HOST:PORT")
    return spec, spec


def _reachable(address: str) -> str | None:
    """None when a TCP connection to HOST:PORT opens, else why not."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def connect(text: str | None, shared_fs: bool = False) -> "RayPool":
    """Connect to (or start) the cluster; ClusterError (exit 6) in one line if that fails."""
    spec, address = parse_address(text)
    try:
        import ray
    except ImportError:
        raise UsageError("--cluster needs Ray: pip install 'swapcli[cluster]'") from None
    if address not in (None, "auto"):
        why = _reachable(address)
        if why:
            raise ClusterError(f"cannot reach the Ray cluster at {address} ({why})")
    logging.getLogger("ray").setLevel(logging.ERROR)
    _keep_stdout_ours()
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        from swapcli.pipeline.executor import cpu_count

        kwargs.update(num_cpus=cpu_count(), include_dashboard=False)
    try:
        with _quiet_stderr():
            ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors
        raise ClusterError(f"cannot connect to the Ray cluster at {address or spec} "
                           f"({one_line(str(exc)) or type(exc).__name__})") from None
    return RayPool(spec, shared_fs)


def _keep_stdout_ours() -> None:
    """Ray prints cluster error notes (a raylet that died, ...) on the driver's stdout, which carries
    swapcli's results (paths, --json): send them to the debug log instead."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:
        return

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines") or []:
            log.debug("ray (%s): %s", data.get("pid"), line)

    ray_worker.print_to_stdstream = to_log


@contextlib.contextmanager
def _quiet_stderr():
    """Ray prints start-up notes (token auth, 'Started a local Ray instance') on fd 2: hide them."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- the actor


def _worker_root(node: str) -> Path:
    root = Path(os.environ.get("SWAPCLI_WORKER_TMP") or tempfile.gettempdir()) / f"swapcli-ray-{node[:12]}"
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():  # folders of actors that died (killed node, OOM): nobody else cleans them
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    return root


def _unmap(value: Any, names: dict[str, str]) -> Any:
    """A result with this worker's paths replaced by the driver's (records, messages, notes)."""
    if isinstance(value, str):
        for local, driver in names.items():
            if local in value:
                value = value.replace(local, driver)
        return value
    if isinstance(value, dict):
        return {k: _unmap(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unmap(v, names) for v in value)
    return value


class _Sink(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.target: Callable[[tuple], None] | None = None
        self.kept: list[tuple] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = ("log", record.levelno, record.getMessage())
        if self.target is not None:
            self.target(event)
        else:
            self.kept.append(event)


class RayWorker:
    """One slot: the app built once, then ``run`` per item (a streaming generator of events)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: tuple[int, str] | None = None

    def setup(self, factory: Callable, setup: Any, photos: dict, shared_fs: bool, log_level: int, label: str) -> dict:
        """Build the app (models, analysed sources) once; report a failure as (exit code, one line).
        A method, not the constructor: Ray restarts a lost actor, and the driver then calls it again."""
        import ray

        self.shared_fs, self.label, self.error = shared_fs, label, None
        self.node = ray.get_runtime_context().get_node_id()
        self.sink = _Sink()
        logger = logging.getLogger("swapcli")
        logger.handlers[:] = [self.sink]
        logger.setLevel(log_level)
        logger.propagate = False
        self.paths: dict[str, str] = {}
        try:
            self.root = _worker_root(self.node)
            self.home = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.root))
            self.paths = self._fetch(photos, self.home / "sources")
            self.app = factory(setup, self._mapper(self.paths))
        except BaseException as exc:  # noqa: BLE001 - one line, its exit code
            self.error = describe(exc, label)
        logs, self.sink.kept = self.sink.kept, []
        return {"error": self.error, "logs": logs, "node": self.node, "host": socket.gethostname(),
                "pid": os.getpid()}

    def halt(self) -> None:
        self.stop.set()

    @staticmethod
    def _mapper(mapping: dict[str, str]) -> Callable[[str], str]:
        return lambda p: mapping.get(str(p), str(p))

    def _fetch(self, files: dict, folder: Path) -> dict[str, str]:
        """Driver path -> path here: shared paths as they are, chunked files written into ``folder``."""
        import ray

        mapping = {}
        for i, (path, chunks) in enumerate(files.items()):
            if isinstance(chunks, str):
                mapping[path] = chunks
                continue
            local = folder / str(i) / os.path.basename(path)
            local.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "wb") as fh:
                for ref in chunks:
                    fh.write(ray.get(ref))
            mapping[path] = str(local)
        return mapping

    def run(self, key: int, payload: Any, send: dict, receive: tuple[str, ...]):
        import queue

        if self.error is not None:
            yield ("error", *self.error)
            return
        if not hasattr(self, "app"):  # restarted by Ray and not set up again
            raise RuntimeError("worker not set up")
        if self.stop.is_set():
            yield ("interrupted",)
            return
        work = Path(tempfile.mkdtemp(prefix=f"item{key}-", dir=self.home))
        try:
            mapping = {**self.paths, **self._fetch(send, work / "in")}
            if not self.shared_fs:
                for i, path in enumerate(receive):
                    local = work / "out" / str(i) / os.path.basename(path)
                    local.parent.mkdir(parents=True, exist_ok=True)
                    mapping[path] = str(local)
            events: queue.Queue = queue.Queue()
            box: dict[str, Any] = {}
            last = [0.0]

            def progress(done: int, total: int | None) -> None:
                if self.stop.is_set():
                    raise KeyboardInterrupt  # the driver stops (Ctrl-C or a failure elsewhere)
                now = time.monotonic()
                if now - last[0] >= 0.25 or (total and done >= total):
                    last[0] = now
                    events.put(("progress", done, total))

            def work_item() -> None:
                try:
                    box["result"] = self.app.run(payload, progress, self._mapper(mapping))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    box["exc"] = exc
                finally:
                    events.put(None)

            self.sink.target = events.put
            thread = threading.Thread(target=work_item, name=f"swapcli-item-{key}", daemon=True)
            thread.start()
            while (event := events.get()) is not None:
                yield event
            thread.join()
            self.sink.target = None
            exc = box.get("exc")
            if isinstance(exc, KeyboardInterrupt):
                import gc

                gc.collect()  # an orphaned writer's __del__ aborts it now (kills ffmpeg, deletes its temp file)
                yield ("interrupted",)
                return
            if exc is not None:
                log.debug("item %s failed", key, exc_info=exc)
                yield ("error", *describe(exc, self.label))
                return
            names = {local: driver for driver, local in mapping.items() if local != driver}
            result = _unmap(box["result"], names)
            if not self.shared_fs:
                for i, path in enumerate(receive):
                    local = mapping[path]
                    if not os.path.exists(local):
                        continue
                    with open(local, "rb") as fh:
                        while chunk := fh.read(CHUNK):
                            yield ("file", i, chunk)
                    yield ("file_end", i)
            yield ("done", result)
        finally:
            self.sink.target = None
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- the driver


@dataclass
class _Run:
    slot: int
    item: Item
    temps: dict[int, Path] = field(default_factory=dict)  # receive index -> temp file beside the output
    complete: set[int] = field(default_factory=set)

    def write(self, index: int, chunk: bytes) -> None:
        from swapcli.write.atomic import reserve_temp

        if index not in self.temps:
            target = Path(self.item.receive[index])
            try:
                target.parent.mkdir(parents=True, exist_ok=True)  # a mirrored subfolder, made here
            except OSError as exc:
                raise WorkerError(f"{target.parent}: cannot create ({exc.strerror or exc})", 2) from None
            self.temps[index] = reserve_temp(target)
        with open(self.temps[index], "ab") as fh:
            fh.write(chunk)

    def discard(self) -> None:
        for tmp in self.temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.temps.clear()

    def files(self) -> dict[str, Path]:
        return {self.item.receive[i]: tmp for i, tmp in self.temps.items() if i in self.complete}


class RayPool:
    name = "ray"

    def __init__(self, spec: str, shared_fs: bool = False) -> None:
        self.spec, self.shared_fs = spec, shared_fs
        self.nodes: dict[str, str] = {}  # node id -> host, of the actors that started

    def plan(self, workers: int, devices: Sequence[str], items: int) -> list[SlotSpec]:
        import ray

        if len(devices) > 1:
            raise UsageError("--device lists split the work on one machine; with --cluster give one device "
                             "(auto, cpu, cuda or tensorrt): Ray gives each worker its GPU")
        device = devices[0]
        family = device.split(":")[0]
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        cpu_nodes = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes()
                     if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
        if family in ("cuda", "tensorrt") or (device == "auto" and gpus):
            if not gpus:
                raise ClusterError(f"--device {device}: the Ray cluster has no GPU")
            n = max(1, min(workers or gpus, items or 1))
            return [SlotSpec(label=f"gpu{i}", device="tensorrt" if family == "tensorrt" else "cuda",
                             num_cpus=1 if cpus >= n else 0, num_gpus=1) for i in range(n)]
        if not cpu_nodes:
            raise ClusterError("the Ray cluster has no node with a CPU to run on")
        n = max(1, min(workers or max(len(cpu_nodes), cpus // 4), items or 1, cpus))
        per = max(1, min(min(cpu_nodes), cpus // n))
        return [SlotSpec(label=f"worker{i}", device=device, threads=per, num_cpus=per) for i in range(n)]

    def run(self, factory: Callable, slots: Sequence[Slot], items: Sequence[Item], on_event: Callable, *,
            deliver: Callable | None = None, abandon: Callable[[Item], None] | None = None) -> None:
        import ray
        from ray.exceptions import RayError

        if not items:
            return
        cache: dict[str, Any] = {}

        def chunks(path: str) -> Any:
            if self.shared_fs:
                return os.path.abspath(path)
            if path not in cache:
                refs = []
                try:
                    with open(path, "rb") as fh:
                        while chunk := fh.read(CHUNK):
                            refs.append(ray.put(chunk))
                except OSError as exc:
                    raise WorkerError(f"{path}: cannot read ({exc.strerror or exc})", 2) from None
                cache[path] = refs
            return cache[path]

        actor_class = ray.remote(RayWorker)
        level = logging.getLogger("swapcli").level
        actors = [actor_class.options(num_cpus=slot.num_cpus, num_gpus=slot.num_gpus, max_concurrency=2,
                                      max_restarts=MAX_ATTEMPTS, max_task_retries=0,
                                      scheduling_strategy="SPREAD").remote() for slot in slots]

        def set_up(i: int) -> Any:
            slot = slots[i]
            return actors[i].setup.remote(factory, slot.setup, {p: chunks(p) for p in slot.send}, self.shared_fs,
                                          level, slot.label)

        waiting = {set_up(i): i for i in range(len(actors))}
        pending = deque(items)
        running: dict[Any, _Run] = {}
        attempts: Counter = Counter()
        done: set[int] = set()
        started_wait = time.monotonic()
        lost_why: list[str] = []
        limit = float(os.environ.get("SWAPCLI_CLUSTER_START_TIMEOUT", "300"))

        def dispatch(i: int) -> None:
            if pending:
                item = pending.popleft()
                gen = actors[i].run.remote(item.key, item.payload, {p: chunks(p) for p in item.send}, item.receive)
                running[gen] = _Run(i, item)
                on_event("start", item)

        def lost(run: _Run, why: str) -> None:
            run.discard()
            attempts[run.item.key] += 1
            if attempts[run.item.key] >= MAX_ATTEMPTS:
                raise WorkerError(f"cluster workers were lost {MAX_ATTEMPTS} times running one item ({why})")
            log.warning("a cluster worker was lost (%s); its item is retried on another one", why)
            pending.appendleft(run.item)
            waiting[set_up(run.slot)] = run.slot  # Ray restarts it where resources allow; set it up again

        def finish(gen: Any, run: _Run, result: Any) -> None:
            running.pop(gen, None)
            if run.item.receive and not self.shared_fs and deliver is not None:
                try:
                    result = deliver(run.item, result, run.files())
                finally:
                    run.discard()  # published (moved away) or not: no temp file stays
            done.add(run.item.key)
            for path in run.item.send:
                if path not in {p for s in slots for p in s.send}:
                    cache.pop(path, None)  # this input is not needed any more: free its chunks
            on_event("result", run.item, result)

        def step(gen: Any, stopping: bool = False) -> None:
            run = running[gen]
            try:
                ref = next(gen)
                event = ray.get(ref)
            except StopIteration:
                running.pop(gen, None)
                if not stopping:
                    lost(run, "its task ended without a result")
                return
            except RayError as exc:
                running.pop(gen, None)
                if stopping:
                    run.discard()
                else:
                    lost(run, one_line(str(exc)) or type(exc).__name__)
                return
            kind = event[0]
            if kind == "progress":
                on_event("progress", run.item, event[1], event[2])
            elif kind == "log":
                on_event("log", event[1], event[2])
            elif kind == "file":
                run.write(event[1], event[2])
            elif kind == "file_end":
                run.complete.add(event[1])
            elif kind == "done":
                finish(gen, run, event[1])
                if not stopping:
                    dispatch(run.slot)
            elif kind == "interrupted":
                running.pop(gen, None)
                run.discard()
                if not stopping:
                    raise KeyboardInterrupt
            elif kind == "error":
                running.pop(gen, None)
                run.discard()
                if not stopping:
                    raise WorkerError(event[2], event[1])

        try:
            while len(done) < len(items):
                if not waiting and not running:
                    raise WorkerError(f"no worker could start on the Ray cluster ({lost_why[-1] if lost_why else '?'})",
                                      EXIT_CLUSTER)
                ready, _ = ray.wait([*waiting, *running], num_returns=1, timeout=0.5)
                if not ready:
                    if not running and time.monotonic() - started_wait > limit:
                        raise WorkerError(f"no worker could start on the Ray cluster in {limit:.0f} s "
                                          "(not enough free CPUs/GPUs?)", EXIT_CLUSTER)
                    continue
                for ref in ready:
                    if ref in waiting:
                        i = waiting.pop(ref)
                        try:
                            info = ray.get(ref)
                        except RayError as exc:
                            lost_why.append(one_line(str(getattr(exc, "cause", None) or exc)))
                            log.warning("a cluster worker could not start (%s)", lost_why[-1])
                            continue
                        for _, lvl, msg in info["logs"]:
                            on_event("log", lvl, msg)
                        if info["error"]:
                            raise WorkerError(info["error"][1], info["error"][0])
                        self.nodes[info["node"]] = info["host"]
                        started_wait = time.monotonic()
                        dispatch(i)
                    elif ref in running:
                        step(ref)
        except BaseException:
            with sigint_ignored():
                self._stop(actors, running, step, abandon)
            raise
        finally:
            with sigint_ignored():
                for actor in actors:
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
                cache.clear()

    def _stop(self, actors: Sequence[Any], running: dict, step: Callable, abandon: Callable | None) -> None:
        """Tell every actor to stop, deliver what still finishes, then kill them (in ``run``'s finally)."""
        import ray

        for actor in actors:
            with contextlib.suppress(Exception):
                actor.halt.remote()
        deadline = time.monotonic() + STOP_WAIT_S
        while running and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for gen in ready:
                    with contextlib.suppress(Exception):
                        step(gen, stopping=True)
        left = list(running.values())
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        for run in left:
            run.discard()
            if self.shared_fs and abandon is not None:
                with contextlib.suppress(Exception):
                    abandon(run.item)
        running.clear()

    def close(self) -> None:
        import ray

        with sigint_ignored(), contextlib.suppress(Exception):
            ray.shutdown()
