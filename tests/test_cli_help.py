"""Help that reads like a Click tool, one options bundle for the swapping commands (issue 18)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.main import get_command

from conftest import run_cli
from swapcli.cli.app import app

COMMANDS = get_command(app).commands


@pytest.mark.parametrize("args, usage", [
    (["image"], "Usage: swapcli image [OPTIONS] SOURCE TARGET"),
    (["video"], "Usage: swapcli video [OPTIONS] [SOURCE] TARGET_VIDEO"),
    (["batch"], "Usage: swapcli batch [OPTIONS] SOURCE [INPUT]..."),
    (["verify"], "Usage: swapcli verify [OPTIONS] FILE..."),
    (["models", "download"], "Usage: swapcli models download [OPTIONS] NAME..."),
    (["models", "verify"], "Usage: swapcli models verify [OPTIONS] [NAME]..."),
])
def test_usage_lines_and_types_read_like_click(args, usage):
    proc = run_cli(*args, "--help", env={"COLUMNS": "100"})
    assert proc.returncode == 0
    assert usage in proc.stdout
    assert not re.search(r"<(bool|path|int|float|str|list\[)", proc.stdout), proc.stdout  # no Typer-internal types
    assert "{" not in proc.stdout.splitlines()[1]


def _options(name: str) -> dict[str, tuple]:
    ctx = typer.Context(COMMANDS[name])
    return {p.name: (tuple(p.opts), p.help, p.default, getattr(p, "rich_help_panel", None))
            for p in COMMANDS[name].get_params(ctx) if p.name != "help" and p.param_type_name == "option"}


def test_shared_options_are_the_same_everywhere():
    image, video, batch = _options("image"), _options("video"), _options("batch")
    shared = set(image) & set(video) & set(batch)
    assert {"faces", "reference", "threshold", "engine", "device", "no_mark", "overwrite", "json_out",
            "sources", "mix", "paste"} <= shared
    for name in shared - {"det_size"}:  # the detector size defaults differ on purpose (video: 480)
        assert image[name] == video[name] == batch[name], name
    assert video["crf"][1:] == batch["crf"][1:] and video["codec"] == batch["codec"]


@pytest.mark.parametrize("command", ["image", "video", "batch"])
def test_every_option_has_a_panel_and_one_line_of_help(command):
    for name, (opts, help_text, _, panel) in _options(command).items():
        assert panel, f"{command} {opts}: no help panel"
        assert help_text and "\n" not in help_text and len(help_text) <= 100, f"{command} {opts}: {help_text!r}"
