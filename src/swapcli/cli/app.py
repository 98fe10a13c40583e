"""The swapcli command line: the image, video and doctor commands, plus the
command modules that register themselves on the shared app. Heavy modules
are imported inside commands so `swapcli --help` stays instant."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from swapcli.cli.common import say_output
from swapcli.cli.root import IO, PERF, SELECT, VIDEO, Opt, SwapFlags, app, command, default_output, parse_map, swap_command


@swap_command(det_size=640)
def image(
    flags: SwapFlags,
    source: Path = typer.Argument(..., help="Photo of the person whose identity is used."),
    target: Path = typer.Argument(..., help="Photo whose face(s) are replaced."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", rich_help_panel=IO, help="Output image (.jpg, .png, .webp); default TARGET_swapped.EXT."),
) -> None:
    """Swap the face in SOURCE onto the face(s) in TARGET and write OUTPUT."""
    import time

    from swapcli.cli.common import emit_json, log
    from swapcli.pipeline.image import swap_image
    from swapcli.pipeline.swapper import Swapper
    from swapcli.select.faces import parse_faces

    start = time.perf_counter()
    out_path = output or default_output(target)
    source_paths = [source, *flags.sources]
    swapper = Swapper(flags.engine_options())
    parse_faces(flags.faces)
    sources = swapper.load_sources(source_paths)
    ref = swapper.reference_embedding(flags.reference) if flags.reference else None
    result = swap_image(swapper, sources, target, out_path, flags.select_options(), flags.output_options(),
                        reference=ref, inputs=[*source_paths, *([flags.reference] if flags.reference else [])])
    total = time.perf_counter() - start
    log.info("swapped %d of %d face(s) in %.2f s -> %s", result.faces_swapped, result.faces_found, total, result.output)
    if flags.json_out:
        emit_json({"ok": True, **result.to_json(), "engine": swapper.engine.name,
                   "timings_ms": swapper.clock.timings.to_json(), "total_ms": round(total * 1000, 1)})
    else:
        say_output(result.output)


@swap_command(det_size=480, images=False, videos=True, crf_alias="--quality")
def video(
    flags: SwapFlags,
    paths: List[Path] = typer.Argument(..., metavar="[SOURCE] TARGET_VIDEO", help="SOURCE photo (omit it with --map) and the video whose faces are replaced."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", rich_help_panel=IO, help="Output video (.mp4, .mov, .mkv, .m4v); default TARGET_swapped.mp4."),
    maps: Optional[List[str]] = typer.Option(None, "--map", metavar="SRC=REF", rich_help_panel=SELECT, help="Swap the person in photo REF with the face in SRC (repeatable)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.001, rich_help_panel=VIDEO, help="Resample to this constant frame rate (default: keep every frame)."),
    start: Optional[float] = typer.Option(None, "--start", min=0.0, rich_help_panel=VIDEO, help="Process from this time (seconds); audio is cut the same way."),
    end: Optional[float] = typer.Option(None, "--end", min=0.0, rich_help_panel=VIDEO, help="Process up to this time (seconds)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", metavar="ADDR", rich_help_panel=PERF, help="Split the video over a Ray cluster: auto, local, HOST:PORT or ray://HOST:PORT."),
) -> None:
    """Swap the face in SOURCE onto the face(s) in TARGET_VIDEO, keeping frame rate and audio."""
    from fractions import Fraction

    from swapcli.cli.common import emit_json, log, progress_bar
    from swapcli.core.errors import UsageError
    from swapcli.pipeline.devices import parse_devices
    from swapcli.pipeline.swapper import Swapper
    from swapcli.pipeline.video import VideoOptions, swap_video

    pairs = [parse_map(m) for m in (maps or [])]
    if len(paths) > 2:
        raise UsageError("expected [SOURCE] TARGET_VIDEO")
    source, target = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
    if pairs and (flags.reference or source):
        raise UsageError("use either SOURCE [--reference] or --map SRC=REF, not both")
    if not pairs and source is None:
        raise UsageError("give a SOURCE photo or at least one --map SRC=REF")
    out_path = output or default_output(target, ".mp4")
    devices = parse_devices(flags.device)
    engine_opts = dataclasses.replace(flags.engine_options(devices[0]), stream=True)
    select = flags.select_options()
    options = VideoOptions(crf=flags.crf, preset=flags.preset, codec=flags.codec,
                           fps=Fraction(fps).limit_denominator(1001) if fps else None,
                           start=start, end=end, batch=flags.batch_frames, detect_every=flags.detect_every)
    out_opts = flags.output_options()
    if pairs:
        photo_groups = [[src] for src, _ in pairs]
        ref_paths = [ref for _, ref in pairs]
        inputs = [p for pair in pairs for p in pair]
    else:
        photo_groups = [[source, *flags.sources]]
        ref_paths = [flags.reference] if flags.reference else None
        inputs = [*photo_groups[0], *([flags.reference] if flags.reference else [])]
    split = len(devices) > 1 or cluster is not None
    if split:  # one worker per device (or per cluster worker), each swapping a part of the frames
        from swapcli.pipeline.devices import swap_video_split

        executor = None
        if cluster is not None:
            from swapcli.pipeline.cluster import connect

            if len(devices) > 1:
                raise UsageError("--device lists split the work on one machine; with --cluster give one device")
            executor = connect(cluster)  # before any work: an unreachable cluster is one line, exit 6
        try:
            with progress_bar(flags.quiet, "swapping") as advance:
                result = swap_video_split(engine_opts, devices, photo_groups, target, out_path, select, options,
                                          out_opts, references=ref_paths, inputs=inputs, progress=advance,
                                          executor=executor)
        finally:
            if executor is not None:
                executor.close()
        engine_name, timings = result.split.engine, result.split.timings_ms
    else:
        swapper = Swapper(engine_opts)
        groups = [swapper.load_sources(group) for group in photo_groups]
        refs = [swapper.reference_embedding(ref) for ref in ref_paths] if ref_paths else None
        with progress_bar(flags.quiet, "swapping") as advance:
            result = swap_video(swapper, groups, target, out_path, select, options, out_opts,
                                references=refs, inputs=inputs, progress=advance)
        engine_name, timings = swapper.engine.name, swapper.clock.timings.to_json()
    for note in result.notes:
        log.warning(note)
    summary = result.to_json()
    log.info("%d frames (%d with a swapped face) in %.1f s (%.1f fps) -> %s", result.frames_written,
             result.frames_swapped, result.seconds, summary["fps"] or 0, result.output)
    if flags.json_out:
        extra = {"devices": result.split.segments} if split else {}
        emit_json({"ok": True, **summary, "engine": engine_name, "timings_ms": timings, **extra})
    else:
        say_output(result.output)


@command()
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
from swapcli.cli import batch, bench, evaluate, faces, live, models, verify  # noqa: E402,F401


def main() -> None:
    from swapcli.core.signals import sigterm_interrupts

    sigterm_interrupts()  # SIGTERM (kill, docker stop, scancel) cleans up like Ctrl-C in every command
    app(prog_name="swapcli")
