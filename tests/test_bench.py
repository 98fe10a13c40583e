"""swapcli bench: runs the real pipeline on its own clip and reports the documented figures."""

from __future__ import annotations

import json

import pytest

from conftest import assert_clean_failure, run_cli

STAGES = {"decode", "detect", "landmarks", "swap", "blend", "encode", "other"}


def test_exclusive_clock_subtracts_nested_stages():
    from swapcli.evaluate.bench import ExclusiveClock

    ticks = iter([0.0, 0.010, 0.060, 0.070, 0.100, 0.103])  # seconds read by the clock, in order
    cpu = iter([0.0, 0.005, 0.025, 0.030, 0.040, 0.041])
    clock = ExclusiveClock(timer=lambda: next(ticks), cpu_timer=lambda: next(cpu))
    with clock("outer"):  # 0.000 .. 0.070
        with clock("inner"):  # 0.010 .. 0.060
            pass
    with clock("inner"):  # 0.100 .. 0.103
        pass
    assert clock.timings.ms == pytest.approx({"outer": 20.0, "inner": 53.0})
    assert clock.cpu.ms == pytest.approx({"outer": 10.0, "inner": 21.0})


def test_bad_faces_exit_2():
    assert_clean_failure(run_cli("bench", "--faces", "3", "--frames", "5"), 2)


@pytest.mark.slow
def test_bench_480p_json():
    proc = run_cli("bench", "--frames", "20", "--resolution", "480p", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    print(json.dumps({k: r[k] for k in ("fps", "ratio", "stages_ms_per_frame", "peak_rss_mb")}))
    assert r["ok"] and r["engine"] == "morph" and r["device"] == "cpu" and r["gpu"] is None
    assert r["clip"]["width"] == 854 and r["clip"]["height"] == 480 and r["clip"]["faces"] == 1
    assert r["frames_written"] == 20 and r["frames_swapped"] >= 18
    assert r["fps"] > 0 and r["fps_end_to_end"] > 0 and r["plain_ffmpeg"]["fps"] > 0
    assert r["ratio"] > 1  # swapping costs more than a plain transcode
    assert STAGES <= r["stages_ms_per_frame"].keys()
    assert all(v >= 0 for v in r["stages_ms_per_frame"].values())
    total = (sum(r["stages_ms"].values()) - r["overlapped_ms"]) / 1000
    assert abs(total - r["seconds"]) < 0.05 * r["seconds"] + 0.05  # stages less overlap = the wall time
    assert r["peak_rss_mb"]["swapcli"] > 50
    assert r["peak_rss_mb"]["ffmpeg_decode"] > 0 and r["peak_rss_mb"]["ffmpeg_encode"] > 0
    assert r["ffmpeg_cpu_ms_per_frame"]["encode"] > 0
    assert r["cpu_ms_per_frame"] > 0
    assert set(r["stages_cpu_ms_per_frame"]) <= set(r["stages_ms_per_frame"])
    assert r["stages_cpu_ms_per_frame"]["swap"] > 0
