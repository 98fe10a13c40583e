"""The rules every writer follows: never touch an input, never clobber without
--overwrite (not even when another run creates the file while this one works),
never leave a partial file under the final name, and clean up what a killed
run left behind.

Temp files are ``.STEM.swapcli-PID-XXXXXXXX.tmpEXT`` (folders ``...-split-...``) beside
the output: same filesystem, so the final move is atomic; same extension, so
ffmpeg picks the right muxer; the writer's pid, so a later run can tell a
file whose writer was killed (SIGKILL, OOM, power loss) from one still in use.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Sequence

from swapcli.core.errors import OutputError

log = logging.getLogger("swapcli")

_TEMP_NAME = re.compile(r"^\..*\.swapcli-(\d+)-[A-Za-z0-9_]+(\.tmp(\.[^.]*)?|-split)$")
_swept: set[str] = set()
_swept_lock = threading.Lock()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _folder(output: Path) -> Path:
    return output.parent if str(output.parent) else Path(".")


def check_output(output: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    output = Path(output)
    for src in inputs:
        if _same(output, Path(src)) or Path(os.path.abspath(output)) == Path(os.path.abspath(src)):
            raise OutputError(f"{output}: refusing to overwrite an input file")
    if output.is_dir():
        raise OutputError(f"{output}: is a directory")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (use --overwrite to replace it)")
    parent = _folder(output)
    if not parent.is_dir():
        raise OutputError(f"{output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{output}: folder {parent} is not writable")


def temp_name_prefix(output: Path) -> str:
    return f".{Path(output).stem}.swapcli-{os.getpid()}-"


def reserve_temp(output: Path) -> Path:
    """Create (empty, with the umask's mode) the hidden temp file for ``output``."""
    output = Path(output)
    folder = _folder(output)
    _sweep_once(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(output), suffix=f".tmp{output.suffix}", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
    return Path(tmp)


def reserve_temp_dir(output: Path) -> Path:
    """A private hidden work folder beside ``output`` (for split video segments)."""
    output = Path(output)
    folder = _folder(output)
    _sweep_once(folder)
    try:
        return Path(tempfile.mkdtemp(prefix=temp_name_prefix(output), suffix="-split", dir=folder))
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """Linux renameat2(RENAME_NOREPLACE); False where the call or the filesystem lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, noreplace = -100, 1
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), noreplace) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def publish(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move a finished temp file to its final name, atomically.

    Without --overwrite the move never replaces a file that appeared while we worked
    (another run writing the same output): a hard link (or renameat2 NOREPLACE on
    filesystems without links) fails instead, and the caller's temp file is removed.
    """
    tmp, output = Path(tmp), Path(output)
    try:
        if overwrite:
            os.replace(tmp, output)
            return
        try:
            os.link(tmp, output)
        except FileExistsError:
            raise
        except OSError as exc:  # no hard links here (FAT, exFAT, some FUSE and SMB mounts)
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if not _renameat2_noreplace(tmp, output):
                if os.path.lexists(output):  # last resort: a check, then the move (a tiny window remains)
                    raise FileExistsError(errno.EEXIST, "exists", str(output)) from None
                os.replace(tmp, output)
            return
        os.unlink(tmp)
    except FileExistsError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{output}: appeared while this run was writing it (another run?); "
                          "left as it is (use --overwrite to replace it)") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_path(output: Path, overwrite: bool = True) -> Iterator[Path]:
    """A temp path beside output, published to it (see `publish`) when the block succeeds."""
    output = Path(output)
    tmp_path = reserve_temp(output)
    try:
        yield tmp_path
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    publish(tmp_path, output, overwrite)


def write_bytes(output: Path, data: bytes, overwrite: bool = True) -> None:
    try:
        with atomic_path(output, overwrite) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from None


def _writer_alive(pid: int, since: float) -> bool:
    """Is the process that wrote a file at time ``since`` still running?"""
    if pid == os.getpid():
        return True
    try:
        import psutil

        started = psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone (NoSuchProcess), or not ours to see
        from swapcli.core.signals import pid_alive

        return pid_alive(pid)
    return started <= since + 1.0  # a younger process with that pid is not the writer


def _sweep_once(folder: Path) -> None:
    """`sweep_stale` once per folder per process: a batch writing thousands of files into one
    folder lists it once."""
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_stale(folder)


def sweep_stale(folder: Path) -> list[str]:
    """Remove swapcli temp files and work folders in ``folder`` whose writer is dead."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if _writer_alive(int(match.group(1)), mtime):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            continue
    if removed:
        log.info("removed %d temporary file(s) left in %s by a run that was killed: %s", len(removed), folder,
                 ", ".join(removed))
    return removed
