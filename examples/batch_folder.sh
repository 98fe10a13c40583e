#!/usr/bin/env bash
# A folder of photos and videos in one run: models load once, outputs mirror
# the folder tree, a manifest records every file, and a re-run (or a run after
# Ctrl-C) only does what is left. stdout carries only the written paths.
set -euo pipefail
python examples/make_samples.py out/batch_in >/dev/null
python examples/make_clip.py out/batch_in/clips/clip.mp4 >/dev/null
mv out/batch_in/source.jpg out/batch_source.jpg        # the identity, kept out of the targets
echo "not a photo" > out/batch_in/notes.txt            # reported as skipped (unsupported)

# First run: everything is done; exit 1 would mean some file failed (listed on stderr).
swapcli batch out/batch_source.jpg out/batch_in -o out/batch_out --recursive --faces all

# Second run: nothing to do, every input is skipped as already done (see the manifest).
swapcli batch out/batch_source.jpg out/batch_in -o out/batch_out --recursive --faces all --json \
    | python -c "import json, sys; s = json.load(sys.stdin); print('re-run:', s['done'], 'done,', s['skipped'], 'skipped')"
tail -n 3 out/batch_out/swapcli-manifest.jsonl
