"""swapcli batch: one source onto many targets (images and videos, mixed).

Planning (no models needed): INPUT arguments (files, folders, globs) are
expanded into tasks, each with an output path that mirrors the input tree
under OUTPUT_DIR. Clashes are refused before any work starts: two inputs
mapping to one output, or an output that would land on an input.

Running: models load once per worker. ``workers == 1`` runs in this process;
more use a ``ProcessPoolExecutor`` (spawn context: onnxruntime and fork do
not mix), whose initializer builds the Swapper and analyses the source once
per process. Every result comes back to this process, which alone appends
to the manifest, so the manifest has one writer and stays consistent.

Manifest (``OUTPUT_DIR/swapcli-manifest.jsonl``): one JSON object per line,
appended with a single ``write`` on an ``O_APPEND`` descriptor and fsynced.
A re-run skips an input whose last ``done`` record names the same output and
that file still exists with the recorded size; ``--overwrite`` redoes it.

Ctrl-C: workers ignore the signal between tasks and turn the first one into
KeyboardInterrupt inside a task, so the image/video writers delete their temp
files and kill ffmpeg; the main process forwards SIGINT to its workers (a
``kill -INT`` reaches only the main process), waits for them, records what
finished and exits 130. Interrupted inputs get no record, so a re-run redoes
exactly those.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import string
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from swapcli.core.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    InputError,
    ModelError,
    NoFaceError,
    OutputError,
    SwapcliError,
    UsageError,
)
from swapcli.core.options import EngineOptions, OutputOptions, SelectOptions
from swapcli.core.signals import sigint_ignored
from swapcli.read.kinds import media_kind

log = logging.getLogger("swapcli")

MANIFEST_NAME = "swapcli-manifest.jsonl"
DEFAULT_PATTERN = "{stem}_swapped{ext}"
PATTERN_FIELDS = ("stem", "ext", "name", "parent")
IMAGE_WRITABLE = (".jpg", ".jpeg", ".png", ".webp")  # write/image.py FORMATS
VIDEO_WRITABLE = (".mp4", ".mov", ".mkv", ".m4v")  # write/video.py CONTAINERS
VIDEO_KEPT = (".mov", ".mkv", ".m4v")  # other video inputs are written as .mp4
GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------- planning


@dataclass
class Task:
    """One input file and where its output goes (picklable: crosses to workers)."""

    index: int
    input: str  # absolute path
    output: str  # absolute path
    kind: str  # image | video | unsupported
    display: str  # short name for status lines: path relative to its given folder, or as given
    explicit: bool = False  # named on the command line (not found in a folder or glob)


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)  # image and video tasks
    unsupported: list[Task] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    found: int = 0  # files found before --shard picked its part


def kind_of(path: Path) -> str:
    return media_kind(path) or "unsupported"


def output_suffix(path: Path, kind: str) -> str:
    """Images keep their format (.bmp/.tif become .png: no writer); videos become .mp4 unless .mov/.mkv/.m4v."""
    suffix = path.suffix
    if kind == "image":
        return suffix if suffix.lower() in IMAGE_WRITABLE else ".png"
    return suffix.lower() if suffix.lower() in VIDEO_KEPT else ".mp4"


def check_pattern(pattern: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise UsageError(f"--pattern '{pattern}': {exc}") from None
    for name in fields:
        if name not in PATTERN_FIELDS:
            raise UsageError(f"--pattern '{pattern}': unknown field '{{{name}}}' (use {', '.join('{%s}' % f for f in PATTERN_FIELDS)})")
    if "stem" not in fields and "name" not in fields:
        raise UsageError(f"--pattern '{pattern}' must contain {{stem}} or {{name}} (else every output gets the same name)")


def render_pattern(pattern: str, path: Path, kind: str) -> str:
    try:
        name = pattern.format(stem=path.stem, ext=output_suffix(path, kind), name=path.name, parent=path.parent.name)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise UsageError(f"--pattern '{pattern}': {exc}") from None
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "\0" in name:
        raise UsageError(f"--pattern '{pattern}' gives '{name}' for {path.name}: outputs must stay inside OUTPUT_DIR")
    return name


def _abs(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (outputs mirror the tree below it)."""
    parts = Path(pattern).parts
    keep = []
    for part in parts:
        if any(c in GLOB_CHARS for c in part):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def _walk(folder: Path, recursive: bool, skip_dirs: Sequence[str]) -> tuple[list[Path], int]:
    """Visible files of a folder (sorted), and how many subfolders were not searched."""
    files: list[Path] = []
    unsearched = 0
    for root, dirs, names in os.walk(folder, followlinks=False):
        visible = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(root, d)) not in skip_dirs)
        if recursive:
            dirs[:] = visible
        else:
            unsearched += len(visible)
            dirs[:] = []
        for name in sorted(names):
            if name.startswith(".") or name.startswith("swapcli-manifest"):
                continue  # hidden files, our temp files, manifests
            files.append(Path(root, name))
    return files, unsearched


def expand_inputs(inputs: Sequence[str], recursive: bool, output_dir: Path,
                  listed: Sequence[str] = ()) -> tuple[list[tuple[Path, Path, bool]], list[str]]:
    """(file, base folder, explicit) for every input file, in order, without duplicates.

    ``listed`` are names read from --files-from: a relative file path there keeps its folders
    below OUTPUT_DIR (``find photos -type f > list`` mirrors the tree), an absolute one does not.

    A name that exists is taken literally (even with '*' in it); otherwise a
    name with wildcards is expanded here (quoted patterns reach us unexpanded).
    A missing literal name is a usage error: better to stop on a typo than to
    process half of what was meant.
    """
    notes: list[str] = []
    skip = [os.path.realpath(output_dir)]
    found: list[tuple[Path, Path, bool]] = []
    from_list = set(listed)
    for arg in [*inputs, *listed]:
        path = Path(arg)
        if path.is_dir():
            files, unsearched = _walk(path, recursive, skip)
            found += [(f, path, False) for f in files]
            if unsearched:
                notes.append(f"{arg}: {unsearched} subfolder(s) not searched (use --recursive)")
            if not files:
                notes.append(f"{arg}: no files in this folder")
        elif path.exists() or path.is_symlink():
            relative_listed = arg in from_list and not path.is_absolute() and ".." not in path.parts
            found.append((path, Path(".") if relative_listed else path.parent, True))
        elif any(c in GLOB_CHARS for c in arg):
            base = _glob_base(arg)
            matches = sorted(glob.glob(arg, recursive=recursive))
            if not matches:
                notes.append(f"{arg}: matches nothing")
            for m in matches:
                mp = Path(m)
                try:
                    rel_parts = mp.relative_to(base).parts
                except ValueError:
                    rel_parts = mp.parts
                if any(part.startswith(".") and part not in (".", "..") for part in rel_parts):
                    continue  # like the shell: wildcards do not match hidden files
                if mp.is_dir():
                    files, _ = _walk(mp, recursive, skip)
                    found += [(f, base, False) for f in files]
                elif not any(_inside(os.path.realpath(m), s) for s in skip):
                    found.append((mp, base, False))
        else:
            raise UsageError(f"{arg}: no such file or folder")
    seen: set[str] = set()
    unique = []
    for file, base, explicit in found:
        key = os.path.realpath(file)
        if key in seen:
            continue
        seen.add(key)
        unique.append((file, base, explicit))
    return unique, notes


def read_list(path: str) -> list[str]:
    """Paths from a --files-from file ('-' = stdin), one per line; blank lines and '#' comments ignored."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--files-from {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return [line.rstrip("\r\n") for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    k, sep, n = text.partition("/")
    try:
        k_i, n_i = int(k), int(n)
    except ValueError:
        k_i = n_i = 0
    if not sep or n_i < 1 or not 1 <= k_i <= n_i:
        raise UsageError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/8), not '{text}'")
    return k_i, n_i


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Stable split by a hash of the output's relative path: the same on every machine, and
    unchanged for the other files when files are added."""
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % n == k - 1


def make_plan(inputs: Sequence[str], output_dir: Path, *, pattern: str = DEFAULT_PATTERN, recursive: bool = False,
              sources: Sequence[Path] = (), known_outputs: Iterable[str] = (),
              shard: tuple[int, int] | None = None, listed: Sequence[str] = ()) -> Plan:
    """Expand INPUTs and map each to its output; refuse clashes (UsageError) before any work."""
    check_pattern(pattern)
    out_root = Path(_abs(output_dir))
    files, notes = expand_inputs(inputs, recursive, out_root, listed)
    plan = Plan(notes=notes, found=len(files))
    known = {os.path.realpath(p) for p in known_outputs}
    by_output: dict[str, Task] = {}
    kept = [f for f in files if os.path.realpath(f[0]) not in known]
    dropped = len(files) - len(kept)  # outputs of an earlier run lying among the inputs
    input_keys = {os.path.realpath(f) for f, _, _ in kept} | {os.path.realpath(s) for s in sources}
    for file, base, explicit in kept:
        kind = kind_of(file)
        rel_parent = Path(os.path.relpath(_abs(file.parent), _abs(base)))
        if rel_parent.parts and rel_parent.parts[0] == "..":  # symlinked or odd base: flatten
            rel_parent = Path(".")
        display = str(file) if explicit else str(rel_parent / file.name) if rel_parent != Path(".") else file.name
        if kind == "unsupported":
            out = out_root / rel_parent / file.name
        else:
            out = out_root / rel_parent / render_pattern(pattern, file, kind)
        task = Task(index=0, input=_abs(file), output=os.path.normpath(str(out)), kind=kind, display=display,
                    explicit=explicit)
        if not in_shard(os.path.relpath(task.output, out_root), shard):
            continue
        if kind == "unsupported":
            plan.unsupported.append(task)
            continue
        suffix = Path(task.output).suffix.lower()
        allowed = IMAGE_WRITABLE if kind == "image" else VIDEO_WRITABLE
        if suffix not in allowed:
            raise UsageError(f"--pattern '{pattern}' names {Path(task.output).name} for {display}: "
                             f"{kind}s can be written as {', '.join(allowed)}")
        key = os.path.realpath(task.output)
        if key in input_keys or (os.path.exists(task.output) and os.path.samefile(task.output, task.input)):
            raise UsageError(f"{display}: its output {task.output} is an input file; choose another OUTPUT_DIR or --pattern")
        if key in by_output:
            raise UsageError(f"{by_output[key].display} and {display} both map to {task.output}; "
                             "use --pattern with {parent} or {name}, or separate runs")
        by_output[key] = task
        plan.tasks.append(task)
    if dropped:
        plan.notes.append(f"{dropped} file(s) among the inputs are outputs of an earlier batch (ignored)")
    for i, task in enumerate(plan.tasks + plan.unsupported):
        task.index = i
    return plan


# --------------------------------------------------------------------------- manifest


class Manifest:
    """JSON lines, one record per input outcome; the last 'done' record of an input is its state."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.done: dict[str, dict] = {}  # input -> last done record
        self.outputs: set[str] = set()  # every output ever recorded done
        self.bad_lines = 0
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read the manifest ({exc.strerror})") from None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                self.bad_lines += 1  # a line cut by a crash: ignored
                continue
            if not isinstance(rec, dict) or "input" not in rec:
                self.bad_lines += 1
                continue
            if rec.get("status") == "done" and rec.get("output"):
                self.done[rec["input"]] = rec
                self.outputs.add(rec["output"])

    def also_read(self, other: Manifest) -> None:
        """Count 'done' records of another manifest in the same OUTPUT_DIR (other shards, re-sharding)."""
        for key, rec in other.done.items():
            self.done.setdefault(key, rec)
        self.outputs |= other.outputs

    def is_done(self, task: Task) -> bool:
        rec = self.done.get(task.input)
        if not rec or rec.get("output") != task.output:
            return False
        try:
            return os.path.getsize(task.output) == rec.get("size")
        except OSError:
            return False

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            if size:  # a crash may have cut the last line: never glue a record onto it
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        os.write(fd, b"\n")
            self._fd = fd
        return self._fd

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogateescape")
        try:
            fd = self._open()
            written = os.write(fd, line)  # one write on O_APPEND: the line lands whole or not at all
            if written != len(line):
                raise OSError(28, "short write")
            os.fsync(fd)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the manifest ({exc.strerror or exc})") from None
        if record.get("status") == "done":
            self.done[record["input"]] = record
            self.outputs.add(record["output"])

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- records


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def category_of(exc: BaseException) -> str:
    if isinstance(exc, NoFaceError):
        return "no_face"
    if isinstance(exc, OutputError):
        return "output"
    if isinstance(exc, InputError):
        return "unreadable"
    if isinstance(exc, UsageError):
        return "usage"
    if isinstance(exc, ModelError):
        return "model"
    if isinstance(exc, SwapcliError):
        return "error"
    return "internal"


def one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:500]


def base_record(task: Task, status: str, **extra: Any) -> dict:
    return {"input": task.input, "output": task.output, "kind": task.kind, "status": status, "error": None,
            "category": "ok", "exit_code": EXIT_OK, "size": None, "faces_found": None, "faces_swapped": None, "time": _now(), **extra}


def skip_record(task: Task, category: str, reason: str) -> dict:
    rec = base_record(task, "skipped", category=category, error=reason)
    if task.kind == "unsupported":
        rec["output"] = None
    if category == "already_done":
        try:
            rec["size"] = os.path.getsize(task.output)
        except OSError:
            pass
    return rec


def failed_record(task: Task, exc: BaseException | str, seconds: float = 0.0, code: int | None = None,
                  category: str | None = None) -> dict:
    if isinstance(exc, BaseException):
        msg = str(exc) if isinstance(exc, SwapcliError) else (
            "out of memory" if isinstance(exc, MemoryError) else
            f"internal error: {type(exc).__name__}: {one_line(str(exc)) or '-'}")
        code = getattr(exc, "exit_code", EXIT_FAILURE) if isinstance(exc, SwapcliError) else EXIT_FAILURE
        category = category or category_of(exc)
    else:
        msg = exc
    return base_record(task, "failed", error=one_line(msg), category=category or "error",
                       exit_code=code if code is not None else EXIT_FAILURE, seconds=round(seconds, 3))


# --------------------------------------------------------------------------- the work


@dataclass(frozen=True)
class BatchSettings:
    """Everything a worker needs to rebuild the Swapper and process tasks (picklable)."""

    sources: tuple[str, ...]
    engine: EngineOptions
    select: SelectOptions
    output: OutputOptions
    video: Any  # pipeline.video.VideoOptions (imported lazily)
    reference: str | None = None
    log_level: int = logging.INFO
    devices: tuple[str, ...] = ()  # --device list: worker i runs on devices[i % len(devices)]


class Fatal(SwapcliError):
    """A failure that stops the whole batch (source photo, reference, models)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):
        return (Fatal, (str(self), self.exit_code))


def _fatal(exc: BaseException) -> Fatal:
    if isinstance(exc, SwapcliError):
        return Fatal(str(exc), exc.exit_code)
    return Fatal(f"internal error: {type(exc).__name__}: {one_line(str(exc)) or '-'}", EXIT_FAILURE)


class Worker:
    """Models and the analysed source, built once; then one task after another."""

    def __init__(self, settings: BatchSettings) -> None:
        from swapcli.pipeline.swapper import Swapper

        self.settings = settings
        self.swapper = Swapper(settings.engine)
        self.sources = self.swapper.load_sources([Path(p) for p in settings.sources])
        self.reference = self.swapper.reference_embedding(Path(settings.reference)) if settings.reference else None
        self.inputs = [Path(p) for p in (*settings.sources, *([settings.reference] if settings.reference else []))]

    def run(self, task: Task, progress: Callable[[int, int | None], None] | None = None) -> dict:
        """Process one task; a per-file problem is a 'failed' record, a fatal one raises Fatal.

        Ctrl-C propagates as KeyboardInterrupt, or as Interrupted carrying a 'done' record when the
        output was already renamed into place (writers are atomic: a new file there is complete).
        """
        before = _identity(task.output)
        started = time.perf_counter()
        try:
            return self._run(task, progress, started)
        except KeyboardInterrupt:
            after = _identity(task.output)
            if after is not None and after != before:
                seconds = round(time.perf_counter() - started, 3)
                raise Interrupted(base_record(task, "done", size=after[2], seconds=seconds,
                                              notes=["finished as the interrupt arrived"])) from None
            raise

    def _run(self, task: Task, progress: Callable[[int, int | None], None] | None, started: float) -> dict:
        from swapcli.core.timing import Clock

        self.swapper.clock = clock = Clock()
        target, output = Path(task.input), Path(task.output)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            if task.kind == "image":
                from swapcli.pipeline.image import swap_image

                result = swap_image(self.swapper, self.sources, target, output, self.settings.select,
                                    self.settings.output, reference=self.reference, inputs=self.inputs)
                extra = {"faces_found": result.faces_found, "faces_swapped": result.faces_swapped}
            else:
                from swapcli.pipeline.video import swap_video

                refs = [self.reference] if self.reference is not None else None
                result = swap_video(self.swapper, [self.sources], target, output, self.settings.select,
                                    self.settings.video, self.settings.output, references=refs,
                                    inputs=self.inputs, progress=progress)
                counts = result.faces_per_frame or [0]
                extra = {"faces_found": len(result.tracks), "faces_swapped": int(sum(counts)),
                         "frames": result.frames_written, "frames_swapped": result.frames_swapped,
                         "notes": list(result.notes)}
                if result.frames_swapped == 0:
                    extra["notes"].append("no face was swapped in any frame")
        except ModelError as exc:
            raise _fatal(exc) from None
        except OSError as exc:  # mkdir of a mirrored folder, and anything the writers did not wrap
            return failed_record(task, OutputError(f"{output}: cannot write ({exc.strerror or exc})"),
                                 time.perf_counter() - started)
        except (SwapcliError, MemoryError) as exc:
            return failed_record(task, exc, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a bug on one file must not stop the batch
            log.debug("internal error on %s", task.input, exc_info=True)
            return failed_record(task, exc, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        try:
            size = output.stat().st_size
        except OSError:
            size = None
        return base_record(task, "done", size=size, seconds=round(seconds, 3),
                           timings_ms=clock.timings.to_json(), **extra)


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def sweep_temp_files(task: Task, since: float) -> list[str]:
    """Remove temp files this run left for ``task`` (its writer interrupted at a bad moment).

    Only names the writers use for this very output (``.STEM.swapcli-*.tmpEXT`` for video,
    ``.STEM.*.swapcli-tmpEXT`` for images), only ones modified since the batch started, and
    only after every process that could still write them has exited.
    """
    import gc

    gc.collect()  # an orphaned writer's __del__ aborts it (kills its ffmpeg, deletes its temp file)
    out = Path(task.output)
    stem, suffix = glob.escape(out.stem), glob.escape(out.suffix)
    removed = []
    for pattern in (f".{stem}.swapcli-*.tmp{suffix}", f".{stem}.*.swapcli-tmp{suffix}"):
        for path in out.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= since - 2:
                    path.unlink()
                    removed.append(path.name)
    if removed:
        log.debug("removed temp file(s) left by an interrupted writer: %s", ", ".join(removed))
    return removed


class Interrupted(KeyboardInterrupt):
    """Ctrl-C arrived just after a task's output was committed: record it as done, then stop."""

    def __init__(self, record: dict) -> None:
        super().__init__()
        self.record = record


# --- worker processes -------------------------------------------------------

_WORKER: Worker | None = None
_INIT_ERROR: Fatal | None = None
_EVENTS = None
_STOP_EVENT = None  # set by the batch process on Ctrl-C: reaches workers still starting up
_IN_TASK = False
_STOP = False
_PARENT = 0


class _QueueLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _EVENTS.put_nowait(("log", record.levelno, record.getMessage()))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - logging never breaks the work
            pass


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM in a worker: the first one aborts the running task (cleanly); later ones are ignored."""
    global _STOP
    if not _IN_TASK and os.getppid() != _PARENT:
        os._exit(130)  # the batch process is gone (PR_SET_PDEATHSIG): nothing to clean up
    if _STOP:
        return
    _STOP = True
    if _IN_TASK:
        raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the batch process dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _init_worker(settings: BatchSettings, events: Any, threads: int, stop: Any = None,
                 counter: Any = None) -> None:
    global _WORKER, _INIT_ERROR, _EVENTS, _PARENT, _STOP_EVENT
    _PARENT = os.getppid()
    _EVENTS = events
    _STOP_EVENT = stop
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    _die_with_parent()
    events.cancel_join_thread()  # never block this worker's exit on unread progress events
    events.put(("pid", os.getpid()))
    logger = logging.getLogger("swapcli")
    logger.handlers[:] = [_QueueLog()]
    logger.setLevel(settings.log_level)
    logger.propagate = False
    import dataclasses

    if settings.devices and counter is not None:  # --device list: the next device, round robin
        with counter.get_lock():
            slot = counter.value
            counter.value += 1
        settings = dataclasses.replace(settings, engine=dataclasses.replace(
            settings.engine, device=settings.devices[slot % len(settings.devices)]))
    if threads:  # share the cores: onnxruntime would otherwise start one thread per core in every worker
        settings = dataclasses.replace(settings, engine=dataclasses.replace(settings.engine, threads=threads))
        with contextlib.suppress(Exception):
            import cv2

            cv2.setNumThreads(threads)
    try:
        _WORKER = Worker(settings)
    except KeyboardInterrupt:
        _INIT_ERROR = Fatal("interrupted", 130)
    except BaseException as exc:  # noqa: BLE001 - reported with every task, stops the batch
        _INIT_ERROR = _fatal(exc)


def _run_in_worker(task: Task) -> dict:
    global _IN_TASK
    _IN_TASK = True
    try:
        if _STOP or (_STOP_EVENT is not None and _STOP_EVENT.is_set()):
            raise KeyboardInterrupt
        if _INIT_ERROR is not None:
            return {"fatal": _INIT_ERROR}
        assert _WORKER is not None
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.25 or (total and done >= total):
                last[0] = now
                with contextlib.suppress(Exception):
                    _EVENTS.put_nowait(("progress", task.index, done, total))  # type: ignore[union-attr]

        try:
            return _WORKER.run(task, progress)
        except Fatal as exc:
            return {"fatal": exc}
    except Interrupted as exc:
        return {"interrupted": True, "input": task.input, "record": exc.record}
    except KeyboardInterrupt:
        import gc

        gc.collect()  # a writer orphaned by the interrupt is aborted now, not at some later collection
        return {"interrupted": True, "input": task.input}
    finally:
        _IN_TASK = False
        if os.getppid() != _PARENT:  # the batch process died while we worked: our cleanup is done, go
            os._exit(130)


# --------------------------------------------------------------------------- the runner


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(device: str, cores: int | None = None) -> int:
    """How many worker processes the machine can feed.

    onnxruntime already spreads one inference over every core, so on small
    machines a second process only competes for them (measured: 2 workers on
    2 cores were no faster than 1). With a GPU one process keeps it busy.
    On many cores one process cannot use them all (pre/post-processing and
    ffmpeg run on one core each), so give each worker about 4 cores.
    """
    cores = cores or cpu_count()
    if device == "cuda" or device.startswith(("cuda:", "tensorrt")):
        return 1
    if device == "auto":
        with contextlib.suppress(Exception):
            from swapcli.core.device import providers_for

            if "CUDAExecutionProvider" in providers_for("auto"):
                return 1
    return max(1, min(8, cores // 4))


def default_workers_for(devices: Sequence[str], cores: int | None = None) -> int:
    """default_workers for a --device list: at least one worker per device (one device: unchanged)."""
    if len(devices) == 1:
        return default_workers(devices[0], cores)
    return max(default_workers(devices[0], cores), len(devices))


@dataclass
class Summary:
    records: list[dict] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    workers: int = 1

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r["status"] == status)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.failed else EXIT_OK


Event = Callable[..., None]


def run_batch(settings: BatchSettings, tasks: Sequence[Task], manifest: Manifest, *, workers: int = 1,
              on_event: Event = lambda *a: None) -> Summary:
    """Process tasks; records go to the manifest (and the summary) as they finish.

    ``on_event(kind, *args)``: ("start", task), ("progress", task, done, total),
    ("result", task, record), ("log", level, message). Raises Fatal when the
    batch cannot go on; KeyboardInterrupt after cleaning up.
    """
    summary = Summary(workers=workers)
    started = time.perf_counter()
    try:
        if workers <= 1 or len(tasks) <= 1:
            summary.workers = 1
            _run_here(settings, tasks, manifest, summary, on_event)
        else:
            summary.workers = min(workers, len(tasks))
            _run_pool(settings, tasks, manifest, summary, on_event, summary.workers)
    finally:
        summary.seconds = time.perf_counter() - started
        manifest.close()
    return summary


def _record(manifest: Manifest, summary: Summary, on_event: Event, task: Task, record: dict) -> None:
    manifest.append(record)
    summary.records.append(record)
    on_event("result", task, record)


def _run_here(settings: BatchSettings, tasks: Sequence[Task], manifest: Manifest, summary: Summary,
              on_event: Event) -> None:
    if not tasks:
        return
    try:
        worker = Worker(settings)
    except (SwapcliError, MemoryError) as exc:
        raise _fatal(exc) from None
    since = time.time()
    for task in tasks:
        on_event("start", task)
        try:
            record = worker.run(task, lambda done, total, t=task: on_event("progress", t, done, total))
        except Interrupted as exc:
            _record(manifest, summary, on_event, task, exc.record)
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            with sigint_ignored():
                sweep_temp_files(task, since)
            raise
        _record(manifest, summary, on_event, task, record)


def _run_pool(settings: BatchSettings, tasks: Sequence[Task], manifest: Manifest, summary: Summary,
              on_event: Event, workers: int) -> None:
    import multiprocessing
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    threads = max(1, cpu_count() // workers)
    pids: set[int] = set()
    by_index = {t.index: t for t in tasks}
    started: set[int] = set()

    def drain() -> None:
        while True:
            try:
                item = events.get_nowait()
            except (queue_mod.Empty, OSError, ValueError, EOFError):
                return
            if item[0] == "pid":
                pids.add(item[1])
            elif item[0] == "progress":
                task = by_index.get(item[1])
                if task is not None:
                    if task.index not in started:
                        started.add(task.index)
                        on_event("start", task)
                    on_event("progress", task, item[2], item[3])
            elif item[0] == "log":
                on_event("log", item[1], item[2])

    def handle(future, task: Task) -> None:
        try:
            out = future.result()
        except KeyboardInterrupt:
            return
        except BaseException as exc:  # noqa: BLE001 - a worker died (killed, out of memory)
            from concurrent.futures.process import BrokenProcessPool

            if isinstance(exc, BrokenProcessPool):
                raise Fatal(f"a worker process died ({one_line(str(exc)) or 'killed'}); "
                            "try fewer --workers", EXIT_FAILURE) from None
            _record(manifest, summary, on_event, task, failed_record(task, exc))
            return
        if "fatal" in out:
            raise out["fatal"]
        if out.get("interrupted"):  # a worker got the signal (Ctrl-C reaches the whole group)
            summary.interrupted = True
            if out.get("record"):
                _record(manifest, summary, on_event, task, out["record"])
            raise KeyboardInterrupt
        _record(manifest, summary, on_event, task, out)

    stop = ctx.Event()
    since = time.time()
    counter = ctx.Value("i", 0) if settings.devices else None  # which device the next worker takes
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(settings, events, threads, stop, counter))
    futures = {}
    try:
        with sigint_ignored():  # workers spawn on the first submits: born deaf to Ctrl-C until
            for task in tasks[:workers]:  # their own handler is installed (no traceback, no broken pool)
                futures[pool.submit(_run_in_worker, task)] = task
        for task in tasks[workers:]:
            futures[pool.submit(_run_in_worker, task)] = task
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for future in sorted(done, key=lambda f: futures[f].index):
                task = futures[future]
                if task.index not in started and not future.cancelled():
                    started.add(task.index)
                    on_event("start", task)
                handle(future, task)
    except BaseException:
        # Ctrl-C, a fatal error, or a bug: stop the workers cleanly, keep what finished.
        with sigint_ignored():
            stop.set()
            inflight = [task for future, task in futures.items() if future.running()]
            for future in futures:
                future.cancel()
            drain()
            pids |= {p.pid for p in multiprocessing.active_children()}
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGINT)
            stuck = {f for f in futures if not f.cancelled() and not f.done()}
            deadline = time.monotonic() + 60
            while stuck and time.monotonic() < deadline:
                _, stuck = wait(stuck, timeout=0.2)
                drain()
            if stuck:  # a worker that does not stop: kill it rather than hang
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            pool.shutdown(wait=True, cancel_futures=True)
            drain()
            recorded = {r["input"] for r in summary.records}
            for future, task in futures.items():  # everything that finished, also late, is recorded
                if future.cancelled() or not future.done() or task.input in recorded:
                    continue
                with contextlib.suppress(BaseException):
                    out = future.result()
                    record = out.get("record") if out.get("interrupted") else None if "fatal" in out else out
                    if record:
                        _record(manifest, summary, on_event, task, record)
            recorded = {r["input"] for r in summary.records}
            for task in inflight:  # every worker has exited: nothing can still be writing these
                if task.input not in recorded:
                    sweep_temp_files(task, since)
            events.close()
            events.join_thread()
        raise
    else:
        pool.shutdown(wait=True)
        drain()
        events.close()
        events.join_thread()
