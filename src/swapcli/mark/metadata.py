"""Machine-readable "AI-generated" metadata: IPTC DigitalSourceType in XMP for
images, container tags for videos; and reading them back for `swapcli verify`.

Which DigitalSourceType. IPTC's NewsCodes offer ``trainedAlgorithmicMedia``
(the whole picture made by a trained model), ``compositeSynthetic`` (a
composite of elements, "any of which may or may not be" generative AI) and
``compositeWithTrainedAlgorithmicMedia`` ("the compositing of trained
algorithmic media with some other media, such as with inpainting or
outpainting"). A face swap is exactly the last one: a generated face composited
into a real photo. It still says "AI" unambiguously (compositeSynthetic does
not), and it is in the set of values C2PA, Google and Meta treat as
AI-generated. ``verify`` accepts any of the AI values, so marks written by
other tools count too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

from swapcli import __version__

IPTC_NEWSCODES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
DIGITAL_SOURCE_TYPE = IPTC_NEWSCODES + "compositeWithTrainedAlgorithmicMedia"
AI_SOURCE_TYPES = frozenset(IPTC_NEWSCODES + name for name in (
    "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia",
    "compositeSynthetic"))
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
VIDEO_SOURCE_KEY = "DigitalSourceType"  # custom container tag (MP4 via use_metadata_tags; MKV tags)
VIDEO_SOFTWARE_KEY = "synthetic_generator"


def software() -> str:
    return f"swapcli {__version__}"


def description() -> str:
    return f"AI-generated: face(s) swapped by {software()} (IPTC digital source type: " \
           f"{DIGITAL_SOURCE_TYPE.rsplit('/', 1)[1]})"


def xmp_packet() -> bytes:
    """An XMP packet declaring the picture AI-generated (IPTC Photo Metadata 2023.1+)."""
    text = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"
    xmp:CreatorTool="{escape(software())}">
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(description())}</rdf:li></rdf:Alt></dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""
    return text.encode("utf-8")


def exif_with_software(exif: bytes | None) -> bytes:
    """The EXIF block with its Software tag (0x0131) naming swapcli; a new block if there was none.

    Rewriting drops the EXIF thumbnail (IFD1), which would still show the
    original, un-swapped picture. If Pillow cannot re-serialise the target's
    EXIF, it is kept as it was (the XMP still carries the mark).
    """
    from PIL import Image

    block = Image.Exif()
    try:
        if exif:
            block.load(exif)
        block[0x0131] = software()
        return block.tobytes()
    except Exception:  # noqa: BLE001 - odd EXIF: keep the target's bytes untouched
        return exif or b""


def add_xmp_to_jpeg(data: bytes, xmp: bytes) -> bytes:
    """Insert an APP1 XMP segment after the leading APP0/APP1 (JFIF, EXIF) segments."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    payload = XMP_JPEG_HEADER + xmp
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one JPEG segment")
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] in (0xE0, 0xE1):
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return data[:pos] + segment + data[pos:]


def video_tags() -> dict[str, str]:
    """Global container tags for a marked video (ffmpeg -metadata KEY=VALUE)."""
    return {"comment": description(), VIDEO_SOURCE_KEY: DIGITAL_SOURCE_TYPE, VIDEO_SOFTWARE_KEY: software()}


# --------------------------------------------------------------------------- reading


@dataclass
class MetadataMark:
    present: bool
    digital_source_type: str | None = None
    software: str | None = None
    where: str | None = None  # "xmp", "container tags"

    def to_json(self) -> dict:
        return {"present": self.present, "digital_source_type": self.digital_source_type,
                "software": self.software, "where": self.where}


_DST = re.compile(r"DigitalSourceType(?:\s*=\s*[\"']|>\s*|[^>]*?rdf:resource\s*=\s*[\"'])\s*([^\"'<\s]+)")
_TOOL = re.compile(r"CreatorTool(?:\s*=\s*[\"']|>\s*)([^\"'<]+)")


def parse_xmp(xmp: bytes | str | None) -> MetadataMark:
    if not xmp:
        return MetadataMark(False)
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    found = [m.group(1) for m in _DST.finditer(text)]
    ai = next((v for v in found if v in AI_SOURCE_TYPES), None)
    tool = _TOOL.search(text)
    return MetadataMark(ai is not None, ai or (found[0] if found else None),
                        tool.group(1).strip() if tool else None, "xmp" if found else None)


def read_image_mark(im) -> MetadataMark:
    """The metadata mark of an open Pillow image (JPEG APP1, PNG iTXt, WebP XMP chunk)."""
    info = im.info
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if not xmp:
        for marker, payload in getattr(im, "applist", []):
            if marker == "APP1" and payload.startswith(XMP_JPEG_HEADER):
                xmp = payload[len(XMP_JPEG_HEADER):]
                break
    mark = parse_xmp(xmp)
    if mark.software is None:
        try:
            tag = im.getexif().get(0x0131)
        except Exception:  # noqa: BLE001 - unreadable EXIF is no reason to fail verify
            tag = None
        mark.software = tag or info.get("Software") or None
    return mark


def read_video_mark(tags: dict[str, str]) -> MetadataMark:
    """The metadata mark from a video's global tags (keys compared case-insensitively: MKV upper-cases)."""
    lower = {k.lower(): v for k, v in tags.items()}
    value = lower.get(VIDEO_SOURCE_KEY.lower())
    software_ = lower.get(VIDEO_SOFTWARE_KEY)
    return MetadataMark(value in AI_SOURCE_TYPES, value, software_, "container tags" if value else None)
