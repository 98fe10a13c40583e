"""VideoWriter: --codec auto, and frames marked in parallel without losing order or safety."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapcli.core import ffmpeg as ff
from swapcli.core.errors import SwapcliError, UsageError
from swapcli.mark import FrameMarker
from swapcli.read.video import FrameReader, probe
from swapcli.write import video as wv
from swapcli.write.video import VideoWriter, resolve_codec


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".swapcli-" in p.name)


# --------------------------------------------------------------------------- --codec auto


def test_auto_resolves_to_libx264_without_nvidia(tmp_path: Path) -> None:
    if ff.encoder_error("h264_nvenc") is None and "h264_nvenc" in ff.encoders():  # pragma: no cover
        pytest.skip("this machine can encode with NVENC")
    assert resolve_codec("auto") == "libx264"
    assert resolve_codec("libx265") == "libx265"  # names pass through unchanged
    out = tmp_path / "auto.mp4"
    with VideoWriter(out, 64, 48, 25, codec="auto") as writer:
        assert writer.codec == "libx264" and writer.requested_codec == "auto"
        for i in range(10):
            writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    assert writer.notes == [] and "libx264" in writer.command
    info = probe(out)
    assert info.codec == "h264" and info.frame_count == 10
    assert leftovers(tmp_path) == []


def test_auto_picks_nvenc_when_it_works(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []

    def works(name: str) -> None:
        calls.append(name)
        return None

    monkeypatch.setattr(ff, "encoders", lambda: frozenset({"libx264", "h264_nvenc", "aac"}))
    monkeypatch.setattr(ff, "encoder_error", works)
    assert resolve_codec("auto") == "h264_nvenc"
    writer = VideoWriter(tmp_path / "gpu.mp4", 1920, 1080, 30, codec="auto", crf=23, preset="veryfast")
    try:  # never started: no ffmpeg runs, only the command is built
        assert writer.codec == "h264_nvenc"
        assert writer.notes == ["encoding with h264_nvenc (NVIDIA GPU)"]
        cmd = writer.command
        pairs = list(zip(cmd, cmd[1:]))
        assert ("-c:v", "h264_nvenc") in pairs and ("-cq", "23") in pairs
        assert ("-rc", "vbr") in pairs and ("-b:v", "0") in pairs and ("-preset", "p3") in pairs
        assert "-crf" not in cmd
    finally:
        writer.abort()
    assert leftovers(tmp_path) == [] and set(calls) == {"h264_nvenc"}


def test_auto_falls_back_when_nvenc_cannot_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ff, "encoders", lambda: frozenset({"libx264", "h264_nvenc"}))
    monkeypatch.setattr(ff, "encoder_error", lambda name: "No capable devices found")
    assert resolve_codec("auto") == "libx264"
    monkeypatch.setattr(ff, "encoders", lambda: frozenset({"libx264"}))
    monkeypatch.setattr(ff, "encoder_error", lambda name: pytest.fail("test encode without the encoder"))
    assert resolve_codec("auto") == "libx264"


def test_encoder_checks_are_cached() -> None:
    """--codec auto costs at most one encoder listing and one tiny test encode per process."""
    resolve_codec("auto")
    misses = ff._encoders.cache_info().misses, ff._encoder_error.cache_info().misses
    for _ in range(3):
        resolve_codec("auto")
    assert (ff._encoders.cache_info().misses, ff._encoder_error.cache_info().misses) == misses


def test_unknown_codec_still_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown video codec 'libfoo'"):
        VideoWriter(tmp_path / "out.mp4", 64, 48, 25, codec="libfoo")
    assert "auto" in wv.CODEC_CHOICES and "auto" not in wv.CODECS
    assert leftovers(tmp_path) == []


def _read_all(path: Path) -> list[np.ndarray]:
    with FrameReader(path) as reader:
        return list(reader)


# --------------------------------------------------------------------------- parallel marking


def _panning_frames(count: int, size: tuple[int, int] = (320, 180)) -> list[np.ndarray]:
    w, h = size
    rng = np.random.default_rng(7)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h + 60, w + 120, 3), dtype=np.uint8), (0, 0), 2.0)
    return [np.ascontiguousarray(base[i % 60:i % 60 + h, (3 * i) % 120:(3 * i) % 120 + w]) for i in range(count)]


def test_mark_workers_sizing() -> None:
    assert [wv.mark_workers(n) for n in (1, 2, 3, 4, 5, 16, 64)] == [1, 1, 2, 3, 4, 4, 4]
    assert 1 <= wv.mark_workers() <= 4


def test_prepared_marking_matches_sequential_bit_for_bit() -> None:
    """Order-dependent part in order, the rest concurrently and out of order: same pixels as one thread."""
    frames = _panning_frames(24)
    h, w = frames[0].shape[:2]
    reference = FrameMarker(h, w, visible_label="AI", video=True)
    expected = [reference(f) for f in frames]
    marker = FrameMarker(h, w, visible_label="AI", video=True)
    jobs = [marker.prepare(f) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(job) for job in reversed(jobs)][::-1]
        got = [f.result() for f in futures]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    assert any(not np.array_equal(a, f) for a, f in zip(expected, frames))  # it did mark


def test_parallel_writer_keeps_order_and_output(tmp_path: Path) -> None:
    """1 worker and 4 workers write the same file (x264 is deterministic), frames in order."""
    frames = [np.full((72, 96, 3), 8 * i, np.uint8) for i in range(30)]  # a ramp: order is visible
    outs = []
    for workers in (1, 4):
        out = tmp_path / f"w{workers}.mkv"
        with VideoWriter(out, 96, 72, 25, workers=workers, crf=10) as writer:
            assert writer.workers == workers
            for f in frames:
                writer.write(f)
        assert writer.frames_written == len(frames)
        outs.append(_read_all(out))
    assert len(outs[0]) == len(outs[1]) == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(*outs))
    # levels survive bgr24 -> yuv420p (limited range) -> bgr24: one Y step is 255/219 = 1.16
    # RGB levels, so rounding to the nearest Y and back to the nearest RGB level is off by at
    # most 0.58 + 0.5 per flat grey; the watermark moves a frame's mean by ~0.02. Measured
    # (ffmpeg 4.2, 5.1, 9.0 alike): mean 0.13, max 1.01. Truncating conversions were 1.7-2.7 dark.
    errors = [abs(float(f.mean()) - 8 * i) for i, f in enumerate(outs[1])]
    assert max(errors) < 1.2 and sum(errors) / len(errors) < 0.4, errors


def test_parallel_marking_memory_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A slow marker makes write() wait: frames in flight stay <= queue + workers + 1 (+1 being written)."""
    in_flight, peak = 0, 0
    lock = threading.Lock()
    real_prepare = FrameMarker.prepare

    def slow_prepare(self: FrameMarker, bgr: np.ndarray):  # type: ignore[no-untyped-def]
        nonlocal in_flight, peak
        job = real_prepare(self, bgr)
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)

        def run() -> np.ndarray:
            nonlocal in_flight
            time.sleep(0.01)
            out = job()
            with lock:
                in_flight -= 1
            return out
        return run

    monkeypatch.setattr(FrameMarker, "prepare", slow_prepare)
    queued = []
    with VideoWriter(tmp_path / "slow.mp4", 64, 48, 25, workers=3, queue_size=2) as writer:
        for i in range(40):
            writer.write(np.full((48, 64, 3), i, np.uint8))
            queued.append(writer._queue.qsize())
    assert max(queued) <= 2 and peak <= 3 + 1
    assert writer.frames_written == 40 and probe(tmp_path / "slow.mp4").frame_count == 40


def test_marking_error_in_a_worker_aborts_cleanly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_prepare = FrameMarker.prepare
    seen = []

    def failing_prepare(self: FrameMarker, bgr: np.ndarray):  # type: ignore[no-untyped-def]
        job = real_prepare(self, bgr)
        seen.append(1)
        if len(seen) == 7:
            def boom() -> np.ndarray:
                raise RuntimeError("worker boom")
            return boom
        return job

    monkeypatch.setattr(FrameMarker, "prepare", failing_prepare)
    out = tmp_path / "broken.mp4"
    with pytest.raises(SwapcliError, match="marking frame failed: RuntimeError: worker boom"):
        with VideoWriter(out, 64, 48, 25, workers=4) as writer:
            for _ in range(200):
                writer.write(np.zeros((48, 64, 3), np.uint8))
    assert not out.exists() and leftovers(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("swapcli-mark") and t.is_alive()
                and _wait_dead(t)]


def _wait_dead(thread: threading.Thread) -> bool:
    thread.join(2)
    return thread.is_alive()


def test_abort_mid_stream_with_workers_leaves_nothing(tmp_path: Path) -> None:
    frames = _panning_frames(10)
    out = tmp_path / "aborted.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, 320, 180, 25, workers=4) as writer:
            for i in range(100):
                writer.write(frames[i % 10])
                if i == 50:
                    raise KeyboardInterrupt
    assert writer._proc is not None and writer._proc.poll() is not None
    assert not out.exists() and leftovers(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("swapcli-mark") and _wait_dead(t)]
    assert not [t for t in threading.enumerate() if t.name == "swapcli-encode" and _wait_dead(t)]
