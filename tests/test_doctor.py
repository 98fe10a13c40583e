"""swapcli doctor: whole paths, a plain word for a CPU build of torch, no torch import to say so;
and the packaging metadata pip builds from (no deprecated licence table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from swapcli.cli import doctor
from swapcli.models.locate import package_path
from swapcli.models.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict:
    return {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "SWAPCLI_WEIGHTS": "", "SWAPCLI_MIRROR": "", "SWAPCLI_REGISTRY_EXTRA": ""}


def test_doctor_json_carries_whole_paths(tmp_path):
    weights = tmp_path / ("a-rather-long-folder-name-" * 4) / "weights"
    weights.mkdir(parents=True)
    (weights / "inswapper_128.onnx").write_bytes(b"not the model")  # found, fails verification
    proc = run_cli("doctor", "--json", "--weights-dir", weights, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for name in ("scrfd_500m", "2d106det", "w600k_mbf"):
        info = report["models"][name]
        assert info["verified"] and Path(info["path"]) == package_path(MODELS[name]) and Path(info["path"]).is_file()
    bad = report["models"]["inswapper_128"]
    assert bad["path"] == str(weights / "inswapper_128.onnx") and "does not match" in bad["error"]
    assert str(weights / "inswapper_128.onnx") in bad["searched"]
    assert report["models"]["gfpgan_1.4"]["path"] is None


def test_doctor_text_prints_each_path_whole_on_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")  # narrower than any path: a table column would cut it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    doctor.render(doctor.gather())
    lines = capsys.readouterr().out.splitlines()
    for name in ("scrfd_500m", "2d106det", "w600k_mbf"):
        assert str(package_path(MODELS[name])) in [ln.strip() for ln in lines]


def test_cpu_torch_is_reported_without_importing_it():
    code = ("import sys, json; from swapcli.cli import doctor; "
            "doctor._torch_build = lambda: {'cuda': None, 'hip': None}; "
            "print(json.dumps({'torch': doctor._torch(), 'imported': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["imported"] is False
    if result["torch"]["installed"]:
        assert result["torch"]["build"] == "CPU build (no CUDA)" and result["torch"]["cuda_available"] is False


def test_torch_build_read_from_its_version_file(tmp_path, monkeypatch):
    import importlib.util

    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "version.py").write_text("from typing import Optional\n__version__ = '9.9+cu999'\n"
                                    "cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n")

    class Found:
        submodule_search_locations = [str(pkg)]

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: Found() if name == "torch" else None)
    assert doctor._torch_build() == {"cuda": "12.8", "hip": None}
    (pkg / "version.py").write_text("cuda = None\nhip = None\n")
    assert doctor._torch_build() == {"cuda": None, "hip": None}
    (pkg / "version.py").write_text("something else\n")
    assert doctor._torch_build() is None  # unknown: doctor falls back to importing torch


def test_doctor_cli_says_cpu_build_in_words(tmp_path):
    if doctor._torch_build() != {"cuda": None, "hip": None}:
        pytest.skip("a CUDA or ROCm build of torch is installed")
    proc = run_cli("doctor", cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "CPU build (no CUDA)" in proc.stdout and "CUDA build None" not in proc.stdout


def test_pyproject_licence_is_an_spdx_string():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(project["project"]["license"], str) and project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first that reads an SPDX `license`
