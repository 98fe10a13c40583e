"""GHOST networks (AEI-Net, IResNet) and safe checkpoint loading.

Layout checks build the nets on the meta device (no memory, no init time); only
the tests that need real numbers allocate weights, and they use batch 1-2.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from swapcli.core.errors import ModelError
from swapcli.models.checkpoint import load_into, load_state_dict
from swapcli.swap.nets.aei import AEINet
from swapcli.swap.nets.iresnet import iresnet50, iresnet100

# The published G_unet_2blocks.pth layout (key + shape per line), copied from ../shared/reference/.
REFERENCE = Path(__file__).resolve().parent / "data" / "ghost_G_unet_2blocks.state_dict.txt"
# Published G_unet_2blocks.pth: keys and *learnable* parameters (BN running stats,
# 10,125 values in 60 buffers, are not counted; with them the state_dict holds 184,353,506).
N_KEYS_2BLOCKS = 311
N_PARAMS_2BLOCKS = 184_343_381
N_BUFFER_VALUES_2BLOCKS = 10_125


def meta_net(num_blocks: int) -> AEINet:
    with torch.device("meta"):
        return AEINet(num_blocks)


def layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def parse_reference(path: Path) -> tuple[list[tuple[str, tuple[int, ...]]], int]:
    rows, total = [], -1
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"(\S+) \[([\d, ]*)\]", line.strip())
        if m:
            rows.append((m[1], tuple(int(d) for d in m[2].split(",") if d.strip())))
        elif line.startswith("N_keys"):
            total = int(line.split()[-1])
    return rows, total


@pytest.fixture(scope="module")
def net2() -> AEINet:
    torch.manual_seed(0)
    return AEINet(2).eval()


# (a) -------------------------------------------------------------------------


def test_aei_2blocks_counts_match_published() -> None:
    net = meta_net(2)
    sd = net.state_dict()
    assert len(sd) == N_KEYS_2BLOCKS
    assert sum(p.numel() for p in net.parameters()) == N_PARAMS_2BLOCKS
    assert sum(b.numel() for b in net.buffers()) == N_BUFFER_VALUES_2BLOCKS
    assert next(iter(sd)) == "encoder.conv1.0.weight"
    assert list(sd)[-1] == "generator.AADBlk8.last_add_block.2.weight"


def test_aei_2blocks_state_dict_equals_reference_table() -> None:
    rows, total = parse_reference(REFERENCE)
    assert len(rows) == N_KEYS_2BLOCKS and total == N_PARAMS_2BLOCKS
    ours = layout(meta_net(2))
    assert [k for k, _ in ours] == [k for k, _ in rows]  # same keys, same order
    assert ours == rows  # and same shapes
    # The table's total is the learnable parameters only (the "N_params(learnable)" line):
    stats = ("running_mean", "running_var", "num_batches_tracked")
    buffers = {k for k, _ in rows if k.rsplit(".", 1)[-1] in stats}
    learnable = sum(torch.Size(s).numel() for k, s in rows if k not in buffers)
    assert learnable == total


# (b) -------------------------------------------------------------------------


def _normalise(key: str) -> str:
    """Drop the AAD unit number: add_blocks.{3u+j} -> add_blocks.*{j}."""
    return re.sub(r"add_blocks\.(\d+)\.", lambda m: f"add_blocks.*{int(m[1]) % 3}.", key)


@pytest.mark.parametrize("num_blocks", [1, 3])
def test_block_variants_differ_only_in_unit_count(num_blocks: int) -> None:
    base, other = layout(meta_net(2)), layout(meta_net(num_blocks))
    assert {_normalise(k) for k, _ in other} == {_normalise(k) for k, _ in base}
    # Everything outside add_blocks (encoder, up1, shortcuts) is identical.
    assert [r for r in other if ".add_blocks." not in r[0]] == [r for r in base if ".add_blocks." not in r[0]]
    for blk in range(1, 9):
        units = {int(m[1]) // 3 for k, _ in other if (m := re.search(rf"AADBlk{blk}\.add_blocks\.(\d+)\.", k))}
        assert units == set(range(num_blocks))
    shapes = dict(other)
    last = 3 * num_blocks - 1  # only the last conv of a block changes the width
    assert shapes[f"generator.AADBlk8.add_blocks.{last}.weight"] == (3, 64, 3, 3)
    assert shapes[f"generator.AADBlk4.add_blocks.{last}.weight"] == (512, 1024, 3, 3)
    if num_blocks > 1:
        assert shapes["generator.AADBlk4.add_blocks.2.weight"] == (1024, 1024, 3, 3)
    assert len(other) == N_KEYS_2BLOCKS + (num_blocks - 2) * 8 * 11


@pytest.mark.slow
@pytest.mark.parametrize("num_blocks", [1, 3])
def test_block_variants_forward(num_blocks: int) -> None:
    torch.manual_seed(0)
    net = AEINet(num_blocks).eval()
    with torch.inference_mode():
        y, attrs = net(torch.rand(1, 3, 256, 256) * 2 - 1, torch.randn(1, 512))
    assert y.shape == (1, 3, 256, 256) and len(attrs) == 8
    assert torch.isfinite(y).all()


# (f) -------------------------------------------------------------------------


@pytest.mark.slow
def test_forward_batch2_shape_range_and_attributes(net2: AEINet) -> None:
    torch.manual_seed(1)
    xt = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        y, attrs = net2(xt, torch.randn(2, 512) * 3)
    assert y.shape == (2, 3, 256, 256) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.min() >= -1 and y.max() <= 1
    assert [tuple(a.shape[1:]) for a in attrs] == [
        (1024, 2, 2), (2048, 4, 4), (1024, 8, 8), (512, 16, 16),
        (256, 32, 32), (128, 64, 64), (64, 128, 128), (64, 256, 256),
    ]
    assert not torch.equal(y[0], y[1])


# (c) + (d) on the real layout ---------------------------------------------


@pytest.mark.slow
def test_random_checkpoint_round_trip_and_wrong_variant(net2: AEINet, tmp_path: Path) -> None:
    ckpt = tmp_path / "G_unet_2blocks.pth"
    torch.save(net2.state_dict(), ckpt)
    # Allocated but never initialised: every value must come from the file.
    with torch.device("meta"):
        fresh = AEINet(2)
    fresh = fresh.to_empty(device="cpu").eval()
    assert load_into(fresh, ckpt) == ([], [])
    torch.manual_seed(2)
    xt, z = torch.rand(1, 3, 256, 256) * 2 - 1, torch.randn(1, 512)
    with torch.inference_mode():
        want, want_attrs = net2(xt, z)
        got, got_attrs = fresh(xt, z)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for a, b in zip(got_attrs, want_attrs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # The same file offered to the 1-block layout: refused, in one line.
    with pytest.raises(ModelError) as err:
        load_into(meta_net(1), ckpt)
    msg = str(err.value)
    assert "\n" not in msg and "unexpected" in msg and "add_blocks.3." in msg


# (d) -------------------------------------------------------------------------


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)


def test_wrong_shape_is_refused_and_module_untouched(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["fc.weight"] = torch.zeros(3, 4)
    state["fc.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    target = Tiny()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    for strict in (True, False):  # a shape mismatch can never be loaded
        with pytest.raises(ModelError, match=r"2 wrong shape \(fc\.weight \[3,4\] vs \[2,4\]") as err:
            load_into(target, tmp_path / "bad.pth", strict=strict)
        assert "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    del state["conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ModelError, match=r"1 missing \(conv\.weight\); 1 unexpected \(extra\.weight\)"):
        load_into(Tiny(), tmp_path / "partial.pth")
    assert load_into(Tiny(), tmp_path / "partial.pth", strict=False) == (["conv.weight"], ["extra.weight"])


def test_absent_batchnorm_counter_is_tolerated(tmp_path: Path) -> None:
    """Pre-0.4 saves lack num_batches_tracked; torch fills it in, inference never reads it."""
    state = Tiny().state_dict()
    del state["bn.num_batches_tracked"]
    torch.save(state, tmp_path / "old.pth")
    assert load_into(Tiny(), tmp_path / "old.pth") == ([], [])


def test_wrapped_and_dataparallel_checkpoints_load(tmp_path: Path) -> None:
    src = Tiny()
    torch.nn.init.normal_(src.fc.weight)
    prefixed = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"epoch": 7, "state_dict": prefixed}, tmp_path / "a.pth")
    torch.save({"model": src.state_dict(), "optim": {"lr": 0.1}}, tmp_path / "b.pth")
    torch.save({"params": src.state_dict()}, tmp_path / "c.pth")
    for name in ("a.pth", "b.pth", "c.pth"):
        dst = Tiny()
        load_into(dst, tmp_path / name)
        assert torch.equal(dst.fc.weight, src.fc.weight)
    assert set(load_state_dict(tmp_path / "a.pth")) == set(src.state_dict())


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "directory", "text", "not_weights"])
def test_unreadable_files_are_one_line_model_errors(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.pth"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        torch.save(Tiny().state_dict(), path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "directory":
        path.mkdir()
    elif case == "text":
        path.write_text("not a checkpoint\n")
    elif case == "not_weights":
        torch.save({"epoch": 3, "name": "x"}, path)
    with pytest.raises(ModelError) as err:
        load_state_dict(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


# (e) -------------------------------------------------------------------------


class Payload:
    """Unpickling this calls open(marker, 'w'): a file appears if pickled code ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_code_is_refused_and_never_run(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"fc.weight": torch.zeros(2, 4), "fc.bias": Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with path.open("wb") as fh:
            pickle.dump(obj, fh)
    with pytest.raises(ModelError, match="refused: it is not a plain tensor file") as err:
        load_state_dict(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="refused"):
        load_into(Tiny(), path)
    assert not marker.exists()
    if writer == "pickle":  # control: the payload is live when unpickled unsafely
        with path.open("rb") as fh:
            pickle.load(fh)["fc.bias"].close()
        assert marker.exists()


# (g) -------------------------------------------------------------------------


def test_iresnet100_layout_matches_arcface_torch() -> None:
    with torch.device("meta"):
        net = iresnet100()
    shapes = dict(layout(net))
    assert len(shapes) == 925  # arcface_torch r100, buffers included
    assert sum(p.numel() for p in net.parameters()) == 65_156_160
    assert shapes["conv1.weight"] == (64, 3, 3, 3)
    assert shapes["prelu.weight"] == (64,)
    for key in ("bn1.running_var", "layer1.0.bn1.weight", "layer1.0.conv1.weight", "layer1.0.prelu.weight",
                "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean", "layer2.12.conv2.weight",
                "layer3.29.bn3.bias", "layer4.2.prelu.weight", "bn2.weight", "features.running_var"):
        assert key in shapes, key
    assert "layer2.13.conv1.weight" not in shapes and "layer1.1.downsample.0.weight" not in shapes
    assert shapes["fc.weight"] == (512, 25088) and shapes["fc.bias"] == (512,)
    with torch.device("meta"):
        r50 = dict(layout(iresnet50()))
    assert len(r50) == 475 and "layer3.13.conv1.weight" in r50 and "layer3.14.conv1.weight" not in r50


def test_iresnet100_forward_shape() -> None:
    torch.manual_seed(0)
    net = iresnet100().eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
