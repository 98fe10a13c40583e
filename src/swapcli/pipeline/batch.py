"""swapcli batch: one source onto many targets (images and videos, mixed).

Planning (no models needed): INPUT arguments (files, folders, globs) are
expanded into tasks, each with an output path that mirrors the input tree
under OUTPUT_DIR. Clashes are refused before any work starts: two inputs
mapping to one output, or an output that would land on an input.

Running: models load once per worker. The workers are the executor's
(pipeline/executor.py): this process for one, spawned processes for more, Ray
actors with ``--cluster`` (pipeline/cluster.py); each builds the Swapper and
analyses the source once, then takes one file at a time. Every result comes
back to this process, which alone appends to the manifest, so the manifest
has one writer and stays consistent. On a cluster without a shared filesystem
the output comes back as bytes and is published here (``deliver``).

Manifest (``OUTPUT_DIR/swapcli-manifest.jsonl``): one JSON object per line,
appended with a single ``write`` on an ``O_APPEND`` descriptor and fsynced.
A re-run skips an input whose last ``done`` record names the same output and
that file still exists with the recorded size (``--overwrite`` redoes it), and
an input whose latest outcome was ``no_face`` (``--retry-failed`` retries it).
The file keeps one current record per input: it is compacted (temp file and
``os.replace``) when a run starts and ends, but only under an exclusive
``flock`` taken without waiting, while every run appending to it holds a shared
one: a manifest that another batch is writing is left alone, never cut.
``--manifest-history`` keeps every line instead.

Paths: records keep absolute paths (an input's identity whatever the working
folder of the next run); what the user sees (stdout, status lines, JSON) shows
them as given on the command line.

Folder walks (folders and ``**`` patterns) follow symlinked folders, but walk
no folder (device, inode) twice and take real subfolders first, so a link
loop ends and a file reachable both ways keeps its real path.

Ctrl-C: the executor turns the first signal into KeyboardInterrupt inside the
running task, so the image/video writers delete their temp files and kill
ffmpeg; the driver stops its workers, records what finished and exits 130.
Interrupted inputs get no record, so a re-run redoes exactly those.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import logging
import os
import re
import string
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

try:
    import fcntl
except ImportError:  # not POSIX: no flock, so the manifest is only appended to, never compacted
    fcntl = None  # type: ignore[assignment]

from swapcli.core.device import share_cores
from swapcli.core.errors import (
    EXIT_FAILURE,
    EXIT_NO_FACE,
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
from swapcli.pipeline import executor as _executor
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
    given_input: str = ""  # the input and output paths as the user gave them (relative stays relative)
    given_output: str = ""

    @property
    def shown_input(self) -> str:
        return self.given_input or self.input

    @property
    def shown_output(self) -> str:
        return self.given_output or self.output


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


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name) if folder else name


def _entries(folder: str, hidden: bool = False) -> tuple[list[str], list[str]]:
    """(subfolder names, file names) of a folder, sorted; hidden names only when asked. A symlink counts as
    what it points to (a broken one as a file: it then fails as unreadable); an unreadable folder is empty."""
    dirs: list[str] = []
    files: list[str] = []
    try:
        with os.scandir(folder or os.curdir) as it:
            for entry in it:
                if entry.name.startswith(".") and not hidden:
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                (dirs if is_dir else files).append(entry.name)
    except OSError:
        pass
    return sorted(dirs), sorted(files)


def _folders(top: str, recursive: bool, skip: Sequence[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """(folder, visible subfolder names, visible file names) for top and, if recursive, every folder below it.

    Symlinked folders are followed, but no folder (st_dev, st_ino) is walked twice and every real
    subfolder comes before any link: a link back up the tree (a loop) or to a folder also reached
    without links is not walked again. So the walk ends, and a file keeps its real path where it has one.
    """
    seen: set[tuple[int, int]] = set()
    roots = [top]
    while roots:
        stack = [roots.pop(0)]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder or os.curdir)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs, files = _entries(folder)
            yield folder, dirs, files
            if not recursive:
                return
            subs = [_join(folder, d) for d in dirs if os.path.realpath(_join(folder, d)) not in skip]
            stack += reversed([sub for sub in subs if not os.path.islink(sub)])
            roots += [sub for sub in subs if os.path.islink(sub)]


def _tree_order(path: Path) -> tuple:
    """A folder's files before its subfolders', each level sorted (the order of a top-down walk)."""
    return path.parent.parts, path.name


def _walk(folder: Path, recursive: bool, skip_dirs: Sequence[str]) -> tuple[list[Path], int]:
    """Visible files of a folder (sorted), and how many subfolders were not searched."""
    files: list[Path] = []
    unsearched = 0
    for root, dirs, names in _folders(str(folder), recursive, skip_dirs):
        if not recursive:
            unsearched = sum(1 for d in dirs if os.path.realpath(os.path.join(root, d)) not in skip_dirs)
        files += [Path(root, name) for name in names if not name.startswith("swapcli-manifest")]  # manifests
    return sorted(files, key=_tree_order), unsearched


def _magic(part: str) -> bool:
    return any(c in GLOB_CHARS for c in part)


def expand_glob(pattern: str, recursive: bool, skip: Sequence[str] = ()) -> list[str]:
    """glob.glob(pattern, recursive=recursive), sorted; a '**' part (with recursive) is walked by
    _folders instead, as glob follows symlinked folders into loops and never ends."""
    if not recursive or "**" not in pattern.split(os.sep):
        return sorted(glob.glob(pattern, recursive=recursive))
    parts = [part for part in pattern.split(os.sep) if part]
    first = next(i for i, part in enumerate(parts) if _magic(part))
    head = os.sep.join(parts[:first])
    if pattern.startswith(os.sep):
        head = os.sep + head
    return sorted(set(_match(head, parts[first:], pattern.endswith(os.sep), skip)))


def _match(folder: str, parts: list[str], dironly: bool, skip: Sequence[str]) -> Iterator[str]:
    """Paths below folder matching the pattern parts (glob's rules: wildcards skip hidden names)."""
    part, rest = parts[0], parts[1:]
    if part == "**":
        for sub, _, files in _folders(folder, True, skip):
            if rest:
                yield from _match(sub, rest, dironly, skip)
                continue
            if sub:  # a trailing '**': every folder and file below
                yield sub
            if not dironly:
                yield from (_join(sub, name) for name in files)
        return
    if not _magic(part):
        path = _join(folder, part)
        if rest:
            if os.path.isdir(path):
                yield from _match(path, rest, dironly, skip)
        elif os.path.isdir(path) if dironly else os.path.lexists(path):
            yield path
        return
    dirs, files = _entries(folder, hidden=part.startswith("."))
    for name in fnmatch.filter(dirs if rest or dironly else dirs + files, part):
        if rest:
            yield from _match(_join(folder, name), rest, dironly, skip)
        else:
            yield _join(folder, name)


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
            matches = expand_glob(arg, recursive, skip)
            if not matches:
                notes.append(f"{arg}: matches nothing")
            walked: set[Path] = set()
            for m in matches:
                mp = Path(m)
                try:
                    rel_parts = mp.relative_to(base).parts
                except ValueError:
                    rel_parts = mp.parts
                if any(part.startswith(".") and part not in (".", "..") for part in rel_parts):
                    continue  # like the shell: wildcards do not match hidden files
                if mp.is_dir():
                    if recursive and walked.intersection(mp.parents):
                        continue  # 'photos/**' matches every folder: the walk of its parent found them all
                    walked.add(mp)
                    files, _ = _walk(mp, recursive, skip)
                    found += [(f, base, False) for f in files]
                elif not any(_inside(os.path.realpath(m), s) for s in skip):
                    found.append((mp, base, False))
        else:
            raise UsageError(f"{arg}: no such file or folder")
    return _unique(found), notes


def _links_in(path: Path) -> int:
    return sum(1 for folder in path.parents if os.path.islink(folder))


def _unique(found: list[tuple[Path, Path, bool]]) -> list[tuple[Path, Path, bool]]:
    """One entry per file (by real path), where it was first found, under the path through the fewest
    symlinked folders (a file reached by a link and by its real folder keeps its real path)."""
    first: dict[str, int] = {}
    unique: list[tuple[Path, Path, bool]] = []
    for item in found:
        key = os.path.realpath(item[0])
        if key not in first:
            first[key] = len(unique)
            unique.append(item)
        elif _links_in(item[0]) < _links_in(unique[first[key]][0]):
            unique[first[key]] = item
    return unique


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
        name = file.name if kind == "unsupported" else render_pattern(pattern, file, kind)
        task = Task(index=0, input=_abs(file), output=os.path.normpath(str(out_root / rel_parent / name)), kind=kind,
                    display=display, explicit=explicit, given_input=str(file),
                    given_output=str(Path(output_dir) / rel_parent / name))
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
            raise UsageError(f"{display}: its output {task.shown_output} is an input file; choose another OUTPUT_DIR or --pattern")
        if key in by_output:
            raise UsageError(f"{by_output[key].display} and {display} both map to {task.shown_output}; "
                             "use --pattern with {parent} or {name}, or separate runs")
        by_output[key] = task
        plan.tasks.append(task)
    if dropped:
        plan.notes.append(f"{dropped} file(s) among the inputs are outputs of an earlier batch (ignored)")
    for i, task in enumerate(plan.tasks + plan.unsupported):
        task.index = i
    return plan


# --------------------------------------------------------------------------- manifest


RESTATED = ("already_done", "no_face")  # skip categories that only repeat an earlier outcome


def _restates(rec: dict) -> bool:
    return rec.get("status") == "skipped" and rec.get("category") in RESTATED


def _parse_lines(data: bytes) -> tuple[list[tuple[bytes, dict]], int]:
    """(line, record) for every readable line, and how many lines were unreadable (cut by a crash)."""
    good, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8", "surrogateescape"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
            continue
        if not isinstance(rec, dict) or "input" not in rec:
            bad += 1
            continue
        good.append((line, rec))
    return good, bad


def compact_records(records: Sequence[dict]) -> list[int]:
    """Indexes of the records to keep, in order: one current record per input (and output).

    That is the latest outcome, plus the last 'done' before it when the latest is not 'done', so resume
    and the set of outputs made (never taken for inputs) stay exactly as the full history gives them.
    Skip rows that only restate an earlier outcome go.
    """
    latest: dict[tuple, int] = {}
    done: dict[tuple, int] = {}
    for i, rec in enumerate(records):
        if _restates(rec):
            continue
        key = (rec["input"], rec.get("output"))
        latest[key] = i
        if rec.get("status") == "done" and rec.get("output"):
            done[key] = i
    return sorted(set(latest.values()) | set(done.values()))


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace path by data: a temp file in the same folder, fsynced, renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".swapcli-tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Manifest:
    """JSON lines, one record per input outcome; the last 'done' record of an input is its state.

    Several batches may append to one file (two runs into one OUTPUT_DIR, --manifest shared by
    hand). Each holds a shared flock while its descriptor is open; compact() rewrites the file only
    under an exclusive flock it does not wait for, so it never replaces a file that someone is
    appending to (their records would go to the unlinked old file). A writer that opened the old
    file just before a compaction sees the swap after taking its lock and reopens.
    """

    def __init__(self, path: Path, history: bool = False) -> None:
        self.path = Path(path)
        self.history = history  # keep every line (no compaction)
        self._fd: int | None = None
        self._wrote = False
        self.bad_lines = 0
        self._reset([])
        self._load()

    def _reset(self, records: Iterable[dict]) -> None:
        self.done: dict[str, dict] = {}  # input -> last done record
        self.outputs: set[str] = set()  # every output ever recorded done
        self.latest: dict[tuple, dict] = {}  # (input, output) -> latest outcome
        for rec in records:
            self._absorb(rec)

    def _absorb(self, rec: dict) -> None:
        if _restates(rec):
            return
        self.latest[(rec["input"], rec.get("output"))] = rec
        if rec.get("status") == "done" and rec.get("output"):
            self.done[rec["input"]] = rec
            self.outputs.add(rec["output"])

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read the manifest ({exc.strerror})") from None
        good, self.bad_lines = _parse_lines(data)
        self._reset(rec for _, rec in good)

    def also_read(self, other: Manifest) -> None:
        """Count records of another manifest in the same OUTPUT_DIR (other shards, re-sharding)."""
        for key, rec in other.done.items():
            self.done.setdefault(key, rec)
        for pair, rec in other.latest.items():
            self.latest.setdefault(pair, rec)
        self.outputs |= other.outputs

    def is_done(self, task: Task) -> bool:
        rec = self.done.get(task.input)
        if not rec or rec.get("output") != task.output:
            return False
        try:
            return os.path.getsize(task.output) == rec.get("size")
        except OSError:
            return False

    def had_no_face(self, task: Task) -> bool:
        """The latest outcome of this input (and output) was 'no face': a finished state, not a failure."""
        rec = self.latest.get((task.input, task.output))
        return bool(rec) and rec.get("status") == "no_face"

    def compact(self) -> bool:
        """Keep one current record per input (compact_records), unless --manifest-history, no flock
        here, or another batch has the file open for appending (then a later run compacts it)."""
        if self.history or fcntl is None:
            return False
        path = Path(os.path.realpath(self.path))  # a symlinked manifest stays a symlink
        try:
            fd = os.open(path, os.O_RDWR)  # NFS emulates flock with POSIX locks: LOCK_EX needs write access
        except OSError:
            return False  # no manifest yet, or not ours to rewrite
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.debug("%s: in use by another batch, not compacted now", self.path)
                return False
            if not _same_file(fd, path):
                return False  # replaced since we opened it: compacted by another batch
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
            good, bad = _parse_lines(data)
            keep = compact_records([rec for _, rec in good])
            if len(keep) == len(good) and not bad:
                return False
            try:
                with sigint_ignored():  # a second Ctrl-C must not cut it (it is short)
                    _write_atomically(path, b"".join(good[i][0] + b"\n" for i in keep),
                                      os.fstat(fd).st_mode & 0o7777)
            except OSError as exc:
                log.warning("%s: not compacted (%s); it keeps every line", self.path, exc.strerror or exc)
                return False
            self.bad_lines = 0
            self._reset(good[i][1] for i in keep)
            return True
        finally:
            os.close(fd)  # releases the lock: a writer waiting on the old file reopens the new one

    def _open(self) -> int:
        while self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while another batch compacts (a moment)
                except OSError:
                    pass  # no locks on this file system: plain appends (nobody can compact it either)
                else:
                    if not _same_file(fd, self.path):  # compacted (replaced) before we got the lock
                        os.close(fd)
                        continue
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a crash cut the last line: never glue onto it
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
        self._wrote = True
        self._absorb(record)

    def close(self) -> None:
        """Release the file; a run that wrote to it compacts it (if nobody else is writing)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._wrote:
            self._wrote = False
            self.compact()


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
    """A manifest record: 'error' only on failed records, 'reason' on skipped and no_face ones."""
    return {"input": task.input, "output": task.output, "kind": task.kind, "status": status,
            "category": "ok", "exit_code": EXIT_OK, "size": None, "faces_found": None, "faces_swapped": None, "time": _now(), **extra}


def skip_record(task: Task, category: str, reason: str) -> dict:
    rec = base_record(task, "skipped", category=category, reason=reason)
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


def no_face_record(task: Task, exc: BaseException, seconds: float = 0.0) -> dict:
    """No face (or none matching the selection) in a target: a finished outcome, skipped by re-runs."""
    return base_record(task, "no_face", category="no_face", reason=one_line(str(exc)), exit_code=EXIT_NO_FACE,
                       seconds=round(seconds, 3))


def for_user(record: dict, task: Task) -> dict:
    """The record as shown to the user: paths as given (the manifest keeps them absolute)."""
    names = {task.input: task.shown_input, task.output: task.shown_output}
    names = {a: b for a, b in names.items() if a and a != b}
    shown = dict(record)
    for key in ("input", "output"):
        shown[key] = names.get(shown.get(key), shown.get(key))
    if names:
        found = re.compile("|".join(re.escape(a) for a in sorted(names, key=len, reverse=True)))
        for key in ("error", "reason"):
            if isinstance(shown.get(key), str):
                shown[key] = found.sub(lambda m: names[m.group(0)], shown[key])
    return shown


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
        except NoFaceError as exc:
            return no_face_record(task, exc, time.perf_counter() - started)
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


Interrupted = _executor.Interrupted  # Ctrl-C just after a task's output was committed: carries its 'done' record


# --------------------------------------------------------------------------- the app the executor runs


def make_worker(settings: BatchSettings, paths: Callable[[str], str] = _executor.same_path) -> "BatchApp":
    """The executor's factory: one Worker per slot (``paths`` maps the driver's files on a cluster)."""
    import dataclasses

    share_cores(settings.engine.threads)  # onnxruntime would otherwise start one thread per core
    settings = dataclasses.replace(settings, sources=tuple(paths(p) for p in settings.sources),
                                   reference=paths(settings.reference) if settings.reference else None)
    return BatchApp(Worker(settings))


class BatchApp:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def run(self, task: Task, progress: Callable[[int, int | None], None],
            paths: Callable[[str], str] = _executor.same_path) -> dict:
        import dataclasses

        return self.worker.run(dataclasses.replace(task, input=paths(task.input), output=paths(task.output)), progress)


# --------------------------------------------------------------------------- the runner


cpu_count = _executor.cpu_count


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
        """1 if any input failed; 'no_face' is an outcome (nothing to swap), not a failure."""
        return EXIT_FAILURE if self.failed else EXIT_OK


Event = Callable[..., None]


def run_batch(settings: BatchSettings, tasks: Sequence[Task], manifest: Manifest, *, workers: int = 1,
              on_event: Event = lambda *a: None, executor: Any = None) -> Summary:
    """Process tasks; records go to the manifest (and the summary) as they finish.

    ``executor``: a cluster (``cluster.RayPool``); by default this machine (``workers`` processes,
    or this process for one). ``on_event(kind, *args)``: ("start", task), ("progress", task, done,
    total), ("result", task, record), ("log", level, message). Raises WorkerError (a SwapcliError)
    when the batch cannot go on; KeyboardInterrupt after cleaning up.
    """
    import dataclasses

    devices = settings.devices or (settings.engine.device,)
    if executor is None:
        specs = _executor.local_plan(workers, devices, len(tasks))
        executor = _executor.local(len(specs))
    else:
        specs = executor.plan(workers, devices, len(tasks))
    summary = Summary(workers=len(specs))
    photos = tuple(str(p) for p in (*settings.sources, *([settings.reference] if settings.reference else [])))
    slots = [_executor.Slot(label=spec.label, send=photos, num_cpus=spec.num_cpus, num_gpus=spec.num_gpus,
                            setup=dataclasses.replace(settings, devices=(), engine=dataclasses.replace(
                                settings.engine, device=spec.device, threads=spec.threads or settings.engine.threads)))
             for spec in specs]
    items = [_executor.Item(task.index, task, send=(task.input,), receive=(task.output,)) for task in tasks]
    since = time.time()

    def event(kind: str, *args: Any) -> None:
        if kind == "result":
            _record(manifest, summary, on_event, args[0].payload, args[1])
        elif kind in ("start", "progress"):
            on_event(kind, args[0].payload, *args[1:])
        else:
            on_event(kind, *args)

    def deliver(item: _executor.Item, record: dict, files: dict[str, Path]) -> dict:
        """A cluster worker without a shared filesystem sent the output back: publish it here."""
        from swapcli.write.atomic import publish

        task, tmp = item.payload, files.get(item.payload.output)
        if record.get("status") != "done":
            return record
        if tmp is None:
            return failed_record(task, f"{task.input}: the worker sent no output back")
        try:
            publish(tmp, Path(task.output), settings.output.overwrite)
        except SwapcliError as exc:
            return failed_record(task, exc)
        return {**record, "size": os.path.getsize(task.output)}

    started = time.perf_counter()
    try:
        executor.run(make_worker, slots, items, event, deliver=deliver,
                     abandon=lambda item: sweep_temp_files(item.payload, since))
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        manifest.close()
    return summary


def _record(manifest: Manifest, summary: Summary, on_event: Event, task: Task, record: dict) -> None:
    manifest.append(record)
    summary.records.append(record)
    on_event("result", task, record)
