"""Hostile inputs, generated here: broken and unusual files, nasty paths, unwritable
and full outputs. Each case runs the real CLI and must end with the documented exit
code, one clear stderr line for a failure (no traceback), no partial or temp file
in the output folder, the inputs unchanged and no ffmpeg left running.

Already covered elsewhere (not repeated): zero-byte / text / fake-header .jpg and a
missing file (test_cli_image), text .mp4 and bad output suffixes (test_cli_video),
RGBA PNG and EXIF orientation 6 (test_cli_image). Model files with a wrong hash and
pickled checkpoints belong to the model tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from PIL import Image

from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, run_cli
from swapcli.core.ffmpeg import ffmpeg_exe
from swapcli.read.video import FrameReader, probe

SOURCE = PHOTOS["gdp"]


# --------------------------------------------------------------------------- the corpus


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb(path: Path) -> None:
    """74 bytes whose PNG header claims 100000 x 100000 RGB pixels (30 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _png_chunk(b"IEND", b""))


def _face() -> Image.Image:
    return Image.open(PHOTOS["yaoming"]).convert("RGB")


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def _build_images(d: Path) -> None:
    face = _face()
    raw = PHOTOS["yaoming"].read_bytes()
    (d / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    buf = io.BytesIO()
    face.save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("RGB", (1, 1), (200, 150, 120)).save(d / "one_pixel.png")
    _bomb(d / "bomb.png")
    face.convert("L").save(d / "gray8.jpg")
    gray = np.asarray(face.convert("L")).astype(np.uint16) * 257
    cv2.imwrite(str(d / "gray16.png"), gray)  # Pillow mode I;16
    bgr16 = cv2.imread(str(PHOTOS["yaoming"])).astype(np.uint16) * 257
    cv2.imwrite(str(d / "rgb16.png"), bgr16)
    alpha16 = np.full(bgr16.shape[:2] + (1,), 65535, np.uint16)
    alpha16[:, : bgr16.shape[1] // 4] = 30000
    cv2.imwrite(str(d / "rgba16.png"), np.concatenate([bgr16, alpha16], axis=2))
    face.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    la = face.convert("LA")
    la.putalpha(Image.linear_gradient("L").resize(face.size))
    la.save(d / "gray_alpha.png")
    pal = face.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    pal.info["transparency"] = 0
    pal.save(d / "palette_transparent.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 9  # no such orientation
    face.save(d / "bad_orientation.jpg", exif=exif.tobytes(), quality=95)
    face.save(d / "png_named.jpg", "PNG")  # content decides, not the extension
    face.resize((face.width // 2, face.height // 2)).save(d / "small.jpg", quality=80)
    Image.fromarray(cv2.imread(str(PHOTOS["yaoming"]))[..., ::-1].copy()).save(d / "target.jpg", quality=95)


def _build_videos(d: Path) -> None:
    clip = make_clip(d / "clip.mp4", "yaoming", seconds=1, fps=10, size=(320, 240), motion="zoom", fit="contain")
    (d / "empty.mp4").write_bytes(b"")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(d / "audio_only.mp4"))
    data = clip.read_bytes()
    (d / "truncated_head.mp4").write_bytes(data[:4096])  # no index (moov) yet: unreadable
    _ffmpeg("-i", str(clip), "-c", "copy", "-movflags", "+faststart", str(d / "faststart.mp4"))
    fast = (d / "faststart.mp4").read_bytes()
    (d / "faststart.mp4").unlink()
    (d / "truncated_tail.mp4").write_bytes(fast[: int(len(fast) * 0.6)])  # index first, data cut: plays partly
    for ext in ("mp4", "mkv"):
        _ffmpeg("-f", "lavfi", "-i", "color=s=64x64:r=25", "-frames:v", "0", "-c:v", "libx264", str(d / f"zero_frames.{ext}"))
    # a phone video: portrait shot stored landscape + rotation metadata, variable frame rate
    upright = _face().rotate(90, expand=True)  # pixels stored turned a quarter left ...
    upright.save(d / "stored.png")
    make_clip(d / "phone_vfr_rot90.mp4", str(d / "stored.png"), seconds=1.5, fps=12, size=(320, 240),
              motion="none", vfr=True, rotate_meta=90, fit="contain")  # ... shown turned a quarter right
    (d / "stored.png").unlink()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    _build_images(d)
    _build_videos(d)
    return d


# --------------------------------------------------------------------------- checks


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def ffmpeg_processes_under(*folders: Path) -> list[str]:
    """Any process (ffmpeg or a worker) still working on files in these folders."""
    found = []
    marks = [str(f) for f in folders]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] == os.getpid():
            continue
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(m in cmd for m in marks) and "pytest" not in cmd:
            found.append(cmd[:200])
    return found


def hostile(*args, code: int, out_dir: Path, corpus: Path, expect=(), cwd: Path | None = None,
            preexec=None) -> subprocess.CompletedProcess:
    """Run the CLI; check the exit code, the one-line error, no leftovers, inputs unchanged."""
    before_in = digest(corpus)
    before_out = {p.name for p in out_dir.iterdir()}
    if preexec is None:
        proc = run_cli(*args, "-q", cwd=cwd, timeout=180)
    else:
        proc = subprocess.run([sys.executable, "-m", "swapcli", *map(str, args), "-q"], capture_output=True,
                              text=True, cwd=cwd, preexec_fn=preexec, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr  # an internal error is always a bug
    if code == 0:
        assert proc.returncode == 0, proc.stderr
    else:
        assert_clean_failure(proc, code)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # -q: exactly the one error line
    after_out = {p.name for p in out_dir.iterdir()}
    assert after_out == before_out | set(expect), after_out ^ (before_out | set(expect))
    assert digest(corpus) == before_in, "an input file changed"
    assert not ffmpeg_processes_under(out_dir, corpus)
    return proc


def assert_face(path: Path, analyser, size: tuple[int, int] | None = None) -> None:
    img = Image.open(path)
    if size is not None:
        assert img.size == size
    bgr = np.asarray(img.convert("RGB"))[..., ::-1].copy()
    assert len(analyser.detect(bgr)) == 1, path.name


# --------------------------------------------------------------------------- images


IMAGE_CASES = [  # file, exit code, stderr fragment (failures)
    ("truncated.jpg", 2, "truncated"),
    ("truncated.png", 2, "truncated"),
    ("one_pixel.png", 2, "too small"),
    ("bomb.png", 2, "too large"),
    ("gray8.jpg", 0, None),
    ("gray16.png", 0, None),
    ("rgb16.png", 0, None),
    ("rgba16.png", 0, None),
    ("cmyk.jpg", 0, None),
    ("gray_alpha.png", 0, None),
    ("palette_transparent.png", 0, None),
    ("bad_orientation.jpg", 0, None),
    ("png_named.jpg", 0, None),
]


@pytest.mark.parametrize("name,code,fragment", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_image_target(corpus, tmp_path, analyser, name, code, fragment):
    out = tmp_path / f"out{Path(name).suffix}"
    proc = hostile("image", SOURCE, corpus / name, "-o", out, code=code, out_dir=tmp_path, corpus=corpus,
                   expect=[out.name] if code == 0 else [])
    if code:
        assert fragment in proc.stderr
        return
    src = Image.open(corpus / name)
    assert_face(out, analyser, size=src.size)
    if name in ("gray_alpha.png", "rgba16.png"):  # transparency survives (and grey stays grey)
        got = Image.open(out)
        assert got.mode == ("LA" if name == "gray_alpha.png" else "RGBA")
        want = np.asarray(src.convert("RGBA"))[..., 3]
        assert np.array_equal(np.asarray(got.convert("RGBA"))[..., 3], want)


SOURCE_CASES = [("truncated.jpg", 2), ("bomb.png", 2), ("one_pixel.png", 2), ("cmyk.jpg", 0), ("gray16.png", 0)]


@pytest.mark.parametrize("name,code", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_image_source(corpus, tmp_path, name, code):
    out = tmp_path / "out.jpg"
    hostile("image", corpus / name, corpus / "target.jpg", "-o", out, code=code, out_dir=tmp_path, corpus=corpus,
            expect=[out.name] if code == 0 else [])


def test_bomb_refused_quickly_in_bounded_memory(corpus, tmp_path):
    from swapcli.core.errors import InputError
    from swapcli.read.image import read_image

    start = time.perf_counter()
    with pytest.raises(InputError, match="too large"):
        read_image(corpus / "bomb.png")
    assert time.perf_counter() - start < 1.0
    # the whole CLI in a child of its own, so its peak RSS is measurable
    probe_rss = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'swapcli', 'image', *sys.argv[1:]], capture_output=True)\n"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe_rss, str(SOURCE), str(corpus / "bomb.png"), "-o",
                          str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    code, rss_kb = map(int, out.stdout.split())
    assert code == 2
    assert rss_kb < 1_500_000, f"peak RSS {rss_kb / 1024:.0f} MB"  # decoding it would need 30 GB
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- paths


NASTY = ["with space", "quote's \"double\"", "$(touch pwned)", "semi;colon && echo hi", "ünïcødé 日本 ☺", "-dash"]


@pytest.mark.parametrize("name", NASTY)
def test_nasty_paths_image(corpus, tmp_path, analyser, name):
    folder = tmp_path / name
    folder.mkdir()
    target = folder / f"{name}.jpg"
    target.write_bytes(PHOTOS["yaoming"].read_bytes())
    out = folder / f"{name} out.jpg"
    hostile("image", SOURCE, target, "-o", out, code=0, out_dir=folder, corpus=corpus, cwd=tmp_path,
            expect=[out.name])
    assert_face(out, analyser)
    assert target.read_bytes() == PHOTOS["yaoming"].read_bytes()
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


@pytest.mark.slow
def test_nasty_paths_video_and_batch(corpus, tmp_path):
    name = "$(touch pwned); it's \"ü\" -x"
    folder = tmp_path / name
    folder.mkdir()
    clip = folder / f"{name}.mp4"
    clip.write_bytes((corpus / "clip.mp4").read_bytes())
    out = folder / f"{name} out.mp4"
    hostile("video", SOURCE, clip, "-o", out, code=0, out_dir=folder, corpus=corpus, cwd=tmp_path, expect=[out.name])
    assert probe(out).frame_count == probe(clip).frame_count
    out.unlink()
    # a batch over a folder of nasty names: every file works, nothing is executed
    for n in NASTY:
        (folder / f"{n}.jpg").write_bytes(PHOTOS["yaoming"].read_bytes())
    outs = tmp_path / f"out {name}"
    proc = run_cli("batch", SOURCE, folder, "-o", outs, "--json", "-q", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["done"] == len(NASTY) + 1
    assert {p.name for p in outs.iterdir()} == {f"{n}_swapped.jpg" for n in NASTY} | {
        f"{name}_swapped.mp4", "swapcli-manifest.jsonl"}
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()
    assert not ffmpeg_processes_under(folder, outs)


# --------------------------------------------------------------------------- folders and outputs


def test_directories_where_files_belong(corpus, tmp_path):
    folder = tmp_path / "a folder.jpg"
    folder.mkdir()
    hostile("image", SOURCE, folder, "-o", tmp_path / "o.jpg", code=2, out_dir=tmp_path, corpus=corpus)
    hostile("image", folder, corpus / "target.jpg", "-o", tmp_path / "o.jpg", code=2, out_dir=tmp_path, corpus=corpus)
    hostile("image", SOURCE, corpus / "target.jpg", "-o", folder, "--overwrite", code=2, out_dir=tmp_path,
            corpus=corpus)
    video_dir = tmp_path / "a folder.mp4"
    video_dir.mkdir()
    hostile("video", SOURCE, video_dir, "-o", tmp_path / "o.mp4", code=2, out_dir=tmp_path, corpus=corpus)
    assert not list(folder.iterdir()) and not list(video_dir.iterdir())


def test_named_pipes_are_refused_not_waited_on(corpus, tmp_path):
    """A FIFO named like a photo or a video: opening it would block forever."""
    pipes = tmp_path / "pipes"
    pipes.mkdir()
    for name in ("pipe.jpg", "pipe.mp4"):
        os.mkfifo(pipes / name)
    out = tmp_path / "out"
    out.mkdir()
    for cmd, name in (("image", "pipe.jpg"), ("video", "pipe.mp4")):
        proc = hostile(cmd, SOURCE, pipes / name, "-o", out / f"o{Path(name).suffix}", code=2, out_dir=out,
                       corpus=corpus)
        assert "not a regular file" in proc.stderr
    hostile("image", pipes / "pipe.jpg", corpus / "target.jpg", "-o", out / "o.jpg", code=2, out_dir=out,
            corpus=corpus)
    hostile("batch", pipes / "pipe.jpg", corpus / "target.jpg", "-o", out, code=2, out_dir=out, corpus=corpus)
    # in a batch the pipes fail like any unreadable file and the batch goes on
    (pipes / "face.jpg").write_bytes(PHOTOS["yaoming"].read_bytes())
    proc = run_cli("batch", SOURCE, pipes, "-o", tmp_path / "batch", "--json", "-q", timeout=120)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["done"] == 1 and sorted(Path(p).name for p in summary["failed_inputs"]) == ["pipe.jpg", "pipe.mp4"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_output_folder(corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        hostile("image", SOURCE, corpus / "target.jpg", "-o", locked / "o.jpg", code=2, out_dir=locked, corpus=corpus)
        hostile("video", SOURCE, corpus / "clip.mp4", "-o", locked / "o.mp4", code=2, out_dir=locked, corpus=corpus)
        hostile("batch", SOURCE, corpus / "target.jpg", "-o", locked, code=2, out_dir=locked, corpus=corpus)
        hostile("batch", SOURCE, corpus / "target.jpg", "-o", locked / "new", code=2, out_dir=locked, corpus=corpus)
    finally:
        locked.chmod(0o700)


def _file_size_limit(limit: int):
    """A full disk, honestly simulated: writes past `limit` bytes fail with EFBIG (RLIMIT_FSIZE)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_image(corpus, tmp_path):
    proc = hostile("image", SOURCE, corpus / "target.jpg", "-o", tmp_path / "o.jpg", code=2, out_dir=tmp_path,
                   corpus=corpus, preexec=_file_size_limit(10_000))
    assert "cannot write" in proc.stderr and "File too large" in proc.stderr


@pytest.mark.slow
def test_full_disk_video(corpus, tmp_path):
    # ffmpeg is killed by SIGXFSZ: an output problem (exit 2, as for images), one line, no partial file.
    before_in = digest(corpus)
    proc = subprocess.run([sys.executable, "-m", "swapcli", "video", str(SOURCE), str(corpus / "clip.mp4"), "-o",
                           str(tmp_path / "o.mp4"), "-q"], capture_output=True, text=True,
                          preexec_fn=_file_size_limit(20_000), timeout=180)
    assert_clean_failure(proc, 2)
    assert "cannot write" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert digest(corpus) == before_in and not ffmpeg_processes_under(tmp_path, corpus)


def test_full_disk_batch_goes_on(corpus, tmp_path):
    """Big outputs fail with a clear record; the batch goes on and exits 1."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "swapcli", "batch", str(SOURCE), str(corpus / "target.jpg"),
                           str(corpus / "small.jpg"), "-o", str(out), "--json", "-q"], capture_output=True, text=True,
                          preexec_fn=_file_size_limit(16_000), timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    failed = [r for r in summary["files"] if r["status"] == "failed"]
    assert [Path(r["input"]).name for r in failed] == ["target.jpg"]
    assert failed[0]["category"] == "output" and "File too large" in failed[0]["error"]
    done = {Path(r["output"]).name for r in summary["files"] if r["status"] == "done"}
    assert done == {"small_swapped.jpg"}
    assert {p.name for p in out.iterdir()} == done | {"swapcli-manifest.jsonl"}


# --------------------------------------------------------------------------- videos


VIDEO_CASES = [
    ("empty.mp4", 2, "empty"),
    ("audio_only.mp4", 2, "no video stream"),
    ("truncated_head.mp4", 2, "not a readable video"),
    ("zero_frames.mp4", 2, None),
    ("zero_frames.mkv", 2, None),
]


@pytest.mark.parametrize("name,code,fragment", VIDEO_CASES, ids=[c[0] for c in VIDEO_CASES])
def test_video_unreadable(corpus, tmp_path, name, code, fragment):
    proc = hostile("video", SOURCE, corpus / name, "-o", tmp_path / "o.mp4", code=code, out_dir=tmp_path,
                   corpus=corpus)
    if fragment:
        assert fragment in proc.stderr


@pytest.mark.slow
def test_video_truncated_tail_keeps_what_decodes(corpus, tmp_path):
    target = corpus / "truncated_tail.mp4"
    with FrameReader(target) as reader:
        decodable = sum(1 for _ in reader)
    assert 0 < decodable < probe(corpus / "clip.mp4").frame_count
    out = tmp_path / "o.mp4"
    proc = hostile("video", SOURCE, target, "-o", out, "--json", code=0, out_dir=tmp_path, corpus=corpus,
                   expect=[out.name])
    assert json.loads(proc.stdout)["frames_written"] == decodable == probe(out).frame_count


@pytest.mark.slow
def test_video_phone_vfr_rotated(corpus, tmp_path, analyser):
    target = corpus / "phone_vfr_rot90.mp4"
    info = probe(target)
    assert info.rotation == 90 and info.is_vfr and (info.width, info.height) == (240, 320)
    out = tmp_path / "o.mp4"
    proc = hostile("video", SOURCE, target, "-o", out, "--json", code=0, out_dir=tmp_path, corpus=corpus,
                   expect=[out.name])
    summary = json.loads(proc.stdout)
    got = probe(out)
    assert got.frame_count == info.frame_count == summary["frames_written"]
    assert (got.width, got.height) == (240, 320) and got.rotation == 0  # upright pixels, no rotation left
    assert abs(got.duration - info.duration) < 0.1
    assert summary["frames_swapped"] == info.frame_count
    # the face in the output is upright (the detector finds no sideways faces) and now looks like SOURCE
    src_img = cv2.imread(str(SOURCE))
    src_emb = analyser.embed(src_img, max(analyser.detect(src_img), key=lambda f: f.area))
    orig = cv2.imread(str(PHOTOS["yaoming"]))
    orig_emb = analyser.embed(orig, analyser.detect(orig)[0])
    with FrameReader(out) as reader:
        frames = list(reader)
    for frame in frames[:: max(1, len(frames) // 4)]:
        faces = analyser.detect(frame)
        assert len(faces) == 1
        emb = analyser.embed(frame, faces[0])
        assert float(emb @ src_emb) > float(emb @ orig_emb)


# --------------------------------------------------------------------------- folder walks (issue 19)


def test_symlink_loops_end_with_each_file_once(tmp_path):
    """Links back up the tree made `batch 'photos/**/*.jpg' -r` run forever (glob follows them). Rule:
    symlinked folders are followed, but no folder (device, inode) twice, real subfolders first."""
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (photos / "a.jpg", photos / "sub" / "b.jpg", elsewhere / "c.jpg"):
        path.write_bytes(b"not read by --dry-run")
    for link, target in (("photos/sub/up1", ".."), ("photos/sub/up2", ".."), ("photos/sub/here", "."),
                         ("photos/twin", "sub"), ("photos/ext", "../elsewhere"),
                         ("photos/sub/ext2", "../../elsewhere"), ("elsewhere/back", "../photos")):
        (tmp_path / link).symlink_to(target, target_is_directory=True)
    expected = {("photos/a.jpg", "out/a_swapped.jpg"), ("photos/sub/b.jpg", "out/sub/b_swapped.jpg"),
                ("photos/ext/c.jpg", "out/ext/c_swapped.jpg")}  # ext: the first link to a folder outside
    for inputs in (["photos"], ["photos/**/*.jpg"], ["photos/**"], ["photos/*", "photos/**/b.jpg"]):
        proc = run_cli("batch", SOURCE, *inputs, "-r", "-o", "out", "--dry-run", "--json", cwd=tmp_path,
                       timeout=120)  # a safety net only: the walk takes well under a second
        assert proc.returncode == 0, (inputs, proc.stderr)
        rows = json.loads(proc.stdout)["files"]
        assert {(r["input"], r["output"]) for r in rows} == expected, inputs
    proc = run_cli("batch", SOURCE, "photos", "-o", "out", "--dry-run", "--json", cwd=tmp_path)  # not -r
    assert [r["input"] for r in json.loads(proc.stdout)["files"]] == ["photos/a.jpg"]
    assert "3 subfolder(s) not searched" in proc.stderr
    assert not (tmp_path / "out").exists()
