"""swapcli verify: is a file marked as AI-generated (metadata and/or invisible watermark)?"""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from swapcli.cli.root import Opt, command


@command()
def verify(
    files: List[Path] = typer.Argument(..., metavar="FILE", help="Images or videos to check."),
    samples: int = typer.Option(6, "--samples", min=1, max=64, help="Video frames to sample (spread over the video)."),
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Check FILEs for the AI-generated marks (metadata and invisible watermark).

    Reports per file the metadata mark (IPTC DigitalSourceType in XMP, or
    video container tags) and the invisible watermark with its confidence
    (payload bits decoded of 48, correlation score; videos: frames sampled).
    A file counts as marked when either is present.

    Exit codes: 0 every file is marked, 5 at least one is not, 2 a file could not be read.
    """
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        from swapcli.cli.common import emit_json, fail, log
        from swapcli.core.errors import EXIT_OK, EXIT_UNMARKED
        from swapcli.mark.verify import verify_file

        reports = []
        for path in files:
            report = verify_file(path, samples)
            reports.append(report)
            if not json_out:
                typer.echo(report.summary())
        errors = [r for r in reports if r.error]
        unmarked = [r for r in reports if not r.error and not r.marked]
        code = errors[0].exit_code if errors else EXIT_UNMARKED if unmarked else EXIT_OK
        if json_out:
            emit_json({"ok": code == EXIT_OK, "all_marked": not errors and not unmarked,
                       "files": [r.to_json() for r in reports], "exit_code": code})
        if errors:
            first = errors[0].error or "unreadable"
            fail(first if len(errors) == 1 else f"{len(errors)} files could not be read; first: {first}", code)
        if unmarked:
            log.warning("%d of %d file(s) carry no AI-generated mark", len(unmarked), len(reports))
            raise SystemExit(EXIT_UNMARKED)
