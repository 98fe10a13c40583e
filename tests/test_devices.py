"""--device lists: parsing, a video split across worker processes (cpu,cpu stands in for
cuda:0,1 here), its failure and Ctrl-C paths, and batch workers spread over devices."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, run_cli

from swapcli.core import ffmpeg as ff
from swapcli.core.errors import UsageError
from swapcli.mark.metadata import read_video_mark
from swapcli.pipeline.devices import concat_list, parse_devices, split_ranges
from swapcli.read.video import FrameReader, probe

SOURCE = PHOTOS["gdp"]


# --------------------------------------------------------------------------- parsing (fast)


@pytest.mark.parametrize("text, expected", [
    ("auto", ["auto"]), ("cpu", ["cpu"]), ("cuda", ["cuda"]), ("cuda:1", ["cuda:1"]),
    ("tensorrt:0", ["tensorrt:0"]),
    ("cuda:0,1", ["cuda:0", "cuda:1"]), ("cuda:0,cuda:1", ["cuda:0", "cuda:1"]),
    (" CUDA:0, 2 ,3", ["cuda:0", "cuda:2", "cuda:3"]), ("cpu,cpu", ["cpu", "cpu"]),
    ("tensorrt:0,1", ["tensorrt:0", "tensorrt:1"]), ("cuda:0,tensorrt:1", ["cuda:0", "tensorrt:1"]),
    ("cuda:0,cuda:0", ["cuda:0", "cuda:0"]), ("cuda,cuda", ["cuda", "cuda"]),
])
def test_parse_devices(text, expected):
    assert parse_devices(text) == expected


@pytest.mark.parametrize("text, why", [
    ("cuda:x,1", "not a device"), ("cuda:0,,1", "empty item"), ("cuda:0,", "empty item"),
    (",cpu", "empty item"), ("1,2", "needs a device before it"), ("cpu,1", "needs a device before it"),
    ("cpu,cuda:0", "mixes the CPU and GPUs"), ("auto,auto", "'auto' cannot be part of a list"),
    ("gpu:0,1", "not a device"), ("cuda:-1,cuda:0", "not a device"),
])
def test_parse_devices_refuses_junk_in_one_line(text, why):
    with pytest.raises(UsageError, match=why) as info:
        parse_devices(text)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_split_ranges_and_concat_list(tmp_path):
    assert split_ranges(50, 2) == [(0, 25), (25, 50)]
    assert split_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split_ranges(2, 4) == [(0, 1), (1, 2)]  # never an empty part
    text = concat_list([tmp_path / "it's here" / "a.mp4"])
    assert text.splitlines()[0] == "ffconcat version 1.0"
    assert text.splitlines()[1] == f"file 'file:{tmp_path}/it'\\''s here/a.mp4'"


def test_batch_default_workers_for_a_list():
    from swapcli.pipeline.batch import default_workers, default_workers_for

    assert default_workers_for(["cpu"], cores=16) == default_workers("cpu", cores=16) == 4
    assert default_workers_for(["cuda:1"], cores=16) == 1
    assert default_workers_for(["cuda:0", "cuda:1"], cores=16) == 2
    assert default_workers_for(["cpu", "cpu"], cores=2) == 2
    assert default_workers_for(["cpu", "cpu"], cores=32) == 8


# --------------------------------------------------------------------------- video split (slow)


def _header(path: Path):
    return ff.parse_header(ff.run([*ff.base_cmd("info"), "-i", ff.media_path(path)], check=False).stderr)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    return make_clip(d / "clip.mp4", "yaoming", seconds=1.2, fps=10, size=(320, 240), motion="zoom", fit="contain")


@pytest.mark.slow
def test_video_split_matches_single_device(clip, tmp_path, analyser):
    out_dir = tmp_path / "it's out"  # a quote in the path: the concat list must escape it
    out_dir.mkdir()
    one, two = out_dir / "one.mp4", out_dir / "two.mp4"
    proc = run_cli("video", SOURCE, clip, "-o", one, "--device", "cpu", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("video", SOURCE, clip, "-o", two, "--device", "cpu,cpu", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [d["device"] for d in summary["devices"]] == ["cpu", "cpu"]
    assert [d["frames"] for d in summary["devices"]] == [[0, 6], [6, 12]]
    assert summary["frames_written"] == summary["frames_swapped"] == 12
    assert any("matched across segment borders by identity" in n for n in summary["notes"])
    assert sorted(p.name for p in out_dir.iterdir()) == ["one.mp4", "two.mp4"]  # no temp folder left

    a, b, src = probe(one), probe(two), probe(clip)
    assert b.frame_count == a.frame_count == src.frame_count == 12
    assert b.fps == a.fps == src.fps
    assert abs(b.duration - a.duration) < 1 / float(src.fps)
    assert b.audio_streams == a.audio_streams == ["aac"]
    assert ff.packet_timing(two).pts == ff.packet_timing(one).pts  # same time base and timestamps
    assert ff.packet_timing(two, "a:0").count == ff.packet_timing(one, "a:0").count
    assert read_video_mark(_header(two).metadata).present

    with FrameReader(clip) as r:
        before = list(r)
    with FrameReader(two) as r:
        after = list(r)
    for i in (0, len(before) - 1):  # the first frame is from worker 0, the last from worker 1
        face = max(analyser.detect(before[i]), key=lambda f: f.area)
        x0, y0, x1, y1 = face.bbox.astype(int)
        diff = np.abs(after[i][y0:y1, x0:x1].astype(int) - before[i][y0:y1, x0:x1].astype(int)).mean()
        outside = np.abs(after[i][:, :20].astype(int) - before[i][:, :20].astype(int)).mean()
        assert diff > 8 and diff > 4 * outside, (i, diff, outside)

    # --start/--end are supported: the parts are counted over the cut stream, audio is cut alike
    cut = out_dir / "cut.mkv"
    proc = run_cli("video", SOURCE, clip, "-o", cut, "--device", "cpu,cpu", "--start", "0.3", "--end", "1.0",
                   "--no-mark", "-q")
    assert proc.returncode == 0, proc.stderr
    info = probe(cut)
    assert info.frame_count == 7 and abs(info.duration - 0.7) < 0.1 and info.has_audio
    assert not read_video_mark(_header(cut).metadata).present
    assert sorted(p.name for p in out_dir.iterdir()) == ["cut.mkv", "one.mp4", "two.mp4"]


@pytest.mark.slow
def test_video_split_failures_leave_nothing(clip, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.mp4"
    # one worker fails (injected): its message and exit code, the other is stopped, nothing left
    proc = run_cli("video", SOURCE, clip, "-o", out, "--device", "cpu,cpu",
                   env={"SWAPCLI_TEST_FAIL_SEGMENT": "1"})
    assert_clean_failure(proc, 1)
    assert "test failure injected in segment 1" in proc.stderr
    assert list(out_dir.iterdir()) == []
    # a real engine error in every worker: a source without a face is exit 3, as with one device
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    proc = run_cli("video", blank, clip, "-o", out, "--device", "cpu,cpu")
    assert_clean_failure(proc, 3)
    assert "no face found in the source image" in proc.stderr
    assert list(out_dir.iterdir()) == []
    # bad lists and options are usage errors before any work
    for args in (["--device", "cuda:0,,1"], ["--device", "cpu,cuda:0"], ["--paste", "gpu"]):
        assert_clean_failure(run_cli("video", SOURCE, clip, "-o", out, *args), 2)
    assert run_cli("video", SOURCE, clip, "-o", out, "--batch", "0").returncode == 2
    assert list(out_dir.iterdir()) == []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_video_split_ctrl_c(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", "yaoming", seconds=8, fps=10, size=(320, 240), motion="zoom",
                     fit="contain")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # a terminal's Ctrl-C reaches the whole process group: swapcli and its workers
    proc = subprocess.Popen([sys.executable, "-m", "swapcli", "video", str(SOURCE), str(clip), "-o",
                             str(out_dir / "o.mp4"), "--device", "cpu,cpu", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    kids: list[psutil.Process] = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline:  # wait until both workers are encoding their segments
            assert proc.poll() is None, proc.communicate()
            segments = [p for p in out_dir.glob(".o.swapcli-*-split/.segment-*") if p.stat().st_size]
            if len(segments) >= 2:
                break
            time.sleep(0.1)
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert len([k for k in kids if "ffmpeg" in k.name()]) >= 2, "workers should be running ffmpeg"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert list(out_dir.iterdir()) == []
    time.sleep(0.3)
    assert not [k for k in kids if _alive(k)], "workers and their ffmpeg must be gone"


# --------------------------------------------------------------------------- batch (slow)


@pytest.mark.slow
def test_batch_device_list_same_outputs(clip, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(PHOTOS["yaoming"], src / name)
    shutil.copy(clip, src / "d.mp4")
    outs = {}
    for label, args in (("one", ["--device", "cpu"]), ("two", ["--device", "cpu,cpu", "-j", "2"])):
        outs[label] = tmp_path / label
        proc = run_cli("batch", SOURCE, src, "-o", outs[label], *args, "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["done"] == 4 and summary["workers"] == (1 if label == "one" else 2), summary
    names = sorted(p.name for p in outs["one"].iterdir())
    assert names == sorted(p.name for p in outs["two"].iterdir())
    for name in names:
        if name.endswith(".jpg"):
            a, b = (cv2.imread(str(outs[k] / name)) for k in ("one", "two"))
            assert cv2.PSNR(a, b) > 40, name  # same work; only thread-count float noise may differ
        elif name.endswith(".mp4"):
            assert probe(outs["two"] / name).frame_count == probe(outs["one"] / name).frame_count == 12


class _Events:
    """Stands in for the worker's event queue."""

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def put(self, item: tuple) -> None:
        self.items.append(item)

    put_nowait = put


class _Inbox:
    def __init__(self, *items) -> None:
        self.items = list(items)

    def get(self):
        return self.items.pop(0) if self.items else None


class _Stop:
    def is_set(self) -> bool:
        return False


def _signal_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):  # Python runs the handler at the next bytecode boundaries
        pass


@pytest.mark.parametrize("moment", ["startup", "factory", "waiting", "running", "reporting"])
def test_worker_stopped_while_starting_reports_no_traceback(monkeypatch, moment):
    """The moment issue 15 saw under load, made deliberate: SIGTERM reaches an executor worker
    (the one behind --device lists, --workers N and the segment split) while it is still starting
    up, loading its models, waiting for work, running or reporting. It must report "interrupted"
    (or its finished result) and return, never raise, and never start work after a stop."""
    import logging

    from swapcli.pipeline import executor

    started: list[int] = []

    class App:
        def run(self, payload, progress, paths):
            started.append(payload)
            if moment == "running":
                _signal_self()
            return {"ok": payload}

    def factory(setup, paths):
        if moment == "factory":
            _signal_self()
        return App()

    class Inbox(_Inbox):
        def get(self):
            if moment == "waiting":
                _signal_self()
            return super().get()

    events = _Events()
    if moment == "reporting":  # the signal lands while the result is being put on the queue
        def put(item: tuple) -> None:
            events.items.append(item)
            if item[0] == "done":
                _signal_self()
        events.put = events.put_nowait = put  # type: ignore[method-assign]

    logger = logging.getLogger("swapcli")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    if moment == "startup":
        monkeypatch.setattr(executor, "_die_with_parent", _signal_self)
    else:
        monkeypatch.setattr(executor, "_die_with_parent", lambda: None)
    for name in ("_STOPPING", "_GUARDED", "_EVENTS", "_PARENT"):
        monkeypatch.setattr(executor, name, getattr(executor, name))
    item = executor.Item(0, 7)
    try:  # raises KeyboardInterrupt if the signal escapes
        executor.worker_main(0, factory, None, Inbox(item, executor.Item(1, 8)), events, _Stop())
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)
    kinds = [event[0] for event in events.items]
    assert "error" not in kinds, events.items
    assert kinds[-1] == "interrupted", events.items
    if moment in ("startup", "factory", "waiting"):
        assert started == [] and "done" not in kinds  # never started after the stop
    elif moment == "running":
        assert started == [7]  # the app ran; its result is delivered or it is reported interrupted
    else:  # reporting: the finished result is not lost, and no further item is started
        assert started == [7] and ("done", 0, 0, {"ok": 7}) in events.items


def _two_people_clip(path: Path, analyser) -> tuple[Path, tuple, tuple]:
    """40 frames: person A alone first, then B beside A, B 6 % wider (12 % more area: under the 1.3 area ratio that switches). One device keeps A all
    along ('largest' is sticky); a segment starting after B came would pick B on its own."""
    from swapcli.write.video import VideoWriter

    def face_crop(name: str, side: int) -> np.ndarray:
        photo = cv2.imread(str(PHOTOS[name]))
        x0, y0, x1, y1 = max(analyser.detect(photo), key=lambda f: f.area).bbox.astype(int)
        m = (x1 - x0) // 2
        return cv2.resize(photo[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m], (side, side))

    a, b = face_crop("yaoming", 200), face_crop("t1", 212)
    box_a, box_b = (40, 80, 240, 280), (330, 74, 542, 286)
    with VideoWriter(path, 640, 360, 10, mark=False, codec="libx264") as writer:
        for i in range(40):
            frame = np.full((360, 640, 3), 110, np.uint8)
            frame[box_a[1]:box_a[3], box_a[0]:box_a[2]] = a
            if i >= 6:
                frame[box_b[1]:box_b[3], box_b[0]:box_b[2]] = b
            writer.write(frame)
    return path, box_a, box_b


def test_video_split_follows_the_same_person_across_segments(tmp_path, analyser):
    clip, box_a, box_b = _two_people_clip(tmp_path / "two.mp4", analyser)
    with FrameReader(probe(clip)) as reader:
        original = np.stack(list(reader))

    def changed(frames: np.ndarray, box: tuple, i: int) -> float:
        """Mean change over the middle of the face's square (eyes to mouth)."""
        x0, y0, x1, y1 = box
        q = (x1 - x0) // 4
        x0, y0, x1, y1 = x0 + q, y0 + q, x1 - q, y1 - q
        return float(np.abs(frames[i, y0:y1, x0:x1].astype(int) - original[i, y0:y1, x0:x1]).mean())

    outs = {}
    for name, device in (("one", "cpu"), ("split", "cpu,cpu")):
        out = tmp_path / f"{name}.mp4"
        proc = run_cli("video", SOURCE, clip, "-o", out, "--device", device, "--no-mark", "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs[name] = json.loads(proc.stdout)
        with FrameReader(probe(out)) as reader:
            frames = np.stack(list(reader))
        for i in (10, 30):  # one frame in each half: A swapped, B untouched, in both runs
            assert changed(frames, box_a, i) > 8 and changed(frames, box_b, i) < 2, (name, i)
    assert "redone to follow the same person: segment 1" in " ".join(outs["split"]["notes"])
