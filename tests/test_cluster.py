"""`--cluster`: swapcli batch and video as Ray actors on a local two-node cluster (127.0.0.1 only).

The cluster is ``ray.cluster_utils.Cluster``: a head and a second node, one CPU each, started by
this process; swapcli runs as a separate driver that connects to its GCS address, as on a real
cluster. Workers keep their files in temp folders of their own (``$SWAPCLI_WORKER_TMP/swapcli-ray-
NODE``), so without --shared-fs they see inputs only as bytes from the object store. Skipped when
ray is not importable (CI installs the `cluster` extra, so they run there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, blank_image, run_cli, wait_for
from swapcli.read.video import FrameReader, probe

ray = pytest.importorskip("ray")

SOURCE = PHOTOS["gdp"]


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def frames(path: Path) -> list[np.ndarray]:
    with FrameReader(path) as reader:
        return list(reader)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    worker_tmp = tmp_path_factory.mktemp("worker-tmp")
    old = os.environ.get("SWAPCLI_WORKER_TMP")
    os.environ["SWAPCLI_WORKER_TMP"] = str(worker_tmp)  # the raylets (and their workers) inherit it
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield {"cluster": c, "address": c.address, "second": second, "tmp": worker_tmp}
    finally:
        c.shutdown()
        if old is None:
            os.environ.pop("SWAPCLI_WORKER_TMP", None)
        else:
            os.environ["SWAPCLI_WORKER_TMP"] = old


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    src = tmp_path_factory.mktemp("cluster-in") / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(PHOTOS["yaoming"], src / "a.jpg")
    shutil.copy(PHOTOS["t1"], src / "sub" / "b.jpg")
    cv2.imwrite(str(src / "c.png"), cv2.imread(str(PHOTOS["yaoming"])))
    blank_image(src / "noface.jpg")
    make_clip(src / "clip.mp4", "yaoming", seconds=1, fps=8, size=(320, 240), motion="zoom", fit="contain")
    return src


def test_unreachable_cluster_is_one_line_exit_6(tmp_path, inputs):
    out = tmp_path / "out"
    proc = run_cli("batch", SOURCE, inputs, "-o", out, "-r", "--cluster", "127.0.0.1:1")
    assert_clean_failure(proc, 6)
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert not [f for f in files_under(out) if f != "swapcli-manifest.jsonl"]
    assert not (out / "swapcli-manifest.jsonl").exists() or not read_manifest(out / "swapcli-manifest.jsonl")
    proc = run_cli("video", SOURCE, inputs / "clip.mp4", "-o", tmp_path / "v.mp4", "--cluster", "ray://127.0.0.1:1")
    assert_clean_failure(proc, 6)
    assert not (tmp_path / "v.mp4").exists()
    assert_clean_failure(run_cli("batch", SOURCE, inputs, "-o", out, "--cluster", "nowhere"), 2)
    assert_clean_failure(run_cli("batch", SOURCE, inputs, "-o", out, "--shared-fs"), 2)


@pytest.mark.slow
def test_batch_on_the_cluster_matches_the_local_run(cluster, inputs, tmp_path):
    runs = {"local": [], "ray": ["--cluster", cluster["address"], "-j", "2"],
            "shared": ["--cluster", cluster["address"], "-j", "2", "--shared-fs"]}
    summaries = {}
    for name, args in runs.items():
        proc = run_cli("batch", SOURCE, inputs, "-o", tmp_path / name, "-r", "--json", "--device", "cpu", *args,
                       timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        summaries[name] = json.loads(proc.stdout)
        assert (summaries[name]["done"], summaries[name]["no_face"]) == (4, 1), summaries[name]
    assert summaries["ray"]["workers"] == 2
    expected = {"a_swapped.jpg", "sub/b_swapped.jpg", "c_swapped.png", "clip_swapped.mp4", "swapcli-manifest.jsonl"}
    for name in runs:
        out = tmp_path / name
        assert files_under(out) == expected, name  # no temp file left, nothing for the no-face photo
        records = {Path(r["input"]).name: r for r in read_manifest(out / "swapcli-manifest.jsonl")}
        assert {n: r["status"] for n, r in records.items()} == {
            "a.jpg": "done", "b.jpg": "done", "c.png": "done", "clip.mp4": "done", "noface.jpg": "no_face"}
        for rec in records.values():  # the driver's paths, never a worker's temp folder
            assert rec["input"].startswith(str(inputs)) and str(cluster["tmp"]) not in json.dumps(rec)
            if rec["status"] == "done":
                assert rec["output"].startswith(str(out)) and rec["size"] == Path(rec["output"]).stat().st_size
    local = tmp_path / "local"
    for name in ("ray", "shared"):
        out = tmp_path / name
        for image in ("a_swapped.jpg", "sub/b_swapped.jpg", "c_swapped.png"):  # deterministic encoders
            assert (out / image).read_bytes() == (local / image).read_bytes(), (name, image)
        fa, fb = frames(local / "clip_swapped.mp4"), frames(out / "clip_swapped.mp4")
        assert len(fa) == len(fb) == probe(inputs / "clip.mp4").frame_count
        assert all(np.array_equal(x, y) for x, y in zip(fa, fb)), name  # identical decoded frames
    # the worker folders are cleaned after every item
    assert not [p for p in cluster["tmp"].rglob("*") if p.is_file()]


@pytest.mark.slow
def test_video_split_on_the_cluster(cluster, inputs, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", "yaoming", seconds=1.2, fps=10, size=(320, 240), motion="zoom",
                     fit="contain")
    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    proc = run_cli("video", SOURCE, clip, "-o", one, "--device", "cpu,cpu", "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("video", SOURCE, clip, "-o", two, "--device", "cpu", "--cluster", cluster["address"], "--json",
                   "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [d["frames"] for d in summary["devices"]] == [[0, 6], [6, 12]]
    assert summary["frames_written"] == summary["frames_swapped"] == 12
    assert any("matched across segment borders by identity" in n for n in summary["notes"])
    a, b = probe(one), probe(two)
    assert a.frame_count == b.frame_count == 12 and a.fps == b.fps and b.audio_streams == ["aac"]
    fa, fb = frames(one), frames(two)
    assert min(cv2.PSNR(x, y) for x, y in zip(fa, fb)) > 35  # the same two parts, swapped the same way
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "one.mp4", "two.mp4"]


def _in_progress(root: Path, suffix: str, node: str | None = None) -> list[Path]:
    """Inputs the workers (of one node) are processing now: their item folders hold a copy."""
    pattern = f"swapcli-ray-{node[:12]}/*/item*/in/*/*{suffix}" if node else f"swapcli-ray-*/*/item*/in/*/*{suffix}"
    return [p for p in root.glob(pattern)]


def _clips(folder: Path, n: int, seconds: float) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        make_clip(folder / f"v{i}.mp4", "yaoming", seconds=seconds, fps=10, size=(320, 240), motion="zoom",
                  fit="contain")
    for name in ("p1.jpg", "p2.jpg"):
        shutil.copy(PHOTOS["yaoming"], folder / name)
    return folder


@pytest.mark.slow
def test_ctrl_c_on_the_driver_then_resume(cluster, tmp_path):
    src = _clips(tmp_path / "in", 2, 4)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "swapcli", "batch", str(SOURCE), str(src), "-o", str(out),
                             "--cluster", cluster["address"], "-j", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _in_progress(cluster["tmp"], ".mp4"), "a clip being swapped on a worker", proc=proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    manifest = read_manifest(out / "swapcli-manifest.jsonl") if (out / "swapcli-manifest.jsonl").exists() else []
    first_done = {r["input"] for r in manifest if r["status"] == "done"}
    assert all(r["status"] == "done" for r in manifest)  # no line for unfinished work
    written = files_under(out) - {"swapcli-manifest.jsonl"}
    assert written == {Path(r["output"]).name for r in manifest}  # no partial or temp files
    assert sorted(stdout.splitlines()) == sorted(str(out / n) for n in written)
    wait_for(lambda: not _in_progress(cluster["tmp"], ""), "the workers to clean their folders", timeout=60)

    proc = run_cli("batch", SOURCE, src, "-o", out, "--cluster", cluster["address"], "-j", "2", "-q", "--json",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)["files"]
    second_done = {r["input"] for r in second if r["status"] == "done"}
    assert second_done.isdisjoint(first_done)  # nothing done twice
    assert first_done | second_done == {str(p) for p in src.iterdir()}
    final = read_manifest(out / "swapcli-manifest.jsonl")
    assert sorted(r["input"] for r in final) == sorted(str(p) for p in src.iterdir())
    assert all(r["status"] == "done" for r in final)
    assert not [p for p in out.rglob(".*")]


@pytest.mark.slow
def test_a_node_killed_mid_batch_has_its_work_finished_elsewhere(cluster, tmp_path):
    """Runs last: it removes the second node (and adds a fresh one for whatever runs after)."""
    c, second = cluster["cluster"], cluster["second"]
    src = _clips(tmp_path / "in", 3, 3)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "swapcli", "batch", str(SOURCE), str(src), "-o", str(out),
                             "--cluster", cluster["address"], "-j", "2", "--json", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _in_progress(cluster["tmp"], ".mp4", second.node_id), "a clip on the second node", proc=proc)
        c.remove_node(second, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster["second"] = c.add_node(num_cpus=1)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "retried on another" in stderr
    summary = json.loads(stdout)
    assert summary["done"] == 5 and summary["failed"] == 0
    final = read_manifest(out / "swapcli-manifest.jsonl")
    assert sorted(r["input"] for r in final) == sorted(str(p) for p in src.iterdir())  # one record each
    assert all(r["status"] == "done" for r in final)
    assert files_under(out) == {f"v{i}_swapped.mp4" for i in range(3)} | {"p1_swapped.jpg", "p2_swapped.jpg",
                                                                           "swapcli-manifest.jsonl"}
    for i in range(3):
        assert probe(out / f"v{i}_swapped.mp4").frame_count == probe(src / f"v{i}.mp4").frame_count
