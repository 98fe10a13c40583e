# One command sets up and runs the main job (make demo); one sets up and tests (make test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
# torch is installed first and pinned, so no resolver ever pulls CUDA wheels (override: make TORCH=...)
TORCH  ?= 2.13.0

.PHONY: setup demo test test-fast test-bundled-ffmpeg bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q 'torch==$(TORCH)'
	$(BIN)/python -m pip install -q -e '.[test,cluster]'  # cluster: ray, for --cluster and tests/test_cluster.py
	touch $@

setup: $(VENV)/.installed

demo: setup
	mkdir -p $(OUT)
	$(BIN)/python examples/make_samples.py $(OUT)/samples
	$(BIN)/swapcli image $(OUT)/samples/source.jpg $(OUT)/samples/target.png -o $(OUT)/demo_image.jpg --overwrite
	@echo "the hard case: three players, one with his head turned 45 degrees (a warning says the pose limits it)"
	$(BIN)/swapcli image $(OUT)/samples/target.png $(OUT)/samples/turned.jpg -o $(OUT)/demo_turned.jpg --faces all --overwrite
	$(BIN)/python examples/make_clip.py $(OUT)/samples/clip.mp4
	$(BIN)/swapcli video $(OUT)/samples/source.jpg $(OUT)/samples/clip.mp4 -o $(OUT)/demo_video.mp4 --overwrite
	@echo "wrote $(OUT)/demo_image.jpg, $(OUT)/demo_turned.jpg and $(OUT)/demo_video.mp4"

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# the video tests again with imageio-ffmpeg's own ffmpeg (7.x/9.x), when `make test` used a system one
VIDEO_TESTS := tests/test_video_io.py tests/test_writer_speed.py tests/test_hostile.py tests/test_cli_video.py
test-bundled-ffmpeg: setup
	SWAPCLI_FFMPEG="$$($(BIN)/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" \
		$(BIN)/python -m pytest -q $(VIDEO_TESTS)

bench: setup
	$(BIN)/python benchmarks/bench_image.py

clean:
	rm -rf $(OUT) .pytest_cache
