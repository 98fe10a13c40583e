"""What an evaluation reads: the kind of each input (photo or video, by probing its
content), the source identity, and the optional gallery of other identities."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from swapcli.analyse.face import Face, cosine
from swapcli.analyse.insight import AnalyserOptions, InsightAnalyser
from swapcli.core.errors import InputError, NoFaceError, UsageError
from swapcli.core.timing import Clock
from swapcli.evaluate.metrics import mean_identity
from swapcli.read.image import IMAGE_SUFFIXES, read_image
from swapcli.read.kinds import VIDEO_SUFFIXES

log = logging.getLogger("swapcli")

SAME_PERSON = 0.5  # ArcFace-MBF cosine above which a gallery identity is taken for the source person


class Analyser:
    """The project's analyser with each call timed (detect, landmarks, embed)."""

    def __init__(self, options: AnalyserOptions | None = None, clock: Clock | None = None,
                 inner: InsightAnalyser | None = None) -> None:
        self.inner = inner or InsightAnalyser(options or AnalyserOptions())
        self.clock = clock or Clock()

    def detect(self, image: np.ndarray) -> list[Face]:
        with self.clock("detect"):
            return self.inner.detect(image)

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        if face.landmarks is not None:
            return face.landmarks
        with self.clock("landmarks"):
            return self.inner.landmarks(image, face)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        if face.embedding is not None:
            return face.embedding
        with self.clock("embed"):
            return self.inner.embed(image, face)

    def main_face(self, image: np.ndarray) -> Face | None:
        """The largest face, with landmarks and embedding; None when there is none."""
        faces = self.detect(image)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        self.landmarks(image, face)
        self.embed(image, face)
        return face


@dataclass
class Media:
    """One evaluation input: a decoded photo, or a probed video."""

    path: Path
    kind: str  # "image" | "video"
    image: np.ndarray | None = None
    info: object | None = None  # read.video.VideoInfo for videos

    @property
    def size(self) -> tuple[int, int]:
        if self.image is not None:
            return int(self.image.shape[1]), int(self.image.shape[0])
        return int(self.info.width), int(self.info.height)  # type: ignore[union-attr]


def open_media(path: Path, role: str) -> Media:
    """Decide photo or video from the content (Pillow first, then ffmpeg probing); InputError if neither."""
    from swapcli.read.video import check_supported, probe

    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} {path}: no such file")
    if path.is_dir():
        raise InputError(f"{role} {path}: is a directory")
    suffix = path.suffix.lower()
    image_error: InputError | None = None
    if suffix not in VIDEO_SUFFIXES:
        try:
            return Media(path, "image", image=read_image(path).bgr)
        except InputError as exc:
            image_error = exc
            if suffix in IMAGE_SUFFIXES:
                raise InputError(f"{role} {exc}") from None
    try:
        info = probe(path)
    except InputError as exc:
        why = str(exc) if image_error is None else f"{path}: not a readable image or video"
        raise InputError(f"{role} {why}") from None
    check_supported(info)
    return Media(path, "video", info=info)


def check_pair(target: Media, result: Media) -> None:
    """Result and target must be the same kind; videos also the same picture size (frames are
    compared in step). Photos may differ in size or be mirrored: faces are matched in normalised
    positions."""
    if target.kind != result.kind:
        raise UsageError(f"TARGET is a{'n' if target.kind == 'image' else ''} {target.kind} but RESULT is "
                         f"a{'n' if result.kind == 'image' else ''} {result.kind}; give the same kind")
    if target.kind == "image":
        return
    (tw, th), (rw, rh) = target.size, result.size
    slack = 1  # swapcli video pads odd sizes by one pixel
    if abs(tw - rw) > slack or abs(th - rh) > slack:
        raise UsageError(f"RESULT is {rw}x{rh} but TARGET is {tw}x{th}: faces are matched by position, "
                         "so the pictures must be the same size")


@dataclass
class Source:
    paths: list[Path]
    faces: list[tuple[np.ndarray, Face]]  # (image, largest face)
    embedding: np.ndarray  # the identity: re-normalised mean over the photos


def load_source(analyser: Analyser, paths: Sequence[Path]) -> Source:
    faces = []
    for path in paths:
        media = open_media(Path(path), "SOURCE")
        if media.kind != "image":
            raise UsageError(f"SOURCE {path}: expected a photo, got a video")
        face = analyser.main_face(media.image)
        if face is None:
            raise NoFaceError(f"{path}: no face found in the source image")
        faces.append((media.image, face))
    return Source([Path(p) for p in paths], faces, mean_identity([f.embedding for _, f in faces]))


@dataclass
class Gallery:
    folder: Path
    names: list[str] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: why"

    def to_json(self) -> dict:
        return {"dir": str(self.folder), "identities": len(self.names), "skipped": self.skipped}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def load_gallery(analyser: Analyser, folder: Path, source: Source) -> Gallery:
    """Each photo directly in FOLDER is one identity (its largest face); each sub-folder is one
    identity (the mean over its photos). Photos of the source person are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--gallery {folder}: not a folder")
    gallery = Gallery(folder)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    photos_seen = 0
    for entry in entries:
        photos = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if entry.is_dir() else (
            [entry] if entry.suffix.lower() in IMAGE_SUFFIXES else [])
        if not photos:
            continue
        photos_seen += len(photos)
        vectors = []
        for photo in photos:
            if any(_same_file(photo, s) for s in source.paths):
                gallery.skipped.append(f"{photo.name}: is a --source photo")
                continue
            try:
                image = read_image(photo).bgr
            except InputError as exc:
                gallery.skipped.append(f"{photo.name}: {str(exc).split(': ', 1)[-1]}")
                continue
            face = analyser.main_face(image)
            if face is None:
                gallery.skipped.append(f"{photo.name}: no face")
                continue
            vectors.append(face.embedding)
        if not vectors:
            continue
        identity = mean_identity(vectors)
        if cosine(identity, source.embedding) >= SAME_PERSON:
            gallery.skipped.append(f"{entry.name}: looks like the source person (cosine "
                                   f"{cosine(identity, source.embedding):.2f})")
            continue
        gallery.names.append(entry.name)
        gallery.embeddings.append(identity)
    if not gallery.names:
        if not photos_seen:
            raise InputError(f"--gallery {folder}: no photos ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        raise NoFaceError(f"--gallery {folder}: no usable face in any photo ({len(gallery.skipped)} skipped)")
    for why in gallery.skipped:
        log.info("gallery: skipped %s", why)
    return gallery
