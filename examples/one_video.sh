#!/usr/bin/env bash
# Swap a video: identity from one photo, frame rate and audio kept.
set -euo pipefail
python examples/make_samples.py out/samples >/dev/null
python examples/make_clip.py out/samples/clip.mp4 >/dev/null
swapcli video out/samples/source.jpg out/samples/clip.mp4 -o out/one_video.mp4 --overwrite --json
