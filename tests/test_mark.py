"""AI-generated marks: metadata + invisible watermark on every output, `swapcli verify`,
--no-mark / --visible-label, and the watermark's robustness on real swapped photos."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, run_cli
from PIL import Image

from swapcli import __version__
from swapcli.core.errors import EXIT_UNMARKED, SwapcliError, UsageError
from swapcli.core.ffmpeg import base_cmd, media_path
from swapcli.mark import metadata
from swapcli.mark import watermark as wm
from swapcli.read.image import read_image
from swapcli.read.video import FrameReader

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


# --------------------------------------------------------------------------- helpers


def jpeg(img: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def half(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def crop10(img: np.ndarray) -> np.ndarray:
    """10 % off each dimension (5 % per side): the grid scale changes by 1/0.9."""
    h, w = img.shape[:2]
    return img[int(0.05 * h):int(0.95 * h), int(0.05 * w):int(0.95 * w)]


def h264(img: np.ndarray, crf: int = 23) -> np.ndarray:
    """One frame through libx264 (CRF, yuv420p) and back."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    img = np.ascontiguousarray(img[:h, :w])
    enc = subprocess.run([*base_cmd(), "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-i", "-",
                          "-c:v", "libx264", "-crf", str(crf), "-preset", "medium", "-pix_fmt", "yuv420p",
                          "-f", "h264", "-"], input=img.tobytes(), capture_output=True, check=True).stdout
    dec = subprocess.run([*base_cmd(), "-f", "h264", "-i", "-", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         input=enc, capture_output=True, check=True).stdout
    return np.frombuffer(dec, np.uint8).reshape(h, w, 3)


def reencode(src: Path, dst: Path, crf: int = 23, vf: str | None = None) -> Path:
    """What a platform does to an upload: H.264 CRF re-encode, all metadata dropped."""
    cmd = [*base_cmd(), "-y", "-i", media_path(src), *(["-vf", vf] if vf else []), "-c:v", "libx264",
           "-crf", str(crf), "-preset", "medium", "-pix_fmt", "yuv420p", "-map_metadata", "-1", "-an",
           media_path(dst)]
    subprocess.run(cmd, capture_output=True, check=True)
    return dst


def verify_json(*files: Path, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    proc = run_cli("verify", *files, "--json", *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def t1_faces(folder: Path) -> list[Path]:
    """The six faces of insightface's t1.jpg, cropped generously (real, small photos)."""
    from swapcli.analyse.insight import InsightAnalyser

    img = cv2.imread(str(PHOTOS["t1"]))
    out = []
    for i, f in enumerate(sorted(InsightAnalyser().detect(img), key=lambda f: f.bbox[0])):
        x0, y0, x1, y1 = f.bbox
        cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 1.5
        crop = img[max(0, int(cy - s)):int(cy + s), max(0, int(cx - s)):int(cx + s)]
        path = folder / f"t1face{i}.png"
        cv2.imwrite(str(path), crop)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """`swapcli image` outputs in all three formats, marked and not, plus a labelled one."""
    d = tmp_path_factory.mktemp("marked")
    made = {}
    for ext in ("jpg", "png", "webp"):
        made[ext] = d / f"out.{ext}"
        proc = run_cli("image", PHOTOS["yaoming"], PHOTOS["t1"], "-o", made[ext], "-q")
        assert proc.returncode == 0, proc.stderr
    made["nomark"] = d / "nomark.png"
    assert run_cli("image", PHOTOS["yaoming"], PHOTOS["t1"], "-o", made["nomark"], "--no-mark", "-q").returncode == 0
    made["label"] = d / "label.png"
    proc = run_cli("image", PHOTOS["yaoming"], PHOTOS["t1"], "-o", made["label"], "-q", "--visible-label", "AI-generated")
    assert proc.returncode == 0, proc.stderr
    made["label_nomark"] = d / "label_nomark.png"
    proc = run_cli("image", PHOTOS["yaoming"], PHOTOS["t1"], "-o", made["label_nomark"], "-q", "--no-mark",
                   "--visible-label", "AI-generated")
    assert proc.returncode == 0, proc.stderr
    return made


# --------------------------------------------------------------------------- units


def test_code_is_fixed_and_balanced():
    c = wm.code()
    assert c.tile.shape == (wm.T, wm.T) and abs(float(c.tile.std()) - 1) < 1e-4 and abs(float(c.tile.mean())) < 1e-4
    assert wm.NBITS == 48 and wm.PAYLOAD == b"SWAPAI"
    # the per-bit templates add up to the tile: bit decoding and detection see the same pattern
    assert np.allclose((c.bit_templates * c.signs[:, None, None]).sum(0), c.tile, atol=1e-4)
    assert wm.crop_ratios()[0] == 1.0 and wm.crop_ratios()[-1] == pytest.approx(wm.CROP_MIN)


def test_embed_is_invisible_ish_and_detected_in_memory():
    img = read_image(PHOTOS["t1"]).bgr
    marked = wm.embed(img)
    assert marked.shape == img.shape and marked.dtype == np.uint8
    assert cv2.PSNR(img, marked) > 40
    found = wm.detect(marked)
    assert found.present and found.bits == 48 and found.score > 12 and found.crop == 1.0
    assert not wm.detect(img).present


def test_follow_motion_keeps_still_shots_still_and_tracks_a_pan():
    img = read_image(PHOTOS["t1"]).bgr[:720, :1280]
    still = wm.Embedder(*img.shape[:2], follow_motion=True)
    first, second = still(img), still(img)
    assert np.array_equal(first, second) and not still.offset.any()
    pan = wm.Embedder(360, 640, follow_motion=True)
    for step in range(5):  # content moves 8 px right per frame: 8 px = 8 * 256/360 cells
        pan(np.ascontiguousarray(img[100:460, 400 - 8 * step:1040 - 8 * step]))
    assert pan.offset[0] == pytest.approx(4 * 8 * 256 / 360, abs=0.5) and abs(pan.offset[1]) < 0.5
    assert wm.detect(pan(np.ascontiguousarray(img[100:460, 360:1000]))).present  # moved, still found


def test_no_false_positives_on_real_and_synthetic_pictures(tmp_path):
    pictures = {name: read_image(p).bgr for name, p in PHOTOS.items()}
    pictures.update({p.stem: cv2.imread(str(p)) for p in t1_faces(tmp_path)})
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:360, 0:640]
    pictures.update({
        "flat": np.full((360, 640, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (360, 640, 3), dtype=np.uint8),
        "checker": np.dstack([((xx // 8 + yy // 8) % 2 * 255).astype(np.uint8)] * 3),
    })
    scores = []
    for name, img in pictures.items():
        for attack in (lambda x: x, jpeg, half):
            found = wm.detect(attack(img), full_search=True)
            assert not found.present, (name, found)
            scores.append(found.score)
    assert max(scores) < wm.SCORE_MIN - 1  # a clear margin, not a near miss


def test_metadata_helpers():
    packet = metadata.xmp_packet()
    mark = metadata.parse_xmp(packet)
    assert mark.present and mark.digital_source_type == DST and mark.software == f"swapcli {__version__}"
    element = b"<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>"
    assert metadata.parse_xmp(element).present
    digital = b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"'
    assert not metadata.parse_xmp(digital).present and metadata.parse_xmp(digital).digital_source_type.endswith("Capture")
    assert not metadata.parse_xmp(None).present
    with pytest.raises(ValueError):
        metadata.add_xmp_to_jpeg(b"GIF89a", packet)
    tags = {k.upper(): v for k, v in metadata.video_tags().items()}  # MKV upper-cases keys
    assert metadata.read_video_mark(tags).present and not metadata.read_video_mark({"comment": "hi"}).present


def test_label_text_rules():
    from swapcli.mark.label import clean_text, make_label

    assert clean_text("  AI\tgenerated\n") == "AI generated"
    for bad in ("", "   ", "\n", "x" * 201):
        with pytest.raises(UsageError):
            clean_text(bad)
    label = make_label("a very long label that cannot fit at the default size " * 2, 120, 90)
    x0, y0, x1, y1 = label.box
    assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90


# --------------------------------------------------------------------------- swapcli image + verify


def test_every_image_format_carries_both_marks(outputs):
    for ext in ("jpg", "png", "webp"):
        path = outputs[ext]
        with Image.open(path) as im:
            xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
            assert xmp and DST in (xmp.decode() if isinstance(xmp, bytes) else xmp), ext
            assert im.getexif().get(0x0131) == f"swapcli {__version__}", ext
            if ext == "png":
                assert im.info.get("Software") == f"swapcli {__version__}"
        assert wm.detect(read_image(path).bgr).present, ext
    code, report = verify_json(outputs["jpg"], outputs["png"], outputs["webp"])
    assert code == 0 and report["ok"] and report["all_marked"]
    for entry in report["files"]:
        assert entry["marked"] and entry["kind"] == "image"
        assert entry["metadata"]["present"] and entry["metadata"]["digital_source_type"] == DST
        assert entry["metadata"]["software"] == f"swapcli {__version__}"
        assert entry["watermark"]["present"] and entry["watermark"]["bits"] >= 46
        assert entry["watermark"]["confidence"] >= 0.95


def test_verify_human_output_and_exit_codes(outputs, tmp_path):
    proc = run_cli("verify", outputs["jpg"])
    assert proc.returncode == 0 and proc.stdout.startswith(f"{outputs['jpg']}: marked")
    assert "compositeWithTrainedAlgorithmicMedia" in proc.stdout and "48/48 bits" in proc.stdout
    proc = run_cli("verify", outputs["jpg"], PHOTOS["t1"])
    assert proc.returncode == EXIT_UNMARKED and "Traceback" not in proc.stderr
    assert f"{PHOTOS['t1']}: NOT marked" in proc.stdout and "swapcli: error" not in proc.stderr
    # unreadable input: exit 2 with one clean error line, the other files still reported
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    proc = run_cli("verify", fake, outputs["jpg"])
    assert_clean_failure(proc, 2)
    assert f"{outputs['jpg']}: marked" in proc.stdout
    assert_clean_failure(run_cli("verify", tmp_path / "missing.png"), 2)
    code, report = verify_json(fake, extra=())
    assert code == 2 and not report["ok"] and "error" in report["files"][0]


def test_sample_photos_and_no_mark_outputs_are_reported_unmarked(outputs):
    code, report = verify_json(*PHOTOS.values(), outputs["nomark"], outputs["label_nomark"])
    assert code == EXIT_UNMARKED and not report["all_marked"]
    for entry in report["files"]:
        assert entry["marked"] is False, entry
        assert not entry["metadata"]["present"] and not entry["watermark"]["present"]
    with Image.open(outputs["nomark"]) as im:
        assert "xmp" not in im.info and im.getexif().get(0x0131) is None


def test_visible_label_is_drawn_in_the_corner(outputs):
    from swapcli.mark.label import make_label

    plain = cv2.imread(str(outputs["nomark"])).astype(int)
    for key in ("label", "label_nomark"):
        labelled = cv2.imread(str(outputs[key])).astype(int)
        h, w = labelled.shape[:2]
        x0, y0, x1, y1 = make_label("AI-generated", w, h).box
        assert x0 < 0.1 * w and y1 > 0.9 * h  # bottom left
        corner = np.s_[y0:y1, x0:x1]
        rest = np.s_[:int(h * 0.5), int(w * 0.5):]
        assert np.abs(labelled[corner] - plain[corner]).mean() > 20  # a dark box with white text
        assert (labelled[corner] > 240).all(axis=2).sum() > 100  # the text
        assert np.abs(labelled[rest] - plain[rest]).mean() < (3 if key == "label" else 0.01)
    assert run_cli("verify", outputs["label"]).returncode == 0
    assert_clean_failure(run_cli("image", PHOTOS["yaoming"], PHOTOS["t1"], "-o", outputs["label"].with_name("x.png"),
                                 "--visible-label", " "), 2)


def test_alpha_png_keeps_alpha_and_an_opaque_label(tmp_path):
    rgba = np.dstack([cv2.imread(str(PHOTOS["t1"]))[..., ::-1], np.full((886, 1280), 128, np.uint8)])
    target = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(target)
    out = tmp_path / "alpha_out.png"
    proc = run_cli("image", PHOTOS["yaoming"], target, "-o", out, "-q", "--visible-label", "AI")
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[..., 3]
    assert (alpha == 255).sum() > 100 and (alpha == 128).mean() > 0.95
    assert run_cli("verify", out).returncode == 0


def test_marking_keeps_no_overwrite_rule(outputs):
    before = outputs["png"].read_bytes()
    proc = run_cli("image", PHOTOS["yaoming"], PHOTOS["t1"], "-o", outputs["png"])
    assert_clean_failure(proc, 2)
    assert outputs["png"].read_bytes() == before
    assert not list(outputs["png"].parent.glob(".*swapcli*"))


# --------------------------------------------------------------------------- robustness on real swapped photos


@pytest.mark.slow
def test_watermark_survives_common_edits_of_swapped_photos(tmp_path):
    """Swapped, marked PNGs through JPEG q75, half size, 10 % crop and H.264 CRF 23.

    Asserted: every photo for JPEG q75, 0.5x and the crop; H.264 for photos of
    at least 480 px (single stills of ~300 px are at the limit: see README).
    """
    targets = [PHOTOS["t1"], PHOTOS["players"], PHOTOS["gdp"], PHOTOS["yaoming"], *t1_faces(tmp_path)[:3]]
    failures = []
    for i, target in enumerate(targets):
        out = tmp_path / f"sw{i}.png"
        source = PHOTOS["gdp"] if target == PHOTOS["yaoming"] else PHOTOS["yaoming"]
        proc = run_cli("image", source, target, "-o", out, "-q")
        assert proc.returncode == 0, proc.stderr
        img = read_image(out).bgr
        attacks = {"jpeg75": jpeg, "half": half, "crop10": crop10, "crop10+jpeg75": lambda x: jpeg(crop10(x))}
        if min(img.shape[:2]) >= 480:
            attacks["h264crf23"] = h264
        for name, attack in attacks.items():
            found = wm.detect(attack(img))
            if not found.present:
                failures.append((target.name, name, round(found.score, 1), found.bits))
    assert not failures


# --------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("markclips")
    return {"mp4": make_clip(d / "pan.mp4", "t1", seconds=1.2, size=(640, 360), motion="pan"),
            "mkv": make_clip(d / "zoom.mkv", "t1", seconds=1.2, size=(640, 360), motion="zoom")}


@pytest.mark.slow
def test_video_outputs_are_marked_and_verified(clip, tmp_path):
    outs = {}
    for ext in ("mp4", "mkv"):
        outs[ext] = tmp_path / f"out.{ext}"
        proc = run_cli("video", PHOTOS["yaoming"], clip[ext], "-o", outs[ext], "-q")
        assert proc.returncode == 0, proc.stderr
    code, report = verify_json(outs["mp4"], outs["mkv"])
    assert code == 0 and report["all_marked"], report
    for entry in report["files"]:
        assert entry["kind"] == "video" and entry["metadata"]["present"], entry
        assert entry["metadata"]["digital_source_type"] == DST
        assert entry["metadata"]["software"] == f"swapcli {__version__}"
        wmk = entry["watermark"]
        assert wmk["present"] and wmk["frames"] == 6 and wmk["frames_marked"] >= 1, entry
    pan = report["files"][0]["watermark"]  # the pattern follows a pan: every sampled frame alone
    assert pan["frames_marked"] == 6 and pan["bits"] >= 46, pan
    # the unmarked inputs (plain ffmpeg clips) are not
    code, report = verify_json(clip["mp4"], clip["mkv"])
    assert code == EXIT_UNMARKED and not any(e["marked"] for e in report["files"]), report
    assert all(not e["watermark"]["present"] and not e["metadata"]["present"] for e in report["files"])
    # metadata stripped by a platform-style re-encode at CRF 23: the watermark alone still says so
    stripped = reencode(outs["mp4"], tmp_path / "reup.mp4")
    code, report = verify_json(stripped)
    entry = report["files"][0]
    assert code == 0 and not entry["metadata"]["present"] and entry["watermark"]["present"], entry


@pytest.mark.slow
def test_video_no_mark_and_label(clip, tmp_path):
    out = tmp_path / "nomark.mkv"
    proc = run_cli("video", PHOTOS["yaoming"], clip["mkv"], "-o", out, "-q", "--no-mark", "--visible-label", "AI")
    assert proc.returncode == 0, proc.stderr
    code, report = verify_json(out)
    assert code == EXIT_UNMARKED and report["files"][0]["marked"] is False, report
    from swapcli.mark.label import make_label

    x0, y0, x1, y1 = make_label("AI", 640, 360).box
    with FrameReader(out) as reader, FrameReader(clip["mkv"]) as original:
        frame, before = reader.read(), original.read()
    box = np.s_[y0:y1, x0:x1]
    assert (frame[box] > 200).all(axis=2).mean() > 0.03  # white text ...
    assert (before[box] > 200).all(axis=2).mean() < 0.01  # (not there before)


def test_video_writer_marking_failure_aborts_cleanly(tmp_path):
    from swapcli.write.video import VideoWriter

    out = tmp_path / "broken.mp4"
    def boom(_frame):
        raise RuntimeError("boom")

    with pytest.raises(SwapcliError, match="marking frame failed"), VideoWriter(out, 64, 48, 25) as writer:
        writer._marker = boom
        for _ in range(30):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_video_writer_tags_and_unmarked_writer(tmp_path):
    from swapcli.core import ffmpeg as ff
    from swapcli.write.video import VideoWriter

    frames = [np.full((96, 128, 3), v, np.uint8) for v in range(0, 250, 10)]
    for mark in (True, False):
        out = tmp_path / f"w{int(mark)}.mp4"
        with VideoWriter(out, 128, 96, 25, mark=mark) as writer:
            for f in frames:
                writer.write(f)
        header = ff.parse_header(ff.run([*ff.base_cmd("info"), "-i", ff.media_path(out)], check=False).stderr)
        assert header is not None
        assert metadata.read_video_mark(header.metadata).present is mark
        if mark:
            assert header.metadata.get("comment", "").startswith("AI-generated")
            assert "isom;isom" not in header.metadata.get("major_brand", "")
