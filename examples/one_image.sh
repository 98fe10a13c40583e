#!/usr/bin/env bash
# Swap one photo: the source's identity onto every face of the target.
set -euo pipefail
python examples/make_samples.py out/samples
swapcli image out/samples/source.jpg out/samples/target.jpg -o out/one_image.jpg --faces all --overwrite --json
