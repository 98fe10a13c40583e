#!/usr/bin/env bash
# A shell loop over a folder: stdout carries only the written path, so it
# composes with other tools; failures print one line and the loop goes on.
set -uo pipefail
python examples/make_samples.py out/samples >/dev/null
mkdir -p out/loop
for target in out/samples/*.jpg; do
    name=$(basename "$target" .jpg)
    if swapcli image out/samples/source.jpg "$target" -o "out/loop/${name}_swapped.jpg" --faces all --overwrite --quiet; then
        :
    else
        echo "skipped $target (exit $?)" >&2
    fi
done
