"""swapcli batch: one source onto many images and videos (files, folders, globs).

The work is in pipeline/batch.py; this module is the command line: options,
the progress display and per-file status lines on stderr, output paths (or
one JSON summary) on stdout, and the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from swapcli.cli.root import Opt, app, engine_options


@app.command()
def batch(
    source: Path = typer.Argument(..., metavar="SOURCE", help="Photo of the person whose identity is used."),
    inputs: Optional[List[str]] = typer.Argument(None, metavar="INPUT", help="Image/video files, folders and glob patterns (quoted patterns are expanded by swapcli; '**' with --recursive)."),
    output_dir: Path = typer.Option(..., "--output", "-o", help="Output folder (created if missing); outputs mirror each input folder's tree below it."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also search subfolders of INPUT folders (and let '**' in patterns span folders)."),
    pattern: str = typer.Option("{stem}_swapped{ext}", "--pattern", help="Output file name; fields {stem}, {ext} (images keep their format, videos become .mp4 unless .mov/.mkv/.m4v), {name}, {parent}."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, max=64, help="Worker processes, each loading the models once (0 = auto: 1 on a GPU or up to 7 cores, else cores/4; with a --device list at least one per device)."),
    files_from: Optional[str] = typer.Option(None, "--files-from", help="Also read INPUTs from this file, one per line ('-' = stdin); relative file paths keep their folders below OUTPUT."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: process only the K-th of N stable shards of the inputs (one machine or job each)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest file (default OUTPUT/swapcli-manifest.jsonl, or swapcli-manifest.K-of-N.jsonl with --shard)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be done (input, output, state) without loading models."),
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
    batch_frames: int = Opt.batch_frames,
    weights_dir: Optional[Path] = Opt.weights_dir,
    no_mark: bool = Opt.no_mark,
    visible_label: Optional[str] = Opt.visible_label,
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG/WebP quality for images."),
    crf: int = typer.Option(18, "--crf", min=0, max=51, help="Video constant rate factor (lower = better)."),
    preset: str = typer.Option("veryfast", "--preset", help="Video encoder speed preset."),
    codec: str = Opt.codec,
    det_size: int = Opt.det_size(640),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo inputs already done and replace existing outputs (inputs are never overwritten)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary object on stdout instead of output paths."),
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Swap the face in SOURCE onto every image and video in INPUT... and write them to OUTPUT.

    Re-running skips what the manifest records as done, so an interrupted batch
    resumes. Exit codes: 0 all done, 1 some inputs failed (listed on stderr),
    2 bad usage or unreadable SOURCE, 3 no face in SOURCE, 4 model problem,
    130 interrupted (Ctrl-C or SIGTERM; re-run to resume).
    """
    params = dict(locals())
    from swapcli.cli.common import handle_errors, setup_logging

    setup_logging(quiet, debug)
    from swapcli.core.signals import sigterm_interrupts

    sigterm_interrupts()
    with handle_errors(debug, json_out):
        _batch(**params)


def _batch(*, source, inputs, output_dir, recursive, pattern, workers, files_from, shard, manifest, dry_run,
           extra_sources, faces, reference, threshold, min_face_size, min_face_share, engine, model, embedder_model,
           mix, enhance,
           enhance_blend, device, paste, batch_frames, weights_dir, no_mark, visible_label, quality, crf, preset,
           codec, det_size, overwrite, json_out, quiet, debug) -> None:
    import logging
    import os

    from swapcli.cli.common import emit_json, log
    from swapcli.core.errors import (
        EXIT_INTERRUPTED,
        InputError,
        OutputError,
        UsageError,
    )
    from swapcli.core.options import OutputOptions, SelectOptions
    from swapcli.pipeline import batch as pb
    from swapcli.pipeline.devices import parse_devices
    from swapcli.pipeline.video import VideoOptions
    from swapcli.select.faces import parse_faces

    parse_faces(faces)
    devices = parse_devices(device)
    shard_kn = pb.parse_shard(shard)
    names = list(inputs or [])
    listed = pb.read_list(files_from) if files_from else []
    if not names and not listed:
        raise UsageError("no INPUT given: name image/video files, folders or patterns (or use --files-from LIST)")
    source_paths = [source, *(extra_sources or [])]
    for photo in [*source_paths, *([reference] if reference else [])]:
        if photo.is_dir():
            raise InputError(f"{photo}: is a directory, expected a photo")
        if not photo.exists():
            raise InputError(f"{photo}: no such file")
        if not photo.is_file():
            raise InputError(f"{photo}: not a regular file (a pipe, socket or device?)")

    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a folder")
    if not dry_run:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{output_dir}: cannot create the output folder ({exc.strerror})") from None
        if not os.access(output_dir, os.W_OK | os.X_OK):
            raise OutputError(f"{output_dir}: output folder is not writable")
    if manifest is None:
        manifest = output_dir / (pb.MANIFEST_NAME if shard_kn is None else
                                 f"swapcli-manifest.{shard_kn[0]}-of-{shard_kn[1]}.jsonl")
    book = pb.Manifest(manifest)
    if output_dir.is_dir():  # other shards' manifests: their outputs are not inputs, their work is done
        for other in sorted(output_dir.glob("swapcli-manifest*.jsonl")):
            if other.resolve() != Path(manifest).resolve():
                book.also_read(pb.Manifest(other))
    plan = pb.make_plan(names, output_dir, pattern=pattern, recursive=recursive, sources=source_paths,
                        known_outputs=book.outputs, shard=shard_kn, listed=listed)
    for note in plan.notes:
        log.warning(note)
    if book.bad_lines:
        log.warning("%s: %d unreadable line(s) ignored (cut by a crash?)", manifest, book.bad_lines)
    if not plan.found:
        raise UsageError("no input files found")
    if not plan.tasks and not plan.unsupported:  # an empty shard is not an error
        log.warning("shard %s: none of the %d input file(s) fall in this shard; nothing to do", shard, plan.found)
        if json_out:
            emit_json({"ok": True, "dry_run": dry_run, "done": 0, "skipped": 0, "failed": 0, "total": 0, "files": []})
        return

    todo, skipped = [], []  # skipped: (task, record)
    for task in plan.tasks:
        if not overwrite and book.is_done(task):
            skipped.append((task, pb.skip_record(task, "already_done", "already done (--overwrite redoes it)")))
        elif not overwrite and os.path.lexists(task.output):
            skipped.append((task, pb.skip_record(task, "exists", "output exists but is not recorded as done by "
                                                                 "this batch (--overwrite replaces it)")))
        else:
            todo.append(task)
    for task in plan.unsupported:
        why = f"unsupported file type '{Path(task.input).suffix or '(none)'}'"
        if task.explicit:  # named on the command line: a failure; found in a folder: skipped
            skipped.append((task, pb.failed_record(task, f"{task.input}: {why}", code=2, category="unsupported")))
        else:
            skipped.append((task, pb.skip_record(task, "unsupported", why)))

    if dry_run:
        import json

        rows = ([{"input": t.input, "output": t.output, "kind": t.kind, "state": "todo"} for t in todo]
                + [{"input": r["input"], "output": r["output"], "kind": r["kind"], "state": r["category"]}
                   for _, r in skipped])
        if json_out:
            emit_json({"ok": True, "dry_run": True, "files": rows})
        else:
            for row in rows:
                typer.echo(json.dumps(row, ensure_ascii=False))
        return

    n_workers = workers or pb.default_workers_for(devices)
    n_workers = max(1, min(n_workers, len(todo) or 1))
    if len(devices) > 1 and n_workers < len(devices):
        log.warning("--device %s: %d worker(s) use only %s", device, n_workers, ", ".join(devices[:n_workers]))
    settings = pb.BatchSettings(
        sources=tuple(str(p) for p in source_paths),
        engine=engine_options(engine, devices[0], weights_dir, det_size, model=model, embedder_model=embedder_model,
                              mix=mix, enhance=enhance, enhance_blend=enhance_blend, paste=paste),
        select=SelectOptions(faces=faces, reference=reference, threshold=threshold, min_size=min_face_size, min_share=min_face_share),
        output=OutputOptions(overwrite=overwrite, quality=quality, mark=not no_mark, visible_label=visible_label),
        video=VideoOptions(crf=crf, preset=preset, codec=codec, batch=batch_frames),
        reference=str(reference) if reference else None,
        log_level=logging.getLogger("swapcli").level,
        devices=tuple(devices) if len(devices) > 1 else (),
    )
    total = len(plan.tasks) + len(plan.unsupported)
    ui = _Display(quiet, json_out, total)
    summary = None
    try:
        with ui:
            for task, rec in skipped:
                book.append(rec)
                ui.show_skip(task, rec)
            done_before = sum(1 for _, r in skipped if r["category"] == "already_done")
            if done_before:
                ui.note(f"{done_before} input(s) already done: skipped (--overwrite redoes them)")
            log.info("%d to do with %d worker(s); manifest %s", len(todo), n_workers, manifest)
            summary = pb.run_batch(settings, todo, book, workers=n_workers, on_event=ui.event)
    except KeyboardInterrupt:
        done = ui.done_count
        if json_out:
            emit_json({"ok": False, "interrupted": True, "exit_code": EXIT_INTERRUPTED, "done": done,
                       "output_dir": str(output_dir), "manifest": str(manifest)})
        sys_stderr(f"swapcli: interrupted after {done} output(s); run the same command again to resume\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        book.close()

    records = [r for _, r in skipped] + summary.records
    failed = [r for r in records if r["status"] == "failed"]
    counts = {s: sum(1 for r in records if r["status"] == s) for s in ("done", "skipped", "failed")}
    log.info("batch: %d done, %d skipped, %d failed in %.1f s with %d worker(s) (manifest: %s)",
             counts["done"], counts["skipped"], counts["failed"], summary.seconds, summary.workers, manifest)
    if json_out:
        emit_json({"ok": not failed, "output_dir": str(output_dir), "manifest": str(manifest), **counts,
                   "total": len(records), "workers": summary.workers, "seconds": round(summary.seconds, 3),
                   "exit_code": 1 if failed else 0, "failed_inputs": [r["input"] for r in failed], "files": records})
    if failed:
        lines = [f"swapcli: error: {len(failed)} of {len(records)} input(s) failed:"]
        lines += [f"  {r['input']}: {_reason(r)} [{r['category']}, exit {r['exit_code']}]" for r in failed]
        sys_stderr("\n".join(lines) + "\n")
        raise SystemExit(1)


def sys_stderr(text: str) -> None:
    import sys

    sys.stderr.write(text)
    sys.stderr.flush()


def _reason(record: dict) -> str:
    """The error without the input path it usually starts with (the line already names the file)."""
    error = record.get("error") or ""
    prefix = f"{record['input']}: "
    return error[len(prefix):] if error.startswith(prefix) else error


class _Display:
    """One rich progress display on stderr: a bar for the batch, a bar per running video,
    and a status line per file printed above them. Output paths go to stdout as they are written."""

    def __init__(self, quiet: bool, json_out: bool, total: int) -> None:
        from rich.console import Console

        self.quiet, self.json_out, self.total = quiet, json_out, total
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress = None
        self.overall = None
        self.rows: dict[int, object] = {}
        self.done_count = 0
        self._handlers: list = []

    def __enter__(self) -> "_Display":
        import logging

        if not self.quiet and self.console.is_terminal:  # bars only on a terminal; logs get the lines
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                                     transient=True)
            self.progress.start()
            self.overall = self.progress.add_task("batch", total=self.total)
        for handler in logging.getLogger("swapcli").handlers:  # log lines print above the bars
            if hasattr(handler, "console"):
                self._handlers.append((handler, handler.console))
                handler.console = self.console
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
        for handler, console in self._handlers:
            handler.console = console

    def line(self, text: str, error: bool = False) -> None:
        if self.quiet and not error:
            return
        from rich.text import Text

        self.console.print(Text(text), markup=False, highlight=False)

    def note(self, text: str) -> None:
        self.line(text)

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.overall)

    def show_skip(self, task, record: dict) -> None:
        self._advance()
        if record["category"] == "already_done":
            return  # summarised in one line
        name = task.display
        if record["status"] == "failed":
            self.line(f"failed  {name}: {_reason(record)}", error=True)
        else:
            self.line(f"skipped {name}: {_reason(record)}")

    def event(self, kind: str, *args) -> None:
        import logging

        if kind == "start":
            task = args[0]
            if self.progress is not None and task.kind == "video":
                self.rows[task.index] = self.progress.add_task(f"  {task.display}", total=None)
        elif kind == "progress":
            task, done, total = args
            row = self.rows.get(task.index)
            if row is not None:
                self.progress.update(row, completed=done, total=total)
        elif kind == "log":
            level, message = args
            logging.getLogger("swapcli").log(level, message)
        elif kind == "result":
            task, record = args
            row = self.rows.pop(task.index, None)
            if row is not None:
                self.progress.remove_task(row)
            self._advance()
            if record["status"] == "done":
                self.done_count += 1
                faces = f"{record.get('faces_swapped')}/{record.get('faces_found')} face(s)" if task.kind == "image" \
                    else f"{record.get('frames_swapped')}/{record.get('frames')} frames swapped"
                self.line(f"done    {task.display} -> {task.output}  ({faces}, {record.get('seconds', 0):.1f} s)")
                for note in record.get("notes") or []:
                    self.line(f"        note: {note}")
                if not self.json_out:
                    import sys

                    sys.stdout.write(task.output + "\n")
                    sys.stdout.flush()
            else:
                self.line(f"failed  {task.display}: {_reason(record)}", error=True)

