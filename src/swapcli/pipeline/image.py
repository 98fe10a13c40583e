"""swapcli image: read -> analyse -> select -> swap -> blend -> write."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from swapcli.core.errors import NoFaceError
from swapcli.core.options import OutputOptions, SelectOptions
from swapcli.pipeline.swapper import FaceReport, FoundBy, Swapper
from swapcli.read.image import read_image
from swapcli.select.faces import parse_face_order, parse_faces, select_faces, size_filter
from swapcli.swap.base import SourceFace
from swapcli.write.atomic import check_output
from swapcli.write.image import format_for, write_image


@dataclass
class ImageResult:
    target: Path
    output: Path
    faces_found: int
    faces_swapped: int
    faces: list[FaceReport] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # faces too small to swap, with why
    found_by: list[FoundBy] = field(default_factory=list)  # photos whose faces only a smaller detector size found
    face_order: str = "left-right"  # how --faces N counted

    def to_json(self) -> dict:
        return {
            "target": str(self.target),
            "output": str(self.output),
            "faces_found": self.faces_found,
            "faces_swapped": self.faces_swapped,
            "faces": [f.to_json() for f in self.faces],
            "faces_skipped": self.skipped,
            "face_order": self.face_order,
            "detector_retries": [f.to_json() for f in self.found_by],
        }


def swap_image(
    swapper: Swapper,
    sources: Sequence[SourceFace],
    target: Path,
    output: Path,
    select: SelectOptions,
    out: OutputOptions,
    reference: np.ndarray | None = None,
    inputs: Sequence[Path] = (),
) -> ImageResult:
    parse_faces(select.faces)
    parse_face_order(select.face_order)
    format_for(output)
    check_output(output, [target, *inputs], out.overwrite)
    clock = swapper.clock
    with clock("read"):
        loaded = read_image(target)
    frame = loaded.bgr.copy()
    faces = swapper.find_faces(frame, target, "target")
    pool, skipped = size_filter(faces, select.faces, select.min_size, select.min_share, frame.shape)
    chosen = select_faces(
        pool,
        select.faces,
        reference=reference,
        threshold=select.threshold,
        embed=lambda f: swapper.embed(loaded.bgr, f),
        order=select.face_order,
    )
    if not chosen:
        why = "matches the reference" if reference is not None else f"is selected by --faces {select.faces}"
        raise NoFaceError(f"{target}: none of the {len(faces)} faces found {why}")
    for face in chosen:  # all on the untouched image, before any face is pasted
        swapper.landmarks(loaded.bgr, face)
    reports = swapper.swap_faces(frame, chosen, sources)
    with clock("write"):
        write_image(output, frame, loaded, out.quality, mark=out.mark, visible_label=out.visible_label,
                    overwrite=out.overwrite)
    retried = [swapper.found_by[str(p)] for p in dict.fromkeys([*inputs, target]) if str(p) in swapper.found_by]
    return ImageResult(target, output, len(faces), len(reports), reports, skipped, found_by=retried,
                       face_order=select.face_order)
