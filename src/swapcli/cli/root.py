"""The Typer app, its root callback and the options every command shares.

Command modules import `app` and `Opt` from here and register themselves;
cli/app.py imports them all. Nothing heavy is imported at module level, so
`swapcli --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from swapcli import __version__

app = typer.Typer(
    name="swapcli",
    help=(
        "Face swapping for images, videos and folders.\n\n"
        "Exit codes: 0 success, 1 other failure, 2 bad usage or unreadable input, "
        "3 no face found, 4 model missing or failing verification, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swapcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """swapcli: face swapping for images, videos and folders."""


# Options shared by the swapping commands, declared once.
class Opt:
    faces = typer.Option("largest", "--faces", help="Which target faces to swap: 'largest', 'all', or an index N (0 = leftmost face).")
    reference = typer.Option(None, "--reference", help="Swap only target faces whose identity matches the face in this photo.", exists=False)
    threshold = typer.Option(0.30, "--threshold", min=-1.0, max=1.0, help="Identity similarity (ArcFace cosine) a face needs to match --reference.")
    min_face = typer.Option(0.0, "--min-face-size", min=0.0, help="Ignore detected faces smaller than this many pixels.")
    sources = typer.Option(None, "--source", "-s", help="Another photo of the same source person (repeatable); the engine uses them as it can.")
    engine = typer.Option("auto", "--engine", help="Swap engine: auto, morph (embedded, no downloads).")
    device = typer.Option("auto", "--device", help="auto, cpu or cuda (cuda fails loudly when unavailable).")
    weights_dir = typer.Option(None, "--weights-dir", help="Folder to look in first for model files (also $SWAPCLI_WEIGHTS).")
    overwrite = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists (inputs are never overwritten).")
    json_out = typer.Option(False, "--json", help="Print one JSON result object on stdout.")
    quiet = typer.Option(False, "--quiet", "-q", help="Only errors on stderr.")
    debug = typer.Option(False, "--debug", help="Show tracebacks and debug logs (for bug reports).")

    @staticmethod
    def det_size(default: int):
        return typer.Option(default, "--det-size", min=160, max=1280, help="Face-detector input size in pixels (smaller is faster but misses small faces).")


def default_output(target: Path, suffix: str | None = None) -> Path:
    return target.with_name(f"{target.stem}_swapped{suffix or target.suffix}")


def engine_options(engine: str, device: str, weights_dir: Path | None, det_size: int):
    from swapcli.core.options import EngineOptions

    return EngineOptions(engine=engine, device=device, weights_dir=str(weights_dir) if weights_dir else None,
                         det_size=det_size)


def parse_map(text: str) -> tuple[Path, Path]:
    from swapcli.core.errors import UsageError

    src, sep, ref = text.partition("=")
    if not sep or not src or not ref:
        raise UsageError(f"--map takes SRC.jpg=REF.jpg, not '{text}'")
    return Path(src), Path(ref)
