"""Encode an image in the format its extension names, with the target's EXIF,
orientation, ICC profile and alpha carried over, and write it atomically.

Unless told not to (``mark=False``, from --no-mark), every image is marked as
AI-generated: an invisible watermark in the pixels (swapcli.mark.watermark),
IPTC DigitalSourceType + CreatorTool in XMP (JPEG APP1, PNG iTXt
XML:com.adobe.xmp, WebP XMP chunk) and EXIF Software = "swapcli VERSION"
(PNG also gets a tEXt Software). ``visible_label`` draws a small label too.
Marking happens in memory before the atomic write, so it never leaves a
partial file and never changes the no-overwrite rules."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from swapcli.core.errors import OutputError
from swapcli.read.image import LoadedImage
from swapcli.write.atomic import write_bytes

log = logging.getLogger("swapcli")

FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}

# Pillow transpose that undoes exif_transpose for each EXIF orientation.
_UNDO = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}


def format_for(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"{path}: unsupported output format '{path.suffix}' (use .jpg, .png or .webp)")
    return fmt


_JPEG_MARKER_MAX = 65533  # bytes in one APP1 segment, "Exif\0\0" header included
_BULKY_TAGS = {0x927C: "MakerNote", 0x9286: "UserComment", 0x9C9C: "XPComment", 0xC4A5: "PrintIM"}
_KEEP_TAGS = (0x0112, 0x0131, 0x010F, 0x0110, 0x0132, 0x8298)  # orientation, software, make, model, date, copyright


def fit_jpeg_exif(exif: bytes) -> bytes:
    """EXIF that fits in a JPEG. Metadata never fails a swap: what cannot be written is
    dropped (bulky comments and maker notes first, then all but the basic tags), and said."""
    if len(exif) <= _JPEG_MARKER_MAX:
        return exif
    from PIL import Image

    tags = Image.Exif()
    try:
        tags.load(exif)
    except Exception:  # noqa: BLE001 - unparseable and too big: nothing of it can be kept
        log.warning("EXIF metadata (%d bytes) is too large for JPEG and unreadable: not copied", len(exif))
        return b""
    sub = tags.get_ifd(0x8769)
    dropped = [name for tag, name in _BULKY_TAGS.items() if sub.pop(tag, None) is not None or tags.pop(tag, None) is not None]
    data = tags.tobytes()
    if len(data) > _JPEG_MARKER_MAX:
        basic = Image.Exif()
        for tag in _KEEP_TAGS:
            if tag in tags:
                basic[tag] = tags[tag]
        data, dropped = basic.tobytes(), dropped + ["all but the basic tags"]
    if len(data) > _JPEG_MARKER_MAX:
        data, dropped = b"", ["all of it"]
    log.warning("EXIF metadata (%d bytes) is too large for JPEG (max %d): dropped %s", len(exif),
                _JPEG_MARKER_MAX, ", ".join(dropped) or "nothing")
    return data


def encode(bgr: np.ndarray, like: LoadedImage, fmt: str, quality: int = 95, *, mark: bool = True,
           visible_label: str | None = None) -> bytes:
    from PIL import Image

    alpha = like.alpha
    if like.grey:  # a greyscale target gives a greyscale result, whatever the engine made
        luma = np.round(bgr.astype(np.float32) @ np.array([0.114, 0.587, 0.299], np.float32))
        bgr = np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if mark or visible_label is not None:
        from swapcli.mark import FrameMarker

        marker = FrameMarker(bgr.shape[0], bgr.shape[1], watermark=mark, visible_label=visible_label)
        bgr = marker(bgr)
        if marker.label is not None and alpha is not None:  # the label must not be see-through
            x0, y0, x1, y1 = marker.label.box
            alpha = alpha.copy()
            alpha[y0:y1, x0:x1] = 255
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    if alpha is not None and fmt in ("PNG", "WEBP"):
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    else:
        im = Image.fromarray(rgb, "RGB")
    if like.grey and fmt in ("PNG", "JPEG"):
        im = im.convert("LA" if im.mode == "RGBA" else "L")
    if like.orientation in _UNDO:
        # Store pixels as the target stored them, so its orientation tag still applies.
        im = im.transpose(getattr(Image.Transpose, _UNDO[like.orientation]))
    params: dict = {}
    exif = like.exif
    if mark:
        from swapcli.mark import metadata

        exif = metadata.exif_with_software(exif)
        xmp = metadata.xmp_packet()
        if fmt == "WEBP":
            params["xmp"] = xmp
        elif fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), zip=False)
            info.add_text("Software", metadata.software())
            params["pnginfo"] = info
    if exif and fmt == "JPEG":
        exif = fit_jpeg_exif(exif)
    if exif:
        params["exif"] = exif
    if like.icc:
        params["icc_profile"] = like.icc
    if fmt == "JPEG":
        params.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=quality, method=4)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    data = buf.getvalue()
    if mark and fmt == "JPEG":  # by hand: Pillow < 11 cannot write XMP into JPEG
        from swapcli.mark import metadata

        data = metadata.add_xmp_to_jpeg(data, metadata.xmp_packet())
    return data


def write_image(path: Path, bgr: np.ndarray, like: LoadedImage, quality: int = 95, *, mark: bool = True,
                visible_label: str | None = None, overwrite: bool = True) -> None:
    """Encode and write atomically; ``mark``: AI-generated metadata + invisible watermark;
    without ``overwrite`` a file that appeared meanwhile is never replaced."""
    write_bytes(Path(path), encode(bgr, like, format_for(Path(path)), quality, mark=mark,
                                   visible_label=visible_label), overwrite)
