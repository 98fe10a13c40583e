"""Make a short sample clip (3 s, 640x480, 25 fps, sine audio) from a packaged portrait with ffmpeg:
a slow push-in that keeps the whole face in frame from the first frame to the last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from make_samples import package_file


def main(dest: Path) -> None:
    from swapcli.core.ffmpeg import ffmpeg_exe

    photo = package_file("skimage", "data", "astronaut.png")  # 512x512, face near the top middle
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Padded to 4:3 around the portrait, then pushed in from 1.35x to 1.6x on head and shoulders.
    zoom = "zoompan=z='1.35+0.25*on/75':x='iw*0.455-(iw/zoom/2)':y='ih*0.33-(ih/zoom/2)':d=1:s=640x480:fps=25"
    subprocess.run([
        ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-framerate", "25", "-i", str(photo),
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
        "-vf", f"scale=600:600,pad=800:600:100:0:color=0x5a5050,{zoom},format=yuv420p",
        "-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(dest),
    ], check=True)
    print(dest)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/samples/clip.mp4"))
