"""Which reader a file goes to, decided by its extension: one list for batch, verify and eval."""

from __future__ import annotations

from pathlib import Path

from swapcli.read.image import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".wmv", ".flv", ".3gp", ".ogv")


def media_kind(path: str | Path) -> str | None:
    """'image', 'video', or None for an extension no reader takes."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None
