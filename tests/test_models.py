"""Model management: registry, pins, verification cache, resumable mirrored downloads, `swapcli models`.

Every download comes from a local HTTP server on 127.0.0.1 serving random
bytes the test generates; registry entries are injected (MODELS in-process,
$SWAPCLI_REGISTRY_EXTRA for the CLI) and $XDG_CACHE_HOME points into tmp_path,
so nothing touches the network or the real cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from swapcli.core.errors import ModelError, UsageError
from swapcli.models import download as dl
from swapcli.models import locate as loc
from swapcli.models import registry
from swapcli.models.registry import ModelSpec

# --- a small HTTP server with Range support and fault injection ------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # http.server's naming
        server: ModelServer = self.server  # type: ignore[assignment]
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        with server.lock:
            server.requests.append({"path": path, "range": rng, "if_range": self.headers.get("If-Range")})
            status = server.fail.get(path)
            body = server.files.get(path)
            truncate = server.truncate.pop(path, None)
        if status or body is None:
            self._send(status or 404, b"no such file\n")
            return
        start = 0
        if rng and not server.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(match.group(1)) if match else 0
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
        self.end_headers()
        if truncate is not None:
            payload = payload[:truncate]
            self.close_connection = True
        sent = 0
        try:
            for i in range(0, len(payload), server.chunk):
                block = payload[i:i + server.chunk]
                self.wfile.write(block)
                sent += len(block)
                if server.delay:
                    time.sleep(server.delay)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with server.lock:
                server.sent[path] = server.sent.get(path, 0) + sent
        if truncate is not None:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def do_HEAD(self) -> None:  # the reachability probe; kept apart from `requests` (downloads)
        server: ModelServer = self.server  # type: ignore[assignment]
        path = self.path.split("?")[0]
        with server.lock:
            server.heads.append(path)
            status = server.fail.get(path) or (200 if path in server.files else 404)
            size = len(server.files.get(path, b"")) if status == 200 else 0
        self.send_response(status)
        self.send_header("Content-Length", str(size))
        self.end_headers()

    def _send(self, status: int, body: bytes) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.sent.setdefault(self.path, 0)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.fail: dict[str, int] = {}  # path -> HTTP status to answer instead
        self.truncate: dict[str, int] = {}  # path -> bytes to send before dropping the connection (once)
        self.ignore_range = False
        self.delay = 0.0  # seconds between chunks (a slow server)
        self.chunk = 64 * 1024
        self.requests: list[dict] = []
        self.heads: list[str] = []  # HEAD requests (reachability probes)
        self.sent: dict[str, int] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def hits(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture
def server():
    srv = ModelServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private user cache and no stray mirror/proxy settings."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("SWAPCLI_MIRROR", "SWAPCLI_WEIGHTS", "SWAPCLI_REGISTRY_EXTRA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "xdg" / "swapcli"


def blob(size: int = 1_000_000, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_for(name: str, data: bytes | None, urls, *, pinned: bool = True, licence: str = "MIT", **extra) -> ModelSpec:
    return ModelSpec(name=name, kind="generator", filename=f"{name}.onnx", size=len(data) if pinned and data else None,
                     sha256=sha(data) if pinned and data else None, licence=licence, urls=tuple(urls), **extra)


@pytest.fixture
def inject(monkeypatch):
    def _inject(spec: ModelSpec) -> ModelSpec:
        monkeypatch.setitem(registry.MODELS, spec.name, spec)
        return spec
    return _inject


def cli_env(tmp_path: Path, specs: list[dict], **extra) -> dict:
    path = tmp_path / "extra_models.json"
    path.write_text(json.dumps({"models": specs}))
    return {"SWAPCLI_REGISTRY_EXTRA": str(path), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "SWAPCLI_MIRROR": "",
            "SWAPCLI_WEIGHTS": "", **extra}


def entry(name: str, data: bytes, urls, *, pinned: bool = True, licence: str = "MIT", sha256: str | None = None) -> dict:
    return {"name": name, "kind": "generator", "filename": f"{name}.onnx", "licence": licence, "urls": list(urls),
            "size": len(data) if pinned else None, "sha256": (sha256 or sha(data)) if pinned else None}


# --- registry ---------------------------------------------------------------------------

def test_registry_entries_are_complete():
    from swapcli.core.templates import TEMPLATES

    models = registry.MODELS
    for name in ("scrfd_500m", "2d106det", "w600k_mbf", "inswapper_128", "inswapper_128_fp16", "w600k_r50",
                 "ghost_unet_1block", "ghost_unet_2blocks", "ghost_unet_3blocks", "ghost_arcface", "hyperswap_1a_256",
                 "hyperswap_1b_256", "hyperswap_1c_256", "ghost_1_256", "ghost_2_256", "ghost_3_256", "simswap_256",
                 "simswap_unofficial_512", "blendswap_256", "uniface_256", "crossface_ghost", "crossface_simswap",
                 "gfpgan_1.4", "codeformer", "gpen_bfr_256", "gpen_bfr_512"):
        assert name in models, name
    for spec in models.values():
        assert spec.template is None or spec.template in TEMPLATES, spec.name
        assert spec.norm in (None, "unit", "tanh", "imagenet"), spec.name
        assert spec.source in (None, "embedding", "image"), spec.name
        for dep in (spec.embedder, spec.converter):
            assert dep is None or dep in models, (spec.name, dep)
        assert (spec.size is None) == (spec.sha256 is None) or spec.package, spec.name
        assert spec.package or spec.urls, f"{spec.name} can be neither found in a package nor downloaded"
        assert all(u.startswith("https://") for u in spec.urls), spec.name
    assert models["inswapper_128"].sha256.startswith("e4a3f08c") and models["inswapper_128"].size == 554_253_681
    assert models["ghost_unet_2blocks"].format == "torch" and models["ghost_unet_2blocks"].embedder == "ghost_arcface"
    assert models["ghost_2_256"].converter == "crossface_ghost"
    assert {s.engine for s in models.values() if s.kind == "enhancer"} == {"gfpgan", "codeformer", "gpen256", "gpen512"}
    assert not registry.commercial_use_ok(models["inswapper_128"]) and registry.commercial_use_ok(models["gfpgan_1.4"])
    assert dl.sidecar_url(models["hyperswap_1a_256"].urls[0]).endswith("/models-3.3.0/hyperswap_1a_256.hash")
    assert dl.sidecar_url(models["ghost_unet_2blocks"].urls[0]) is None


HEX64 = re.compile(r"[0-9a-f]{64}")


def test_registry_pins_name_their_source_and_the_flagship_is_all_pinned():
    from swapcli.cli.models import _resolve

    for spec in registry.MODELS.values():
        if spec.sha256 is not None:
            assert HEX64.fullmatch(spec.sha256) and spec.size > 0 and spec.hash_source, spec.name
        else:
            assert spec.hash_source is None, spec.name
    flagship = _resolve(["inswapper_128"], True)
    assert [s.name for s in flagship] == ["inswapper_128", "w600k_r50"]
    assert all(s.sha256 for s in flagship)  # one plain `models download inswapper_128`: no trust question
    w600k = registry.MODELS["w600k_r50"]
    assert (w600k.size, w600k.sha256[:8], w600k.urls[0].endswith("/models-3.0.0/arcface_w600k_r50.onnx")) == (
        174_388_474, "f1f79dc3", True)


def test_table_rows_take_family_defaults():
    specs = registry._table({"kind": "enhancer", "host": registry._ff("models-9.9.9"), "norm": "tanh"},
                            {"name": "a", "licence": "MIT"},
                            {"name": "b", "licence": "MIT", "filename": "b.pth", "norm": "unit", "pin": ("0" * 64, 5, "here")},
                            {"name": "c", "licence": "MIT", "urls": ("https://example.org/c.onnx",)})
    a, b, c = specs
    assert (a.filename, a.kind, a.norm, a.sha256, a.size, a.hash_source) == ("a.onnx", "enhancer", "tanh", None, None, None)
    assert a.urls[0] == "https://github.com/facefusion/facefusion-assets/releases/download/models-9.9.9/a.onnx"
    assert (b.filename, b.norm, b.sha256, b.size, b.hash_source) == ("b.pth", "unit", "0" * 64, 5, "here")
    assert b.urls[1].endswith("/models-9.9.9/resolve/main/b.pth") and c.urls == ("https://example.org/c.onnx",)


def test_registry_extra_adds_models_and_mirrors(tmp_path):
    models = dict(registry.MODELS)
    path = tmp_path / "extra.json"
    path.write_text(json.dumps([
        {"name": "mine", "kind": "generator", "filename": "mine.onnx", "licence": "MIT", "urls": "https://example.org/mine.onnx"},
        {"name": "inswapper_128", "urls": ["https://mirror.example/inswapper_128.onnx"]},
    ]))
    registry.load_extra(models, path)
    assert models["mine"].urls == ("https://example.org/mine.onnx",) and models["mine"].sha256 is None
    assert models["inswapper_128"].urls[0] == "https://mirror.example/inswapper_128.onnx"
    assert models["inswapper_128"].sha256 == registry.MODELS["inswapper_128"].sha256
    path.write_text(json.dumps([{"name": "inswapper_128", "sha256": "0" * 64}]))
    with pytest.raises(ModelError, match="may only be given extra 'urls'"):
        registry.load_extra(dict(registry.MODELS), path)
    path.write_text(json.dumps([{"name": "x", "kind": "generator", "filename": "../x.onnx", "licence": "MIT"}]))
    with pytest.raises(ModelError, match="path"):
        registry.load_extra(dict(registry.MODELS), path)
    path.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        registry.load_extra(dict(registry.MODELS), path)


# --- downloads (in-process API) -------------------------------------------------------------

def test_download_verifies_and_locates(server, cache, inject, tmp_path):
    data = blob()
    spec = inject(spec_for("m_ok", data, [server.add("/m_ok.onnx", data)]))
    result = dl.download("m_ok", progress=False)
    assert result.path == cache / "m_ok.onnx" and result.path.read_bytes() == data
    assert (result.sha256, result.size, result.trust, result.already) == (sha(data), len(data), "registry", False)
    assert not (cache / "m_ok.onnx.part").exists()
    found = loc.locate("m_ok")
    assert (found.path, found.origin, found.trust, found.spec) == (result.path, "user cache", "registry", spec)
    again = dl.download("m_ok", progress=False)
    assert again.already and len(server.hits("/m_ok.onnx")) == 1


def test_download_into_weights_dir(server, cache, inject, tmp_path):
    data = blob(300_000)
    inject(spec_for("m_wd", data, [server.add("/m_wd.onnx", data)]))
    weights = tmp_path / "w"
    result = dl.download("m_wd", weights, progress=False)
    assert result.path == weights / "m_wd.onnx" and not (cache / "m_wd.onnx").exists()
    assert loc.locate("m_wd", weights).origin == "--weights-dir"
    assert oct(result.path.stat().st_mode & 0o777) != oct(0o600)  # umask-normal permissions, not mkstemp's


def test_resume_sends_range_and_only_the_rest(server, cache, inject):
    data = blob(2_000_000, seed=1)
    inject(spec_for("m_resume", data, [server.add("/m_resume.onnx", data)]))
    cache.mkdir(parents=True)
    half = len(data) // 2
    (cache / "m_resume.onnx.part").write_bytes(data[:half])
    result = dl.download("m_resume", progress=False)
    assert result.path.read_bytes() == data
    hits = server.hits("/m_resume.onnx")
    assert [h["range"] for h in hits] == [f"bytes={half}-"]
    assert server.sent["/m_resume.onnx"] == len(data) - half
    assert not (cache / "m_resume.onnx.part").exists()


def test_dropped_connection_is_resumed(server, cache, inject):
    data = blob(1_500_000, seed=2)
    inject(spec_for("m_drop", data, [server.add("/m_drop.onnx", data)]))
    server.truncate["/m_drop.onnx"] = 600_000
    result = dl.download("m_drop", progress=False)
    assert result.path.read_bytes() == data
    ranges = [h["range"] for h in server.hits("/m_drop.onnx")]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
    assert 0 < resumed_at <= 600_000  # what reached the disk before the drop is kept
    assert server.sent["/m_drop.onnx"] == 600_000 + len(data) - resumed_at


def test_server_ignoring_range_restarts_cleanly(server, cache, inject):
    data = blob(800_000, seed=3)
    inject(spec_for("m_norange", data, [server.add("/m_norange.onnx", data)]))
    server.ignore_range = True
    cache.mkdir(parents=True)
    (cache / "m_norange.onnx.part").write_bytes(data[:300_000])
    result = dl.download("m_norange", progress=False)
    assert result.path.read_bytes() == data  # not the stale half + the whole file
    assert server.hits("/m_norange.onnx")[0]["range"] == "bytes=300000-"


def test_mismatching_part_of_unknown_origin_is_not_kept(server, cache, inject):
    data = blob(500_000, seed=4)
    inject(spec_for("m_badpart", data, [server.add("/m_badpart.onnx", data)]))
    cache.mkdir(parents=True)
    (cache / "m_badpart.onnx.part").write_bytes(b"\0" * 200_000)  # garbage prefix
    with pytest.raises(ModelError, match="SHA-256"):
        dl.download("m_badpart", progress=False)
    assert not (cache / "m_badpart.onnx").exists() and not (cache / "m_badpart.onnx.part").exists()
    result = dl.download("m_badpart", progress=False)  # the next run starts clean and succeeds
    assert result.path.read_bytes() == data


def test_mirror_fallback_and_swapcli_mirror_first(server, cache, inject, monkeypatch):
    data = blob(400_000, seed=5)
    good = server.add("/b/m_mirror.onnx", data)
    inject(spec_for("m_mirror", data, [server.url("/a/m_mirror.onnx"), good]))
    result = dl.download("m_mirror", progress=False)
    assert result.url == good and result.path.read_bytes() == data
    assert [r["path"] for r in server.requests] == ["/a/m_mirror.onnx", "/b/m_mirror.onnx"]
    # $SWAPCLI_MIRROR is tried before the registry's URLs, with the file name appended
    server.add("/private/m_mirror.onnx", data)
    monkeypatch.setenv("SWAPCLI_MIRROR", server.url("/private") + "/")
    result = dl.download("m_mirror", progress=False, force=True)
    assert result.url == server.url("/private/m_mirror.onnx")
    assert server.requests[-1]["path"] == "/private/m_mirror.onnx"


def test_wrong_size_on_the_server_is_refused_before_transfer(server, cache, inject):
    data = blob(300_000, seed=6)
    spec = spec_for("m_size", data, [server.add("/m_size.onnx", data + b"extra")])
    inject(spec)
    with pytest.raises(ModelError, match="serves 300005 bytes, expected 300000"):  # refused on Content-Length
        dl.download("m_size", progress=False)
    assert not list(cache.glob("m_size*"))


def test_crc32_sidecar_is_checked(server, cache, inject, monkeypatch):
    data = blob(200_000, seed=7)
    url = server.add("/ff/m_crc.onnx", data)
    inject(spec_for("m_crc", data, [url], pinned=False))
    monkeypatch.setattr(dl, "sidecar_url", lambda u: u[:-5] + ".hash")
    server.add("/ff/m_crc.hash", b"deadbeef\n")
    with pytest.raises(ModelError, match="CRC32"):
        dl.download("m_crc", progress=False, trust_unpinned=True)
    assert not list(cache.glob("m_crc*")) and loc.get_pin("m_crc") is None
    server.add("/ff/m_crc.hash", format(zlib.crc32(data), "08x").encode())
    result = dl.download("m_crc", progress=False, trust_unpinned=True)
    assert result.trust == "pinned-now" and loc.get_pin("m_crc")["sha256"] == sha(data)


def test_unknown_and_unreachable(cache, inject):
    with pytest.raises(UsageError, match="unknown model"):
        dl.download("no_such_model", progress=False)
    port = _closed_port()
    inject(spec_for("m_down", b"x" * 10, [f"http://127.0.0.1:{port}/m_down.onnx"]))
    with pytest.raises(ModelError, match="connection refused") as info:
        dl.download("m_down", progress=False)
    assert "\n" not in str(info.value)
    assert not list(cache.glob("m_down*"))


# --- pins, verification cache, is_installed ---------------------------------------------------

def test_unpinned_needs_trust_then_pin_guards_the_file(server, cache, inject):
    data = blob(250_000, seed=8)
    inject(spec_for("m_tofu", data, [server.add("/m_tofu.onnx", data)], pinned=False))
    with pytest.raises(UsageError, match="--trust-unpinned"):
        dl.download("m_tofu", progress=False)
    assert server.requests == []
    result = dl.download("m_tofu", progress=False, trust_unpinned=True)
    assert result.trust == "pinned-now"
    pins = json.loads((cache / "pins.json").read_text())["pins"]
    assert pins["m_tofu"]["sha256"] == sha(data) and pins["m_tofu"]["size"] == len(data)
    assert loc.locate("m_tofu").trust == "pin"
    tampered = bytearray(data)
    tampered[1000] ^= 0xFF
    result.path.write_bytes(bytes(tampered))
    with pytest.raises(ModelError, match="pinned"):
        loc.locate("m_tofu")
    assert loc.is_installed("m_tofu") is None


def test_unpinned_file_on_disk_is_refused_with_a_hint(cache, inject, tmp_path):
    inject(spec_for("m_local", None, [], pinned=False))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "m_local.onnx").write_bytes(b"weights I copied by hand")
    with pytest.raises(ModelError, match="--trust-unpinned") as info:
        loc.locate("m_local")
    assert "swapcli models pin m_local" in str(info.value) and "\n" not in str(info.value)
    assert loc.locate("m_local", check=False).trust == "unchecked"


def test_verification_cache_skips_rehash_until_the_file_changes(cache, inject, tmp_path, monkeypatch):
    data = blob(100_000, seed=9)
    inject(spec_for("m_cache", data, []))
    weights = tmp_path / "weights"
    weights.mkdir()
    path = weights / "m_cache.onnx"
    path.write_bytes(data)
    calls = []
    real = loc.sha256_file
    monkeypatch.setattr(loc, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    assert loc.locate("m_cache").trust == "registry" and len(calls) == 1
    assert loc.locate("m_cache").path == path and len(calls) == 1  # from verified.json
    assert loc.is_installed("m_cache") is not None and len(calls) == 1
    key = str(path.resolve())
    assert json.loads((cache / "verified.json").read_text())["files"][key]["sha256"] == sha(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert loc.locate("m_cache") and len(calls) == 2  # mtime changed: hashed again
    loc.verify(registry.MODELS["m_cache"], path, use_cache=False)
    assert len(calls) == 3
    # a same-size edit is caught even though the file keeps its name
    path.write_bytes(bytes(b ^ 1 for b in data[:10]) + data[10:])
    with pytest.raises(ModelError, match="SHA-256"):
        loc.locate("m_cache")


def test_is_installed_never_raises(cache, inject):
    assert loc.is_installed("no_such_model") is None
    inject(spec_for("m_absent", b"abc", []))
    assert loc.is_installed("m_absent") is None
    assert loc.is_installed("w600k_mbf").origin.startswith("package")


# --- the CLI (child processes: real exit codes and streams) ----------------------------------

def test_cli_download_verify_path_list(server, tmp_path):
    data = blob(700_000, seed=10)
    env = cli_env(tmp_path, [entry("c_ok", data, [server.add("/c_ok.onnx", data)], licence="non-commercial research")])
    weights = tmp_path / "w"
    listed = json.loads(run_cli("models", "list", "--json", "--kind", "generator", cwd=tmp_path, env=env).stdout)
    row = next(m for m in listed["models"] if m["name"] == "c_ok")
    assert (row["installed"], row["status"], row["commercial_use"]) == (False, "missing", False)
    proc = run_cli("models", "download", "c_ok", "--weights-dir", weights, "--yes", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(weights / "c_ok.onnx")
    assert "licence: non-commercial research" in proc.stderr
    assert (weights / "c_ok.onnx").read_bytes() == data
    proc = run_cli("models", "verify", "c_ok", "--weights-dir", weights, "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"][0]["status"] == "verified"
    proc = run_cli("models", "path", "c_ok", "--weights-dir", weights, cwd=tmp_path, env=env)
    assert (proc.returncode, proc.stdout.strip()) == (0, str(weights / "c_ok.onnx"))
    listed = json.loads(run_cli("models", "list", "--json", "--weights-dir", weights, cwd=tmp_path, env=env).stdout)
    row = next(m for m in listed["models"] if m["name"] == "c_ok")
    assert (row["installed"], row["status"], row["trust"]) == (True, "verified", "registry")
    assert row["path"] == str(weights / "c_ok.onnx")
    assert row["hash"] == sha(data) and row["hash_source"] == "the registry"
    assert any(m["name"] == "inswapper_128" for m in listed["models"])


def test_cli_wrong_hash_exit_4_leaves_nothing(server, tmp_path):
    data = blob(400_000, seed=11)
    env = cli_env(tmp_path, [entry("c_bad", data, [server.add("/c_bad.onnx", data)], sha256="0" * 64)])
    proc = run_cli("models", "download", "c_bad", "--yes", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 4)
    assert "SHA-256" in proc.stderr
    cache = tmp_path / "xdg" / "swapcli"
    assert not (cache / "c_bad.onnx").exists() and not (cache / "c_bad.onnx.part").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith("tmp")]  # no stray pooch temp file


def test_cli_server_down_one_line(tmp_path):
    port = _closed_port()
    env = cli_env(tmp_path, [entry("c_down", b"x", [f"http://127.0.0.1:{port}/c_down.onnx",
                                                    f"http://127.0.0.1:{port}/mirror/c_down.onnx"])])
    proc = run_cli("models", "download", "c_down", "--yes", "-q", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 4)
    assert "connection refused from all 2 URLs" in proc.stderr
    assert not list((tmp_path / "xdg" / "swapcli").glob("c_down*"))


def test_cli_mirror_404_then_ok(server, tmp_path):
    data = blob(300_000, seed=12)
    env = cli_env(tmp_path, [entry("c_fb", data, [server.url("/gone/c_fb.onnx"), server.add("/ok/c_fb.onnx", data)])])
    proc = run_cli("models", "download", "c_fb", "--yes", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "HTTP 404" in proc.stderr and "trying the next mirror" in proc.stderr
    assert [r["path"] for r in server.requests] == ["/gone/c_fb.onnx", "/ok/c_fb.onnx"]


def test_cli_unpinned_refused_then_trusted_then_tamper_refused(server, tmp_path):
    data = blob(300_000, seed=13)
    env = cli_env(tmp_path, [entry("c_tofu", data, [server.add("/c_tofu.onnx", data)], pinned=False)])
    proc = run_cli("models", "download", "c_tofu", "--yes", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 2)
    assert "--trust-unpinned" in proc.stderr and server.requests == []
    proc = run_cli("models", "download", "c_tofu", "--yes", "--trust-unpinned", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "PINNED" in proc.stderr and sha(data) in proc.stderr
    path = Path(proc.stdout.strip())
    assert run_cli("models", "path", "c_tofu", cwd=tmp_path, env=env).stdout.strip() == str(path)
    listed = json.loads(run_cli("models", "list", "--json", cwd=tmp_path, env=env).stdout)
    row = next(m for m in listed["models"] if m["name"] == "c_tofu")
    assert (row["hash"], row["trust"]) == (sha(data), "pin") and "pins.json" in row["hash_source"]
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    proc = run_cli("models", "path", "c_tofu", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 4)
    assert "pinned" in proc.stderr
    proc = run_cli("models", "verify", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 4)
    assert "MISMATCH" in proc.stdout and "c_tofu" in proc.stdout


def test_cli_list_json_shows_each_pinned_sha256_and_its_source(tmp_path):
    env = cli_env(tmp_path, [])
    proc = run_cli("models", "list", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["models"]}
    assert rows.keys() == registry.MODELS.keys()
    for name, spec in registry.MODELS.items():
        row = rows[name]
        if spec.sha256:
            assert HEX64.fullmatch(row["hash"]) and row["hash"] == spec.sha256, name
            assert (row["trust"], row["hash_source"], row["size"]) == ("registry", spec.hash_source, spec.size), name
        else:
            assert (row["hash"], row["trust"], row["hash_source"]) == (None, None, None), name
    assert rows["w600k_r50"]["hash"].startswith("f1f79dc3") and "LFS" in rows["w600k_r50"]["hash_source"]


def test_cli_plain_download_of_a_pinned_model_and_pinned_dependency_asks_nothing(server, tmp_path):
    main, dep = blob(200_000, seed=20), blob(100_000, seed=21)
    env = cli_env(tmp_path, [{**entry("c_dep", dep, [server.add("/c_dep.onnx", dep)]), "kind": "embedder"},
                             {**entry("c_main", main, [server.add("/c_main.onnx", main)]), "embedder": "c_dep"}])
    proc = run_cli("models", "download", "c_main", cwd=tmp_path, env=env)  # no flag, and no terminal to answer
    assert proc.returncode == 0, proc.stderr
    cache = tmp_path / "xdg" / "swapcli"
    assert proc.stdout.split() == [str(cache / "c_main.onnx"), str(cache / "c_dep.onnx")]
    assert (cache / "c_main.onnx").read_bytes() == main and (cache / "c_dep.onnx").read_bytes() == dep
    assert "trust" not in proc.stderr.lower() and "PINNED" not in proc.stderr
    assert not (cache / "pins.json").exists()


def test_cli_unpinned_dependency_refusal_names_every_file_once(server, tmp_path):
    main, dep = blob(1000, seed=22), blob(1000, seed=23)
    env = cli_env(tmp_path, [{**entry("c_udep", dep, [server.add("/c_udep.onnx", dep)], pinned=False), "kind": "embedder"},
                             {**entry("c_umain", main, [server.add("/c_umain.onnx", main)], pinned=False,
                                      licence="non-commercial"), "embedder": "c_udep"}])
    proc = run_cli("models", "download", "c_umain", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 2)
    error = next(ln for ln in proc.stderr.splitlines() if ln.startswith("swapcli: error:"))
    assert "c_umain, c_udep: no published SHA-256" in error and "--trust-unpinned" in error and "--no-deps" in error
    assert "c_umain: licence not cleared" in error and "--yes" in error
    assert server.requests == [] and server.heads  # probed (HEAD), nothing downloaded
    proc = run_cli("models", "download", "c_umain", "--trust-unpinned", "--yes", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("PINNED") == 2


@pytest.mark.parametrize("licence, pinned", [("MIT", False), ("non-commercial", True), ("non-commercial", False)])
def test_cli_offline_is_exit_4_before_any_consent_question(tmp_path, licence, pinned):
    port = _closed_port()
    env = cli_env(tmp_path, [entry("c_off", b"x" * 10, [f"http://127.0.0.1:{port}/c_off.onnx"], pinned=pinned, licence=licence)])
    proc = run_cli("models", "download", "c_off", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 4)
    assert "connection refused" in proc.stderr and "--trust-unpinned" not in proc.stderr
    assert "pass --yes" not in proc.stderr
    assert not (tmp_path / "xdg" / "swapcli").exists() or not list((tmp_path / "xdg" / "swapcli").glob("c_off*"))


def test_interactive_trust_is_one_question_for_all_unpinned_files(server, cache, inject, monkeypatch):
    import sys as _sys

    import typer

    from swapcli.cli import models as cli_models

    dep = inject(spec_for("m_qdep", b"d" * 100, [server.add("/m_qdep.onnx", b"d" * 100)], pinned=False))
    main = inject(spec_for("m_qmain", b"m" * 100, [server.add("/m_qmain.onnx", b"m" * 100)], pinned=False, embedder="m_qdep"))
    monkeypatch.setattr(_sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(_sys.stderr, "isatty", lambda: True, raising=False)
    asked: list[str] = []
    monkeypatch.setattr(typer, "confirm", lambda text, **kw: asked.append(text) or True)
    assert cli_models._consent([main, dep], ["m_qmain"], yes=False, trust_unpinned=False) is True
    assert len(asked) == 1 and "m_qmain (m_qmain.onnx)" in asked[0] and "m_qdep (m_qdep.onnx, a dependency)" in asked[0]
    monkeypatch.setattr(typer, "confirm", lambda text, **kw: asked.append(text) and False)
    with pytest.raises(UsageError, match="not trusted; nothing downloaded"):
        cli_models._consent([main, dep], ["m_qmain"], yes=False, trust_unpinned=False)
    assert server.requests == []


def test_unreachable_probe(server, cache):
    up = spec_for("m_up", b"u", [server.url("/missing.onnx"), server.add("/m_up.onnx", b"u")])
    gone = spec_for("m_gone", b"g", [server.url("/missing.onnx")])
    port = _closed_port()
    down = spec_for("m_down2", b"d", [f"http://127.0.0.1:{port}/a.onnx", f"http://127.0.0.1:{port}/b.onnx"])
    assert dl.unreachable([up]) is None
    assert "HTTP 404" in dl.unreachable([up, gone]) and "'m_gone'" in dl.unreachable([up, gone])
    assert "connection refused from all 2 URLs" in dl.unreachable([down])
    assert dl.unreachable([spec_for("m_nourl", b"n", [])]) == "no download URL is known for 'm_nourl'"


def test_cli_pin_a_file_already_on_disk(tmp_path):
    env = cli_env(tmp_path, [entry("c_pin", b"", [], pinned=False)])
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "c_pin.onnx").write_bytes(b"my own copy")
    assert_clean_failure(run_cli("models", "path", "c_pin", cwd=tmp_path, env=env), 4)
    proc = run_cli("models", "pin", "c_pin", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "PINNED" in proc.stderr
    proc = run_cli("models", "path", "c_pin", cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == str(tmp_path / "weights" / "c_pin.onnx")
    assert_clean_failure(run_cli("models", "pin", "inswapper_128", cwd=tmp_path, env=env), 2)


def test_cli_licence_needs_yes_when_not_interactive(server, tmp_path):
    data = blob(10_000, seed=14)
    env = cli_env(tmp_path, [entry("c_nc", data, [server.add("/c_nc.onnx", data)], licence="non-commercial")])
    proc = run_cli("models", "download", "c_nc", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 2)
    assert "--yes" in proc.stderr and "licence: non-commercial" in proc.stderr
    assert server.requests == []


def test_cli_path_missing_and_unknown(tmp_path):
    env = cli_env(tmp_path, [])
    proc = run_cli("models", "path", "inswapper_128", cwd=tmp_path, env=env)
    assert_clean_failure(proc, 4)
    assert "swapcli models download inswapper_128" in proc.stderr
    assert_clean_failure(run_cli("models", "path", "nope", cwd=tmp_path, env=env), 4)
    assert_clean_failure(run_cli("models", "download", "inswaper_128", cwd=tmp_path, env=env), 2)
    assert_clean_failure(run_cli("models", "list", "--kind", "nope", cwd=tmp_path, env=env), 2)


def test_cli_ctrl_c_keeps_part_and_next_run_resumes(server, tmp_path):
    data = blob(3_000_000, seed=15)
    server.delay, server.chunk = 0.02, 32 * 1024  # ~2 s for the whole file
    env = cli_env(tmp_path, [entry("c_int", data, [server.add("/c_int.onnx", data)])])
    cache = tmp_path / "xdg" / "swapcli"
    part = cache / "c_int.onnx.part"
    child = subprocess.Popen([sys.executable, "-m", "swapcli", "models", "download", "c_int", "--yes"],
                             cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not (part.exists() and part.stat().st_size > 200_000):
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "resume" in err
    assert part.exists() and 0 < part.stat().st_size < len(data)
    assert not (cache / "c_int.onnx").exists()
    kept = part.stat().st_size
    server.delay = 0.0
    proc = run_cli("models", "download", "c_int", "--yes", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (cache / "c_int.onnx").read_bytes() == data and not part.exists()
    last = server.hits("/c_int.onnx")[-1]
    assert last["range"] == f"bytes={kept}-" and last["if_range"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_module_imports_stay_light():
    code = ("import sys, swapcli.cli.models, swapcli.models.download, swapcli.models.locate; "
            "heavy = [m for m in ('onnxruntime', 'torch', 'pooch', 'requests', 'cv2') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
