"""The Typer app, its root callback and the options every command shares.

Command modules import `app` and `Opt` from here and register themselves;
cli/app.py imports them all. Nothing heavy is imported at module level, so
`swapcli --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from swapcli import __version__
from swapcli.core.options import DEFAULT_MIN_SHARE

app = typer.Typer(
    name="swapcli",
    help=(
        "Face swapping for images, videos and folders.\n\n"
        "Exit codes: 0 success, 1 other failure, 2 bad usage or unreadable input, "
        "3 no face found, 4 model missing or failing verification, 5 file not marked (verify), 130 interrupted."
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
    min_face_share = typer.Option(DEFAULT_MIN_SHARE, "--min-face-share", min=0.0, max=1.0, help="With --faces all or N, leave alone faces under this share of the largest face (and tiny background faces); 0 = swap every face found.")
    sources = typer.Option(None, "--source", "-s", help="Another photo of the same source person (repeatable); the engine uses them as it can.")
    engine = typer.Option("auto", "--engine", help="Swap engine: auto (best installed), morph (embedded, no downloads), inswapper, ghost, hyperswap, ghost_onnx, simswap, blendswap, uniface (see `swapcli models list`).")
    model = typer.Option(None, "--model", help="Your own generator file for --engine (loaded unverified; said so).")
    embedder_model = typer.Option(None, "--embedder-model", help="Your own identity-embedder file for --engine (loaded unverified).")
    mix = typer.Option(None, "--mix", min=0.0, max=1.0, help="Blend identities: 0 = the first --source photo's, 1 = the other photos' (slerp of embeddings; embedding engines only).")
    enhance = typer.Option(None, "--enhance", help="Restore the swapped face before paste-back: gfpgan, codeformer, gpen256 or gpen512 (downloaded models).")
    enhance_blend = typer.Option(0.8, "--enhance-blend", min=0.0, max=1.0, help="Share of the restored face in the result (with --enhance).")
    no_mark = typer.Option(False, "--no-mark", help="Do not mark the output as AI-generated (metadata and invisible watermark). Disclosure is then your duty (EU AI Act Art. 50).")
    visible_label = typer.Option(None, "--visible-label", help="Also draw this small visible label on the output (e.g. 'AI-generated').")
    device = typer.Option("auto", "--device", help=(
        "auto, cpu, cuda, cuda:N, tensorrt or tensorrt:N (cuda/tensorrt fail loudly when unavailable). "
        "A comma list splits the work across devices on this machine, one worker process each: "
        "cuda:0,1 (= cuda:0,cuda:1), tensorrt:0,1, or cpu,cpu. video: the frames in contiguous parts "
        "(face tracks restart at each part), batch: the files across the workers."))
    paste = typer.Option("auto", "--paste", help="Where faces are pasted back: cv2 on the CPU, torch on the model's device (auto: torch when the engine runs on CUDA).")
    batch_frames = typer.Option(8, "--batch", min=1, help="Frames per batch: faces of N frames are generated in one model call (GPU throughput); 1 = frame by frame.")
    codec = typer.Option("auto", "--codec", help="auto (h264_nvenc when an NVIDIA GPU and driver can encode, else libx264), libx264, libx265, h264_nvenc, hevc_nvenc")
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


def engine_options(engine: str, device: str, weights_dir: Path | None, det_size: int, *,
                   model: Path | None = None, embedder_model: Path | None = None, mix: float | None = None,
                   enhance: str | None = None, enhance_blend: float = 0.8, paste: str = "auto"):
    from swapcli.core.errors import UsageError
    from swapcli.core.options import EngineOptions

    if paste not in PASTE_MODES:
        raise UsageError(f"--paste '{paste}': choose from {', '.join(PASTE_MODES)}")
    if "," in device:
        raise UsageError(f"--device {device}: a device list splits video and batch work; give one device here")
    return EngineOptions(engine=engine, device=device, weights_dir=str(weights_dir) if weights_dir else None,
                         det_size=det_size, model=str(model) if model else None,
                         embedder_model=str(embedder_model) if embedder_model else None, mix=mix,
                         enhance=enhance, enhance_blend=enhance_blend, paste=paste)


PASTE_MODES = ("auto", "cv2", "torch")


def parse_map(text: str) -> tuple[Path, Path]:
    from swapcli.core.errors import UsageError

    src, sep, ref = text.partition("=")
    if not sep or not src or not ref:
        raise UsageError(f"--map takes SRC.jpg=REF.jpg, not '{text}'")
    return Path(src), Path(ref)
