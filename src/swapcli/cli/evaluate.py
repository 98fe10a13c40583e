"""swapcli eval: measure a swap result against its source and target (photos or videos)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from swapcli.cli.root import Opt, command

# (label, key path in the metrics summary, unit/hint) for the plain-text output
_LINES = (
    ("identity to source", ("id_source",), "ArcFace cosine, higher is better"),
    ("identity to target", ("id_target",), "lower is better"),
    ("identity margin", ("id_margin",), "source - target"),
    ("retrieval top-1", ("retrieval", "top1"), "share of faces whose nearest identity is the source"),
    ("retrieval mean rank", ("retrieval", "mean_rank"), "1 is best"),
    ("pose error yaw", ("pose_error", "yaw"), "degrees"),
    ("pose error pitch", ("pose_error", "pitch"), "degrees"),
    ("pose error roll", ("pose_error", "roll"), "degrees"),
    ("expression error", ("expression_error",), "inter-ocular distances"),
    ("eye error", ("eye_error",), "inter-ocular distances"),
    ("result face found", ("result_face_rate",), "share of sampled frames"),
    ("jitter result", ("jitter", "result"), "% of face size"),
    ("jitter target", ("jitter", "target"), "% of face size"),
    ("jitter excess", ("jitter", "excess"), "result - target"),
    ("flicker result", ("flicker", "result"), "0-255 levels"),
    ("flicker target", ("flicker", "target"), "0-255 levels"),
    ("flicker excess", ("flicker", "excess"), "result - target"),
)


def _lookup(metrics: dict, path: tuple[str, ...]):
    value: object = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def format_text(metrics: dict) -> str:
    lines = []
    for label, path, hint in _LINES:
        value = _lookup(metrics, path)
        if value is None:
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{label:<22}{shown:>10}   {hint}")
    return "\n".join(lines)


@command("eval")
def evaluate(
    sources: List[Path] = typer.Option(..., "--source", "-s", help="Photo of the source person (repeatable: the identity is the mean over the photos)."),
    target: Path = typer.Option(..., "--target", "-t", help="The target photo or video that was swapped."),
    result: Path = typer.Option(..., "--result", "-r", help="The swap result (same kind and size as TARGET)."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Folder of other people's photos for ID retrieval (one identity per photo, or per sub-folder)."),
    frames: int = typer.Option(32, "--frames", min=1, max=10000, help="Videos: evenly spaced frames to evaluate (all when the video is shorter)."),
    faces: str = typer.Option("largest", "--faces", help="Which target faces to evaluate: largest, all, or N (0 = leftmost), as given to the swap."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report (source | target | result crops with the numbers)."),
    device: str = Opt.device,
    weights_dir: Optional[Path] = Opt.weights_dir,
    det_size: int = Opt.det_size(640),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --report file if it exists."),
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Measure a swap: identity (to source, to target, retrieval), pose, expression and eye
    errors against the target, and for videos landmark jitter and flicker. See docs/metrics.md."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        import contextlib

        from swapcli.analyse.insight import AnalyserOptions
        from swapcli.cli.common import emit_json, log, progress_bar
        from swapcli.evaluate.inputs import Analyser
        from swapcli.evaluate.run import evaluate as run_eval

        analyser = Analyser(AnalyserOptions(device=device, weights_dir=str(weights_dir) if weights_dir else None,
                                            det_size=det_size))
        with contextlib.ExitStack() as stack:
            bar: list = []

            def advance(done: int, total: int | None) -> None:  # videos only: the bar starts on first use
                if not bar:
                    bar.append(stack.enter_context(progress_bar(quiet or json_out, "evaluating")))
                bar[0](done, total)

            payload = run_eval(sources, target, result, gallery=gallery, faces=faces, frames=frames, report=report,
                               overwrite=overwrite, analyser=analyser, progress=advance)
        for note in payload["notes"]:
            log.warning(note)
        log.info("evaluated %s in %.1f s", result, payload["total_ms"] / 1000)
        if json_out:
            emit_json(payload)
        else:
            typer.echo(format_text(payload["metrics"]))
            if report is not None:
                typer.echo(f"report: {report}")
