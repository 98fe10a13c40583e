"""Typed options shared by the commands, so image, video and batch agree."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MIN_SHARE = 0.35  # --faces all|N: faces under this share of the largest face are left alone
DEFAULT_THRESHOLD = 0.30  # ArcFace-MBF cosine: same person is usually > 0.4, strangers ~0.0


@dataclass(frozen=True)
class SelectOptions:
    faces: str = "largest"  # largest | all | N (index in face_order)
    reference: Path | None = None
    threshold: float = DEFAULT_THRESHOLD
    min_size: float = 0.0  # ignore detections smaller than this (px, shorter box side)
    min_share: float = DEFAULT_MIN_SHARE  # --faces all|N: ignore faces under this share of the largest (and tiny ones)
    face_order: str = "left-right"  # --face-order: how --faces N counts (select/faces.py FACE_ORDERS)


@dataclass(frozen=True)
class EngineOptions:
    engine: str = "auto"
    device: str = "auto"
    weights_dir: str | None = None
    colour: bool = True
    threads: int = 0
    det_size: int = 640  # detector input side; smaller is faster, misses tiny faces
    model: str | None = None  # --model PATH: the user's own generator file (unverified)
    embedder_model: str | None = None  # --embedder-model PATH: own identity embedder (unverified)
    mix: float | None = None  # --mix T: slerp from the first source identity (0) to the others (1)
    enhance: str | None = None  # --enhance NAME: face restoration model run on the swapped crop
    enhance_blend: float = 0.8  # share of the restored crop in the result
    paste: str = "auto"  # --paste: auto | cv2 (CPU) | torch (on the model's device)
    pixel_boost: int | None = None  # --pixel-boost PX: align at PX, generate k² interleaved sub-images (None: model size)
    occlusion: bool = True  # keep what covers the target's face in front (offline estimate)
    # --mask and friends (blend/masks.py); empty masks = the default set (ghost + occlusion)
    masks: tuple[str, ...] = ()  # box | occlusion | region | area | ghost; their intersection is pasted
    mask_regions: tuple[str, ...] = ()  # face-parser classes kept by `region` (empty: all of them)
    mask_areas: tuple[str, ...] = ()  # landmark areas kept by `area` (empty: all of them)
    mouth_mask: bool = False  # keep the target's own mouth
    occluder_model: str | None = None  # registry name, 'many' or the user's file (unverified)
    parser_model: str | None = None  # registry name or the user's file (unverified)
    # Many frames (video, batch): a host engine swaps frames on several threads at once, so each
    # model session runs on one thread (the cores are already busy; more only adds overhead).
    stream: bool = False

    @property
    def session_threads(self) -> int:
        """Intra-op threads of every model session (0: onnxruntime's default, one per core)."""
        return self.threads or (1 if self.stream else 0)

    def mask_plan(self):
        """The validated mask set (UsageError on unknown names)."""
        from swapcli.blend.masks import plan_masks

        return plan_masks(self.masks, self.mask_regions, self.mask_areas, self.mouth_mask,
                          self.occluder_model, self.parser_model, self.occlusion)


@dataclass(frozen=True)
class OutputOptions:
    overwrite: bool = False
    quality: int = 95
    mark: bool = True  # machine-readable "AI-generated" mark (metadata + invisible watermark)
    visible_label: str | None = None  # optional small visible label drawn on the output


@dataclass
class Timings:
    """Milliseconds per stage, accumulated over a run (from several threads: the video
    pipeline analyses one batch while it swaps the last, so stages may sum to more than
    the wall time)."""

    ms: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.ms[stage] = self.ms.get(stage, 0.0) + seconds * 1000.0

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.ms.items()}
