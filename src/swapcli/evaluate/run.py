"""Evaluate a swap result against its target and source: photos here, videos in video.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from swapcli.core.errors import NoFaceError
from swapcli.evaluate.inputs import Analyser, Gallery, Media, Source
from swapcli.evaluate.metrics import FaceMetrics, face_metrics, face_pose, match_faces, summarise
from swapcli.evaluate.report import ReportRow, face_crop
from swapcli.select.faces import select_faces


@dataclass
class Evaluation:
    kind: str  # "image" | "video"
    metrics: dict  # the summary (means over evaluated faces or sampled frames)
    faces: list[dict] = field(default_factory=list)  # image: one entry per selected target face
    frames: dict | None = None  # video: frame counts and sampled indices
    per_frame: list[dict] = field(default_factory=list)  # video: metrics of each sampled frame
    notes: list[str] = field(default_factory=list)
    rows: list[ReportRow] = field(default_factory=list)  # for the HTML report

    def to_json(self) -> dict:
        out = {"kind": self.kind, "metrics": self.metrics, "notes": self.notes}
        if self.kind == "image":
            out["faces"] = self.faces
        else:
            out["frames"] = self.frames
            out["per_frame"] = self.per_frame
        return out


def source_crop(source: Source):
    image, face = source.faces[0]
    return face_crop(image, face.bbox)


def report_numbers(m: FaceMetrics) -> dict:
    return {"identity to source": m.id_source, "identity to target": m.id_target,
            "pose error (deg)": m.pose_error, "expression error": m.expression_error,
            "expression": m.expression.to_json() if m.expression else None,
            "forehead hair change": m.forehead_hair, "greyscale chroma": m.grey_chroma,
            "eye error": m.eye_error, "retrieval rank": m.retrieval_rank}


def _aligned_result(result: np.ndarray, target_shape: tuple[int, ...], mirrored: bool) -> np.ndarray:
    """The result picture in the target's pixels: resized to its size, flipped back if mirrored."""
    import cv2

    h, w = target_shape[:2]
    if result.shape[:2] != (h, w):
        result = cv2.resize(result, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(result[:, ::-1]) if mirrored else result


def evaluate_image(analyser: Analyser, source: Source, gallery: Gallery | None, target: Media, result: Media,
                   faces: str = "largest") -> Evaluation:
    from swapcli.analyse.face import cosine

    found = analyser.detect(target.image)
    if not found:
        raise NoFaceError(f"{target.path}: no face found in the target image")
    chosen = select_faces(found, faces)
    if not chosen:
        raise NoFaceError(f"{target.path}: none of the {len(found)} faces is selected by --faces {faces}")
    in_result = analyser.detect(result.image)
    if not in_result:
        raise NoFaceError(f"{result.path}: no face found in the result image")
    evaluation = Evaluation("image", {})
    items: list[FaceMetrics] = []
    gallery_embs = gallery.embeddings if gallery else None
    source_lmk = source.faces[0][1].landmarks

    def identity(face):
        return cosine(analyser.embed(result.image, face), source.embedding)

    matches = match_faces(chosen, in_result, target.size, result.size, identity)
    aligned = {mirrored: _aligned_result(result.image, target.image.shape, mirrored)
               for mirrored in {m.how == "mirrored" for m in matches}}
    for k, (t, match) in enumerate(zip(chosen, matches)):
        r = match.face
        analyser.landmarks(target.image, t)
        analyser.embed(target.image, t)
        entry: dict = {"index": k, "target_bbox": [round(float(v), 1) for v in t.bbox], "matched": r is not None,
                       "matched_by": match.how, "pose_target": face_pose(t).to_json()}
        shown = aligned[match.how == "mirrored"]
        images = [("source", source_crop(source)), ("target", face_crop(target.image, t.bbox)),
                  ("result", face_crop(shown, t.bbox))]
        numbers: dict = {"matched": r is not None}
        if r is not None:
            analyser.landmarks(result.image, r)
            analyser.embed(result.image, r)
            m = face_metrics(t, r, source.embedding, gallery_embs, source_lmk, (target.image, shown))
            items.append(m)
            entry.update({"result_bbox": [round(float(v), 1) for v in r.bbox], "iou": round(match.overlap, 3),
                          "pose_result": face_pose(r).to_json(), **m.to_json()})
            numbers = report_numbers(m)
            if match.how != "position":
                evaluation.notes.append(f"face {k}: the result face was found by {match.how}, not at the same place")
        evaluation.faces.append(entry)
        evaluation.rows.append(ReportRow(f"face {k} (box {', '.join(str(int(v)) for v in t.bbox)})", images, numbers))
    if not items:
        raise NoFaceError(f"{result.path}: no face in the result matches the target's face "
                          "(by position, mirrored position or identity)")
    evaluation.metrics = summarise(items, len(gallery.names) if gallery else None)
    evaluation.metrics["faces_evaluated"] = len(items)
    evaluation.metrics["faces_unmatched"] = len(chosen) - len(items)
    if len(chosen) > len(items):
        evaluation.notes.append(f"{len(chosen) - len(items)} selected target face(s) have no face at their "
                                "place in the result")
    return evaluation


def evaluate(sources: Sequence[Path], target: Path, result: Path, *, gallery: Path | None = None,
             faces: str = "largest", frames: int = 32, report: Path | None = None, overwrite: bool = False,
             analyser: Analyser | None = None, progress: Callable[[int, int | None], None] | None = None) -> dict:
    """The whole of `swapcli eval`: inputs checked before any model loads, then the metrics, then
    the optional HTML report; returns the JSON payload (documented in docs/metrics.md)."""
    from swapcli import __version__
    from swapcli.core.errors import UsageError
    from swapcli.evaluate.inputs import (
        check_pair,
        load_gallery,
        load_source,
        open_media,
    )
    from swapcli.select.faces import parse_faces
    from swapcli.write.atomic import check_output

    started = time.perf_counter()
    parse_faces(faces)
    if not sources:
        raise UsageError("give at least one --source photo")
    if report is not None:
        if Path(report).suffix.lower() not in (".html", ".htm"):
            raise UsageError(f"--report {report}: the report is HTML; give a .html file name")
        check_output(Path(report), [*sources, target, result], overwrite)
    analyser = analyser or Analyser()
    clock = analyser.clock
    with clock("read"):
        target_media = open_media(Path(target), "TARGET")
        result_media = open_media(Path(result), "RESULT")
    check_pair(target_media, result_media)
    source = load_source(analyser, [Path(p) for p in sources])
    gal = load_gallery(analyser, Path(gallery), source) if gallery is not None else None
    with clock("evaluate"):
        if target_media.kind == "image":
            evaluation = evaluate_image(analyser, source, gal, target_media, result_media, faces)
        else:
            from swapcli.evaluate.video import evaluate_video

            evaluation = evaluate_video(analyser, source, gal, target_media, result_media, faces, frames,
                                        progress=progress)
    payload = {
        "ok": True,
        "source": [str(p) for p in sources],
        "target": str(target),
        "result": str(result),
        "faces_selected": faces,
        "gallery": gal.to_json() if gal else None,
        **evaluation.to_json(),
        "report": str(report) if report else None,
    }
    if report is not None:
        from swapcli.evaluate.report import render, write_report

        header = {"swapcli": __version__, "kind": evaluation.kind,
                  "source": ", ".join(str(p) for p in sources), "target": str(target), "result": str(result),
                  "gallery": f"{gal.folder} ({len(gal.names)} identities)" if gal else None}
        if evaluation.frames:
            header["frames"] = (f"{evaluation.frames['sampled']} sampled of {evaluation.frames['total']}, "
                                f"target face in {evaluation.frames['with_target_face']}, "
                                f"result face in {evaluation.frames['with_result_face']}")
        summary = {k: v for k, v in evaluation.metrics.items() if v is not None}
        with clock("report"):
            write_report(Path(report), render(f"swapcli eval: {Path(result).name}", header, summary,
                                              evaluation.rows, evaluation.notes))
    payload["timings_ms"] = clock.timings.to_json()
    payload["total_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return payload
