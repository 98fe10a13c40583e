"""swapcli live: swap faces in a camera or stream in real time (pipeline/live.py).

This module is the command line: options, the status line on stderr, the JSON
summary on stdout. Outputs that cannot work here (no display, no pyvirtualcam)
and unopenable inputs fail before or instead of any work, in one line, exit 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from swapcli.cli.root import IO, VIDEO, SwapFlags, swap_command

TEST_DELAY_ENV = "SWAPCLI_LIVE_TEST_DELAY_MS"  # tests: a slower engine, to see frames drop


@swap_command(det_size=320, images=False, videos=False)
def live(
    flags: SwapFlags,
    source: Path = typer.Argument(..., help="Photo of the person whose identity is used."),
    input_: str = typer.Option("0", "--input", "-i", rich_help_panel=IO, help="Camera (0, /dev/videoN), stream URL (rtsp, udp, srt, rtmp, ...) or video file."),
    output: str = typer.Option("window", "--output", "-o", rich_help_panel=IO, help="window, virtualcam, v4l2:/dev/videoN, a stream URL (udp, srt, rtmp) or FILE.mp4."),
    size: Optional[str] = typer.Option(None, "--size", rich_help_panel=VIDEO, help="Frame size WxH, e.g. 1280x720 (camera mode; others are scaled, letterboxed)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=1.0, max=240.0, rich_help_panel=VIDEO, help="Camera frame rate and output rate (default: camera 30, else the input's)."),
    realtime: bool = typer.Option(True, "--realtime/--no-realtime", rich_help_panel=VIDEO, help="Read a FILE input at its own frame rate, as a camera delivers (default), or as fast as it decodes."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, rich_help_panel=VIDEO, help="Stop after this many output frames."),
) -> None:
    """Swap the face in SOURCE into a live camera or stream, in real time.

    Frames are never queued: when swapping is slower than the input, input frames
    are dropped and the latency stays bounded. Window keys: q quit, s snapshot,
    m mouth mask, f cycle the selected faces. Ctrl-C, SIGTERM, a closed window or
    the end of the input stop cleanly (exit 0; a file output is finalised).
    """
    from swapcli.cli.common import emit_json, log, say_output
    from swapcli.core.errors import UsageError
    from swapcli.pipeline.live import LiveOptions, run_live
    from swapcli.pipeline.swapper import Swapper
    from swapcli.read.stream import parse_input, parse_size
    from swapcli.select.faces import parse_faces
    from swapcli.write.atomic import check_output
    from swapcli.write.stream import check_output_available, parse_output

    frame_size = parse_size(size)
    spec_in = parse_input(input_, size=frame_size, fps=fps, realtime=realtime)
    spec_out = parse_output(output)
    check_output_available(spec_out)
    parse_faces(flags.faces)
    inputs = [source, *flags.sources, *([flags.reference] if flags.reference else [])]
    if spec_out.kind == "file":
        check_output(Path(spec_out.target), [*inputs, *([Path(input_)] if spec_in.kind == "file" else [])],
                     flags.overwrite)
    try:
        delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
    except ValueError:
        raise UsageError(f"${TEST_DELAY_ENV} must be a number of milliseconds") from None
    options = LiveOptions(size=frame_size, fps=fps, max_frames=max_frames, mark=not flags.no_mark,
                          visible_label=flags.visible_label, overwrite=flags.overwrite, test_delay_ms=delay)
    swapper = Swapper(flags.engine_options())
    sources = swapper.load_sources([source, *flags.sources])
    reference = swapper.reference_embedding(flags.reference) if flags.reference else None
    status = StatusLine() if not flags.quiet and sys.stderr.isatty() else None
    log.info("live: %s -> %s (%s engine); Ctrl-C stops", spec_in.label, spec_out.text, swapper.engine.name)
    try:
        result = run_live(swapper, sources, spec_in, spec_out, flags.select_options(), options, reference=reference,
                          on_status=status)
    finally:
        if status is not None:
            status.clear()
    summary = result.to_json()
    lat = summary["latency_ms"]
    log.info("%s: %d frames in, %d out, %d dropped%s", result.stopped, result.frames_in, result.frames_out,
             result.dropped, f"; {summary['fps_out']:.1f} fps out; latency p50 {lat['p50']:.0f} ms, "
             f"p95 {lat['p95']:.0f} ms" if result.frames_out else "")
    if flags.json_out:
        emit_json({"ok": True, **summary, "engine": swapper.engine.name})
    elif spec_out.kind == "file" and result.frames_out:
        say_output(spec_out.target)


class StatusLine:
    """One self-overwriting line on stderr (a terminal only): rates, drops and latency."""

    def __call__(self, s) -> None:
        sys.stderr.write(f"\r\033[Kin {s.fps_in:5.1f} fps  out {s.fps_out:5.1f} fps  dropped {s.dropped}  "
                         f"latency p50 {s.latency_p50_ms:.0f} ms p95 {s.latency_p95_ms:.0f} ms  faces {s.faces}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
