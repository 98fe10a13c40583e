"""`swapcli video` end to end on clips built from real photos: timing, audio,
identity in sampled frames, temporal stability, per-person mapping, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from clips import make_clip
from conftest import assert_clean_failure, iou, run_cli
from swapcli.analyse.face import cosine
from swapcli.read.video import FrameReader, probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "pan": make_clip(d / "pan.mp4", "yaoming", seconds=2, fps=25, size=(480, 360), motion="pan", fit="contain"),
        "silent": make_clip(d / "silent.mp4", "yaoming", seconds=1, fps=24, size=(320, 240), motion="zoom", audio=False, fit="contain"),
        "vfr": make_clip(d / "vfr.mp4", "yaoming", seconds=2, fps=20, size=(320, 240), motion="none", vfr=True, fit="contain"),
        "odd": make_clip(d / "odd.mp4", "yaoming", seconds=1, fps=25, size=(321, 241), motion="rotate", odd=True, fit="contain"),
        "two": make_clip(d / "two.mp4", "gdp", seconds=1.2, fps=25, size=(480, 640), motion="zoom", fit="contain"),
    }


def _frames(path: Path) -> list[np.ndarray]:
    with FrameReader(path) as reader:
        return list(reader)


def _largest(analyser, frame):
    faces = analyser.detect(frame)
    return max(faces, key=lambda f: f.area) if faces else None


def test_keeps_timing_audio_and_moves_identity(clips, photos, tmp_path, analyser):
    out = tmp_path / "pan_out.mp4"
    proc = run_cli("video", photos["gdp"], clips["pan"], "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    src_in, dst = probe(clips["pan"]), probe(out)
    assert dst.frame_count == src_in.frame_count == summary["frames_written"] == 50
    assert dst.fps == src_in.fps
    assert abs(dst.duration - src_in.duration) < 0.05
    assert dst.audio_streams == ["aac"]  # copied, not re-encoded
    assert summary["frames_swapped"] >= 48 and summary["tracks"]

    # Identity of sampled frames: closer to the source than to the original person.
    gdp = cv2.imread(str(photos["gdp"]))
    src_face = _largest(analyser, gdp)
    src_emb = analyser.embed(gdp, src_face)
    before, after = _frames(clips["pan"]), _frames(out)
    for i in (5, 25, 45):
        f_in, f_out = _largest(analyser, before[i]), _largest(analyser, after[i])
        assert f_out is not None and iou(f_in.bbox, f_out.bbox) > 0.5
        e_out = analyser.embed(after[i], f_out)
        e_in = analyser.embed(before[i], f_in)
        assert cosine(e_out, src_emb) > 0.35
        assert cosine(e_out, src_emb) > cosine(e_out, e_in) + 0.05  # the 64-px source face is a hard case

    # Temporal stability: the swapped face's landmarks shake no more than the target's own do.
    def jitter(frames):
        pts = []
        for frame in frames[2:-2]:
            face = _largest(analyser, frame)
            pts.append(analyser.landmarks(frame, face) / face.size)
        pts = np.array(pts)
        return float(np.abs(pts[2:] - 2 * pts[1:-1] + pts[:-2]).mean())

    j_in, j_out = jitter(before), jitter(after)
    print(f"landmark jitter: target {j_in:.4f}, swapped {j_out:.4f}")
    assert j_out <= 1.5 * j_in + 0.002


def test_no_audio_vfr_and_odd_sizes(clips, photos, tmp_path):
    for name in ("silent", "vfr", "odd"):
        out = tmp_path / f"{name}_out.mp4"
        proc = run_cli("video", photos["gdp"], clips[name], "-o", out, "--json", "-q")
        assert proc.returncode == 0, (name, proc.stderr)
        a, b = probe(clips[name]), probe(out)
        assert b.frame_count == a.frame_count, name
        assert abs(b.duration - a.duration) < 0.06, name
        assert b.has_audio == a.has_audio, name
        assert json.loads(proc.stdout)["frames_swapped"] >= a.frame_count - 2, name


def test_segment_start_end(clips, photos, tmp_path):
    out = tmp_path / "seg.mp4"
    proc = run_cli("video", photos["gdp"], clips["pan"], "-o", out, "--start", "0.4", "--end", "1.2", "-q")
    assert proc.returncode == 0, proc.stderr
    info = probe(out)
    assert info.frame_count == 20 and abs(info.duration - 0.8) < 0.05 and info.has_audio


def _face_crop(image, face, path):
    x0, y0, x1, y1 = face.bbox.astype(int)
    pad = int(0.6 * (x1 - x0))
    cv2.imwrite(str(path), image[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad])
    return path


def test_map_two_people_each_get_their_own_source(clips, photos, tmp_path, analyser):
    gdp = cv2.imread(str(photos["gdp"]))
    people = sorted([f for f in analyser.detect(gdp) if f.size >= 60], key=lambda f: f.center[0])
    assert len(people) == 3
    ref_a = _face_crop(gdp, people[0], tmp_path / "ref_a.png")
    ref_b = _face_crop(gdp, people[2], tmp_path / "ref_b.png")
    t1 = cv2.imread(str(photos["t1"]))
    other = _face_crop(t1, max(analyser.detect(t1), key=lambda f: f.area), tmp_path / "src_b.png")
    out = tmp_path / "two_out.mp4"
    proc = run_cli("video", clips["two"], "-o", out, "--json",
                   "--map", f"{photos['yaoming']}={ref_a}", "--map", f"{other}={ref_b}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["faces_swapped"]["max"] == 2

    emb = {}
    for key, path in (("yao", photos["yaoming"]), ("other", other)):
        img = cv2.imread(str(path))
        emb[key] = analyser.embed(img, _largest(analyser, img))
    before, after = _frames(clips["two"]), _frames(out)
    for i in (3, 15, 27):
        orig = sorted([f for f in analyser.detect(before[i]) if f.size >= 40], key=lambda f: f.center[0])
        got = analyser.detect(after[i])
        assert len(orig) == 3
        def at(face):
            return max(got, key=lambda g: iou(g.bbox, face.bbox))
        left, middle, right = (analyser.embed(after[i], at(f)) for f in orig)
        assert cosine(left, emb["yao"]) > cosine(left, emb["other"]) + 0.1
        assert cosine(right, emb["other"]) > cosine(right, emb["yao"]) + 0.1
        # The unmapped person in the middle is untouched.
        assert cosine(middle, analyser.embed(before[i], orig[1])) > 0.9


def test_reference_never_appears_passes_frames_through(clips, photos, tmp_path):
    out = tmp_path / "none.mp4"
    proc = run_cli("video", photos["gdp"], clips["silent"], "-o", out, "--reference", photos["t1"], "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames_swapped"] == 0 and summary["frames_written"] == probe(clips["silent"]).frame_count
    a, b = _frames(clips["silent"]), _frames(out)
    psnr = [cv2.PSNR(x, y) for x, y in zip(a, b)]
    assert min(psnr) > 35  # untouched apart from one re-encode


def test_bad_video_inputs(photos, tmp_path, clips):
    text = tmp_path / "fake.mp4"
    text.write_text("not a video")
    assert_clean_failure(run_cli("video", photos["gdp"], text, "-o", tmp_path / "x.mp4"), 2)
    assert_clean_failure(run_cli("video", photos["gdp"], clips["pan"], "-o", clips["pan"], "--overwrite"), 2)
    assert_clean_failure(run_cli("video", photos["gdp"], clips["pan"], "-o", tmp_path / "x.avi"), 2)
    assert_clean_failure(run_cli("video", clips["pan"], "-o", tmp_path / "y.mp4", "--map", "nonsense"), 2)
    assert not list(tmp_path.glob("[xy].*"))


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                kids.append(int(entry.name))
    return kids


def test_ctrl_c_leaves_nothing(clips, photos, tmp_path):
    long_clip = make_clip(tmp_path / "long.mp4", "yaoming", seconds=20, fps=25, size=(480, 360), motion="zoom", fit="contain")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "swapcli", "video", str(photos["gdp"]), str(long_clip),
                             "-o", str(out_dir / "o.mp4"), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".o.") for p in out_dir.iterdir()):
        time.sleep(0.1)  # wait until encoding has started
    time.sleep(1.0)
    kids = _children(proc.pid)
    assert kids, "ffmpeg should be running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []
    time.sleep(0.2)
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
