"""swapcli batch: one source onto many images and videos (files, folders, globs).

The work is in pipeline/batch.py; this module is the command line: options,
the progress display and per-file status lines on stderr, output paths (or
one JSON summary) on stdout, and the exit code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from swapcli.cli.root import IO, PERF, SwapFlags, swap_command


@swap_command(det_size=640, videos=True)
def batch(
    flags: SwapFlags,
    source: Path = typer.Argument(..., metavar="SOURCE", help="Photo of the person whose identity is used."),
    inputs: Optional[List[str]] = typer.Argument(None, metavar="INPUT", help="Image/video files, folders and glob patterns ('**' with --recursive)."),
    output_dir: Path = typer.Option(..., "--output", "-o", rich_help_panel=IO, help="Output folder; outputs mirror each input folder's tree below it."),
    recursive: bool = typer.Option(False, "--recursive", "-r", rich_help_panel=IO, help="Also search subfolders of INPUT folders (and let '**' span folders)."),
    pattern: str = typer.Option("{stem}_swapped{ext}", "--pattern", rich_help_panel=IO, help="Output file name from {stem}, {ext}, {name}, {parent}."),
    files_from: Optional[str] = typer.Option(None, "--files-from", rich_help_panel=IO, help="Also read INPUTs from this file, one per line ('-' = stdin)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", rich_help_panel=IO, help="Manifest file (default OUTPUT/swapcli-manifest.jsonl)."),
    manifest_history: bool = typer.Option(False, "--manifest-history", rich_help_panel=IO, help="Keep every manifest line of every run (default: one current record per input)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", rich_help_panel=IO, help="Also retry inputs recorded with no face (failed inputs are retried on every run)."),
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=IO, help="List what would be done, without loading models."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, max=64, rich_help_panel=PERF, help="Worker processes, each loading the models once (0 = auto)."),
    shard: Optional[str] = typer.Option(None, "--shard", rich_help_panel=PERF, help="K/N: process only the K-th of N stable shards of the inputs."),
    cluster: Optional[str] = typer.Option(None, "--cluster", metavar="ADDR", rich_help_panel=PERF, help="Run on a Ray cluster: auto, local, HOST:PORT or ray://HOST:PORT (needs swapcli[cluster])."),
    shared_fs: bool = typer.Option(False, "--shared-fs", rich_help_panel=PERF, help="With --cluster: workers read and write the paths themselves (no file transfer)."),
) -> None:
    """Swap the face in SOURCE onto every image and video in INPUT... and write them to OUTPUT.

    Re-running skips what the manifest records as done or without a face, so an
    interrupted batch resumes. Exit codes: 0 every input done or without a face,
    1 some inputs failed (listed on stderr),
    2 bad usage or unreadable SOURCE, 3 no face in SOURCE, 4 model problem,
    6 --cluster cannot be reached, 130 interrupted (Ctrl-C or SIGTERM; re-run to resume).
    """
    _batch(flags, source=source, inputs=inputs, output_dir=output_dir, recursive=recursive, pattern=pattern,
           workers=workers, files_from=files_from, shard=shard, manifest=manifest, dry_run=dry_run,
           manifest_history=manifest_history, retry_failed=retry_failed, cluster=cluster, shared_fs=shared_fs)


def _batch(flags: SwapFlags, *, source, inputs, output_dir, recursive, pattern, workers, files_from, shard, manifest,
           dry_run, manifest_history=False, retry_failed=False, cluster=None, shared_fs=False) -> None:
    import logging
    import os

    from swapcli.cli.common import emit_json, log
    from swapcli.core.errors import (
        EXIT_INTERRUPTED,
        InputError,
        OutputError,
        UsageError,
    )
    from swapcli.pipeline import batch as pb
    from swapcli.pipeline.devices import parse_devices
    from swapcli.pipeline.video import VideoOptions
    from swapcli.select.faces import parse_faces

    parse_faces(flags.faces)
    devices = parse_devices(flags.device)
    shard_kn = pb.parse_shard(shard)
    if shared_fs and cluster is None:
        raise UsageError("--shared-fs goes with --cluster")
    if cluster is not None:
        from swapcli.pipeline.cluster import parse_address

        parse_address(cluster)
        if len(devices) > 1:
            raise UsageError("--device lists split the work on one machine; with --cluster give one device "
                             "(auto, cpu, cuda or tensorrt): Ray gives each worker its GPU")
    names = list(inputs or [])
    listed = pb.read_list(files_from) if files_from else []
    if not names and not listed:
        raise UsageError("no INPUT given: name image/video files, folders or patterns (or use --files-from LIST)")
    source_paths = [source, *flags.sources]
    for photo in [*source_paths, *([flags.reference] if flags.reference else [])]:
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
    book = pb.Manifest(manifest, history=manifest_history)
    if not dry_run:
        book.compact()  # one current record per input (not while another batch writes to it)
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
        if flags.json_out:
            emit_json({"ok": True, "dry_run": dry_run, "done": 0, "no_face": 0, "skipped": 0, "failed": 0, "total": 0,
                       "files": []})
        return

    todo, skipped = [], []  # skipped: (task, record)
    for task in plan.tasks:
        if not flags.overwrite and book.is_done(task):
            skipped.append((task, pb.skip_record(task, "already_done", "already done (--overwrite redoes it)")))
        elif not retry_failed and book.had_no_face(task):
            skipped.append((task, pb.skip_record(task, "no_face", "no face found by an earlier run "
                                                                  "(--retry-failed retries it)")))
        elif not flags.overwrite and os.path.lexists(task.output):
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

        rows = ([{"input": t.shown_input, "output": t.shown_output, "kind": t.kind, "state": "todo"} for t in todo]
                + [{"input": r["input"], "output": r["output"], "kind": r["kind"], "state": r["category"]}
                   for r in (pb.for_user(r, t) for t, r in skipped)])
        if flags.json_out:
            emit_json({"ok": True, "dry_run": True, "files": rows})
        else:
            for row in rows:
                typer.echo(json.dumps(row, ensure_ascii=False))
        return

    executor = None
    if cluster is not None and todo:  # connect before any work: an unreachable cluster is one line, exit 6
        from swapcli.pipeline.cluster import connect

        executor = connect(cluster, shared_fs)
    n_workers = workers if executor is not None else workers or pb.default_workers_for(devices)
    n_workers = max(0 if executor is not None else 1, min(n_workers, len(todo) or 1))
    if len(devices) > 1 and n_workers < len(devices):
        log.warning("--device %s: %d worker(s) use only %s", flags.device, n_workers, ", ".join(devices[:n_workers]))
    settings = pb.BatchSettings(
        sources=tuple(str(p) for p in source_paths),
        # videos: their frames on threads, each model on one thread (images alone keep threaded models)
        engine=dataclasses.replace(flags.engine_options(devices[0]), stream=any(t.kind == "video" for t in todo)),
        select=flags.select_options(),
        output=flags.output_options(),
        video=VideoOptions(crf=flags.crf, preset=flags.preset, codec=flags.codec, batch=flags.batch_frames,
                           detect_every=flags.detect_every),
        reference=str(flags.reference) if flags.reference else None,
        log_level=logging.getLogger("swapcli").level,
        devices=tuple(devices) if len(devices) > 1 else (),
    )
    total = len(plan.tasks) + len(plan.unsupported)
    ui = _Display(flags.quiet, flags.json_out, total)
    summary = None
    try:
        with ui:
            for task, rec in skipped:
                if manifest_history or rec["category"] not in pb.RESTATED:  # a restated outcome adds no line
                    book.append(rec)
                ui.show_skip(task, rec)
            done_before = sum(1 for _, r in skipped if r["category"] == "already_done")
            if done_before:
                ui.note(f"{done_before} input(s) already done: skipped (--overwrite redoes them)")
            no_face_before = sum(1 for _, r in skipped if r["category"] == "no_face")
            if no_face_before:
                ui.note(f"{no_face_before} input(s) had no face in an earlier run: skipped "
                        "(--retry-failed retries them)")
            where = f" on the Ray cluster ({cluster})" if executor is not None else ""
            log.info("%d to do with %s worker(s)%s; manifest %s", len(todo), n_workers or "auto", where, manifest)
            summary = pb.run_batch(settings, todo, book, workers=n_workers, on_event=ui.event, executor=executor)
    except KeyboardInterrupt:
        done = ui.done_count
        if flags.json_out:
            emit_json({"ok": False, "interrupted": True, "exit_code": EXIT_INTERRUPTED, "done": done,
                       "output_dir": str(output_dir), "manifest": str(manifest)})
        sys_stderr(f"swapcli: interrupted after {done} output(s); run the same command again to resume\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        book.close()
        if executor is not None:
            executor.close()

    tasks = {t.input: t for t in [*plan.tasks, *plan.unsupported]}
    records = [pb.for_user(r, tasks[r["input"]]) for r in [r for _, r in skipped] + summary.records]
    failed = [r for r in records if r["status"] == "failed"]
    counts = {s: sum(1 for r in records if r["status"] == s) for s in ("done", "no_face", "skipped", "failed")}
    log.info("batch: %d done, %d without a face, %d skipped, %d failed in %.1f s with %d worker(s) (manifest: %s)",
             counts["done"], counts["no_face"], counts["skipped"], counts["failed"], summary.seconds,
             summary.workers, manifest)
    if flags.json_out:
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
    """The error (or reason) without the input path it usually starts with (the line already names the file)."""
    error = record.get("error") or record.get("reason") or ""
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
        from swapcli.pipeline.batch import RESTATED, for_user

        self._advance()
        if record["category"] in RESTATED:
            return  # summarised in one line
        record, name = for_user(record, task), task.display
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
            from swapcli.pipeline.batch import for_user

            task, record = args
            record = for_user(record, task)
            row = self.rows.pop(task.index, None)
            if row is not None:
                self.progress.remove_task(row)
            self._advance()
            if record["status"] == "done":
                self.done_count += 1
                faces = f"{record.get('faces_swapped')}/{record.get('faces_found')} face(s)" if task.kind == "image" \
                    else f"{record.get('frames_swapped')}/{record.get('frames')} frames swapped"
                self.line(f"done    {task.display} -> {record['output']}  ({faces}, {record.get('seconds', 0):.1f} s)")
                for note in record.get("notes") or []:
                    self.line(f"        note: {note}")
                if not self.json_out:
                    import sys

                    sys.stdout.write(record["output"] + "\n")
                    sys.stdout.flush()
            elif record["status"] == "no_face":
                self.line(f"no face {task.display}: {_reason(record)}")
            else:
                self.line(f"failed  {task.display}: {_reason(record)}", error=True)

