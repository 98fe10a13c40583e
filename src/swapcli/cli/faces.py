"""swapcli faces: list the faces of a photo or video, numbered as --faces N counts them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swapcli.cli.root import IO, PERF, Opt, _multiple_of_32, command


def _det_size(value: Optional[int]) -> Optional[int]:
    return None if value is None else _multiple_of_32(value)


@command()
def faces(
    media: Path = typer.Argument(..., metavar="IMAGE_OR_VIDEO", help="Photo or video to look at."),
    json_out: bool = Opt.json_out,
    preview: Optional[Path] = typer.Option(None, "--preview", rich_help_panel=IO, help="Also write a picture: numbered boxes (video: a sheet of track thumbnails)."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=IO, help="Replace an existing --preview file."),
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
    face_order: str = Opt.face_order,
    min_face_size: float = Opt.min_face,
    min_face_share: float = Opt.min_face_share,
    every: Optional[int] = typer.Option(None, "--every", min=1, rich_help_panel=PERF, help="Video: analyse every Nth frame (default: 5 frames a second)."),
    det_size: Optional[int] = typer.Option(None, "--det-size", min=160, max=1280, callback=_det_size, rich_help_panel=PERF, help="Face-detector input size in px (default as image: 640, video: 480)."),
    weights_dir: Optional[Path] = Opt.weights_dir,
) -> None:
    """List every face in IMAGE_OR_VIDEO with the index --faces N uses, box, size, score and head pose."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        _run(media, json_out, preview, overwrite, quiet, face_order, min_face_size, min_face_share, every, det_size,
             weights_dir)


def _run(media: Path, json_out: bool, preview: Path | None, overwrite: bool, quiet: bool, face_order: str,
         min_size: float, min_share: float, every: int | None, det_size: int | None, weights_dir: Path | None) -> None:
    from swapcli.analyse.insight import AnalyserOptions, InsightAnalyser
    from swapcli.cli.common import emit_json, log, progress_bar, write_result
    from swapcli.core.errors import UsageError
    from swapcli.core.options import SelectOptions
    from swapcli.pipeline import faces as listing
    from swapcli.read.kinds import media_kind
    from swapcli.write.atomic import check_output, write_bytes
    from swapcli.write.image import format_for

    kind = media_kind(media)
    if kind is None:
        raise UsageError(f"{media}: not an image or video file extension")
    if preview is not None:
        format_for(preview)
        check_output(preview, [media], overwrite)
    size = det_size or (640 if kind == "image" else 480)
    select = SelectOptions(faces="all", min_size=min_size, min_share=min_share, face_order=face_order)
    analyser = InsightAnalyser(AnalyserOptions(weights_dir=str(weights_dir) if weights_dir else None, det_size=size))
    if kind == "image":
        result, image = listing.image_faces(analyser, media, size, select)
        if result.found_at is not None:
            log.info("%s: no face at detector size %d; found at %d (%.0f ms of retries; --det-size %d skips them)",
                     media, size, result.found_at, result.retry_ms, result.found_at)
        picture = listing.draw_boxes(image, result.faces) if preview is not None else None
        text = image_table(result)
    else:
        with progress_bar(quiet, "reading") as advance:
            result = listing.video_faces(analyser, media, size, select, every, progress=advance)
        log.info("analysed %d of %d frames (every %s); --every 1 analyses all", result.sampled, result.frames,
                 "frame" if result.every == 1 else f"{result.every}th frame")
        picture = listing.contact_sheet(result.tracks) if preview is not None else None
        text = video_table(result)
    if preview is not None:
        write_bytes(preview, listing.encode(picture, preview), overwrite)
        log.info("preview -> %s", preview)
    if json_out:
        emit_json({"ok": True, **result.to_json(), "preview": str(preview) if preview is not None else None})
    else:
        write_result(text)


def _pose(pose: dict) -> str:
    return f"{pose['yaw']:6.1f} {pose['pitch']:6.1f} {pose['roll']:6.1f}"


def _bbox(box: list[float]) -> str:
    return "{:>5.0f} {:>5.0f} {:>5.0f} {:>5.0f}".format(*box)


def image_table(result) -> str:
    """One line per face in --face-order; N is what --faces takes ('-' = skipped, with why)."""
    lines = [f"{'N':>3}  {'x0':>5} {'y0':>5} {'x1':>5} {'y1':>5}  {'size':>5}  {'score':>5}  "
             f"{'yaw':>6} {'pitch':>6} {'roll':>6}  note"]
    for f in result.faces:
        note = "largest" if f.largest else ""
        if f.skipped:
            note = ", ".join(filter(None, [note, f"skipped: {f.skipped}"]))
        n = "-" if f.index is None else str(f.index)
        lines.append(f"{n:>3}  {_bbox(f.bbox)}  {f.size:5.0f}  {f.score:5.2f}  {_pose(f.pose)}  {note}".rstrip())
    return "\n".join(lines) + "\n"


def video_table(result) -> str:
    """One line per track: id, the --faces N that picks it, sampled frames it spans and was seen in."""
    lines = [f"{'track':>5}  {'N':>3}  {'first':>6} {'last':>6} {'seen':>5}  {'x0':>5} {'y0':>5} {'x1':>5} {'y1':>5}  "
             f"{'size':>5}  {'score':>5}  {'yaw':>6} {'pitch':>6} {'roll':>6}"]
    for t in result.tracks:
        n = ",".join(map(str, t.indices)) or "-"
        b = t.best
        lines.append(f"{t.id:>5}  {n:>3}  {t.first_frame:>6} {t.last_frame:>6} {t.frames_seen:>5}  {_bbox(b.bbox)}  "
                     f"{b.size:5.0f}  {b.score:5.2f}  {_pose(b.pose)}")
    return "\n".join(lines) + "\n"
