"""The Typer app, its root callback, the options every command shares and the one
command wrapper of the swapping commands.

Command modules import `app`, `Opt` and `swap_command` from here and register
themselves; cli/app.py imports them all. Nothing heavy is imported at module
level, so `swapcli --help` stays instant.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from swapcli import __version__
from swapcli.cli.usage import Command, Group
from swapcli.core.options import DEFAULT_MIN_SHARE

app = typer.Typer(
    name="swapcli",
    cls=Group,
    help=(
        "Face swapping for images, videos and folders.\n\n"
        "Exit codes: 0 success, 1 other failure, 2 bad usage or unreadable input, "
        "3 no face found, 4 model missing or failing verification, 5 file not marked (verify), "
        "6 cluster unreachable (--cluster), 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def command(*args: Any, **kwargs: Any):
    """`app.command` with Click-style usage and types (cli/usage.py)."""
    return app.command(*args, cls=Command, **kwargs)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swapcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """swapcli: face swapping for images, videos and folders."""


IO, SELECT, ENGINE, VIDEO, MARK, PERF = ("Input and output", "Face selection", "Engine", "Video encoding",
                                         "Marking", "Performance")
MASKS = "Masks"


def _multiple_of_32(value: int) -> int:
    """The detector's strides (8, 16, 32) need a side that 32 divides."""
    if value % 32:
        raise typer.BadParameter(f"must be a multiple of 32 (got {value}; try {max(160, round(value / 32) * 32)})")
    return value


def _face_order(value: str) -> str:
    """--face-order checked at parse time: a typo is one usage line, not a run that swaps the wrong face."""
    from swapcli.core.errors import UsageError
    from swapcli.select.faces import FACE_ORDERS, parse_face_order

    try:
        return parse_face_order(value)
    except UsageError:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(FACE_ORDERS)}") from None


# Options shared by the commands, declared once (help: one line each; the README explains more).
class Opt:
    sources = typer.Option(None, "--source", "-s", rich_help_panel=IO, help="Another photo of the same source person (repeatable).")
    overwrite = typer.Option(False, "--overwrite", rich_help_panel=IO, help="Replace existing outputs (batch: also redo inputs done before); inputs are never overwritten.")
    json_out = typer.Option(False, "--json", rich_help_panel=IO, help="Print one JSON result object on stdout.")
    quiet = typer.Option(False, "--quiet", "-q", rich_help_panel=IO, help="Only errors on stderr.")
    debug = typer.Option(False, "--debug", rich_help_panel=IO, help="Show tracebacks and debug logs (for bug reports).")
    quality = typer.Option(95, "--quality", min=1, max=100, rich_help_panel=IO, help="JPEG/WebP quality of image outputs.")
    faces = typer.Option("largest", "--faces", rich_help_panel=SELECT, help="Target faces to swap: largest, all, or an index N (0 = first in --face-order).")
    reference = typer.Option(None, "--reference", rich_help_panel=SELECT, help="Swap only target faces that match the person in this photo.")
    threshold = typer.Option(0.30, "--threshold", min=-1.0, max=1.0, rich_help_panel=SELECT, help="Identity similarity a face needs to match --reference.")
    min_face = typer.Option(0.0, "--min-face-size", min=0.0, rich_help_panel=SELECT, help="Ignore faces smaller than this many pixels.")
    min_face_share = typer.Option(DEFAULT_MIN_SHARE, "--min-face-share", min=0.0, max=1.0, rich_help_panel=SELECT, help="With --faces all|N, skip faces under this share of the largest (0 = none).")
    face_order = typer.Option("left-right", "--face-order", callback=_face_order, rich_help_panel=SELECT, help="How --faces N counts: left-right, top-bottom, small-large, best-worst (score), or reversed.")
    engine = typer.Option("auto", "--engine", rich_help_panel=ENGINE, help="auto, morph (embedded), inswapper, ghost, hyperswap, simswap, ... (`swapcli models list`).")
    model = typer.Option(None, "--model", rich_help_panel=ENGINE, help="Your own generator file for --engine (loaded unverified).")
    embedder_model = typer.Option(None, "--embedder-model", rich_help_panel=ENGINE, help="Your own identity-embedder file (loaded unverified).")
    mix = typer.Option(None, "--mix", min=0.0, max=1.0, rich_help_panel=ENGINE, help="Blend identities: 0 = the first source photo, 1 = the others.")
    enhance = typer.Option(None, "--enhance", rich_help_panel=ENGINE, help="Restore the swapped face: gfpgan, codeformer, gpen256 or gpen512.")
    enhance_blend = typer.Option(0.8, "--enhance-blend", min=0.0, max=1.0, rich_help_panel=ENGINE, help="Share of the restored face in the result (with --enhance).")
    pixel_boost = typer.Option(None, "--pixel-boost", metavar="PX", rich_help_panel=ENGINE, help="128, 256, 384 or 512: generate 128-px models' faces at this size (sharper large faces).")
    weights_dir = typer.Option(None, "--weights-dir", rich_help_panel=ENGINE, help="Folder to look in first for model files (also $SWAPCLI_WEIGHTS).")
    no_mark = typer.Option(False, "--no-mark", rich_help_panel=MARK, help="Do not mark the output as AI-generated (disclosure is then your duty).")
    visible_label = typer.Option(None, "--visible-label", rich_help_panel=MARK, help="Also draw this small visible label, e.g. 'AI-generated'.")
    device = typer.Option("auto", "--device", rich_help_panel=PERF, help="auto, cpu, cuda[:N], tensorrt[:N]; a list (cuda:0,1) splits the work.")
    mask = typer.Option(None, "--mask", metavar="TYPE", rich_help_panel=MASKS, help="box, occlusion, region, area, ghost (repeatable): pastes where all agree. Default: ghost,occlusion.")
    mask_regions = typer.Option(None, "--mask-regions", metavar="LIST", rich_help_panel=MASKS, help="Parser classes the region mask keeps: skin,nose,mouth,... (default: all face classes).")
    mask_areas = typer.Option(None, "--mask-areas", metavar="LIST", rich_help_panel=MASKS, help="Landmark areas kept by the area mask: upper-face,lower-face,mouth (default: all).")
    mouth_mask = typer.Option(False, "--mouth-mask", rich_help_panel=MASKS, help="Keep the target's own mouth (feathered).")
    occluder_model = typer.Option(None, "--occluder-model", metavar="NAME|PATH", rich_help_panel=MASKS, help="Occluder for --mask occlusion: xseg_1, xseg_2, xseg_3, many, or your own file (unverified).")
    parser_model = typer.Option(None, "--parser-model", metavar="NAME|PATH", rich_help_panel=MASKS, help="Parser for --mask region: bisenet_resnet_34, bisenet_resnet_18, or your own file (unverified).")
    paste = typer.Option("auto", "--paste", rich_help_panel=PERF, help="Paste back with cv2 (CPU) or torch (model's device); auto picks.")
    batch_frames = typer.Option(8, "--batch", min=1, rich_help_panel=PERF, help="Frames whose faces are generated in one model call.")
    detect_every = typer.Option(None, "--detect-every", min=1, rich_help_panel=PERF, help="Search whole frames for faces every N frames (default 8 on CPU, 1 on GPU).")
    crf = typer.Option(18, "--crf", min=0, max=51, rich_help_panel=VIDEO, help="Video constant rate factor (lower = better; 18 looks lossless).")
    preset = typer.Option("veryfast", "--preset", rich_help_panel=VIDEO, help="Encoder speed preset (ultrafast ... veryslow).")
    codec = typer.Option("auto", "--codec", rich_help_panel=VIDEO, help="auto, libx264, libx265, h264_nvenc, hevc_nvenc.")

    @staticmethod
    def det_size(default: int):
        return typer.Option(default, "--det-size", min=160, max=1280, callback=_multiple_of_32, rich_help_panel=PERF, help="Face-detector input size in px (multiple of 32; smaller is faster).")


@dataclass(frozen=True)
class SwapFlags:
    """The options image, video and batch share, parsed once; commands build their typed
    options from here, so an option added once means the same everywhere."""

    sources: List[Path]
    faces: str
    reference: Optional[Path]
    threshold: float
    min_face_size: float
    min_face_share: float
    face_order: str
    engine: str
    model: Optional[Path]
    embedder_model: Optional[Path]
    mix: Optional[float]
    enhance: Optional[str]
    enhance_blend: float
    pixel_boost: Optional[int]
    weights_dir: Optional[Path]
    no_mark: bool
    visible_label: Optional[str]
    device: str
    paste: str
    det_size: int
    overwrite: bool
    json_out: bool
    quiet: bool
    debug: bool
    quality: int
    batch_frames: int
    detect_every: Optional[int]
    crf: int
    preset: str
    codec: str
    mask: Optional[List[str]] = None
    mask_regions: Optional[str] = None
    mask_areas: Optional[str] = None
    mouth_mask: bool = False
    occluder_model: Optional[str] = None
    parser_model: Optional[str] = None

    def engine_options(self, device: str | None = None):
        return engine_options(self.engine, device or self.device, self.weights_dir, self.det_size, model=self.model,
                              embedder_model=self.embedder_model, mix=self.mix, enhance=self.enhance,
                              enhance_blend=self.enhance_blend, paste=self.paste,
                              pixel_boost=self.pixel_boost, masks=tuple(self.mask or ()),
                              mask_regions=self.mask_regions, mask_areas=self.mask_areas, mouth_mask=self.mouth_mask,
                              occluder_model=self.occluder_model, parser_model=self.parser_model)

    def select_options(self):
        from swapcli.core.options import SelectOptions

        return SelectOptions(faces=self.faces, reference=self.reference, threshold=self.threshold,
                             min_size=self.min_face_size, min_share=self.min_face_share,
                             face_order=self.face_order)

    def output_options(self):
        from swapcli.core.options import OutputOptions

        return OutputOptions(overwrite=self.overwrite, quality=self.quality, mark=not self.no_mark,
                             visible_label=self.visible_label)


# (flag, type, option) in --help order; "video" flags only on the commands that write video
_SHARED = [
    ("sources", Optional[List[Path]], Opt.sources), ("overwrite", bool, Opt.overwrite), ("json_out", bool, Opt.json_out),
    ("quiet", bool, Opt.quiet), ("debug", bool, Opt.debug),
    ("faces", str, Opt.faces), ("reference", Optional[Path], Opt.reference), ("threshold", float, Opt.threshold),
    ("min_face_size", float, Opt.min_face), ("min_face_share", float, Opt.min_face_share),
    ("face_order", str, Opt.face_order),
    ("engine", str, Opt.engine), ("model", Optional[Path], Opt.model), ("embedder_model", Optional[Path], Opt.embedder_model),
    ("mix", Optional[float], Opt.mix), ("enhance", Optional[str], Opt.enhance), ("enhance_blend", float, Opt.enhance_blend),
    ("pixel_boost", Optional[int], Opt.pixel_boost),
    ("weights_dir", Optional[Path], Opt.weights_dir), ("no_mark", bool, Opt.no_mark),
    ("visible_label", Optional[str], Opt.visible_label), ("device", str, Opt.device), ("paste", str, Opt.paste),
    ("mask", Optional[List[str]], Opt.mask), ("mask_regions", Optional[str], Opt.mask_regions),
    ("mask_areas", Optional[str], Opt.mask_areas), ("mouth_mask", bool, Opt.mouth_mask),
    ("occluder_model", Optional[str], Opt.occluder_model), ("parser_model", Optional[str], Opt.parser_model),
]
_IMAGE = [("quality", int, Opt.quality)]
_VIDEO = [("batch_frames", int, Opt.batch_frames), ("detect_every", Optional[int], Opt.detect_every), ("crf", int, Opt.crf), ("preset", str, Opt.preset), ("codec", str, Opt.codec)]


def swap_command(*, det_size: int, images: bool = True, videos: bool = False, crf_alias: str | None = None,
                 **kwargs: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a swapping command `func(flags: SwapFlags, **own)`: its own parameters
    plus the shared options, logging set up, and failures turned into one-line errors with
    their exit codes (cli/common.py)."""
    crf = Opt.crf if crf_alias is None else typer.Option(18, "--crf", crf_alias, min=0, max=51, rich_help_panel=VIDEO,
                                                         help=Opt.crf.help)
    table = [*_SHARED, *(_IMAGE if images else []), *([(n, t, crf if n == "crf" else o) for n, t, o in _VIDEO] if videos else []),
             ("det_size", int, Opt.det_size(det_size))]
    defaults = {name: option.default for name, _, option in [*_SHARED, *_IMAGE, *_VIDEO]}
    defaults.update(sources=[], det_size=det_size)

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "flags"]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                  for name, kind, option in table]

        @functools.wraps(func)
        def run(**values: Any) -> None:
            from swapcli.cli.common import running

            given = {name: values.pop(name) for name, _, _ in table}
            flags = SwapFlags(**{**defaults, **{k: v for k, v in given.items() if k != "sources"},
                                 "sources": list(given["sources"] or [])})
            with running(flags.quiet, flags.debug, flags.json_out):  # SIGTERM is Ctrl-C: app.main
                func(flags, **values)

        del run.__wrapped__  # Typer reads the signature below, not func's
        run.__signature__ = inspect.Signature([*own, *shared])
        run.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
        return command(**kwargs)(run)

    return decorate


def default_output(target: Path, suffix: str | None = None) -> Path:
    return target.with_name(f"{target.stem}_swapped{suffix or target.suffix}")


def engine_options(engine: str, device: str, weights_dir: Path | None, det_size: int, *,
                   model: Path | None = None, embedder_model: Path | None = None, mix: float | None = None,
                   enhance: str | None = None, enhance_blend: float = 0.8, paste: str = "auto",
                   pixel_boost: int | None = None, masks: tuple[str, ...] = (), mask_regions: str | None = None,
                   mask_areas: str | None = None, mouth_mask: bool = False, occluder_model: str | None = None,
                   parser_model: str | None = None):
    from swapcli.core.errors import UsageError
    from swapcli.core.options import EngineOptions

    if paste not in PASTE_MODES:
        raise UsageError(f"--paste '{paste}': choose from {', '.join(PASTE_MODES)}")
    from swapcli.swap.pixel_boost import BOOSTS

    if pixel_boost is not None and pixel_boost not in BOOSTS:
        raise UsageError(f"--pixel-boost {pixel_boost}: choose from {', '.join(map(str, BOOSTS))}")
    if "," in device:
        raise UsageError(f"--device {device}: a device list splits video and batch work; give one device here")
    return EngineOptions(engine=engine, device=device, weights_dir=str(weights_dir) if weights_dir else None,
                         det_size=det_size, model=str(model) if model else None,
                         embedder_model=str(embedder_model) if embedder_model else None, mix=mix,
                         enhance=enhance, enhance_blend=enhance_blend, paste=paste, pixel_boost=pixel_boost,
                         **mask_options(masks, mask_regions, mask_areas, mouth_mask, occluder_model, parser_model))


def mask_options(masks, regions: str | None, areas: str | None, mouth: bool, occluder: str | None,
                 parser: str | None) -> dict:
    """EngineOptions' mask fields, names checked now (a typo is exit 2 before any model loads)."""
    from swapcli.blend.masks import plan_masks

    fields = {"masks": tuple(masks or ()), "mask_regions": tuple((regions or "").split(",")) if regions else (),
              "mask_areas": tuple((areas or "").split(",")) if areas else (), "mouth_mask": bool(mouth),
              "occluder_model": occluder or None, "parser_model": parser or None}
    plan_masks(fields["masks"], fields["mask_regions"], fields["mask_areas"], mouth, occluder, parser)
    return fields


PASTE_MODES = ("auto", "cv2", "torch")


def parse_map(text: str) -> tuple[Path, Path]:
    from swapcli.core.errors import UsageError

    src, sep, ref = text.partition("=")
    if not sep or not src or not ref:
        raise UsageError(f"--map takes SRC.jpg=REF.jpg, not '{text}'")
    return Path(src), Path(ref)
