"""Finding, running and understanding the ffmpeg binary.

There is no ffprobe in the imageio-ffmpeg wheel, so everything we know about a
media file comes from parsing ``ffmpeg -i FILE`` stderr (stream header) and a
stream-copy pass into the ``framecrc`` muxer (exact packet timestamps without
decoding). Processes are always started from argument lists, in their own
session (a terminal Ctrl+C reaches Python only, which then kills and reaps
them), and every path handed to ffmpeg goes through :func:`media_path`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import ffmpeg  # ffmpeg-python, the argument-list builder (this module is swapcli.core.ffmpeg)

from swapcli.core.errors import SwapcliError

log = logging.getLogger(__name__)

ENV_VAR = "SWAPCLI_FFMPEG"


# --------------------------------------------------------------------------- binary


def ffmpeg_exe() -> str:
    """The ffmpeg to use: $SWAPCLI_FFMPEG, else a system ffmpeg on PATH, else imageio-ffmpeg's."""
    return _resolve_exe(os.environ.get(ENV_VAR) or None, os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=8)
def _resolve_exe(override: str | None, _path: str) -> str:
    if override:
        found = shutil.which(override)
        if not found:
            raise SwapcliError(f"{ENV_VAR}={override!r} is not an executable ffmpeg")
        return found
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise SwapcliError("no ffmpeg found: install ffmpeg or the imageio-ffmpeg package") from exc
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise SwapcliError(f"no ffmpeg found: {exc}") from exc


def base_cmd(loglevel: str = "error") -> list[str]:
    """Executable plus global options; pass as ``cmd=`` to ffmpeg-python's ``compile``.

    Global options go first because ffmpeg-python appends them after the
    output file, where ffmpeg ignores some of them.
    """
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel]


def media_path(path: str | os.PathLike[str]) -> str:
    """A path ffmpeg can only treat as a plain local file (input or output).

    Absolute so a name starting with '-' is never an option, and behind the
    ``file:`` protocol so names like ``http:x`` or ``concat:a|b`` are not URLs.
    Spaces, quotes, ``$(...)`` and non-ASCII need nothing: no shell is involved.
    """
    return "file:" + os.path.abspath(os.fspath(path))


@functools.lru_cache(maxsize=8)
def _version(exe: str) -> tuple[int, int] | None:
    out = run([exe, "-hide_banner", "-version"], check=False).stdout
    m = re.search(r"version\s+n?(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None  # git builds: unknown


def version() -> tuple[int, int] | None:
    """(major, minor) of the ffmpeg in use, or None for unversioned git builds."""
    return _version(ffmpeg_exe())


def fps_mode_option() -> str:
    """``-fps_mode`` (ffmpeg >= 5.1); the older ``-vsync`` is gone from current ffmpeg."""
    v = version()
    return "vsync" if v is not None and v < (5, 1) else "fps_mode"


@functools.lru_cache(maxsize=8)
def _encoders(exe: str) -> frozenset[str]:
    out = run([exe, "-hide_banner", "-encoders"], check=False).stdout
    return frozenset(m.group(1) for m in re.finditer(r"^\s*[VAS][A-Z.]{5}\s+(\S+)", out, re.M))


def encoders() -> frozenset[str]:
    """Names of the encoders compiled into the ffmpeg in use."""
    return _encoders(ffmpeg_exe())


@functools.lru_cache(maxsize=16)
def _encoder_error(exe: str, name: str) -> str | None:
    args = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
            "-i", "color=s=256x256:r=1:d=1", "-frames:v", "1", "-c:v", name, "-f", "null", "-"]
    proc = run(args, check=False, timeout=60)
    return None if proc.returncode == 0 else last_error_line(proc.stderr)


def encoder_error(name: str) -> str | None:
    """None when encoder ``name`` can actually open (hardware encoders need a GPU), else why not."""
    return _encoder_error(ffmpeg_exe(), name)


# --------------------------------------------------------------------------- processes


def die_with_parent() -> Callable[[], None] | None:
    """A preexec hook that makes the child die with us (Linux PR_SET_PDEATHSIG): a swapcli
    killed by SIGKILL or the OOM killer must not leave an ffmpeg running. Elsewhere None
    (children on pipes still end when their pipe closes).

    The signal follows the creating thread, so only children started on the main thread get
    it; a helper thread's child could otherwise die when that thread ends."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _signals_checked() -> None:
    """A Python call: signals that arrived meanwhile are handled on entering it."""


def spawn(args: Sequence[str], **kwargs) -> subprocess.Popen:
    """Popen in a new session that dies with us (see die_with_parent).

    A preexec hook makes CPython run its at-fork handlers in the parent (logging's lock release),
    and a KeyboardInterrupt raised in one is swallowed ("Exception ignored in _releaseLock"): a
    Ctrl-C there was lost and the run went on to exit 0. Masking the signal does not help (another
    thread receives it and the main thread still runs the handler inside the fork), so for the
    fork the handlers only record SIGINT and SIGTERM; a recorded one is then handled as usual,
    and when its handler raises (Ctrl-C), the new child is killed first. A handler that only
    asks for a clean stop (`swapcli live`) keeps it: the stop needs it to finish the file."""
    hook = die_with_parent()
    if hook is None:
        return subprocess.Popen(list(args), start_new_session=True, **kwargs)
    held: list[int] = []
    before = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in _STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(list(args), start_new_session=True, preexec_fn=hook, **kwargs)
    finally:
        _signals_checked()  # one that came in the last instant is recorded too
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for signum in held:
            handler = before[signum]
            try:
                if callable(handler):
                    handler(signum, None)  # Ctrl-C: KeyboardInterrupt; swapcli's SIGTERM handler likewise
                elif handler == signal.SIG_DFL:
                    if proc is not None:
                        proc.kill()
                        proc.wait()
                    signal.raise_signal(signum)
            except BaseException:
                if proc is not None:
                    proc.kill()
                    proc.wait()
                raise
    return proc


def run(args: Sequence[str], *, check: bool = True, timeout: float | None = None,
        error: type[SwapcliError] = SwapcliError, what: str = "ffmpeg") -> subprocess.CompletedProcess[str]:
    """Run to completion and capture text output; the child is killed if we are interrupted."""
    try:
        with spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   errors="replace") as child:
            try:
                out, err = child.communicate(timeout=timeout)
            except BaseException:  # a timeout, Ctrl-C: the child goes too
                child.kill()
                child.wait()
                raise
    except OSError as exc:  # missing, not executable, ...
        raise SwapcliError(f"cannot run ffmpeg ({args[0]}): {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what} timed out after {timeout:.0f} s") from exc
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    if check and proc.returncode != 0:
        raise error(f"{what} failed: {last_error_line(proc.stderr)}")
    return proc


class Process:
    """A streaming ffmpeg child: pipes for data, a thread that keeps the stderr tail.

    Draining stderr in a thread matters: a corrupt input can log more than a
    pipe buffer holds, and a child blocked on stderr would deadlock our pipes.
    """

    def __init__(self, args: Sequence[str], *, stdin: int | None = None, stdout: int | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.args = list(args)
        self._tail: deque[str] = deque(maxlen=100)
        self._on_line = on_line  # also sees every stderr line (swapcli live parses the header)
        try:
            self.popen = spawn(self.args, stdin=subprocess.DEVNULL if stdin is None else stdin,
                               stdout=subprocess.DEVNULL if stdout is None else stdout, stderr=subprocess.PIPE)
        except OSError as exc:
            raise SwapcliError(f"cannot run ffmpeg ({self.args[0]}): {exc.strerror}") from exc
        self._stderr_thread = threading.Thread(target=self._drain, name="ffmpeg-stderr", daemon=True)
        try:
            self._stderr_thread.start()
        except BaseException:  # stopped right here: nobody else holds the child to kill it
            self.popen.kill()
            self.popen.wait()
            raise

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)
                if self._on_line is not None:
                    self._on_line(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit and for the complete stderr tail."""
        rc = self.popen.wait(timeout)
        self._stderr_thread.join(5)
        return rc

    def kill(self) -> None:
        """Kill (if still running) and reap; idempotent, never raises.

        Kill first, close pipes after: a thread blocked in a pipe read/write
        holds the file's lock, and only the child's death releases it.
        """
        if self.popen.poll() is None:
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait on us
            log.warning("ffmpeg pid %d did not exit after SIGKILL", self.popen.pid)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except (OSError, ValueError):
                    pass
        self._stderr_thread.join(5)
        if self.popen.stderr is not None and not self._stderr_thread.is_alive():  # free the fd now, not at GC
            try:
                self.popen.stderr.close()
            except (OSError, ValueError):
                pass

    def error_line(self) -> str:
        return last_error_line("\n".join(self._tail))


_BOILERPLATE = re.compile(
    r"^(Conversion failed!|Exiting normally|Press \[q\]|frame=|size=|video:|"
    r"Error opening (in|out)put files?[ .:]|At least one output file must be specified|"
    r"Error splitting the argument list|\[q\] command received|Stream mapping:|"
    r"Input #|Output #|Duration:|Stream #|Metadata:|Side data:|"
    r"Task finished with error code|Terminating thread with return code|"
    r"Nothing was written into output file|.*Qavg:)"
)
_PREFIX = re.compile(r"^(\[[^\]]+ @ 0x[0-9a-f]+\]\s*)+")


def last_error_line(stderr: str) -> str:
    """ffmpeg's last meaningful stderr line, one line, without '[ctx @ 0x..]' prefixes."""
    fallback = ""
    for raw in reversed(stderr.splitlines()):
        if not raw.strip() or raw.startswith("  "):
            continue
        line = _PREFIX.sub("", raw.strip()).strip()
        if not line:
            continue
        fallback = fallback or line
        if not _BOILERPLATE.match(line):
            return line[:300]
    return (fallback or "no error message from ffmpeg")[:300]


# --------------------------------------------------------------------------- header parsing


@dataclass
class StreamHeader:
    """One ``Stream #0:N`` block of ``ffmpeg -i`` output."""

    index: int
    kind: str  # video | audio | subtitle | data | attachment
    codec: str
    line: str
    language: str | None = None
    pix_fmt: str | None = None
    width: int | None = None
    height: int | None = None
    sar: Fraction | None = None
    color_range: str | None = None  # tv | pc
    color_space: str | None = None  # matrix, e.g. bt709, bt470bg, bt2020nc
    color_primaries: str | None = None
    color_transfer: str | None = None  # smpte2084 = PQ, arib-std-b67 = HLG
    fps: Fraction | None = None  # "fps": average frame rate
    tbr: Fraction | None = None  # "tbr": ffmpeg's r_frame_rate guess
    attached_pic: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    side_data: list[str] = field(default_factory=list)

    @property
    def rotation(self) -> int:
        """Clockwise degrees (the old ``rotate`` tag's convention) a player turns the picture."""
        for entry in self.side_data:
            m = re.search(r"display ?matrix: rotation of (-?[\d.]+) degrees", entry, re.I)
            if m:  # printed counter-clockwise
                return int(round(-float(m.group(1)) / 90.0)) * 90 % 360
        tag = self.metadata.get("rotate")
        if tag and re.fullmatch(r"-?\d+(\.\d+)?", tag):
            return int(round(float(tag) / 90.0)) * 90 % 360
        return 0


@dataclass
class MediaHeader:
    format_name: str
    duration: float | None
    start: float
    streams: list[StreamHeader]
    metadata: dict[str, str] = field(default_factory=dict)


def split_fields(text: str) -> list[str]:
    """Split on ', ' outside parentheses/brackets."""
    parts, depth, cur = [], 0, []
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0 and text[i + 1:i + 2] == " ":
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def parse_rate(text: str) -> Fraction | None:
    """ffmpeg's printed rate ('25', '29.97', '59.94', '1k') as the exact rational it stands for.

    ffmpeg prints rates rounded to 2 decimals, so NTSC rates come back as
    N*1000/1001 and others as the simplest fraction within the rounding.
    """
    m = re.fullmatch(r"([\d.]+)(k?)", text.strip())
    if not m:
        return None
    value = float(m.group(1)) * (1000 if m.group(2) else 1)
    if value <= 0:
        return None
    if m.group(2) or value == int(value):
        return Fraction(round(value))
    ntsc = round(value * 1.001)
    if abs(ntsc * 1000 / 1001 - value) < 0.006:
        return Fraction(ntsc * 1000, 1001)
    for den in range(2, 1002):
        num = round(value * den)
        if abs(num / den - value) <= 0.005:
            return Fraction(num, den)
    return Fraction(value).limit_denominator(1001)  # pragma: no cover


def _parse_time(text: str) -> float | None:
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", text.strip())
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


_INPUT = re.compile(r"^Input #0, (\S+?), from ")
_DURATION = re.compile(r"^\s*Duration: ([^,]+), start: (-?[\d.]+)")
_STREAM = re.compile(
    r"^\s*Stream #0[:.](\d+)(?:\[0x[0-9a-fA-F]+\])?(?:\(([^)]*)\))?: "
    r"(Video|Audio|Subtitle|Data|Attachment): (.*)$"
)


def parse_header(stderr: str) -> MediaHeader | None:
    """Parse ``ffmpeg -i FILE`` stderr for input #0; None when ffmpeg could not open it."""
    lines = stderr.splitlines()
    start_at = next((i for i, line in enumerate(lines) if _INPUT.match(line)), None)
    if start_at is None:
        return None
    header = MediaHeader(format_name=_INPUT.match(lines[start_at]).group(1),  # type: ignore[union-attr]
                         duration=None, start=0.0, streams=[])
    section: tuple[str, dict[str, str] | list[str]] | None = None
    current: StreamHeader | None = None
    for line in lines[start_at + 1:]:
        if re.match(r"^(Input|Output) #[1-9]|^Stream mapping:|^\S", line):
            break
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if m := _DURATION.match(line):
            header.duration = _parse_time(m.group(1))
            header.start = float(m.group(2))
            section = None
        elif m := _STREAM.match(line):
            current = _parse_stream(int(m.group(1)), m.group(2), m.group(3), m.group(4))
            header.streams.append(current)
            section = None
        elif text == "Metadata:":
            section = ("meta", current.metadata if current and indent >= 4 else header.metadata)
        elif text == "Side data:":
            section = ("side", current.side_data if current else [])
        elif section is not None:
            kind, target = section
            if kind == "meta" and isinstance(target, dict):
                key, sep, value = text.partition(":")
                if sep:
                    target.setdefault(key.strip(), value.strip())
            elif isinstance(target, list):
                target.append(text)
    return header


def _parse_stream(index: int, language: str | None, kind: str, details: str) -> StreamHeader:
    codec = details.split()[0].rstrip(",") if details.split() else "unknown"
    st = StreamHeader(index=index, kind=kind.lower(), codec=codec, line=details,
                      language=language or None, attached_pic="(attached pic)" in details)
    if st.kind != "video":
        return st
    parts = split_fields(details)
    for part in parts[1:]:
        if st.pix_fmt is None and st.width is None and (m := re.fullmatch(r"([a-z][a-z0-9_]*)(\((.*)\))?", part)):
            st.pix_fmt = m.group(1)
            _parse_colour(st, m.group(3) or "")
            continue
        if st.width is None and (m := re.match(r"^(\d+)x(\d+)", part)):
            st.width, st.height = int(m.group(1)), int(m.group(2))
            if sm := re.search(r"SAR (\d+):(\d+)", part):
                num, den = int(sm.group(1)), int(sm.group(2))
                st.sar = Fraction(num, den) if num and den else None
        elif m := re.fullmatch(r"([\d.]+k?) fps", part):
            st.fps = parse_rate(m.group(1))
        elif m := re.fullmatch(r"([\d.]+k?) tbr", part):
            st.tbr = parse_rate(m.group(1))
    return st


def _parse_colour(st: StreamHeader, text: str) -> None:
    """'tv, bt709' or 'pc, bt2020nc/bt2020/smpte2084, progressive' (range, space[/primaries/trc], order)."""
    for item in (x.strip() for x in text.split(",")):
        if item in ("tv", "pc"):
            st.color_range = item
        elif "/" in item:
            st.color_space, st.color_primaries, st.color_transfer = (
                None if v == "unknown" else v for v in (item.split("/") + [None, None])[:3])
        elif re.fullmatch(r"(bt|smpte|fcc|ycgco|gbr|chroma)[\w-]*", item):
            st.color_space = st.color_primaries = st.color_transfer = item


# --------------------------------------------------------------------------- packet timing


@dataclass
class PacketTiming:
    """Exact timing of one stream from a stream-copy pass (no decoding)."""

    count: int
    time_base: Fraction
    pts: list[int]  # presentation order
    last_duration: int
    error: str = ""  # ffmpeg's last complaint, if it had one

    @property
    def span(self) -> Fraction | None:
        """First presentation time to the end of the last frame, in seconds."""
        if not self.pts:
            return None
        return (self.pts[-1] + self.last_duration - self.pts[0]) * self.time_base

    @property
    def is_vfr(self) -> bool | None:
        """True when frame intervals really differ (not just rounding to the time base)."""
        if len(self.pts) < 3:
            return None
        deltas = sorted(b - a for a, b in zip(self.pts, self.pts[1:]))
        median = deltas[len(deltas) // 2]
        return deltas[-1] - deltas[0] > max(2, median // 20)


def packet_timing(path: str | os.PathLike[str], stream: str = "v:0") -> PacketTiming:
    """Timing of one stream (e.g. 'v:0', 'a:0') by stream-copying it into ``framecrc``.

    Demuxing only, no decoding: a feature film takes a second or two.
    Raises SwapcliError when ffmpeg fails before producing any packet.
    """
    out = ffmpeg.output(ffmpeg.input(media_path(path))[stream], "-", format="framecrc", c="copy")
    proc = run(out.compile(cmd=base_cmd("error")), check=False)
    timing = parse_framecrc(proc.stdout)
    if proc.returncode != 0 and timing.count == 0:
        raise SwapcliError(last_error_line(proc.stderr))
    if proc.stderr.strip():
        timing.error = last_error_line(proc.stderr)
    return timing


def parse_framecrc(text: str) -> PacketTiming:
    """Parse ``-f framecrc`` output (``stream, dts, pts, duration, size, crc`` lines) for stream 0."""
    tb = Fraction(1, 1)
    packets: list[tuple[int, int]] = []
    count, pts_ok = 0, True
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            num, _, den = line.split(":", 1)[1].strip().partition("/")
            tb = Fraction(int(num), int(den or 1))
        elif line.startswith("0,"):
            fields = line.split(",")
            flags = re.search(r"F=0x([0-9A-Fa-f]+)", line)
            if flags and int(flags.group(1), 16) & 0x4:
                continue  # AV_PKT_FLAG_DISCARD: cut by an edit list, never shown
            count += 1
            try:
                pts, duration = int(fields[2]), int(fields[3])
            except (ValueError, IndexError):
                pts_ok = False
                continue
            if pts == -(2**63):
                pts_ok = False  # NOPTS, e.g. raw elementary streams
            packets.append((pts, duration))
    if not pts_ok or not packets:
        return PacketTiming(count=count, time_base=tb, pts=[], last_duration=0)
    packets.sort()  # decode order -> presentation order
    return PacketTiming(count=count, time_base=tb, pts=[p for p, _ in packets],
                        last_duration=packets[-1][1])
