"""swapcli bench: time the real video pipeline on a generated clip, on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swapcli.cli.root import Opt, command


def format_text(r: dict) -> str:
    clip = r["clip"]
    lines = [
        f"clip        {clip['width']}x{clip['height']} {clip['fps']} fps, {r['frames_written']} frames, "
        f"{clip['faces']} face(s) of ~{', '.join(map(str, clip['face_px']))} px; {clip['codec']} {clip['preset']} "
        f"crf {clip['crf']}",
        f"engine      {r['engine']} on {', '.join(r['providers']) or r['device']}, detector {r['det_size']} px, "
        f"batch {r['batch']} frames, paste-back on {r['paste']}",
        f"swapcli     {r['fps']} fps ({r['seconds']} s; models {r['setup_s']} s, start {r['startup_s']} s; "
        f"end to end {r['fps_end_to_end']} fps)",
        f"plain       {r['plain_ffmpeg']['fps']} fps ffmpeg decode + encode ({r['plain_ffmpeg']['seconds']} s)",
        f"ratio       {r['ratio']}x the plain transcode ({r['ratio_end_to_end']}x end to end)",
        "per frame   " + ", ".join(f"{k} {v}" for k, v in r["stages_ms_per_frame"].items()) + " ms"
        + f" (overlapped {round(r['overlapped_ms'] / max(r['frames_written'], 1), 2)} ms)",
        "ffmpeg cpu  " + ", ".join(f"{k} {v}" for k, v in r["ffmpeg_cpu_ms_per_frame"].items()) + " ms per frame",
        "peak RSS    " + ", ".join(f"{k} {v}" for k, v in r["peak_rss_mb"].items()) + " MB"
        + f" (plain ffmpeg {r['plain_ffmpeg']['peak_rss_mb']} MB)",
    ]
    gpu = r.get("gpu")
    lines.append("gpu         " + (f"{gpu['util_mean_pct']} % mean, {gpu['util_max_pct']} % max, "
                                   f"{gpu['memory_max_mb']} MB max" if gpu else "-"))
    m = r["machine"]
    lines.append(f"machine     {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, ffmpeg {m['ffmpeg']}")
    return "\n".join(lines)


@command()
def bench(
    engine: str = Opt.engine,
    model: Optional[Path] = Opt.model,
    embedder_model: Optional[Path] = Opt.embedder_model,
    enhance: Optional[str] = Opt.enhance,
    device: str = Opt.device,
    paste: str = Opt.paste,
    batch_frames: int = Opt.batch_frames,
    codec: str = Opt.codec,
    weights_dir: Optional[Path] = Opt.weights_dir,
    det_size: int = Opt.det_size(480),
    resolution: str = typer.Option("720p", "--resolution", help="Clip size: 480p, 720p or 1080p."),
    frames: int = typer.Option(100, "--frames", min=3, max=100000, help="Clip length in frames (25 fps)."),
    faces: int = typer.Option(1, "--faces", help="People in the clip: 1, 2 or 4 (all are swapped)."),
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Benchmark `swapcli video` here: generates a clip from the packaged photos, runs the real
    pipeline, and reports per-stage times, fps, the ratio to a plain ffmpeg transcode, peak memory
    and (on CUDA) GPU utilisation."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        from swapcli.cli.common import emit_json, log, progress_bar
        from swapcli.cli.root import engine_options
        from swapcli.evaluate.bench import BenchOptions, run_bench

        options = engine_options(engine, device, weights_dir, det_size, model=model,
                                 embedder_model=embedder_model, enhance=enhance, paste=paste)
        with progress_bar(quiet or json_out, "bench") as advance:
            result = run_bench(options, BenchOptions(resolution=resolution, frames=frames, faces=faces, batch=batch_frames,
                                                codec=codec),
                               progress=advance, status=lambda msg: log.info("%s", msg))
        if json_out:
            emit_json(result)
        else:
            typer.echo(format_text(result))
