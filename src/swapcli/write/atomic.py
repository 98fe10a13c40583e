"""The rules every writer follows: never touch an input, never clobber without
--overwrite, and never leave a partial file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from swapcli.core.errors import OutputError


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(output: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    output = Path(output)
    for src in inputs:
        if _same(output, Path(src)) or Path(os.path.abspath(output)) == Path(os.path.abspath(src)):
            raise OutputError(f"{output}: refusing to overwrite an input file")
    if output.is_dir():
        raise OutputError(f"{output}: is a directory")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (use --overwrite to replace it)")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{output}: folder {parent} is not writable")


@contextlib.contextmanager
def atomic_path(output: Path) -> Iterator[Path]:
    """A temp path beside output (same suffix, same filesystem), renamed over it on success."""
    output = Path(output)
    parent = output.parent if str(output.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".swapcli-tmp{output.suffix}", dir=parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, output)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes(output: Path, data: bytes) -> None:
    try:
        with atomic_path(output) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from None
