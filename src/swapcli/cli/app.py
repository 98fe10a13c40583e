"""The swapcli command line: the image, video and doctor commands, plus the
command modules that register themselves on the shared app. Heavy modules
are imported inside commands so `swapcli --help` stays instant."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from swapcli.cli.root import Opt, app, default_output, engine_options, parse_map


@app.command()
def image(
    source: Path = typer.Argument(..., help="Photo of the person whose identity is used."),
    target: Path = typer.Argument(..., help="Photo whose face(s) are replaced."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output image (.jpg, .png, .webp). Default: TARGET_swapped.EXT beside TARGET."),
    extra_sources: Optional[List[Path]] = Opt.sources,
    faces: str = Opt.faces,
    reference: Optional[Path] = Opt.reference,
    threshold: float = Opt.threshold,
    min_face_size: float = Opt.min_face,
    min_face_share: float = Opt.min_face_share,
    engine: str = Opt.engine,
    model: Optional[Path] = Opt.model,
    embedder_model: Optional[Path] = Opt.embedder_model,
    mix: Optional[float] = Opt.mix,
    enhance: Optional[str] = Opt.enhance,
    enhance_blend: float = Opt.enhance_blend,
    device: str = Opt.device,
    paste: str = Opt.paste,
    weights_dir: Optional[Path] = Opt.weights_dir,
    no_mark: bool = Opt.no_mark,
    visible_label: Optional[str] = Opt.visible_label,
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG/WebP quality."),
    det_size: int = Opt.det_size(640),
    overwrite: bool = Opt.overwrite,
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Swap the face in SOURCE onto the face(s) in TARGET and write OUTPUT."""
    from swapcli.cli.common import handle_errors, setup_logging

    setup_logging(quiet, debug)
    with handle_errors(debug, json_out):
        import time

        from swapcli.cli.common import emit_json, log
        from swapcli.core.options import OutputOptions, SelectOptions
        from swapcli.pipeline.image import swap_image
        from swapcli.pipeline.swapper import Swapper

        start = time.perf_counter()
        out_path = output or default_output(target)
        source_paths = [source, *(extra_sources or [])]
        swapper = Swapper(engine_options(engine, device, weights_dir, det_size, model=model, embedder_model=embedder_model,
                                          mix=mix, enhance=enhance, enhance_blend=enhance_blend, paste=paste))
        select = SelectOptions(faces=faces, reference=reference, threshold=threshold, min_size=min_face_size, min_share=min_face_share)
        from swapcli.select.faces import parse_faces

        parse_faces(faces)
        sources = swapper.load_sources(source_paths)
        ref = swapper.reference_embedding(reference) if reference else None
        result = swap_image(
            swapper, sources, target, out_path, select, OutputOptions(overwrite=overwrite, quality=quality, mark=not no_mark,
                                                                     visible_label=visible_label),
            reference=ref, inputs=[*source_paths, *([reference] if reference else [])],
        )
        total = time.perf_counter() - start
        log.info("swapped %d of %d face(s) in %.2f s -> %s", result.faces_swapped, result.faces_found, total, result.output)
        if json_out:
            payload = {"ok": True, **result.to_json(), "engine": swapper.engine.name,
                       "timings_ms": swapper.clock.timings.to_json(), "total_ms": round(total * 1000, 1)}
            emit_json(payload)
        else:
            typer.echo(str(result.output))


@app.command()
def video(
    paths: List[Path] = typer.Argument(..., metavar="[SOURCE] TARGET_VIDEO", help="SOURCE photo (omit it when every person comes from --map) and the video whose face(s) are replaced."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output video (.mp4, .mov, .mkv, .m4v). Default: TARGET_swapped.mp4 beside TARGET."),
    extra_sources: Optional[List[Path]] = Opt.sources,
    faces: str = Opt.faces,
    reference: Optional[Path] = Opt.reference,
    maps: Optional[List[str]] = typer.Option(None, "--map", help="SRC.jpg=REF.jpg: swap the person in REF with the face in SRC (repeatable: many people, each with their own source)."),
    threshold: float = Opt.threshold,
    min_face_size: float = Opt.min_face,
    min_face_share: float = Opt.min_face_share,
    engine: str = Opt.engine,
    model: Optional[Path] = Opt.model,
    embedder_model: Optional[Path] = Opt.embedder_model,
    mix: Optional[float] = Opt.mix,
    enhance: Optional[str] = Opt.enhance,
    enhance_blend: float = Opt.enhance_blend,
    device: str = Opt.device,
    paste: str = Opt.paste,
    batch_frames: int = Opt.batch_frames,
    weights_dir: Optional[Path] = Opt.weights_dir,
    no_mark: bool = Opt.no_mark,
    visible_label: Optional[str] = Opt.visible_label,
    crf: int = typer.Option(18, "--crf", "--quality", min=0, max=51, help="x264/x265 constant rate factor (lower = better, 18 is visually lossless)."),
    preset: str = typer.Option("veryfast", "--preset", help="Encoder speed preset (ultrafast ... veryslow)."),
    codec: str = Opt.codec,
    fps: Optional[float] = typer.Option(None, "--fps", min=0.001, help="Resample to this constant frame rate on purpose (default: keep every input frame)."),
    start: Optional[float] = typer.Option(None, "--start", min=0.0, help="Process from this time (seconds); audio is cut the same way."),
    end: Optional[float] = typer.Option(None, "--end", min=0.0, help="Process up to this time (seconds)."),
    det_size: int = Opt.det_size(480),
    overwrite: bool = Opt.overwrite,
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Swap the face in SOURCE onto the face(s) in TARGET_VIDEO, keeping frame rate and audio."""
    from swapcli.cli.common import handle_errors, setup_logging

    setup_logging(quiet, debug)
    with handle_errors(debug, json_out):
        from fractions import Fraction

        from swapcli.cli.common import emit_json, log, progress_bar
        from swapcli.core.errors import UsageError
        from swapcli.core.options import OutputOptions, SelectOptions
        from swapcli.pipeline.swapper import Swapper
        from swapcli.pipeline.video import VideoOptions, swap_video

        pairs = [parse_map(m) for m in (maps or [])]
        if len(paths) > 2:
            raise UsageError("expected [SOURCE] TARGET_VIDEO")
        source, target = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
        if pairs and (reference or source):
            raise UsageError("use either SOURCE [--reference] or --map SRC=REF, not both")
        if not pairs and source is None:
            raise UsageError("give a SOURCE photo or at least one --map SRC=REF")
        out_path = output or default_output(target, ".mp4")
        from swapcli.pipeline.devices import parse_devices

        devices = parse_devices(device)
        engine_opts = engine_options(engine, devices[0], weights_dir, det_size, model=model,
                                     embedder_model=embedder_model, mix=mix, enhance=enhance,
                                     enhance_blend=enhance_blend, paste=paste)
        select = SelectOptions(faces=faces, reference=reference, threshold=threshold, min_size=min_face_size, min_share=min_face_share)
        options = VideoOptions(crf=crf, preset=preset, codec=codec, fps=Fraction(fps).limit_denominator(1001) if fps else None,
                               start=start, end=end, batch=batch_frames)
        out_opts = OutputOptions(overwrite=overwrite, mark=not no_mark, visible_label=visible_label)
        if pairs:
            photo_groups = [[src] for src, _ in pairs]
            ref_paths = [ref for _, ref in pairs]
            inputs = [p for pair in pairs for p in pair]
        else:
            photo_groups = [[source, *(extra_sources or [])]]
            ref_paths = [reference] if reference else None
            inputs = [*photo_groups[0], *([reference] if reference else [])]
        if len(devices) > 1:  # one worker process per device, each swapping a part of the frames
            from swapcli.core.signals import sigterm_interrupts
            from swapcli.pipeline.devices import swap_video_split

            sigterm_interrupts()
            with progress_bar(quiet, "swapping") as advance:
                result = swap_video_split(engine_opts, devices, photo_groups, target, out_path, select, options,
                                          out_opts, references=ref_paths, inputs=inputs, progress=advance)
            engine_name, timings = result.split.engine, result.split.timings_ms
        else:
            swapper = Swapper(engine_opts)
            groups = [swapper.load_sources(group) for group in photo_groups]
            refs = [swapper.reference_embedding(ref) for ref in ref_paths] if ref_paths else None
            with progress_bar(quiet, "swapping") as advance:
                result = swap_video(swapper, groups, target, out_path, select, options, out_opts,
                                    references=refs, inputs=inputs, progress=advance)
            engine_name, timings = swapper.engine.name, swapper.clock.timings.to_json()
        for note in result.notes:
            log.warning(note)
        summary = result.to_json()
        log.info("%d frames (%d with a swapped face) in %.1f s (%.1f fps) -> %s", result.frames_written,
                 result.frames_swapped, result.seconds, summary["fps"] or 0, result.output)
        if json_out:
            extra = {"devices": result.split.segments} if len(devices) > 1 else {}
            emit_json({"ok": True, **summary, "engine": engine_name, "timings_ms": timings, **extra})
        else:
            typer.echo(str(result.output))


@app.command()
def doctor(json_out: bool = Opt.json_out, weights_dir: Optional[Path] = Opt.weights_dir) -> None:
    """Report Python, packages, onnxruntime providers, models and ffmpeg."""
    from swapcli.cli.common import emit_json, handle_errors
    from swapcli.cli.doctor import gather, render

    with handle_errors(False, json_out):
        report = gather(str(weights_dir) if weights_dir else None)
        if json_out:
            emit_json(report)
        else:
            render(report)
        if not report["ok"]:
            raise typer.Exit(4)


# Command modules register on `app` when imported (order = --help order).
from swapcli.cli import batch, bench, evaluate, models, verify  # noqa: E402,F401


def main() -> None:
    app()
