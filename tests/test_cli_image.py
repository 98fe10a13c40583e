"""`swapcli image` end to end through the real entry point: outputs, JSON, exit codes."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_failure, blank_image, iou, run_cli


def test_help_and_version():
    for args in (["--help"], ["image", "--help"], ["doctor", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "Usage" in proc.stdout
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("swapcli ")


def test_image_swaps_and_prints_only_the_path(photos, tmp_path, analyser):
    out = tmp_path / "out.jpg"
    proc = run_cli("image", photos["gdp"], photos["yaoming"], "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    result = cv2.imread(str(out))
    target = cv2.imread(str(photos["yaoming"]))
    assert result.shape == target.shape
    faces = analyser.detect(result)
    assert len(faces) == 1
    # The face changed: identity moved away from the target.
    tgt_face = analyser.detect(target)[0]
    e_out = analyser.embed(result, faces[0])
    e_tgt = analyser.embed(target, tgt_face)
    assert float(e_out @ e_tgt) < 0.6


def test_json_result_and_all_faces(photos, tmp_path, analyser):
    out = tmp_path / "t1.png"
    proc = run_cli("image", photos["yaoming"], photos["t1"], "-o", out, "--faces", "all", "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["ok"] is True and payload["output"] == str(out)
    assert payload["faces_found"] == 6 and payload["faces_swapped"] == 6
    assert {"detect", "landmarks", "swap", "blend", "write"} <= set(payload["timings_ms"])
    result = cv2.imread(str(out))
    found = analyser.detect(result)
    for face in payload["faces"]:
        assert max(iou(face["bbox"], f.bbox) for f in found) > 0.5  # every swapped face is re-detected


def test_no_overwrite_then_overwrite(photos, tmp_path):
    out = tmp_path / "o.jpg"
    out.write_bytes(b"keep me")
    proc = run_cli("image", photos["gdp"], photos["yaoming"], "-o", out)
    assert_clean_failure(proc, 2)
    assert out.read_bytes() == b"keep me"
    proc = run_cli("image", photos["gdp"], photos["yaoming"], "-o", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() != b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["o.jpg"]  # no temp files left
    assert out.stat().st_mode & 0o044 == 0o044  # readable like any file the user makes (umask 022)


def test_never_overwrites_an_input(photos, tmp_path):
    target = tmp_path / "target.jpg"
    shutil.copy(photos["yaoming"], target)
    before = target.read_bytes()
    proc = run_cli("image", photos["gdp"], target, "-o", target, "--overwrite")
    assert_clean_failure(proc, 2)
    assert target.read_bytes() == before


def test_no_face_exit_3(photos, tmp_path):
    blank = blank_image(tmp_path / "blank.jpg")
    assert_clean_failure(run_cli("image", blank, photos["yaoming"], "-o", tmp_path / "a.jpg"), 3)
    assert_clean_failure(run_cli("image", photos["yaoming"], blank, "-o", tmp_path / "b.jpg"), 3)
    assert_clean_failure(run_cli("image", photos["gdp"], photos["yaoming"], "-o", tmp_path / "c.jpg", "--faces", "5"), 3)
    assert not any(tmp_path.glob("[abc].jpg"))


@pytest.mark.parametrize("content", [b"", b"this is text, not a jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00truncated"])
def test_unreadable_input_exit_2(photos, tmp_path, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    assert_clean_failure(run_cli("image", bad, photos["yaoming"], "-o", tmp_path / "x.jpg"), 2)
    assert_clean_failure(run_cli("image", photos["yaoming"], bad, "-o", tmp_path / "y.jpg"), 2)
    assert_clean_failure(run_cli("image", photos["yaoming"], tmp_path / "missing.jpg", "-o", tmp_path / "z.jpg"), 2)
    assert_clean_failure(run_cli("image", photos["yaoming"], photos["gdp"], "-o", tmp_path / "w.gif"), 2)
    assert_clean_failure(run_cli("image", photos["yaoming"], photos["gdp"], "--faces", "biggest"), 2)
    assert not list(tmp_path.glob("[xyzw].*"))


def test_reference_selects_only_that_person(photos, tmp_path, analyser):
    t1 = cv2.imread(str(photos["t1"]))
    faces = analyser.detect(t1)
    who = faces[2]
    x0, y0, x1, y1 = who.bbox.astype(int)
    pad = int(0.6 * (x1 - x0))
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), t1[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad])
    out = tmp_path / "ref_out.jpg"
    proc = run_cli("image", photos["yaoming"], photos["t1"], "-o", out, "--reference", ref, "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["faces_swapped"] == 1
    assert iou(payload["faces"][0]["bbox"], who.bbox) > 0.8
    # A reference nobody matches: exit 3, nothing written.
    proc = run_cli("image", photos["gdp"], photos["t1"], "-o", tmp_path / "none.jpg", "--reference", photos["yaoming"])
    assert_clean_failure(proc, 3)
    assert not (tmp_path / "none.jpg").exists()


def test_alpha_and_webp_and_exif_orientation(photos, tmp_path, analyser):
    img = Image.open(photos["yaoming"]).convert("RGB")
    alpha = Image.new("L", img.size, 255)
    alpha.paste(90, (0, 0, img.width // 3, img.height))
    rgba = img.copy()
    rgba.putalpha(alpha)
    src_png = tmp_path / "alpha.png"
    rgba.save(src_png)
    out = tmp_path / "alpha_out.png"
    assert run_cli("image", photos["gdp"], src_png, "-o", out).returncode == 0
    got = Image.open(out)
    assert got.mode == "RGBA" and got.size == img.size
    assert np.array_equal(np.asarray(got)[..., 3], np.asarray(alpha))

    out_webp = tmp_path / "o.webp"
    assert run_cli("image", photos["gdp"], photos["yaoming"], "-o", out_webp).returncode == 0
    assert Image.open(out_webp).format == "WEBP"

    # A phone photo: pixels stored rotated, EXIF orientation 6 says "rotate to view".
    stored = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    phone = tmp_path / "phone.jpg"
    stored.save(phone, exif=exif.tobytes(), quality=95)
    out_phone = tmp_path / "phone_out.jpg"
    proc = run_cli("image", photos["gdp"], phone, "-o", out_phone, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["faces_swapped"] == 1
    got = Image.open(out_phone)
    assert got.size == stored.size and got.getexif().get(0x0112) == 6
    upright = cv2.cvtColor(np.asarray(got.transpose(Image.Transpose.ROTATE_270)), cv2.COLOR_RGB2BGR)
    assert len(analyser.detect(upright)) == 1


def test_model_failing_verification_exit_4(photos, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "scrfd_500m_bnkps.onnx").write_bytes(b"not the real model")
    proc = run_cli("image", photos["gdp"], photos["yaoming"], "-o", tmp_path / "m.jpg", "--weights-dir", weights)
    assert_clean_failure(proc, 4)
    assert "SHA-256" in proc.stderr


def test_doctor_json():
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"]
    embedded = {n: m for n, m in report["models"].items() if m["embedded"]}
    assert set(embedded) == {"scrfd_500m", "2d106det", "w600k_mbf"}
    assert all(m.get("verified") for m in embedded.values())
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    assert report["onnxruntime"]["active_build"].startswith(("CPU", "GPU"))
    assert report["auto_engine"] in ("morph", "inswapper", "hyperswap", "ghost", "simswap", "ghost_onnx")
