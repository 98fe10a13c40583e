"""`swapcli batch` end to end: a mixed folder tree (real photos, a real clip and bad
files), the manifest, re-runs, --overwrite, --pattern, globs, workers and Ctrl-C."""

from __future__ import annotations

import hashlib
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
from PIL import Image

from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, blank_image, run_cli
from swapcli.read.video import FrameReader, probe

SOURCE = PHOTOS["gdp"]
GOOD = {  # input (relative to in/) -> output (relative to out/)
    "a_yaoming.jpg": "a_yaoming_swapped.jpg",
    "b_t1.png": "b_t1_swapped.png",
    "clip.mp4": "clip_swapped.mp4",
    "sub/c_yaoming.jpg": "sub/c_yaoming_swapped.jpg",
    "sub/deeper/d_yaoming.webp": "sub/deeper/d_yaoming_swapped.webp",
}
BAD = {  # input -> manifest category
    "corrupt.jpg": "unreadable",
    "text.jpg": "unreadable",
    "sub/bomb.png": "unreadable",
}
NO_FACE = ["noface.jpg"]  # a finished outcome, not a failure
UNSUPPORTED = ["notes.xyz"]


def _bomb_png(path: Path) -> Path:
    """A PNG whose header claims 100000 x 100000 pixels (decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))
    return path


def build_tree(root: Path) -> Path:
    src = root / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(PHOTOS["yaoming"], src / "a_yaoming.jpg")
    Image.open(PHOTOS["t1"]).save(src / "b_t1.png")
    make_clip(src / "clip.mp4", "yaoming", seconds=1, fps=8, size=(320, 240), motion="zoom", fit="contain")
    shutil.copy(PHOTOS["yaoming"], src / "sub" / "c_yaoming.jpg")
    Image.open(PHOTOS["yaoming"]).save(src / "sub" / "deeper" / "d_yaoming.webp")
    raw = PHOTOS["yaoming"].read_bytes()
    (src / "corrupt.jpg").write_bytes(raw[: len(raw) // 3])
    (src / "text.jpg").write_text("this is text, not a photo\n")
    blank_image(src / "noface.jpg")
    _bomb_png(src / "sub" / "bomb.png")
    (src / "notes.xyz").write_text("unsupported\n")
    shutil.copy(PHOTOS["yaoming"], src / ".hidden.jpg")  # hidden files are not inputs
    return src


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    src = build_tree(root)
    before = digest(src)
    out = root / "out" / "not-yet-there"  # a missing OUTPUT_DIR is created
    start = time.perf_counter()
    proc = run_cli("batch", SOURCE, src, "-o", out, "--recursive", timeout=300)
    seconds = time.perf_counter() - start
    return {"root": root, "src": src, "out": out, "proc": proc, "seconds": seconds, "before": before,
            "manifest": read_manifest(out / "swapcli-manifest.jsonl"), "files": files_under(out)}


def test_mixed_tree_mirrors_outputs_and_reports_bad_files(first_run, analyser):
    proc, src, out = first_run["proc"], first_run["src"], first_run["out"]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # stdout: the written outputs only, one per line
    assert sorted(proc.stdout.splitlines()) == sorted(str(out / o) for o in GOOD.values())
    # outputs mirror the tree; nothing else (no temp files, nothing for the bad inputs)
    assert first_run["files"] == set(GOOD.values()) | {"swapcli-manifest.jsonl"}
    # inputs untouched
    assert digest(src) == first_run["before"]
    # one error line, then every failed input listed with its reason
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("swapcli: error:")]
    assert errors == ["swapcli: error: 3 of 10 input(s) failed:"], proc.stderr
    for name in BAD:
        assert any(ln.startswith(f"  {src / name}: ") for ln in proc.stderr.splitlines()), (name, proc.stderr)

    records = {Path(r["input"]).relative_to(src).as_posix(): r for r in first_run["manifest"]}
    assert len(first_run["manifest"]) == len(records) == len(GOOD) + len(BAD) + len(NO_FACE) + len(UNSUPPORTED)
    for name, output in GOOD.items():
        rec = records[name]
        assert rec["status"] == "done" and rec["exit_code"] == 0 and "error" not in rec, rec
        assert rec["output"] == str(out / output)
        assert rec["size"] == (out / output).stat().st_size
        assert rec["faces_swapped"] >= 1 and rec["seconds"] > 0 and rec["timings_ms"]
    for name, category in BAD.items():
        rec = records[name]
        assert rec["status"] == "failed" and rec["category"] == category, rec
        assert rec["exit_code"] == 2
        assert rec["error"] and "\n" not in rec["error"] and "reason" not in rec
    noface = records["noface.jpg"]
    assert noface["status"] == noface["category"] == "no_face" and noface["exit_code"] == 3, noface
    assert "no face found in the target image" in noface["reason"] and "error" not in noface
    assert "no face noface.jpg: no face found in the target image" in proc.stderr
    assert "too large" in records["sub/bomb.png"]["error"]
    assert records["notes.xyz"]["status"] == "skipped" and records["notes.xyz"]["category"] == "unsupported"
    assert ".hidden.jpg" not in records

    # every good output holds a face, and the target's identity moved away
    source_img = cv2.imread(str(SOURCE))
    src_emb = analyser.embed(source_img, max(analyser.detect(source_img), key=lambda f: f.area))
    for name, output in GOOD.items():
        if name.endswith(".mp4"):
            with FrameReader(out / output) as reader:
                frames = list(reader)
            assert len(frames) == probe(src / name).frame_count
            image = frames[len(frames) // 2]
        else:
            image = np.asarray(Image.open(out / output).convert("RGB"))[..., ::-1].copy()
        faces = analyser.detect(image)
        assert faces, output
        if "yaoming" in name:
            face = max(faces, key=lambda f: f.area)
            original = cv2.imread(str(PHOTOS["yaoming"]))
            e_orig = analyser.embed(original, analyser.detect(original)[0])
            e_out = analyser.embed(image, face)
            assert float(e_out @ e_orig) < 0.6, output
            assert float(e_out @ src_emb) > float(e_out @ e_orig) - 0.05, output
    assert Image.open(out / GOOD["b_t1.png"]).format == "PNG"
    assert Image.open(out / GOOD["sub/deeper/d_yaoming.webp"]).format == "WEBP"


def test_rerun_skips_done_and_no_face_then_overwrite_redoes(first_run):
    src, out = first_run["src"], first_run["out"]
    manifest = out / "swapcli-manifest.jsonl"
    inputs = len(GOOD) + len(BAD) + len(NO_FACE) + len(UNSUPPORTED)
    stamps = {o: (out / o).stat().st_mtime_ns for o in GOOD.values()}
    done_lines = {r["input"]: r for r in read_manifest(manifest) if r["status"] == "done"}
    proc = run_cli("batch", SOURCE, src, "-o", out, "-r", "--json")
    assert proc.returncode == 1, proc.stderr  # the bad files are retried and fail again
    summary = json.loads(proc.stdout)
    assert summary["done"] == summary["no_face"] == 0 and summary["failed"] == len(BAD)
    assert summary["skipped"] == len(GOOD) + len(NO_FACE) + len(UNSUPPORTED)
    rows = {Path(r["input"]).relative_to(src).as_posix(): r for r in summary["files"]}
    assert {n for n, r in rows.items() if r["status"] == "skipped"} == {*GOOD, *NO_FACE, *UNSUPPORTED}
    for row in rows.values():  # errors are for errors: skips say why in 'reason'
        if row["status"] == "skipped":
            assert row["reason"] and "error" not in row, row
    assert rows["noface.jpg"]["category"] == "no_face" and "--retry-failed" in rows["noface.jpg"]["reason"]
    assert {o: (out / o).stat().st_mtime_ns for o in GOOD.values()} == stamps  # nothing swapped again
    # two runs over the same inputs: still one current record per input, done records untouched
    after = read_manifest(manifest)
    assert len(after) == len({r["input"] for r in after}) == inputs
    assert {r["input"]: r for r in after if r["status"] == "done"} == done_lines

    # --retry-failed runs the no-face photo again (still no face); the rest stays skipped
    proc = run_cli("batch", SOURCE, src, "-o", out, "-r", "--json", "--retry-failed")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["no_face"] == len(NO_FACE) and summary["done"] == 0 and summary["failed"] == len(BAD)
    assert len(read_manifest(manifest)) == inputs

    proc = run_cli("batch", SOURCE, src, "-o", out, "-r", "--overwrite", "-q")
    assert proc.returncode == 1, proc.stderr
    after = read_manifest(manifest)
    assert len(after) == inputs
    assert sorted(r["output"] for r in after if r["status"] == "done") == sorted(str(out / o) for o in GOOD.values())
    assert all(r["time"] >= done_lines[r["input"]]["time"] for r in after if r["status"] == "done")
    assert all((out / o).stat().st_mtime_ns != stamps[o] for o in GOOD.values())
    assert files_under(out) == set(GOOD.values()) | {"swapcli-manifest.jsonl"}
    assert digest(src) == first_run["before"]


def test_pattern_globs_and_files_from(first_run, tmp_path):
    src = first_run["src"]
    out = tmp_path / "o"
    # quoted patterns reach swapcli unexpanded; '**' spans folders with --recursive
    proc = run_cli("batch", SOURCE, f"{src}/a_*.jpg", f"{src}/sub/**/*.webp", "-r", "-o", out,
                   "--pattern", "{parent}-{stem}.x{ext}", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["done"] == 2
    assert files_under(out) == {"in-a_yaoming.x.jpg", "deeper/deeper-d_yaoming.x.webp", "swapcli-manifest.jsonl"}

    listing = tmp_path / "list.txt"
    listing.write_text(f"# shard of a bigger list\n{src / 'a_yaoming.jpg'}\n\n{src / 'sub' / 'c_yaoming.jpg'}\n")
    proc = run_cli("batch", SOURCE, "--files-from", listing, "-o", tmp_path / "f", "--pattern", "{name}", "-q")
    assert proc.returncode == 0, proc.stderr
    assert files_under(tmp_path / "f") == {"a_yaoming.jpg", "c_yaoming.jpg", "swapcli-manifest.jsonl"}
    # relative paths in a list (e.g. from `find`) keep their folders below OUTPUT_DIR
    listing.write_text("sub/c_yaoming.jpg\nsub/deeper/d_yaoming.webp\n")
    proc = run_cli("batch", SOURCE, "--files-from", listing, "-o", tmp_path / "g", "-q", cwd=src)
    assert proc.returncode == 0, proc.stderr
    assert files_under(tmp_path / "g") == {"sub/c_yaoming_swapped.jpg", "sub/deeper/d_yaoming_swapped.webp",
                                           "swapcli-manifest.jsonl"}


def test_output_dir_is_the_input_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTOS["yaoming"], folder / "one.jpg")
    before = digest(folder)
    # a pattern that maps a file onto itself is refused before any work
    proc = run_cli("batch", SOURCE, folder, "-o", folder, "--pattern", "{name}", "--overwrite")
    assert_clean_failure(proc, 2)
    assert "is an input file" in proc.stderr and digest(folder) == before
    # the default pattern writes beside the inputs; a re-run does not take its outputs for inputs
    proc = run_cli("batch", SOURCE, folder, "-o", folder, "-q")
    assert proc.returncode == 0, proc.stderr
    assert files_under(folder) == {"one.jpg", "one_swapped.jpg", "swapcli-manifest.jsonl"}
    proc = run_cli("batch", SOURCE, folder, "-o", folder, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["done"] == 0 and summary["skipped"] == 1
    assert files_under(folder) == {"one.jpg", "one_swapped.jpg", "swapcli-manifest.jsonl"}
    assert (folder / "one.jpg").read_bytes() == PHOTOS["yaoming"].read_bytes()


def test_usage_errors_are_fatal(first_run, tmp_path):
    src = first_run["src"]
    out = tmp_path / "out"
    assert_clean_failure(run_cli("batch", SOURCE, "-o", out), 2)  # no INPUT
    assert_clean_failure(run_cli("batch", SOURCE, src / "missing.jpg", "-o", out), 2)
    assert_clean_failure(run_cli("batch", SOURCE, f"{src}/*.nothing", "-o", out), 2)  # matches nothing
    assert_clean_failure(run_cli("batch", src / "text.jpg", src, "-o", out), 2)  # SOURCE unreadable
    assert_clean_failure(run_cli("batch", src, src, "-o", out), 2)  # SOURCE is a folder
    assert_clean_failure(run_cli("batch", SOURCE, src, "-o", out, "--pattern", "{stem}{foo}"), 2)
    assert_clean_failure(run_cli("batch", SOURCE, src, "-o", out, "--shard", "0/2"), 2)
    assert_clean_failure(run_cli("batch", SOURCE, src, "-o", src / "a_yaoming.jpg"), 2)  # OUTPUT is a file
    # SOURCE without a face stops the whole batch (exit 3, as `swapcli image`), in-process and with workers
    for workers in ("1", "2"):
        proc = run_cli("batch", src / "noface.jpg", src / "a_yaoming.jpg", src / "sub", "-o", out, "-j", workers)
        assert_clean_failure(proc, 3)
        assert not [f for f in files_under(out) if f != "swapcli-manifest.jsonl"], workers


def test_shards_split_the_work(first_run, tmp_path):
    src = first_run["src"]
    out = tmp_path / "out"
    done: list[str] = []
    for k in (1, 2, 3):
        proc = run_cli("batch", SOURCE, src, "-o", out, "--shard", f"{k}/3", "--dry-run", "--json")
        assert proc.returncode == 0, proc.stderr
        done += [row["input"] for row in json.loads(proc.stdout)["files"]]
    assert sorted(done) == sorted(str(src / n) for n in [*GOOD, *BAD, *NO_FACE, *UNSUPPORTED] if "/" not in n)
    assert not out.exists()  # --dry-run writes nothing


@pytest.mark.slow
def test_two_workers_same_outputs(first_run, tmp_path):
    src, out1 = first_run["src"], first_run["out"]
    out2 = tmp_path / "out2"
    proc = run_cli("batch", SOURCE, src, "-o", out2, "-r", "--workers", "2", "--json", timeout=300)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["workers"] == 2 and summary["done"] == len(GOOD) and summary["failed"] == len(BAD)
    assert summary["no_face"] == len(NO_FACE)
    assert files_under(out2) == files_under(out1)
    for output in GOOD.values():
        if output.endswith(".mp4"):
            assert probe(out2 / output).frame_count == probe(out1 / output).frame_count
            continue
        a = np.asarray(Image.open(out1 / output).convert("RGB"))
        b = np.asarray(Image.open(out2 / output).convert("RGB"))
        assert a.shape == b.shape
        assert cv2.PSNR(a, b) > 40, output  # same work; only thread-count float noise may differ


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _streams(proc: psutil.Process) -> bool:
    """An ffmpeg decoding or encoding through pipes (not a short probe run)."""
    try:
        return "ffmpeg" in proc.name() and "rawvideo" in proc.cmdline() and _alive(proc)
    except psutil.Error:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_then_resume(tmp_path, workers):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS["yaoming"], src / "a_1.jpg")
    make_clip(src / "b_clip.mp4", "yaoming", seconds=4, fps=10, size=(320, 240), motion="zoom", fit="contain")
    for name in ("c_2.jpg", "d_3.jpg", "e_4.jpg"):
        shutil.copy(PHOTOS["yaoming"], src / name)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "swapcli", "batch", str(SOURCE), str(src), "-o", str(out),
                             "-j", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(
                p.is_file() and not p.name.startswith((".", "swapcli-")) for p in out.glob("*")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        kids, streaming = [], []
        while time.time() < deadline and not streaming:  # wait until the clip is being decoded/encoded
            kids = _descendants(proc.pid)
            streaming = [k for k in kids if _streams(k)]
            time.sleep(0.05)
        assert streaming, "ffmpeg should be running"
        if workers > 1:
            assert len([k for k in kids if "python" in _name(k).lower()]) >= workers
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    time.sleep(0.3)
    assert not [k for k in kids if _alive(k)], "workers and ffmpeg must be gone"
    manifest = read_manifest(out / "swapcli-manifest.jsonl")  # every line parses
    first_done = {r["input"] for r in manifest if r["status"] == "done"}
    assert first_done and str(src / "b_clip.mp4") not in first_done
    written = files_under(out) - {"swapcli-manifest.jsonl"}
    assert written == {Path(r["output"]).name for r in manifest if r["status"] == "done"}  # no partial files
    assert sorted(stdout.splitlines()) == sorted(str(out / n) for n in written)

    proc2 = run_cli("batch", SOURCE, src, "-o", out, "-q", "--json", timeout=300)
    assert proc2.returncode == 0, proc2.stderr
    second = json.loads(proc2.stdout)["files"]
    second_done = {r["input"] for r in second if r["status"] == "done"}
    assert second_done.isdisjoint(first_done)  # nothing done twice
    assert first_done | second_done == {str(p) for p in src.iterdir()}
    assert {r["input"] for r in second if r["status"] == "skipped"} == first_done
    final = read_manifest(out / "swapcli-manifest.jsonl")  # one done record per input
    assert sorted(r["input"] for r in final) == sorted(str(p) for p in src.iterdir())
    assert all(r["status"] == "done" for r in final)
    assert len(files_under(out)) == 6
    assert not [p for p in out.rglob(".*")]


def test_sweep_removes_only_this_outputs_fresh_temp_files(tmp_path):
    """After an interrupt the batch removes temp files its writers may have left for in-flight outputs."""
    from swapcli.pipeline.batch import Task, sweep_temp_files

    names = [".clip [1]_swapped.swapcli-0a1b2c3d.tmp.mp4", ".clip [1]_swapped.x8k2.swapcli-tmp.mp4",
             ".other_swapped.swapcli-0a1b2c3d.tmp.mp4", "clip [1]_swapped.mp4", ".clip [1]_swapped.old.swapcli-tmp.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    old = tmp_path / names[-1]
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    task = Task(0, str(tmp_path / "in.mp4"), str(tmp_path / "clip [1]_swapped.mp4"), "video", "in.mp4")
    assert sorted(sweep_temp_files(task, since=time.time() - 60)) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


# --------------------------------------------------------------------------- issue 18: manifest, no face, paths


def _face_and_no_face(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    shutil.copy(PHOTOS["yaoming"], folder / "a.jpg")
    shutil.copy(PHOTOS["yaoming"], folder / "sub" / "b.jpg")
    blank_image(folder / "plain.png")  # a grey picture with text: no face in it
    return folder


def test_no_face_is_an_outcome_skipped_until_retry_failed(tmp_path):
    src = _face_and_no_face(tmp_path / "in")
    out = tmp_path / "out"
    manifest = out / "swapcli-manifest.jsonl"
    proc = run_cli("batch", SOURCE, src, "-o", out, "-r", "--json")
    assert proc.returncode == 0, proc.stderr  # no face is not a failure
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["no_face"], summary["failed"], summary["exit_code"]) == (2, 1, 0, 0)
    plain = [r for r in read_manifest(manifest) if r["input"].endswith("plain.png")]
    assert [r["status"] for r in plain] == ["no_face"] and plain[0]["reason"] and "error" not in plain[0]

    proc = run_cli("batch", SOURCE, src, "-o", out, "-r", "--json")  # re-run: nothing is tried again
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["no_face"], summary["skipped"]) == (0, 0, 3)
    assert {r["category"] for r in summary["files"]} == {"already_done", "no_face"}
    assert len(read_manifest(manifest)) == 3  # one line per input after two runs

    proc = run_cli("batch", SOURCE, src, "-o", out, "-r", "--json", "--retry-failed")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["no_face"], summary["skipped"]) == (0, 1, 2)  # tried again, still none
    assert [r["input"] for r in summary["files"] if r["status"] == "no_face"] == [str(src / "plain.png")]
    assert len(read_manifest(manifest)) == 3
    assert files_under(out) == {"a_swapped.jpg", "sub/b_swapped.jpg", "swapcli-manifest.jsonl"}


def test_paths_are_printed_as_given(tmp_path):
    src = _face_and_no_face(tmp_path / "in")
    (src / "bad.jpg").write_text("not a photo\n")
    proc = run_cli("batch", SOURCE, "in", "-o", "out", "-r", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["out/a_swapped.jpg", "out/sub/b_swapped.jpg"]
    assert "done    sub/b.jpg -> out/sub/b_swapped.jpg" in proc.stderr
    assert "  in/bad.jpg: " in proc.stderr and str(tmp_path) not in proc.stderr
    # the manifest keeps absolute paths: an input is the same file whatever folder the next run starts in
    assert {r["input"] for r in read_manifest(tmp_path / "out" / "swapcli-manifest.jsonl")} == {
        str(src / n) for n in ("a.jpg", "sub/b.jpg", "plain.png", "bad.jpg")}

    proc = run_cli("batch", SOURCE, "in/*.jpg", "in/plain.png", "-o", "out", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["failed_inputs"] == ["in/bad.jpg"] and summary["output_dir"] == "out"
    rows = {r["input"]: r for r in summary["files"]}
    assert set(rows) == {"in/a.jpg", "in/bad.jpg", "in/plain.png"}
    assert rows["in/a.jpg"]["output"] == "out/a_swapped.jpg"
    assert str(tmp_path) not in json.dumps(summary)
    proc = run_cli("batch", SOURCE, "in", "-o", "out", "--dry-run", "--json", cwd=tmp_path)
    rows = json.loads(proc.stdout)["files"]
    assert {(r["input"], r["output"]) for r in rows} == {("in/a.jpg", "out/a_swapped.jpg"),
                                                        ("in/bad.jpg", "out/bad_swapped.jpg"),
                                                        ("in/plain.png", "out/plain_swapped.png")}


def test_manifest_history_keeps_every_line(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHOTOS["yaoming"], src / "a.jpg")
    manifest = tmp_path / "out" / "swapcli-manifest.jsonl"
    for _ in range(2):
        proc = run_cli("batch", SOURCE, src, "-o", tmp_path / "out", "-q", "--manifest-history")
        assert proc.returncode == 0, proc.stderr
    assert [(r["status"], r["category"]) for r in read_manifest(manifest)] == [("done", "ok"),
                                                                                ("skipped", "already_done")]
    proc = run_cli("batch", SOURCE, src, "-o", tmp_path / "out", "-q")  # without it: one current record
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in read_manifest(manifest)] == ["done"]


def _rec(name: str, status: str, output: str | None = "o", category: str = "ok") -> dict:
    return {"input": name, "output": output, "status": status, "category": category}


def test_compaction_keeps_the_current_record_and_the_last_done():
    from swapcli.pipeline.batch import compact_records

    records = [
        _rec("a", "failed"), _rec("a", "done"),  # -> the done one
        _rec("b", "done"), _rec("b", "skipped", category="already_done"), _rec("b", "failed"),  # done + failed
        _rec("c", "no_face"), _rec("c", "skipped", category="no_face"),  # -> no_face
        _rec("d", "done", output="o1"), _rec("d", "done", output="o2"),  # --pattern changed: both outputs
        _rec("e", "skipped", output=None, category="unsupported"), _rec("e", "skipped", output=None,
                                                                          category="unsupported"),
    ]
    assert compact_records(records) == [1, 2, 4, 5, 7, 8, 10]


def test_manifest_is_not_compacted_under_a_writer(tmp_path, monkeypatch):
    """Several batches may append to one manifest: compaction must never cut a writer off."""
    import fcntl

    from swapcli.pipeline import batch as pb

    path = tmp_path / "m.jsonl"
    writer = pb.Manifest(path)
    for rec in (_rec("a", "failed"), _rec("a", "done"), _rec("b", "done")):
        writer.append(rec)
    other = pb.Manifest(path)
    assert not other.compact()  # the writer holds the file open: left alone
    writer.append(_rec("b", "done"))  # lands in the file the reader sees
    assert len(read_manifest(path)) == 4
    writer.close()  # the last writer out compacts
    assert [(r["input"], r["status"]) for r in read_manifest(path)] == [("a", "done"), ("b", "done")]

    # a writer that opened the file just before another batch compacted it reopens the new file
    path.write_text("\n".join(json.dumps(r) for r in (_rec("c", "failed"), _rec("c", "failed"))) + "\n")
    real_flock, raced = fcntl.flock, []

    def flock(fd, op):
        if op == fcntl.LOCK_SH and not raced:
            raced.append(pb.Manifest(path).compact())  # between our open() and our lock
        return real_flock(fd, op)

    monkeypatch.setattr(pb.fcntl, "flock", flock)
    late = pb.Manifest(path)
    late.append(_rec("d", "done"))
    late.close()
    assert raced == [True]
    assert [(r["input"], r["status"]) for r in read_manifest(path)] == [("c", "failed"), ("d", "done")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no temp file left
