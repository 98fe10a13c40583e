"""Nothing lost under signals, races and odd outputs (issue 19): SIGTERM and SIGKILL during a
video, two runs writing one output, a full disk behind an ffmpeg that exits 0, a closed or
full stdout, very thin images, huge EXIF and out-of-range options.

Every moment is reached on purpose, never by luck of timing: a run is signalled only once
its temp file holds encoded data (so it is mid-encode), and every wait has a deadline that
only a broken run reaches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, run_cli, wait_for
from swapcli.core.errors import OutputError
from swapcli.write.atomic import publish, reserve_temp, sweep_stale

SOURCE = PHOTOS["gdp"]
DEADLINE = 120.0  # seconds; only a hung run gets near it (conftest.wait_for)


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".swapcli-" in p.name)


def encoding(folder: Path):
    """The run's temp output once ffmpeg has written encoded data into it."""
    return lambda: [p for p in temp_files(folder) if p.is_file() and p.stat().st_size > 0]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """Long enough (300 frames) that a run is still encoding when the test acts."""
    d = tmp_path_factory.mktemp("clip")
    return make_clip(d / "clip.mp4", "yaoming", seconds=12, fps=25, size=(320, 240), motion="zoom", fit="contain")


def start_video(clip: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swapcli", "video", str(SOURCE), str(clip), "-o", str(out), "-q",
                             "--batch", "1", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ffmpeg_children(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if "ffmpeg" in p.name()]
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# --------------------------------------------------------------------------- signals


def test_sigterm_during_video_is_like_ctrl_c(long_clip, tmp_path):
    out = tmp_path / "o.mp4"
    proc = start_video(long_clip, out)
    wait_for(encoding(tmp_path), "encoded data in the temp file", DEADLINE, proc)
    encoders = wait_for(lambda: ffmpeg_children(proc.pid), "a running ffmpeg", DEADLINE, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 130, err
    assert err.strip() == "swapcli: interrupted" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no output, no temp file
    assert not alive(encoders)


def test_sigkill_leaves_no_ffmpeg_and_the_next_run_sweeps_its_temp_file(long_clip, tmp_path):
    out = tmp_path / "o.mp4"
    proc = start_video(long_clip, out)
    wait_for(encoding(tmp_path), "encoded data in the temp file", DEADLINE, proc)
    children = wait_for(lambda: ffmpeg_children(proc.pid), "a running ffmpeg", DEADLINE, proc)
    proc.kill()
    proc.wait(DEADLINE)
    wait_for(lambda: not alive(children), "the end of every ffmpeg of the killed run", DEADLINE)  # died with their parent
    stale = temp_files(tmp_path)
    assert stale and not out.exists()  # SIGKILL cannot be caught: the temp file stays ...
    again = run_cli("image", SOURCE, PHOTOS["t1"], "-o", tmp_path / "later.jpg", "-q")
    assert again.returncode == 0, again.stderr
    assert temp_files(tmp_path) == []  # ... until a later run writes into that folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["later.jpg"]


def test_sweep_keeps_temp_files_of_running_writers(tmp_path):
    mine = reserve_temp(tmp_path / "a.mp4")  # this process is alive: its file stays
    other = tmp_path / f".b.swapcli-{os.getppid()}-abcd1234.tmp.mp4"  # the parent (pytest's runner) is alive too
    other.write_bytes(b"x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".c.swapcli-{dead.pid}-abcd1234.tmp.mp4"
    gone.write_bytes(b"x")
    unrelated = tmp_path / ".c.swapcli-notes.txt"
    unrelated.write_bytes(b"x")
    removed = sweep_stale(tmp_path)
    assert removed == [gone.name]
    assert mine.exists() and other.exists() and unrelated.exists() and not gone.exists()


# --------------------------------------------------------------------------- two writers


def test_a_file_that_appears_meanwhile_is_never_replaced(long_clip, tmp_path):
    out = tmp_path / "o.mp4"
    proc = start_video(long_clip, out)
    wait_for(encoding(tmp_path), "encoded data in the temp file", DEADLINE, proc)
    out.write_bytes(b"the other run's finished result")  # a second run got there first
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2 and "appeared while this run was writing" in err, err
    assert out.read_bytes() == b"the other run's finished result"
    assert temp_files(tmp_path) == []


def test_publish_refuses_to_replace_and_overwrite_replaces(tmp_path):
    out = tmp_path / "o.jpg"
    out.write_bytes(b"first")
    tmp = reserve_temp(out)
    tmp.write_bytes(b"second")
    with pytest.raises(OutputError, match="appeared while"):
        publish(tmp, out, overwrite=False)
    assert out.read_bytes() == b"first" and not tmp.exists()
    tmp = reserve_temp(out)
    tmp.write_bytes(b"second")
    publish(tmp, out, overwrite=True)
    assert out.read_bytes() == b"second" and temp_files(tmp_path) == []


# --------------------------------------------------------------------------- a full disk behind exit 0


@pytest.fixture
def truncating_ffmpeg(tmp_path) -> dict[str, str]:
    """An ffmpeg that behaves as Debian's 5.1 did on a full disk: the encode stops early,
    the file has no index, and the exit status is still 0."""
    from swapcli.core.ffmpeg import ffmpeg_exe

    script = tmp_path / "bin" / "ffmpeg"
    script.parent.mkdir()
    script.write_text(f"""#!{sys.executable}
import subprocess, sys
rc = subprocess.call([{ffmpeg_exe()!r}, *sys.argv[1:]])
for arg in sys.argv[1:]:
    if ".swapcli-" in arg and ".tmp." in arg:
        with open(arg.removeprefix("file:"), "r+b") as f:
            f.truncate(4096)
sys.exit(rc)
""")
    script.chmod(0o755)
    return {"SWAPCLI_FFMPEG": str(script)}


def test_full_disk_with_exit_0_is_an_output_error(truncating_ffmpeg, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", "yaoming", seconds=1, fps=10, size=(320, 240), motion="zoom", fit="contain")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli("video", SOURCE, clip, "-o", out_dir / "o.mp4", "-q", env=truncating_ffmpeg, timeout=180)
    assert_clean_failure(proc, 2)
    assert "cannot write" in proc.stderr and "disk full?" in proc.stderr
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- stdout


def test_full_stdout_does_not_fail_a_finished_swap(tmp_path):
    out = tmp_path / "o.jpg"
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "swapcli", "image", str(SOURCE), str(PHOTOS["t1"]), "-o", str(out)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "could not write the result to stdout" in proc.stderr and "Traceback" not in proc.stderr
    assert Image.open(out).size == Image.open(PHOTOS["t1"]).size


def test_closed_stdout_pipe_does_not_fail_a_finished_swap(tmp_path):
    out = tmp_path / "o.jpg"
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -c0`: the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "swapcli", "image", str(SOURCE), str(PHOTOS["t1"]), "-o", str(out),
                               "--json", "-q"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().startswith("swapcli: warning: could not write the result to stdout")
    assert out.exists()


# --------------------------------------------------------------------------- odd images


@pytest.mark.parametrize("size", [(16, 20000), (20000, 16)])
def test_very_thin_images_are_no_face_not_an_internal_error(tmp_path, size):
    target = tmp_path / "strip.png"
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(target)
    proc = run_cli("image", SOURCE, target, "-o", tmp_path / "o.png", "-q")
    assert_clean_failure(proc, 3)
    assert "no face found" in proc.stderr and "internal error" not in proc.stderr


def test_huge_exif_is_trimmed_not_fatal(tmp_path):
    target = tmp_path / "exif.jpg"
    tags = Image.Exif()
    tags[0x010F], tags[0x0112] = "Camera", 1
    tags.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + b"x" * 65440  # a huge, valid UserComment
    Image.open(PHOTOS["t1"]).save(target, exif=tags.tobytes())
    assert len(tags.tobytes()) > 65500  # with the Software tag added it no longer fits one JPEG segment
    out = tmp_path / "o.jpg"
    proc = run_cli("image", SOURCE, target, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "too large for JPEG" in proc.stderr and "UserComment" in proc.stderr
    kept = Image.open(out).getexif()
    assert kept[0x010F] == "Camera" and kept[0x0131].startswith("swapcli")  # what fits stays, the mark too
    assert 0x9286 not in kept.get_ifd(0x8769)


# --------------------------------------------------------------------------- option errors


@pytest.mark.parametrize("args, message", [
    (["image", "a.jpg", "b.jpg", "--threshold", "2"], "--threshold must be between -1.0 and 1.0 (got 2)"),
    (["image", "a.jpg", "b.jpg", "--mix", "5"], "--mix must be between 0.0 and 1.0 (got 5)"),
    (["image", "a.jpg", "b.jpg", "--quality", "0"], "--quality must be between 1 and 100 (got 0)"),
    (["video", "a.jpg", "b.mp4", "--crf", "99"], "--crf must be between 0 and 51 (got 99)"),
    (["video", "a.jpg", "b.mp4", "--fps", "0"], "--fps must be at least 0.001 (got 0)"),
    (["batch", "a.jpg", "x", "-o", "o", "--workers=-1"], "--workers must be between 0 and 64 (got -1)"),
    (["image", "a.jpg", "b.jpg", "--det-size", "161"], "must be a multiple of 32 (got 161; try 160)"),
    (["image", "a.jpg", "b.jpg", "--no-such-option"], "no such option: --no-such-option"),
    (["image", "a.jpg"], "missing argument 'TARGET'"),
    (["eval", "--det-size", "2000"], "--det-size must be between 160 and 1280 (got 2000)"),
])
def test_option_errors_are_one_line(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("swapcli: error: "), proc.stderr
    assert message in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="die_with_parent is Linux only")
def test_ctrl_c_while_a_child_is_spawned_stops_and_kills_it(monkeypatch):
    """A Ctrl-C that arrives while ffmpeg is being forked was swallowed by CPython's at-fork
    handlers (the run went on and exited 0): now it is recorded over the fork, raised right
    after, and the new child is killed."""
    from swapcli.core import ffmpeg as ff

    real, children = subprocess.Popen, []

    def popen_then_ctrl_c(*args, **kwargs):
        child = real(*args, **kwargs)
        children.append(child)
        signal.raise_signal(signal.SIGINT)  # as if it came during the fork
        return child

    monkeypatch.setattr(ff.subprocess, "Popen", popen_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        ff.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
    assert len(children) == 1 and children[0].poll() is not None  # killed and reaped


def test_a_clean_stop_signal_during_a_spawn_keeps_the_child(monkeypatch):
    """`swapcli live` stops on Ctrl-C by finishing its file: a Ctrl-C during its encoder's fork
    must reach that handler and leave the encoder running (it was killed, and the stop failed
    with 'ffmpeg exit -9'); a second one still raises and kills."""
    from swapcli.core import ffmpeg as ff

    real, children, asked = subprocess.Popen, [], []

    def popen_then(count):
        def popen(*args, **kwargs):
            child = real(*args, **kwargs)
            children.append(child)
            for _ in range(count):
                signal.raise_signal(signal.SIGINT)
            return child
        return popen

    def stop_cleanly(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    previous = signal.signal(signal.SIGINT, stop_cleanly)
    try:
        monkeypatch.setattr(ff.subprocess, "Popen", popen_then(1))
        child = ff.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
        assert asked == [signal.SIGINT] and child.poll() is None  # asked to stop, encoder alive
        child.kill()
        child.wait()
        monkeypatch.setattr(ff.subprocess, "Popen", popen_then(1))
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C: stop now
            ff.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
        assert children[-1].poll() is not None
    finally:
        signal.signal(signal.SIGINT, previous)
