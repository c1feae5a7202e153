"""UNet2D as in the field's reference code (methods-spec §1.3), with its features reachable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_CHANNELS = (16, 32, 64, 128, 256)
ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


def make_norm(kind: str, channels: int) -> nn.Module:
    """"batch" as in the reference code; "group" (8 channels a group) has no batch coupling."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    raise ValueError(f"unknown normalisation layer '{kind}'")


class ConvBlock(nn.Module):
    """conv3x3 -> BN -> LeakyReLU -> Dropout -> conv3x3 -> BN -> LeakyReLU."""

    def __init__(self, cin: int, cout: int, dropout: float, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), make_norm(norm, cout), nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(cout, cout, 3, padding=1), make_norm(norm, cout), nn.LeakyReLU(),
        )

    def forward(self, x):
        return self.body(x)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, norm: str):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cskip, 2, stride=2)
        self.conv = ConvBlock(2 * cskip, cout, 0.0, norm)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], 1))


class UNet2D(nn.Module):
    """Encoder 16-32-64-128-256 with dropout, transposed-conv decoder, 1x1 output head.

    ``forward(x, return_features=True)`` also returns the encoder's outputs (``"encoder"``, list,
    deepest last) and the penultimate per-pixel feature map (``"decoder"``): the 1x1 head is linear
    in it, which TSA-style losses need. With ``multiscale`` (URPC-style deep supervision) the
    features also hold ``"scales"``: logits from every decoder level upsampled to the input size,
    finest first.
    """

    def __init__(self, in_channels: int, n_classes: int, channels=ENCODER_CHANNELS, dropout=ENCODER_DROPOUT,
                 norm: str = "batch", multiscale: bool = False):
        super().__init__()
        self.in_channels, self.n_classes = in_channels, n_classes
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c, p in zip(channels, dropout):
            self.encoder.append(ConvBlock(cin, c, p, norm))
            cin = c
        self.pool = nn.MaxPool2d(2)
        rev = list(channels[::-1])
        self.decoder = nn.ModuleList(UpBlock(rev[i], rev[i + 1], rev[i + 1], norm) for i in range(len(rev) - 1))
        self.head = nn.Conv2d(channels[0], n_classes, 1)
        self.feature_channels = channels[0]
        # one 1x1 head per coarser decoder level (1/2, 1/4, 1/8 of the input)
        self.aux_heads = nn.ModuleList(nn.Conv2d(c, n_classes, 1) for c in rev[1:-1][::-1]) if multiscale else None

    def encode(self, x) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats

    def decode(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every decoder level's output, coarsest first; the last is the penultimate feature map."""
        x, levels = feats[-1], []
        for block, skip in zip(self.decoder, feats[-2::-1]):
            x = block(x, skip)
            levels.append(x)
        return levels

    def forward(self, x, return_features: bool = False):
        feats = self.encode(x)
        levels = self.decode(feats)
        dec = levels[-1]
        logits = self.head(dec)
        if not return_features:
            return logits
        out = {"encoder": feats, "decoder": dec}
        if self.aux_heads is not None:
            size = logits.shape[-2:]
            coarse = [F.interpolate(h(lv), size=size, mode="bilinear", align_corners=False)
                      for h, lv in zip(self.aux_heads, levels[:-1][::-1])]
            out["scales"] = [logits, *coarse]
        return logits, out
