"""Streaming video I/O: probe, FrameReader, VideoWriter, on real clips built from real photos."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from clips import make_clip, make_text_file, make_truncated, rotation_matrix, set_rotation, stored_matrix  # noqa: E402

from swapcli.core import ffmpeg as ff  # noqa: E402
from swapcli.core.errors import InputError, OutputError, SwapcliError, UsageError  # noqa: E402
from swapcli.read.video import SWS_FLAGS as READER_SWS_FLAGS  # noqa: E402
from swapcli.read.video import FrameReader, VideoInfo, probe  # noqa: E402
from swapcli.write.video import VideoWriter, audio_copyable, subtitle_codec  # noqa: E402

FPS = 25
SECONDS = 2
FRAMES = FPS * SECONDS


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input clip the module needs, built once (about 2 s in all)."""
    d = tmp_path_factory.mktemp("clips")
    built = {
        "pan": make_clip(d / "pan.mp4"),
        "noaudio": make_clip(d / "noaudio.mp4", photo="yaoming", motion="zoom", audio=False),
        "rot90": make_clip(d / "rot90.mp4", photo="gdp", motion="rotate", rotate_meta=90),
        "vfr": make_clip(d / "vfr.mp4", vfr=True),
        "odd": make_clip(d / "odd.mp4", size=(320, 180), odd=True, motion="none"),
        "pcm": make_clip(d / "pcm.mov", size=(320, 180), audio_codec="pcm_s16le"),
        "subs": make_clip(d / "subs.mp4", size=(320, 180), subtitles=True),
        "hdr": make_clip(d / "hdr.mp4", size=(320, 180), seconds=0.4, audio=False, hdr=True),
    }
    return built


def ffmpeg_children() -> list[int]:
    """Our child ffmpeg processes, zombies included."""
    me = os.getpid()
    try:
        import psutil
    except ImportError:
        kids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == me and "ffmpeg" in comm:
                kids.append(int(entry))
        return kids
    return [p.pid for p in psutil.Process(me).children(recursive=True) if "ffmpeg" in p.name()]


def audio_duration(path: Path) -> float:
    span = ff.packet_timing(path, "a:0").span
    assert span is not None
    return float(span)


def transcode(src: Path | VideoInfo, out: Path, **kw: object) -> VideoWriter:
    """Read every frame of src and write it to out with src's audio: the pipeline minus the swap."""
    info = src if isinstance(src, VideoInfo) else probe(src)
    seg = {k: kw.pop(k) for k in ("start", "end") if k in kw}
    with FrameReader(info, **seg) as reader, VideoWriter(
            out, info.width, info.height, info.fps, audio_source=info, preset="ultrafast", **seg,
            **kw) as writer:  # type: ignore[arg-type]
        for frame in reader:
            writer.write(frame)
    return writer


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".swapcli-" in p.name)


# --------------------------------------------------------------------------- core/ffmpeg


def test_exe_override_and_bad_override(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ff.ffmpeg_exe()
    monkeypatch.setenv("SWAPCLI_FFMPEG", real)
    assert ff.ffmpeg_exe() == real
    monkeypatch.setenv("SWAPCLI_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(SwapcliError, match="SWAPCLI_FFMPEG"):
        ff.ffmpeg_exe()


@pytest.mark.parametrize("text, rate", [
    ("25", Fraction(25)), ("29.97", Fraction(30000, 1001)), ("23.98", Fraction(24000, 1001)),
    ("59.94", Fraction(60000, 1001)), ("12.50", Fraction(25, 2)), ("1k", Fraction(1000)),
    ("25.25", Fraction(101, 4)),
])
def test_parse_rate(text: str, rate: Fraction) -> None:
    assert ff.parse_rate(text) == rate


def test_parse_header_old_style_rotation_and_streams() -> None:
    """ffmpeg 4-6 print 'displaymatrix: rotation of -90.00 degrees' plus a rotate tag."""
    stderr = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone clip.mov':
  Metadata:
    creation_time   : 2023-05-01T10:00:00.000000Z
  Duration: 00:00:10.01, start: 0.000000, bitrate: 17000 kb/s
  Stream #0:0(und): Video: hevc (Main 10) (hvc1 / 0x31637668), yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67), 1920x1080, 16000 kb/s, 29.97 fps, 29.97 tbr, 600 tbn, 600 tbc (default)
    Metadata:
      rotate          : 90
    Side data:
      displaymatrix: rotation of -90.00 degrees
  Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 256 kb/s (default)
  Stream #0:2(eng): Subtitle: mov_text (tx3g / 0x67337874)
  Stream #0:3(und): Data: none (mebx / 0x7862656D), 0 kb/s (default)
At least one output file must be specified
"""
    header = ff.parse_header(stderr)
    assert header is not None and header.duration == pytest.approx(10.01)
    video, audio, sub, data = header.streams
    assert (video.kind, video.codec, video.width, video.height) == ("video", "hevc", 1920, 1080)
    assert video.rotation == 90 and video.fps == Fraction(30000, 1001) and video.pix_fmt == "yuv420p10le"
    assert (audio.kind, audio.codec, sub.codec, sub.language, data.kind) == (
        "audio", "aac", "mov_text", "eng", "data")
    assert header.metadata["creation_time"].startswith("2023")


def test_last_error_line_skips_boilerplate() -> None:
    stderr = ("[in#0 @ 0x55] moov atom not found\n[in#0 @ 0x56] Error opening input: Invalid data found\n"
              "Error opening input file x.mp4.\nError opening input files: Invalid data found\n")
    assert ff.last_error_line(stderr) == "Error opening input: Invalid data found"


# --------------------------------------------------------------------------- probe


def test_probe_basic(clips: dict[str, Path]) -> None:
    info = probe(clips["pan"])
    assert (info.width, info.height, info.coded_width, info.coded_height) == (640, 360, 640, 360)
    assert info.fps == FPS and info.frame_count == FRAMES and info.duration == pytest.approx(SECONDS)
    assert info.audio_streams == ["aac"] and info.has_audio and info.subtitle_streams == 0
    assert info.rotation == 0 and info.is_vfr is False and not info.hdr
    assert info.pix_fmt == "yuv420p" and "mp4" in info.format_name and info.codec == "h264"


def test_probe_no_audio_odd_rotation_vfr_hdr_subs(clips: dict[str, Path]) -> None:
    assert not probe(clips["noaudio"]).has_audio
    odd = probe(clips["odd"])
    assert (odd.width, odd.height) == (321, 181)
    rot = probe(clips["rot90"])
    assert rot.rotation == 90 == autorotation(clips["rot90"]) and (rot.width, rot.height) == (360, 640)
    assert (rot.coded_width, rot.coded_height) == (640, 360)
    vfr = probe(clips["vfr"])
    assert vfr.is_vfr is True and vfr.frame_count == FRAMES
    assert vfr.r_fps == 2 * FPS and abs(vfr.fps - FPS) < 0.5  # average stays ~25
    assert float(vfr.fps) == pytest.approx(vfr.frame_count / vfr.duration)  # exact average
    assert probe(clips["hdr"]).hdr
    subs = probe(clips["subs"])
    assert subs.subtitle_streams == 1 and subs.subtitle_codecs == ["mov_text"]
    assert probe(clips["pcm"]).audio_streams == ["pcm_s16le"]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_ntsc_rate_is_exact_and_kept(ext: str, tmp_path: Path) -> None:
    """29.97 must come back as 30000/1001 (mkv stores times in whole ms) and survive a round trip."""
    ntsc = Fraction(30000, 1001)
    src = make_clip(tmp_path / f"ntsc{ext}", size=(160, 90), fps=ntsc, seconds=1, motion="none")
    info = probe(src)
    assert info.fps == ntsc and info.frame_count == 30 and info.is_vfr is False
    out = tmp_path / f"out{ext}"
    transcode(info, out)
    got = probe(out)
    assert got.fps == ntsc and got.frame_count == 30
    assert got.duration == pytest.approx(info.duration, abs=0.002)


def ffmpeg_frame(path: Path, *, autorotate: bool = True) -> np.ndarray:
    """The first frame as ffmpeg itself decodes it: with autorotate (ffmpeg's default) as
    players show it, without it as the pixels are stored. PPM, so it carries its own size and
    nothing else (ffmpeg >= 7.1 puts the rotation into a PNG's EXIF, which cv2 would apply).
    ffmpeg converts to RGB by the stream's own tags (matrix, range) with the reader's swscale
    flags, so reader and ffmpeg can be compared pixel for pixel."""
    cmd = [*ff.base_cmd(), *([] if autorotate else ["-noautorotate"]), "-i", ff.media_path(path),
           "-frames:v", "1", "-sws_flags", READER_SWS_FLAGS, "-f", "image2pipe", "-c:v", "ppm", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    frame = cv2.imdecode(np.frombuffer(proc.stdout, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert frame is not None, f"ffmpeg gave no picture for {path}"
    return frame


def turn_clockwise(frame: np.ndarray, degrees: int) -> np.ndarray:
    return np.rot90(frame, k=-(degrees // 90))


def diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference; inf for different shapes."""
    return float(np.abs(a.astype(int) - b.astype(int)).mean()) if a.shape == b.shape else float("inf")


def autorotation(path: Path) -> int:
    """The clockwise turn ffmpeg's own autorotate applies: the one of 0/90/180/270 that takes
    the stored pixels to the shown frame, found from content and size, not from metadata."""
    stored, shown = ffmpeg_frame(path, autorotate=False), ffmpeg_frame(path)
    scores = sorted((diff(turn_clockwise(stored, d), shown), d) for d in (0, 90, 180, 270))
    (best, degrees), (second, _) = scores[:2]
    assert best < 1.0 and second > 10 * max(best, 1.0), scores  # one turn fits, no other comes close
    return degrees


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_agrees_with_ffmpeg_autorotate(clips: dict[str, Path], tmp_path: Path, degrees: int) -> None:
    """(a) probe's rotation is the turn ffmpeg's autorotate applies; (b) the reader's frame is
    ffmpeg's autorotated frame, pixel for pixel within the conversions' rounding."""
    clip = set_rotation(clips["pan"], tmp_path / f"r{degrees}.mp4", degrees)
    assert stored_matrix(clip) == rotation_matrix(degrees)  # the file holds the matrix we meant
    shown = ffmpeg_frame(clip)
    assert autorotation(clip) == degrees  # and ffmpeg shows it turned that way
    info = probe(clip)
    assert info.rotation == degrees and (info.width, info.height) == (shown.shape[1], shown.shape[0])
    assert (info.coded_width, info.coded_height) == (640, 360)
    with FrameReader(info) as reader:
        frame = reader.read()
    assert frame is not None and frame.shape == shown.shape
    # same picture, same conversion: measured 0.0 with ffmpeg 4.2, 5.1 and 9.0 (0.5 leaves room
    # for a build rounding one step differently); a frame turned the wrong way differs by ~68
    assert diff(frame, shown) < 0.5
    stored = ffmpeg_frame(clip, autorotate=False)
    assert all(diff(frame, turn_clockwise(stored, d)) > 10 for d in (0, 90, 180, 270) if d != degrees)


def test_set_rotation_writes_what_display_rotation_writes(clips: dict[str, Path], tmp_path: Path) -> None:
    """ffmpeg >= 7 can store a rotation itself (-display_rotation, counter-clockwise degrees):
    the fixture's matrix must be byte for byte the one ffmpeg writes for the same turn."""
    version = ff.version()
    if version is not None and version < (7, 0):
        pytest.skip(f"ffmpeg {version[0]}.{version[1]} has no -display_rotation")
    for degrees in (90, 270):
        ours = set_rotation(clips["pan"], tmp_path / f"ours{degrees}.mp4", degrees)
        theirs = tmp_path / f"theirs{degrees}.mp4"
        ff.run([*ff.base_cmd(), "-y", "-display_rotation:v:0", str(-degrees), "-i", ff.media_path(clips["pan"]),
                "-map", "0", "-c", "copy", ff.media_path(theirs)])
        assert stored_matrix(ours) == stored_matrix(theirs) == rotation_matrix(degrees)


def test_bad_inputs_raise_input_error(clips: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    audio_only = tmp_path / "audio.m4a"
    make_clip(tmp_path / "tmp.mp4", seconds=0.5, size=(64, 64))
    ff.run([*ff.base_cmd(), "-y", "-i", ff.media_path(tmp_path / "tmp.mp4"), "-vn", "-c", "copy",
            ff.media_path(audio_only)])
    bad = [
        empty, make_text_file(tmp_path / "text.mp4"), make_truncated(clips["pan"], tmp_path / "cut.mp4"),
        tmp_path / "missing.mp4", tmp_path, audio_only,
    ]
    for path in bad:
        with pytest.raises(InputError) as err:
            probe(path)
        assert "\n" not in str(err.value) and str(err.value), path


def test_garbage_payload_is_input_error(clips: dict[str, Path], tmp_path: Path) -> None:
    """Index intact, media data zeroed: probing finds no readable frame."""
    data = bytearray(clips["noaudio"].read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov  # not faststart: media data first, index last
    data[mdat + 4:moov - 4] = bytes(moov - 4 - mdat - 4)
    broken = tmp_path / "zeros.mp4"
    broken.write_bytes(bytes(data))
    with pytest.raises(InputError, match="no readable frames|not a readable video"):
        probe(broken)


# --------------------------------------------------------------------------- reader


def test_reader_frames(clips: dict[str, Path]) -> None:
    with FrameReader(clips["pan"]) as reader:
        frames = list(reader)
    assert len(frames) == FRAMES == reader.expected_frames
    assert frames[0].shape == (360, 640, 3) and frames[0].dtype == np.uint8
    assert frames[0].flags.writeable and not np.array_equal(frames[0], frames[-1])  # it pans
    assert ff_children_settle() == []


def ff_children_settle(timeout: float = 2.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (kids := ffmpeg_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return kids


def test_reader_rotated_clip_is_upright(clips: dict[str, Path], tmp_path: Path) -> None:
    plain = clips["pan"]
    rotated = set_rotation(plain, tmp_path / "rot.mp4", 90)  # same pixels, rotation metadata only
    with FrameReader(plain) as a, FrameReader(rotated) as b:
        fa, fb = a.read(), b.read()
    assert fa is not None and fb is not None and fb.shape == (640, 360, 3)
    shown = ffmpeg_frame(rotated)  # what ffmpeg itself shows, turned by its own autorotate
    assert diff(fb, shown) < 0.5 and diff(fb, turn_clockwise(fa, 90)) < 1.0  # rotation is lossless
    assert diff(fb, turn_clockwise(fa, 270)) > 10


def test_reader_vfr_every_frame_once(clips: dict[str, Path]) -> None:
    with FrameReader(clips["vfr"]) as reader:
        assert sum(1 for _ in reader) == FRAMES


def test_reader_fps_resample(clips: dict[str, Path]) -> None:
    with FrameReader(clips["pan"], fps=10) as reader:
        n = sum(1 for _ in reader)
    assert abs(n - 10 * SECONDS) <= 1 and reader.expected_frames == 10 * SECONDS


def test_reader_segment(clips: dict[str, Path]) -> None:
    with FrameReader(clips["pan"], start=0.4, end=1.2) as reader:
        n = sum(1 for _ in reader)
    assert abs(n - 20) <= 1 and reader.expected_frames == 20
    with FrameReader(clips["pan"], start=1.5) as reader:
        assert abs(sum(1 for _ in reader) - 13) <= 1


def test_reader_refuses_hdr_and_bad_segments(clips: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="HDR"):
        FrameReader(clips["hdr"])
    with pytest.raises(UsageError):
        FrameReader(clips["pan"], start=5)
    with pytest.raises(UsageError):
        FrameReader(clips["pan"], start=1, end=0.5)


def test_reader_early_close_and_interrupt_leave_no_process(clips: dict[str, Path]) -> None:
    with FrameReader(clips["pan"], queue_size=2) as reader:
        assert reader.read() is not None
        time.sleep(0.2)  # ffmpeg now blocked on a full pipe / full queue
    assert ff_children_settle() == []
    with pytest.raises(KeyboardInterrupt):
        with FrameReader(clips["pan"]) as reader:
            for i, _ in enumerate(reader):
                if i == 5:
                    raise KeyboardInterrupt
    assert ff_children_settle() == []
    assert reader.read() is None  # closed readers stay closed


# --------------------------------------------------------------------------- writer


def test_round_trip_keeps_frames_fps_duration_and_copies_audio(clips: dict[str, Path], tmp_path: Path) -> None:
    src = probe(clips["pan"])
    out = tmp_path / "out.mp4"
    writer = transcode(src, out)
    got = probe(out)
    assert got.frame_count == src.frame_count and got.fps == src.fps
    assert got.duration == pytest.approx(src.duration, abs=1 / FPS)
    assert got.audio_streams == ["aac"] and writer.notes == []
    assert audio_duration(out) == pytest.approx(audio_duration(clips["pan"]), abs=0.1)
    assert (got.width, got.height, got.rotation) == (640, 360, 0)
    # same picture (CRF 18 + BT.709 in and out: no colour shift)
    with FrameReader(src) as a, FrameReader(out) as b:
        diff = np.abs(a.read().astype(int) - b.read().astype(int)).mean()  # type: ignore[union-attr]
    assert diff < 3.0
    assert leftovers(tmp_path) == [] and ff_children_settle() == []


def test_round_trip_no_audio_rotated_odd_vfr(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "noaudio.mp4"
    transcode(clips["noaudio"], out)
    assert not probe(out).has_audio and probe(out).frame_count == FRAMES

    out = tmp_path / "rot.mp4"
    transcode(clips["rot90"], out)
    got = probe(out)
    assert (got.width, got.height, got.rotation) == (360, 640, 0)  # upright pixels, no metadata

    out = tmp_path / "odd.mp4"
    writer = transcode(clips["odd"], out)
    got = probe(out)
    assert (got.width, got.height) == (322, 182) and got.frame_count == FRAMES
    assert any("padded 321x181 to 322x182" in n for n in writer.notes)

    src = probe(clips["vfr"])
    out = tmp_path / "vfr.mp4"
    transcode(src, out)
    got = probe(out)
    assert got.frame_count == src.frame_count
    assert got.duration == pytest.approx(src.duration, abs=1 / FPS)
    assert audio_duration(out) == pytest.approx(audio_duration(clips["vfr"]), abs=0.1)


def test_segment_cuts_audio_the_same_way(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "seg.mp4"
    transcode(clips["pan"], out, start=0.4, end=1.2)
    got = probe(out)
    assert abs(got.frame_count - 20) <= 1  # type: ignore[operator]
    assert got.duration == pytest.approx(0.8, abs=1 / FPS)
    assert audio_duration(out) == pytest.approx(0.8, abs=0.1)


def test_audio_reencoded_when_container_cannot_copy(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pcm.mp4"
    writer = transcode(clips["pcm"], out)
    assert probe(out).audio_streams == ["aac"]
    assert any("pcm_s16le" in n and "AAC" in n for n in writer.notes)
    out = tmp_path / "pcm.mov"  # .mov holds PCM: copied
    writer = transcode(clips["pcm"], out)
    assert probe(out).audio_streams == ["pcm_s16le"] and writer.notes == []


def test_subtitles_carried(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "subs.mp4"
    transcode(clips["subs"], out)
    assert probe(out).subtitle_codecs == ["mov_text"]
    out = tmp_path / "subs.mkv"
    transcode(clips["subs"], out)
    assert probe(out).subtitle_codecs == ["subrip"] and probe(out).audio_streams == ["aac"]


def test_copy_rules() -> None:
    assert audio_copyable("mp4", "aac") and not audio_copyable("mp4", "pcm_s16le")
    assert audio_copyable("mov", "pcm_s24le") and audio_copyable("matroska", "vorbis")
    assert subtitle_codec("mp4", "subrip") == "mov_text" and subtitle_codec("mp4", "hdmv_pgs_subtitle") is None
    assert subtitle_codec("matroska", "mov_text") == "srt"


def test_temp_file_next_to_output_then_atomic_replace(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "final.mp4"
    out.write_bytes(b"old contents")  # the caller decided to overwrite
    info = probe(clips["pan"])
    with FrameReader(info) as reader, VideoWriter(out, 640, 360, info.fps, audio_source=info) as writer:
        for i, frame in enumerate(reader):
            writer.write(frame)
            if i == 3:
                tmp = leftovers(tmp_path)
                assert len(tmp) == 1 and tmp[0].startswith(".final.swapcli-") and tmp[0].endswith(".tmp.mp4")
                assert out.read_bytes() == b"old contents"
    assert probe(out).frame_count == FRAMES and leftovers(tmp_path) == []


def test_abort_and_exceptions_leave_nothing(clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(clips["pan"])
    out = tmp_path / "aborted.mp4"
    writer = VideoWriter(out, 640, 360, info.fps, audio_source=info)
    with FrameReader(info) as reader:
        for _, frame in zip(range(10), reader):
            writer.write(frame)
    writer.abort()
    assert not out.exists() and leftovers(tmp_path) == []

    out.write_bytes(b"keep me")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 640, 360, info.fps, audio_source=info) as writer:
            writer.write(np.zeros((360, 640, 3), np.uint8))
            raise RuntimeError("swap failed")
    assert out.read_bytes() == b"keep me" and leftovers(tmp_path) == []
    assert ff_children_settle() == []


def test_keyboard_interrupt_in_with_block(clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(clips["pan"])
    out = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt):
        with FrameReader(info) as reader, VideoWriter(out, 640, 360, info.fps, audio_source=info) as writer:
            for i, frame in enumerate(reader):
                writer.write(frame)
                if i == 10:
                    raise KeyboardInterrupt
    assert not out.exists() and leftovers(tmp_path) == []
    assert ff_children_settle() == []


@pytest.mark.slow
def test_real_sigint_mid_stream(clips: dict[str, Path], tmp_path: Path) -> None:
    """A real Ctrl+C (SIGINT to us) at an arbitrary point while reading and encoding."""
    info = probe(clips["pan"])
    out = tmp_path / "sigint.mp4"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        try:
            for _ in range(100):  # loop the clip until the signal lands
                with FrameReader(info) as reader, VideoWriter(out, 640, 360, info.fps,
                                                              audio_source=info) as writer:
                    for frame in reader:
                        writer.write(frame)
                        time.sleep(0.005)
        finally:
            timer.cancel()
    assert leftovers(tmp_path) == []
    assert ff_children_settle() == []


def test_writer_refuses_bad_outputs(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["pan"]
    with pytest.raises(OutputError, match="overwrite the input"):
        VideoWriter(src, 640, 360, 25, audio_source=src)
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    with pytest.raises(OutputError, match="overwrite the input"):
        VideoWriter(link, 640, 360, 25, audio_source=src)
    with pytest.raises(OutputError, match="does not exist"):
        VideoWriter(tmp_path / "no" / "such" / "dir.mp4", 640, 360, 25)
    with pytest.raises(OutputError, match="unsupported output type"):
        VideoWriter(tmp_path / "out.webm", 640, 360, 25)
    with pytest.raises(UsageError, match="codec"):
        VideoWriter(tmp_path / "out.mp4", 640, 360, 25, codec="libfoo")
    with pytest.raises(UsageError, match="preset"):
        VideoWriter(tmp_path / "out.mp4", 640, 360, 25, preset="ludicrous")
    assert leftovers(tmp_path) == []


def test_writer_frame_checks_and_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(out, 64, 48, 25) as writer:
            writer.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(SwapcliError, match="no frames"):
        with VideoWriter(out, 64, 48, 25):
            pass
    assert not out.exists() and leftovers(tmp_path) == [] and ff_children_settle() == []


def test_hostile_paths(clips: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "we're \"in\" $(touch pwned); `id` & ünïcødé 名字"
    folder.mkdir()
    src = folder / "-clip 'one' $(x).mp4"  # leading dash: would be an option if passed bare
    src.write_bytes(clips["pan"].read_bytes())
    out = folder / "-out; rm -rf ~ $HOME ü.mp4"
    cwd = os.getcwd()
    os.chdir(folder)
    try:  # relative names, so the leading '-' really reaches our code
        transcode(Path(src.name), Path(out.name))
    finally:
        os.chdir(cwd)
    assert probe(out).frame_count == FRAMES and probe(out).has_audio
    assert not (Path(cwd) / "pwned").exists() and not (folder / "pwned").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([src.name, out.name])


def test_encoder_listing() -> None:
    names = ff.encoders()
    assert "libx264" in names and "aac" in names
