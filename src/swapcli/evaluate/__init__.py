"""Measured quality and speed: `swapcli eval` metrics, its HTML report, and `swapcli bench`.

metrics.py   pure metric functions on faces and landmarks (no models, no I/O)
inputs.py    what an evaluation reads: kinds (image/video), sources, gallery
image.py     evaluate one result photo against its target
video.py     evaluate a result video against its target on sampled frames
report.py    the self-contained HTML report
samples.py   the packaged sample photos and the benchmark clip built from them
bench.py     `swapcli bench`: the real video pipeline on a generated clip, timed

docs/metrics.md describes every number.
"""
