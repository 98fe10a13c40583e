"""swapcli live: files and loopback UDP streams stand in for cameras (none here).

Timing assertions compare the program's own per-frame measurements with each
other (latency against processing time), never against the wall clock, so a
busy machine makes the tests slower, not flaky.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from clips import make_clip, photo_path
from conftest import PHOTOS, assert_clean_failure, run_cli

SIZE = (320, 240)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A still of one face (yaoming, letterboxed), 2 s and 4 s, 25 fps; and a 0.4 s one."""
    folder = tmp_path_factory.mktemp("live")
    return {
        "still": make_clip(folder / "still.mp4", "yaoming", seconds=2, size=SIZE, motion="none", audio=False,
                           fit="contain"),
        "long": make_clip(folder / "long.mp4", "yaoming", seconds=4, size=SIZE, motion="none", audio=False,
                          fit="contain"),
        "short": make_clip(folder / "short.mp4", "yaoming", seconds=0.4, size=SIZE, motion="none", audio=False,
                           fit="contain"),
    }


@pytest.fixture(scope="module")
def source() -> Path:
    return PHOTOS["astronaut"]


@pytest.fixture(scope="module")
def engine(source):
    """The embedded morph engine, loaded once for the in-process runs, and the source face."""
    from swapcli.core.options import EngineOptions
    from swapcli.pipeline.swapper import Swapper

    swapper = Swapper(EngineOptions(engine="morph", det_size=320))
    return swapper, swapper.load_sources([source])


def live(source: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli("live", source, "--engine", "morph", *args, env=env, timeout=timeout)


def read_frames(path: Path) -> list[np.ndarray]:
    from swapcli.read.video import FrameReader

    with FrameReader(path) as reader:
        return list(reader)


def header(path: Path):
    from swapcli.core import ffmpeg as ff

    return ff.parse_header(ff.run([*ff.base_cmd("info"), "-i", str(path)], check=False).stderr)


# --------------------------------------------------------------------------- parsing (fast)


def test_parse_input_output(tmp_path):
    from swapcli.core.errors import InputError, UsageError
    from swapcli.read.stream import parse_input, parse_size
    from swapcli.write.stream import parse_output

    assert parse_size("1280x720") == (1280, 720)
    with pytest.raises(UsageError):
        parse_size("big")
    assert parse_input("udp://127.0.0.1:5000").kind == "url"
    assert parse_input("0", platform="darwin").args[-2:] == ["-i", "0:none"]
    assert "-re" in parse_input(str(PHOTOS["camera"])).args
    assert "-re" not in parse_input(str(PHOTOS["camera"]), realtime=False).args
    with pytest.raises(InputError):
        parse_input(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputError):
        parse_input("/dev/video99", platform="linux")
    assert parse_output("udp://127.0.0.1:5000").target.endswith("?pkt_size=1316")
    assert parse_output("rtmp://host/app/key").format == "flv"
    assert parse_output("srt://host:9000").format == "mpegts"
    assert parse_output("v4l2:/dev/video3").target == "/dev/video3"
    assert parse_output("out.mp4").kind == "file"
    with pytest.raises(UsageError):
        parse_output("out.gif")


def test_percentiles():
    from swapcli.pipeline.live import percentiles

    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p95"], p["max"]) == (50.0, 95.0, 100.0)
    assert percentiles([])["p95"] is None


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_file_to_file_at_native_rate(clips, source, tmp_path):
    """(1) A file played at its own rate into an MP4: playable, right size, marked, faces swapped."""
    out = tmp_path / "live.mp4"
    proc = live(source, "-i", clips["still"], "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stopped"] == "end of input"
    assert result["frames_out"] > 0 and result["frames_swapped"] > 0
    assert result["frames_in"] == result["frames_out"] + result["dropped"] == 50
    assert result["fps_in"] > 0 and result["fps_out"] > 0
    assert result["latency_ms"]["p50"] > 0 and result["latency_ms"]["p95"] >= result["latency_ms"]["p50"]
    assert {"detect", "swap", "mark", "write"} <= set(result["timings_ms"])
    frames = read_frames(out)  # decodes: the MP4 was finalised (it has its index)
    assert frames and frames[0].shape == (SIZE[1], SIZE[0], 3)
    assert "AI-generated" in header(out).metadata.get("comment", "")
    from swapcli.mark.verify import verify_file

    report = verify_file(out)
    assert report.metadata.present and report.watermark.present, report.summary()

    from swapcli.analyse.insight import InsightAnalyser

    original = read_frames(clips["still"])[0]  # a still: every input frame is this one
    face = max(InsightAnalyser().detect(original), key=lambda f: f.area)
    x0, y0, x1, y1 = (int(v) for v in face.bbox)
    inner = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    last = frames[-1].astype(np.float32)
    diff = np.abs(last - original.astype(np.float32)).mean(axis=2)
    outside = diff.copy()
    outside[max(0, y0 - 20):y1 + 20, max(0, x0 - 20):x1 + 20] = 0
    assert diff[inner].mean() > 8, diff[inner].mean()  # the face was replaced ...
    assert outside.mean() < 3, outside.mean()  # ... the rest only watermarked and encoded


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_file_to_udp_stream(clips, source, tmp_path):
    """(2) The same to an MPEG-TS stream on UDP, read back by a separate ffmpeg."""
    from swapcli.core import ffmpeg as ff

    port = free_udp_port()
    received = tmp_path / "received.ts"
    # probe 0.5 s of stream (not 5 s: the whole 2 s stream would go to probing, nothing to the file);
    # flush every packet: MPEG-TS needs no finishing, so the receiver can simply be killed after
    receiver = subprocess.Popen(
        [*ff.base_cmd("error"), "-analyzeduration", "500000", "-i", f"udp://127.0.0.1:{port}?timeout=60000000",
         "-c", "copy", "-flush_packets", "1", "-f", "mpegts", "-y", str(received)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = live(source, "-i", clips["still"], "-o", f"udp://127.0.0.1:{port}", "--json")
        assert proc.returncode == 0, proc.stderr
        sent = json.loads(proc.stdout)["frames_out"]
        assert sent > 0
        time.sleep(1.0)  # loopback datagrams are there at once; this only lets ffmpeg write them
    finally:
        receiver.kill()  # it would wait for more (udp has no end of stream)
        receiver.wait()
    frames = read_frames(received)
    assert frames and frames[0].shape == (SIZE[1], SIZE[0], 3)


@pytest.mark.slow
def test_slow_engine_drops_frames_latency_bounded(clips, source, tmp_path):
    """(3) A 120 ms/frame engine on a 25 fps input: frames drop, latency stays ~one processing time."""
    out = tmp_path / "slow.mp4"
    proc = live(source, "-i", clips["long"], "-o", out, "--json", env={"SWAPCLI_LIVE_TEST_DELAY_MS": "120"})
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["frames_in"] == 100
    # each frame takes >= 120 ms, so at most ~1 in 3 input frames (40 ms apart) can be processed
    assert r["process_ms"]["p50"] >= 120
    assert r["dropped"] > r["frames_out"] > 0
    # newest-frame-only: a frame waits about one input interval (40 ms) before processing starts,
    # so latency = processing time + a little; a queue would make it grow to seconds over 100 frames.
    # Both sides are the program's own per-frame measurements: a slow machine moves them together.
    assert r["latency_ms"]["p50"] < 3 * r["process_ms"]["p50"], r
    assert r["latency_ms"]["p95"] < r["process_ms"]["p95"] + 3 * 120, r


# --------------------------------------------------------------------------- no leaks


def _fd_count() -> int:
    me = psutil.Process()
    return me.num_fds() if hasattr(me, "num_fds") else me.num_handles()


@pytest.mark.slow
def test_start_stop_20_times_in_process_leaks_nothing(clips, engine, tmp_path):
    """(4) run_live 20 times in this process: no child process, thread or fd is left behind."""
    from swapcli.core.options import SelectOptions
    from swapcli.pipeline.live import LiveOptions, run_live
    from swapcli.read.stream import parse_input
    from swapcli.write.stream import parse_output

    swapper, sources = engine
    spec = parse_input(str(clips["short"]), realtime=False)

    def once(i: int):
        return run_live(swapper, sources, spec, parse_output(str(tmp_path / f"run{i}.mp4")), SelectOptions(),
                        LiveOptions(max_frames=1))

    once(-1)  # warm up: lazy imports, onnxruntime's own threads, logging
    threads, fds = threading.active_count(), _fd_count()
    for i in range(20):
        result = once(i)
        assert result.frames_out >= 1 and result.stopped in ("max frames", "end of input")
        assert psutil.Process().children(recursive=True) == []
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    assert _fd_count() == fds
    assert len(read_frames(tmp_path / "run19.mp4")) >= 1
    assert not list(tmp_path.glob(".*tmp*"))  # every temp file was published or removed


def _ffmpeg_children(pid: int, timeout: float = 90) -> list[psutil.Process]:
    """The live command's two ffmpeg children (input and output), once both run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kids = [p for p in psutil.Process(pid).children(recursive=True) if "ffmpeg" in p.name()]
        except psutil.NoSuchProcess:
            return []
        if len(kids) >= 2:
            return kids
        time.sleep(0.05)
    raise AssertionError("the live command never started its ffmpeg children")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["end", "max-frames", "SIGINT", "SIGTERM"])
def test_cli_stops_cleanly_no_ffmpeg_survives(clips, source, tmp_path, stop):
    """(4) The CLI as a child process: however it stops, exit 0, a playable file, no ffmpeg left."""
    out = tmp_path / "out.mp4"
    args = [sys.executable, "-m", "swapcli", "live", str(source), "--engine", "morph", "-i",
            str(clips["long" if stop.startswith("SIG") else "still"]), "-o", str(out), "--json"]
    if stop == "max-frames":
        args += ["--max-frames", "3"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kids = _ffmpeg_children(proc.pid)
    if stop.startswith("SIG"):
        while not list(tmp_path.glob(".out.*")):  # the output's ffmpeg has started: a frame is out
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(getattr(signal, stop))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert [k.pid for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE] == []
    result = json.loads(stdout)
    assert result["stopped"] == {"end": "end of input", "max-frames": "max frames"}.get(stop, "interrupted")
    if stop == "max-frames":
        assert result["frames_out"] == 3
    assert len(read_frames(out)) >= 1
    assert not list(tmp_path.glob(".out.*"))


# --------------------------------------------------------------------------- failures


def test_unopenable_inputs_exit_2(clips, source, tmp_path):
    """(5) A missing camera or file: one line, exit 2, before any model loads."""
    assert_clean_failure(live(source, "-i", "/dev/video99", "-o", tmp_path / "x.mp4"), 2)
    assert_clean_failure(live(source, "-i", tmp_path / "missing.mp4", "-o", tmp_path / "x.mp4"), 2)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_input_ffmpeg_cannot_open_exit_2(source, tmp_path):
    """(5) A file ffmpeg cannot read: its reason in one line, exit 2, nothing written."""
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n")
    proc = live(source, "-i", bad, "-o", tmp_path / "x.mp4")
    assert_clean_failure(proc, 2)
    assert "cannot open" in proc.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_virtualcam_without_pyvirtualcam_exit_2(clips, source):
    """(5) virtualcam without pyvirtualcam: how to get one, in one line, exit 2."""
    try:
        import pyvirtualcam  # noqa: F401

        pytest.skip("pyvirtualcam is installed here")
    except ImportError:
        pass
    proc = live(source, "-i", clips["short"], "-o", "virtualcam")
    assert_clean_failure(proc, 2)
    assert "pip install 'swapcli[live]'" in proc.stderr and "v4l2loopback" in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY is how Linux finds a display")
def test_window_without_display_exit_2(clips, source):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "swapcli", "live", str(source), "-i", str(clips["short"])],
                          capture_output=True, text=True, env=env, timeout=60)
    assert_clean_failure(proc, 2)
    assert "display" in proc.stderr


# --------------------------------------------------------------------------- keys


def test_keys_snapshot_faces_mouth_quit(engine, tmp_path):
    """s saves numbered, marked snapshots atomically; f cycles the selection; m never fails; q quits."""
    import cv2

    from swapcli.core.options import SelectOptions
    from swapcli.mark.watermark import detect
    from swapcli.pipeline.live import LiveOptions, LiveResult, _Session

    result = LiveResult("in", "out")
    session = _Session(engine[0], SelectOptions(), None, 25.0, LiveOptions(snapshot_dir=tmp_path), result)
    session.last = cv2.imread(str(photo_path("t1")))
    assert session.key(ord("s")) is None and session.key(ord("s")) is None
    assert [Path(p).name for p in result.snapshots] == ["swapcli-live-0001.png", "swapcli-live-0002.png"]
    assert detect(cv2.imread(result.snapshots[0])).present
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swapcli-live-0001.png", "swapcli-live-0002.png"]
    session.faces_seen = 2
    seen = []
    for _ in range(5):
        session.key(ord("f"))
        seen.append(session.faces)
    assert seen == ["all", "0", "1", "largest", "all"]
    assert not session.swapper.masker.plan.mouth
    session.key(ord("m"))
    assert session.swapper.options.mouth_mask and session.swapper.masker.plan.mouth  # takes effect at once
    session.key(ord("m"))
    assert not session.swapper.masker.plan.mouth
    assert session.key(ord("q")) == "quit key"


class FakeWindow:
    """cv2's window calls, recorded; ``keys`` are 'pressed' one per waitKey, ``closed_after`` closes it."""

    def __init__(self, keys: str = "", closed_after: int | None = None) -> None:
        self.keys, self.closed_after = list(keys), closed_after
        self.shown = 0
        self.destroyed = False

    def install(self, monkeypatch) -> None:
        import cv2

        monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
        monkeypatch.setattr(cv2, "resizeWindow", lambda *a: None)
        monkeypatch.setattr(cv2, "imshow", self.imshow)
        monkeypatch.setattr(cv2, "waitKey", lambda ms: ord(self.keys.pop(0)) if self.keys and self.shown else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 0.0 if self.closed_after is not None
                            and self.shown >= self.closed_after else 1.0)
        monkeypatch.setattr(cv2, "destroyWindow", lambda *a: setattr(self, "destroyed", True))

    def imshow(self, name, frame) -> None:
        assert frame.shape == (SIZE[1], SIZE[0], 3)
        self.shown += 1


@pytest.mark.parametrize("keys, closed_after, stopped", [("fsmq", None, "quit key"), ("", 2, "window closed")])
def test_window_keys_in_the_loop(clips, engine, tmp_path, monkeypatch, keys, closed_after, stopped):
    """The window output in the real loop (cv2's window faked: no display here): keys act, q or
    closing the window ends the session cleanly, the window is destroyed, ffmpeg reaped."""
    from swapcli.core.options import SelectOptions
    from swapcli.pipeline.live import LiveOptions, run_live
    from swapcli.read.stream import parse_input
    from swapcli.write.stream import parse_output

    window = FakeWindow(keys, closed_after)
    window.install(monkeypatch)
    result = run_live(*engine, parse_input(str(clips["long"])), parse_output("window"), SelectOptions(),
                      LiveOptions(snapshot_dir=tmp_path))
    assert result.stopped == stopped and window.destroyed and window.shown >= 1
    assert len(result.snapshots) == ("s" in keys)
    assert psutil.Process().children(recursive=True) == []
