"""Evaluate a result video against its target video on evenly spaced sample frames.

Per sampled frame t the per-face metrics are computed as for photos; frames
t-1 and t+1 are analysed too, so each sample also gives a temporal score:
landmark jitter (second difference of the 106 points over face size) and
flicker (change of the mean face colour from frame to frame). Both are given
for the result and for the target video itself, since a real clip has its
own motion and lighting changes; the excess over the target is what the
swap added. Both videos are decoded once, in step, and only the few
analysed frames' numbers are kept, so memory stays flat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from swapcli.analyse.face import Face
from swapcli.core.errors import NoFaceError
from swapcli.evaluate.inputs import Analyser, Gallery, Media, Source
from swapcli.evaluate.metrics import (
    MIN_IOU,
    FaceMetrics,
    colour_step,
    face_metrics,
    face_region,
    iou,
    match_faces,
    mean_colour,
    relative,
    second_difference,
    summarise,
)
from swapcli.evaluate.report import ReportRow, face_crop
from swapcli.evaluate.run import Evaluation, report_numbers, source_crop
from swapcli.select.faces import select_faces

REPORT_FRAMES = 6  # sampled frames shown in the HTML report


def sample_centres(total: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices, each with a frame before and after it when the
    video has them (all interior frames when it is short)."""
    if total <= 0:
        return []
    if total < 3:
        return list(range(total))
    interior = total - 2
    if interior <= count:
        return list(range(1, total - 1))
    return sorted({int(round(x)) for x in np.linspace(1, total - 2, count)})


@dataclass
class _Pair:
    target: Face
    result: Face | None
    colour_target: np.ndarray | None = None  # mean colour inside the target's face region
    colour_result: np.ndarray | None = None  # same region, result frame


@dataclass
class _Frame:
    index: int
    pairs: list[_Pair] = field(default_factory=list)


def _analyse(analyser: Analyser, index: int, tframe: np.ndarray, rframe: np.ndarray, faces: str) -> _Frame:
    record = _Frame(index)
    chosen = select_faces(analyser.detect(tframe), faces)
    if not chosen:
        return record
    found = analyser.detect(rframe)
    size = (tframe.shape[1], tframe.shape[0])
    for t, match in zip(chosen, match_faces(chosen, found, size, size)):
        r = match.face
        analyser.landmarks(tframe, t)
        region = face_region(tframe.shape, t.landmarks)
        pair = _Pair(t, r, mean_colour(tframe, region), mean_colour(rframe, region))
        if r is not None:
            analyser.landmarks(rframe, r)
        record.pairs.append(pair)
    return record


def _neighbour(record: _Frame | None, face: Face) -> _Pair | None:
    """The pair in an adjacent frame whose target face is the same face (box overlap)."""
    if record is None or not record.pairs:
        return None
    best = max(record.pairs, key=lambda p: iou(p.target.bbox, face.bbox))
    return best if iou(best.target.bbox, face.bbox) >= MIN_IOU else None


def evaluate_video(analyser: Analyser, source: Source, gallery: Gallery | None, target: Media, result: Media,  # noqa: C901
                   faces: str = "largest", frames: int = 32,
                   progress: Callable[[int, int | None], None] | None = None) -> Evaluation:
    from swapcli.read.video import FrameReader

    t_info, r_info = target.info, result.info
    evaluation = Evaluation("video", {})
    total_t, total_r = t_info.frame_count or 0, r_info.frame_count or 0  # type: ignore[union-attr]
    total = min(total_t, total_r)
    if total_t != total_r:
        evaluation.notes.append(f"frame counts differ (target {total_t}, result {total_r}): compared frame by "
                                f"frame over the first {total}")
    centres = sample_centres(total, frames)
    wanted = sorted({j for c in centres for j in (c - 1, c, c + 1) if 0 <= j < total})
    wanted_set, centre_set = set(wanted), set(centres)
    picks = np.linspace(0, len(centres) - 1, min(REPORT_FRAMES, len(centres)))
    shown = {centres[int(round(float(x)))] for x in picks}  # frames shown in the report
    gallery_embs = gallery.embeddings if gallery else None
    records: dict[int, _Frame] = {}
    items: list[FaceMetrics] = []
    src_crop = source_crop(source)
    done = 0
    with FrameReader(t_info) as t_reader, FrameReader(r_info) as r_reader:
        for index in range(wanted[-1] + 1 if wanted else 0):
            tframe, rframe = t_reader.read(), r_reader.read()
            if tframe is None or rframe is None:
                evaluation.notes.append(f"a video ended early, at frame {index}")
                break
            if index not in wanted_set:
                continue
            if rframe.shape != tframe.shape:  # a one-pixel pad of an odd size: compare the common area
                h, w = min(tframe.shape[0], rframe.shape[0]), min(tframe.shape[1], rframe.shape[1])
                tframe, rframe = tframe[:h, :w], rframe[:h, :w]
            record = _analyse(analyser, index, tframe, rframe, faces)
            records[index] = record
            if index in centre_set:
                per_faces = []
                for k, pair in enumerate(record.pairs):
                    entry: dict = {"index": k, "target_bbox": [round(float(v), 1) for v in pair.target.bbox],
                                   "matched": pair.result is not None}
                    numbers: dict = {"matched": pair.result is not None}
                    if pair.result is not None:
                        analyser.embed(tframe, pair.target)
                        analyser.embed(rframe, pair.result)
                        m = face_metrics(pair.target, pair.result, source.embedding, gallery_embs,
                                         source.faces[0][1].landmarks, (tframe, rframe))
                        items.append(m)
                        entry.update(m.to_json())
                        numbers = report_numbers(m)
                    per_faces.append(entry)
                    if index in shown and k == 0:
                        evaluation.rows.append(ReportRow(
                            f"frame {index}", [("source", src_crop), ("target", face_crop(tframe, pair.target.bbox)),
                                               ("result", face_crop(rframe, pair.target.bbox))], numbers))
                evaluation.per_frame.append({"frame": index, "faces": per_faces})
            done += 1
            if progress is not None:
                progress(done, len(wanted))

    jit_t, jit_r, fl_t, fl_r = [], [], [], []
    for c in centres:
        record = records.get(c)
        if record is None:
            continue
        for pair in record.pairs:
            before, after = _neighbour(records.get(c - 1), pair.target), _neighbour(records.get(c + 1), pair.target)
            if before is None or after is None:
                continue
            scale = pair.target.size
            jit_t.append(second_difference(before.target.landmarks, pair.target.landmarks, after.target.landmarks,
                                           scale))
            if pair.result is not None and before.result is not None and after.result is not None:
                jit_r.append(second_difference(before.result.landmarks, pair.result.landmarks,
                                               after.result.landmarks, scale))
            colours = [before.colour_target, pair.colour_target, after.colour_target,
                       before.colour_result, pair.colour_result, after.colour_result]
            if all(x is not None for x in colours):
                fl_t.append((colour_step(colours[0], colours[1]) + colour_step(colours[1], colours[2])) / 2)
                fl_r.append((colour_step(colours[3], colours[4]) + colour_step(colours[4], colours[5])) / 2)

    with_face = sum(1 for f in evaluation.per_frame if f["faces"])
    matched = sum(1 for f in evaluation.per_frame if any(x["matched"] for x in f["faces"]))
    evaluation.frames = {"total": total, "sampled": len(centres), "analysed": len(records),
                         "with_target_face": with_face, "with_result_face": matched,
                         "indices": [f["frame"] for f in evaluation.per_frame]}
    if not with_face:
        raise NoFaceError(f"{target.path}: no face found in any of the {len(centres)} sampled frames of the target")
    if not items:
        raise NoFaceError(f"{result.path}: no face where the target's face is, in any sampled frame")
    metrics = summarise(items, len(gallery.names) if gallery else None)
    metrics["result_face_rate"] = round(matched / with_face, 4)

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    metrics["jitter"] = relative(mean(jit_r), mean(jit_t))
    metrics["flicker"] = relative(mean(fl_r), mean(fl_t))
    if metrics["jitter"] is None:
        evaluation.notes.append("too few consecutive frames with a face for jitter/flicker")
    evaluation.metrics = metrics
    return evaluation
