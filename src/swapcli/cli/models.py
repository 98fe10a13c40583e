"""swapcli models: list, download, verify, pin and locate model files.

stdout carries results only (paths, tables, JSON); logs, licences and
progress bars go to stderr. Nothing heavy is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from swapcli.cli.root import Opt, app
from swapcli.cli.usage import Command

models_app = typer.Typer(
    help=(
        "List, download, verify and pin model files.\n\n"
        "Files are looked for in --weights-dir, $SWAPCLI_WEIGHTS, ./weights, the user cache "
        "(~/.cache/swapcli) and the package that ships them; each must match its registry SHA-256 "
        "or the hash pinned on first download. See weights/README.md."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(models_app, name="models", help="List, download, verify and pin model files (exit 4: missing or failing verification).")

def model_status(spec, weights_dir: str | None, *, use_cache: bool = True) -> dict:
    """One model's install state, as `models list --json` reports it."""
    from swapcli.core.errors import ModelError
    from swapcli.models.locate import expected_for, find_file, verify
    from swapcli.models.registry import commercial_use_ok

    expected = expected_for(spec)
    row = {
        "name": spec.name, "kind": spec.kind, "engine": spec.engine, "format": spec.format, "filename": spec.filename,
        "installed": False, "status": "missing", "path": None, "origin": None,
        "size": expected.size if expected else spec.size, "hash": expected.sha256 if expected else None,
        "trust": expected.trust if expected else None, "hash_source": _hash_source(spec, expected),
        "licence": spec.licence, "commercial_use": commercial_use_ok(spec), "downloadable": bool(spec.urls),
    }
    found = find_file(spec.name, weights_dir)
    if found is None:
        return row
    origin, path = found
    row.update(path=str(path), origin=origin)
    try:
        row["size"] = path.stat().st_size
        verify(spec, path, use_cache=use_cache)
        row.update(installed=True, status="verified")
    except ModelError as exc:
        row.update(status="unpinned" if expected is None else "mismatch", error=str(exc))
    except OSError as exc:
        row.update(status="mismatch", error=f"cannot read {path}: {exc.strerror or exc}")
    return row


def _hash_source(spec, expected) -> str | None:
    """Where the SHA-256 a file must match comes from, so that it can be checked."""
    if expected is None:
        return None
    if expected.trust == "registry":
        return spec.hash_source or "the registry"
    return f"pinned on first use ({expected.where.removeprefix('the pin in ')})"


def _human(size: int | None) -> str:
    if not size:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"


def _resolve(names: List[str], with_deps: bool):
    """Registry specs for NAME... (dependencies after their users), or one UsageError line."""
    import difflib

    from swapcli.core.errors import UsageError
    from swapcli.models.registry import MODELS

    unknown = [n for n in names if n not in MODELS]
    if unknown:
        hints = difflib.get_close_matches(unknown[0], list(MODELS), n=3)
        hint = f"; did you mean {', '.join(hints)}?" if hints else "; see `swapcli models list`"
        raise UsageError(f"unknown model(s): {', '.join(unknown)}{hint}")
    ordered: list = []
    for name in names:
        spec = MODELS[name]
        for dep in (spec.name, *((spec.embedder, spec.converter) if with_deps else ())):
            if dep and dep in MODELS and MODELS[dep] not in ordered:
                ordered.append(MODELS[dep])
    return ordered


@models_app.command("list", cls=Command)
def list_models(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind: detector, landmarks, embedder, converter, generator, enhancer, occluder or parser."),
    weights_dir: Optional[Path] = Opt.weights_dir,
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Show every known model: kind, engine, installed or not (and where), size, licence."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        from swapcli.cli.common import emit_json
        from swapcli.core.errors import UsageError
        from swapcli.models.registry import MODELS

        kinds = sorted({s.kind for s in MODELS.values()})
        if kind is not None and kind not in kinds:
            raise UsageError(f"--kind must be one of {', '.join(kinds)}, not '{kind}'")
        rows = [model_status(s, str(weights_dir) if weights_dir else None) for s in MODELS.values() if kind in (None, s.kind)]
        if json_out:
            emit_json({"ok": True, "models": rows})
            return
        header = ("MODEL", "KIND", "ENGINE", "STATUS", "SIZE", "LICENCE", "WHERE")
        lines = [header] + [
            (row["name"], row["kind"], row["engine"] or "-",
             row["status"] + (f" ({row['trust']})" if row["status"] == "verified" else ""), _human(row["size"]),
             row["licence"].split(" (")[0], row["path"] or ("(downloadable)" if row["downloadable"] else "-"))
            for row in rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        for line in lines:
            typer.echo("  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]))


def _consent(pending: list, names: List[str], *, yes: bool, trust_unpinned: bool) -> bool:
    """Ask once per consent the downloads need (licence; trust on first use, dependencies
    included), or refuse in one line without a terminal. Returns whether unpinned files
    may be pinned on first use. Offline nothing is asked: the download's own failure
    (exit 4) is the answer, not a question that could not change it (exit 2)."""
    import sys

    from swapcli.core.errors import ModelError, UsageError
    from swapcli.models.download import unreachable
    from swapcli.models.locate import expected_for
    from swapcli.models.registry import commercial_use_ok

    restricted = [] if yes else [s.name for s in pending if not commercial_use_ok(s)]
    unpinned = [] if trust_unpinned else [s for s in pending if expected_for(s) is None]
    if not (restricted or unpinned):
        return trust_unpinned
    problem = unreachable(pending)
    if problem:
        raise ModelError(problem)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(_consent_needed(restricted, unpinned, names))
    if restricted and not typer.confirm(f"The licence of {', '.join(restricted)} does not clear commercial use. "
                                        f"Accept it and download?", default=False, err=True):
        raise UsageError("licence not accepted; nothing downloaded")
    if unpinned:
        _confirm_trust(unpinned, names)
        return True
    return trust_unpinned


def _consent_needed(restricted: list[str], unpinned: list, names: List[str]) -> str:
    """One line naming every consent a non-interactive run lacks, and the flag that gives it."""
    parts = []
    if unpinned:
        deps = " (some are dependencies: --no-deps skips those)" if {s.name for s in unpinned} - set(names) else ""
        parts.append(f"{', '.join(s.name for s in unpinned)}: no published SHA-256; pass --trust-unpinned to download "
                     f"and pin the hash of what you get (trust on first use){deps}")
    if restricted:
        parts.append(f"{', '.join(restricted)}: licence not cleared for commercial use; pass --yes to accept it")
    return "; ".join(parts) + " (no prompt in non-interactive use)"


def _confirm_trust(unpinned: list, names: List[str]) -> None:
    """One question for every file without a published SHA-256 (dependencies included)."""
    from swapcli.core.errors import UsageError

    files = ", ".join(f"{s.name} ({s.filename}{'' if s.name in names else ', a dependency'})" for s in unpinned)
    if not typer.confirm(f"No published SHA-256 exists for: {files}. Download, and pin the SHA-256 of what you get "
                         f"(trust on first use)?", default=False, err=True):
        raise UsageError("unpinned files not trusted; nothing downloaded (--no-deps skips dependencies)")


@models_app.command("download", cls=Command)
def download_models(
    names: List[str] = typer.Argument(..., metavar="NAME", help="Registry names (see `swapcli models list`)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Download into this folder (default: the user cache, ~/.cache/swapcli)."),
    trust_unpinned: bool = typer.Option(False, "--trust-unpinned", help="Get files with no published SHA-256 (dependencies too) without asking; pin the hash of what is downloaded (trust on first use)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept non-commercial / unknown model licences without asking."),
    deps: bool = typer.Option(True, "--deps/--no-deps", help="Also get the embedder and converter each model needs."),
    force: bool = typer.Option(False, "--force", help="Download again even when a verified copy is installed."),
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Download models, verified by SHA-256 before use; resumes an interrupted download."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        from swapcli.cli.common import emit_json, log
        from swapcli.core.errors import ModelError
        from swapcli.models.download import describe_licence, download
        from swapcli.models.locate import is_installed

        wdir = str(weights_dir) if weights_dir else None
        specs = _resolve(names, deps)
        pending = [s for s in specs if force or is_installed(s.name, wdir) is None]
        for spec in specs:
            if spec not in pending:
                log.info("%s is installed and verified", spec.name)
        for spec in pending:
            log.warning(describe_licence(spec))
        trust_unpinned = _consent(pending, names, yes=yes, trust_unpinned=trust_unpinned)
        results, failures, first_error = [], [], ""
        for spec in specs:
            try:
                result = download(spec.name, wdir, trust_unpinned=trust_unpinned, progress=not quiet, force=force)
            except ModelError as exc:
                if len(specs) == 1:
                    raise
                log.error("%s", exc)
                failures.append(spec.name)
                first_error = first_error or str(exc)
                continue
            results.append(result)
            if not json_out:
                typer.echo(str(result.path))
        if json_out:
            emit_json({"ok": not failures, "models": [r.to_json() for r in results], "failed": failures})
        if failures:
            from swapcli.cli.common import fail
            from swapcli.core.errors import EXIT_MODEL

            fail(f"{len(failures)} of {len(specs)} downloads failed ({', '.join(failures)}); first: {first_error}", EXIT_MODEL)


@models_app.command("verify", cls=Command)
def verify_models(
    names: Optional[List[str]] = typer.Argument(None, metavar="NAME", help="Models to check (default: every installed one)."),
    weights_dir: Optional[Path] = Opt.weights_dir,
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Re-hash installed model files (ignoring the verification cache); exit 4 if any fails."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        from swapcli.cli.common import emit_json, fail, log
        from swapcli.core.errors import EXIT_MODEL
        from swapcli.models.registry import MODELS

        wdir = str(weights_dir) if weights_dir else None
        specs = _resolve(list(names), False) if names else list(MODELS.values())
        rows = [model_status(s, wdir, use_cache=False) for s in specs]
        if not names:
            rows = [r for r in rows if r["status"] != "missing"]
            if not rows:
                log.warning("no model files found")
        bad = [r for r in rows if r["status"] != "verified"]
        if json_out:
            emit_json({"ok": not bad, "models": rows})
        else:
            for row in rows:
                mark = "OK" if row["status"] == "verified" else row["status"].upper()
                typer.echo(f"{mark:9} {row['name']:24} {row['path'] or '-'}")
        for row in bad:
            if row.get("error"):
                log.error("%s", row["error"])
        if bad:
            fail(f"{len(bad)} model(s) failed verification: {', '.join(r['name'] for r in bad)}", EXIT_MODEL)


@models_app.command("path", cls=Command)
def model_path(
    name: str = typer.Argument(..., help="Registry name."),
    weights_dir: Optional[Path] = Opt.weights_dir,
    debug: bool = Opt.debug,
) -> None:
    """Print the path of the installed, verified file (exit 4 when missing or failing)."""
    from swapcli.cli.common import running

    with running(False, debug):
        from swapcli.models.locate import locate

        typer.echo(str(locate(name, str(weights_dir) if weights_dir else None).path))


@models_app.command("pin", cls=Command)
def pin_model(
    name: str = typer.Argument(..., help="Registry name of a model with no published SHA-256."),
    weights_dir: Optional[Path] = Opt.weights_dir,
    replace: bool = typer.Option(False, "--replace", help="Replace an existing pin with this file's hash."),
    json_out: bool = Opt.json_out,
    quiet: bool = Opt.quiet,
    debug: bool = Opt.debug,
) -> None:
    """Trust the copy of an unpinned model found on disk: record its SHA-256 (trust on first use)."""
    from swapcli.cli.common import running

    with running(quiet, debug, json_out):
        from swapcli.cli.common import emit_json, log
        from swapcli.core.errors import ModelError, UsageError
        from swapcli.models import locate as loc

        spec = _resolve([name], False)[0]
        if spec.sha256:
            raise UsageError(f"'{name}' has a published SHA-256 in the registry; there is nothing to pin")
        found = loc.find_file(name, str(weights_dir) if weights_dir else None)
        if found is None:
            raise ModelError(f"no file of '{name}' ({spec.filename}) found; `swapcli models download {name} --trust-unpinned` gets and pins it")
        path = found[1]
        sha = loc.sha256_file(path)
        size = path.stat().st_size
        pin = loc.get_pin(name)
        if pin is not None and (pin["sha256"], pin.get("size")) != (sha, size) and not replace:
            raise ModelError(f"{path} differs from the hash pinned for '{name}'; pass --replace to pin this copy instead")
        if pin is None or replace:
            pin_file = loc.save_pin(spec, sha, size, path=path)
            log.warning("PINNED '%s': sha256 %s, %d bytes, file %s (recorded in %s). No published hash exists for it: "
                        "compare this hash with a source you trust.", name, sha, size, path, pin_file)
        else:
            log.info("'%s' is already pinned to this file's hash", name)
        loc.record_verified(path, sha)
        if json_out:
            emit_json({"ok": True, "name": name, "path": str(path), "sha256": sha, "size": size})
        else:
            typer.echo(str(path))
