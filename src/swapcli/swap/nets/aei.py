"""GHOST AEI-Net (ai-forever/sber-swap, Apache-2.0): U-Net attribute encoder + AAD generator.

Written to load the published ``G_unet_{1block,2blocks,3blocks}.pth`` strictly.
Design facts, one per line, and why:

- Module and attribute names (``encoder.conv1.0``, ``encoder.deconv1.deconv``,
  ``generator.AADBlk1.add_blocks.3.fc1``, ``last_add_block`` ...) mirror the
  published state_dict, so the checkpoint loads with ``strict=True``.
- Registration order follows the original too, so ``state_dict()`` lists keys in
  the same order as the published file (311 keys for 2 blocks).
- Encoder: 7 x (conv4x4 stride 2, no bias -> BatchNorm -> LeakyReLU 0.1), 256 -> 2 px,
  channels 3-32-64-128-256-512-1024-1024.
- Decoder: 6 x (deconv4x4 stride 2, no bias -> BN -> LeakyReLU 0.1), each followed by
  ``cat((up, skip), dim=1)`` - the up-sampled map first, as the weights expect.
- The 8th attribute map is the 7th up-sampled x2 bilinear with ``align_corners=True``,
  as in the original; so are the x2 up-samplings between generator blocks.
- ``up1`` is ConvTranspose2d(c_id -> 1024, k=2) on z_id seen as [B, c_id, 1, 1]: a
  2x2 seed map; it keeps its bias (the only biased up/deconv layer).
- An AAD residual block holds ``num_blocks`` units of (AAD layer, ReLU, conv3x3 no
  bias) in ``add_blocks`` (indices 3k, 3k+1, 3k+2; ReLU has no keys); each unit's AAD
  layer takes the previous unit's conv output; only the last conv changes channels.
- A block that changes channels (blocks 4-8) adds a single-unit ``last_add_block`` on
  the block input as its shortcut; otherwise the shortcut is the identity. This does
  not depend on ``num_blocks`` - which is how the 1- and 3-block layouts follow.
- AAD layer: h = InstanceNorm(h_in) with no affine and no running stats (hence no
  keys); A = conv1(z_attr) * h + conv2(z_attr); I = fc1(z_id) * h + fc2(z_id);
  M = sigmoid(conv_h(h)); out = (1 - M) * A + M * I - the original's operation order,
  so fp16 results track the reference's.
- The output is tanh, in [-1, 1]; the encoder's attribute maps are returned too, as
  ``G(Xt, z_id) -> (Y, attributes)`` does upstream.
- Only standard ops (conv, deconv, BN, instance norm, bilinear interpolate, sigmoid,
  tanh, cat) are used: all have fp16 CUDA kernels and fp32 CPU kernels and accept
  channels_last tensors, so ``model.half().cuda()`` and a CPU fp32 model both work.
- Inputs are cast to the weights' dtype in ``forward`` because the ArcFace embedder
  usually runs in fp32 while the generator runs in fp16 on a GPU.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Encoder widths, 256 px -> 2 px.
_ENC_CHANNELS = (3, 32, 64, 128, 256, 512, 1024, 1024)
# Decoder (in, out) per deconv: in = previous concatenated attribute map.
_DEC_CHANNELS = ((1024, 1024), (2048, 512), (1024, 256), (512, 128), (256, 64), (128, 32))
# Generator blocks: (c_in, c_out, c_attr) for AADBlk1..8 (U-Net backbone).
_GEN_BLOCKS = (
    (1024, 1024, 1024),
    (1024, 1024, 2048),
    (1024, 1024, 1024),
    (1024, 512, 512),
    (512, 256, 256),
    (256, 128, 128),
    (128, 64, 64),
    (64, 3, 64),
)


def _up2(x: Tensor) -> Tensor:
    """x2 bilinear up-sampling with align_corners=True, as GHOST was trained."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class _Deconv(nn.Module):
    """Transposed conv4x4 stride 2 -> BN -> LeakyReLU, then concatenated with the skip."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return torch.cat((self.lrelu(self.bn(self.deconv(x))), skip), dim=1)


class _AttrEncoder(nn.Module):
    """U-Net multi-level attribute encoder: 8 maps, 2 px (1024 ch) to 256 px (64 ch)."""

    def __init__(self) -> None:
        super().__init__()
        for i, (c_in, c_out) in enumerate(itertools.pairwise(_ENC_CHANNELS), start=1):
            self.add_module(
                f"conv{i}",
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.LeakyReLU(0.1, inplace=True),
                ),
            )
        for i, (c_in, c_out) in enumerate(_DEC_CHANNELS, start=1):
            self.add_module(f"deconv{i}", _Deconv(c_in, c_out))

    def forward(self, xt: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        x = xt
        for i in range(1, len(_ENC_CHANNELS)):
            x = getattr(self, f"conv{i}")(x)
            feats.append(x)
        # feats[6] is the 2 px bottleneck; skips pair with feats[5], feats[4], ... feats[0].
        attrs = [feats[-1]]
        for i in range(1, len(_DEC_CHANNELS) + 1):
            attrs.append(getattr(self, f"deconv{i}")(attrs[-1], feats[-1 - i]))
        attrs.append(_up2(attrs[-1]))
        return attrs


class _AADLayer(nn.Module):
    """Adaptive attentional denormalisation: a learnt per-pixel mix of attribute and identity."""

    def __init__(self, c_x: int, c_attr: int, c_id: int) -> None:
        super().__init__()
        self.c_x = c_x
        self.conv1 = nn.Conv2d(c_attr, c_x, kernel_size=1)
        self.conv2 = nn.Conv2d(c_attr, c_x, kernel_size=1)
        self.fc1 = nn.Linear(c_id, c_x)
        self.fc2 = nn.Linear(c_id, c_x)
        self.norm = nn.InstanceNorm2d(c_x, affine=False)  # no keys: no affine, no running stats
        self.conv_h = nn.Conv2d(c_x, 1, kernel_size=1)

    def forward(self, h_in: Tensor, z_attr: Tensor, z_id: Tensor) -> Tensor:
        h = self.norm(h_in)
        a = self.conv1(z_attr) * h + self.conv2(z_attr)
        b = z_id.shape[0]
        gamma_id = self.fc1(z_id).reshape(b, self.c_x, 1, 1)
        beta_id = self.fc2(z_id).reshape(b, self.c_x, 1, 1)
        i = gamma_id * h + beta_id
        m = torch.sigmoid(self.conv_h(h))
        return (1 - m) * a + m * i


def _units(layers: nn.ModuleList, h: Tensor, z_attr: Tensor, z_id: Tensor) -> Tensor:
    """Run (AAD, ReLU, conv) triples in order; each AAD layer sees the previous conv's output."""
    for k in range(0, len(layers), 3):
        h = layers[k + 2](layers[k + 1](layers[k](h, z_attr, z_id)))
    return h


class _AADResBlock(nn.Module):
    """``num_blocks`` AAD units plus a one-unit AAD shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, c_attr: int, c_id: int, num_blocks: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        units: list[nn.Module] = []
        for k in range(num_blocks):
            conv_out = c_out if k == num_blocks - 1 else c_in
            units += [
                _AADLayer(c_in, c_attr, c_id),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_in, conv_out, kernel_size=3, padding=1, bias=False),
            ]
        self.add_blocks = nn.ModuleList(units)
        if c_in != c_out:
            self.last_add_block = nn.ModuleList(
                [
                    _AADLayer(c_in, c_attr, c_id),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                ]
            )

    def forward(self, h: Tensor, z_attr: Tensor, z_id: Tensor) -> Tensor:
        x = _units(self.add_blocks, h, z_attr, z_id)
        if self.c_in != self.c_out:
            h = _units(self.last_add_block, h, z_attr, z_id)
        return x + h


class _AADGenerator(nn.Module):
    """z_id -> 2x2 seed, then 8 AAD residual blocks with x2 up-sampling between them."""

    def __init__(self, c_id: int, num_blocks: int) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(c_id, 1024, kernel_size=2, stride=1, padding=0)
        for i, (c_in, c_out, c_attr) in enumerate(_GEN_BLOCKS, start=1):
            self.add_module(f"AADBlk{i}", _AADResBlock(c_in, c_out, c_attr, c_id, num_blocks))

    def forward(self, attrs: list[Tensor], z_id: Tensor) -> Tensor:
        h = self.up1(z_id.reshape(z_id.shape[0], -1, 1, 1))
        last = len(_GEN_BLOCKS)
        for i in range(1, last + 1):
            h = getattr(self, f"AADBlk{i}")(h, attrs[i - 1], z_id)
            if i < last:
                h = _up2(h)
        return torch.tanh(h)


class AEINet(nn.Module):
    """GHOST generator: ``forward(xt, z_id) -> (y, attrs)``.

    xt: [B, 3, 256, 256] RGB in [-1, 1] (GHOST's 224 crop resized to 256).
    z_id: [B, c_id] ArcFace (iresnet100) embedding, *not* L2-normalised.
    y: [B, 3, 256, 256] RGB in [-1, 1]; attrs: the 8 encoder maps, 2 px to 256 px.
    ``num_blocks`` (1, 2 or 3) is the number of AAD units per residual block and must
    match the checkpoint (G_unet_1block / 2blocks / 3blocks).
    """

    def __init__(self, num_blocks: int = 2, c_id: int = 512) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.c_id = c_id
        self.encoder = _AttrEncoder()
        self.generator = _AADGenerator(c_id, num_blocks)

    def forward(self, xt: Tensor, z_id: Tensor) -> tuple[Tensor, list[Tensor]]:
        dtype = self.generator.up1.weight.dtype
        attrs = self.encoder(xt.to(dtype))
        return self.generator(attrs, z_id.to(dtype)), attrs
