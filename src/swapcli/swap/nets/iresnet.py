"""ArcFace IResNet (insightface arcface_torch layout), the identity embedder GHOST was trained with.

The module names match arcface_torch's ``backbones/iresnet.py`` so that GHOST's
published ``backbone.pth`` (an iresnet100) loads with ``strict=True``: ``conv1``,
``bn1``, ``prelu``, ``layer1..4.N.{bn1,conv1,bn2,prelu,conv2,bn3}``,
``layerK.0.downsample.{0,1}``, ``bn2``, ``fc`` ([512, 512*7*7] = [512, 25088]) and
``features`` (BatchNorm1d).

Expected preprocessing (what GHOST's inference does, so z_id matches its training):
- the 224 px GHOST crop (arcface_112_v1 template scaled x2), RGB, not BGR;
- pixels as (x / 255 - 0.5) / 0.5, i.e. in [-1, 1];
- resized to 112 px by ``F.interpolate(x, scale_factor=0.5, mode="bilinear",
  align_corners=True)``;
- the [B, 512] output goes to the generator as is: no L2 normalisation.

The dropout of the original (p=0 in every published config) is omitted: it is the
identity and has no weights. The fp16 autocast flag is omitted too: call
``.half()`` on the module (fp16 CUDA) or leave it fp32 (CPU); all ops are standard.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_BN_EPS = 1e-5


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, + shortcut."""

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=_BN_EPS)
        self.conv1 = _conv3x3(c_in, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet for 112x112 faces: four stride-2 stages (112 -> 7 px), then fc to 512."""

    fc_scale = 7 * 7

    def __init__(self, layers: tuple[int, int, int, int], num_features: int = 512) -> None:
        super().__init__()
        self._c = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._stage(64, layers[0])
        self.layer2 = self._stage(128, layers[1])
        self.layer3 = self._stage(256, layers[2])
        self.layer4 = self._stage(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=_BN_EPS)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)

    def _stage(self, planes: int, blocks: int) -> nn.Sequential:
        # Every stage strides by 2, so every first block has a conv1x1+BN shortcut.
        downsample = nn.Sequential(
            nn.Conv2d(self._c, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=_BN_EPS),
        )
        mods: list[nn.Module] = [IBasicBlock(self._c, planes, 2, downsample)]
        self._c = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, 112, 112] RGB in [-1, 1] -> [B, 512] unnormalised embedding."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(x))


def iresnet50() -> IResNet:
    """arcface_torch r50: stages of 3, 4, 14, 3 blocks."""
    return IResNet((3, 4, 14, 3))


def iresnet100() -> IResNet:
    """arcface_torch r100 (GHOST's ``backbone.pth``): stages of 3, 13, 30, 3 blocks."""
    return IResNet((3, 13, 30, 3))
