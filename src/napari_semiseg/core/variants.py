"""Method variants for benchmarks and ablations, and stand-in synthetic unlabeled images.

A variant is a method name with settings in brackets, e.g. ``sra-seg[sa_mode=off]`` or
``sgrs-net[inconsistent=hard,exclude_uncertain=false]``; keys that are ``TrainConfig`` fields
(``unlabeled_source=extra``) set the training configuration instead of the method's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import InputError
from .trainer import TrainConfig
from .volume import Volume


@dataclass
class Variant:
    label: str
    method: str
    settings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def apply(self, base: TrainConfig) -> TrainConfig:
        return replace(base, method=self.method, method_settings={**base.method_settings, **self.settings},
                       **self.config)

    @property
    def wants_extra_unlabeled(self) -> bool:
        return self.config.get("unlabeled_source", "real") != "real" and not self.config.get("unlabeled_dir")


def parse_value(raw: str):
    """A setting's value: JSON where it parses (numbers, true, null, lists), else the text itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_variant(text: str) -> Variant:
    from .methods import METHODS

    text = text.strip()
    name, _, rest = text.partition("[")
    name = name.strip()
    if name not in METHODS:
        raise InputError(f"Unknown method '{name}': choose from {', '.join(METHODS)}.")
    if rest and not rest.endswith("]"):
        raise InputError(f"'{text}': settings go in brackets, e.g. sra-seg[sa_mode=off].")
    config, settings = route_settings(parse_settings(rest[:-1]), name)
    return Variant(text, name, settings, config)


def route_settings(values: dict, method: str) -> tuple[dict, dict]:
    """(training configuration, method settings) from settings given by name, the one rule for the
    widget, ``--set`` and variants: ``method.KEY`` is the method's; a ``TrainConfig`` field is the
    configuration's; another of the method's own settings is the method's; anything else is refused.
    Values are checked later, by ``TrainConfig.check`` and the method's ``Settings.from_dict``."""
    from .methods import METHODS

    own = set(METHODS[method].Settings.__dataclass_fields__) if method in METHODS else set()
    config, settings = {}, {}
    for key, value in values.items():
        if key.startswith("method."):
            settings[key[len("method."):]] = value
        elif key in TrainConfig.__dataclass_fields__:
            config[key] = value
        elif key in own:
            settings[key] = value
        else:
            raise InputError(f"Unknown setting '{key}': neither a training setting "
                             f"({', '.join(sorted(TrainConfig.__dataclass_fields__))}) nor one of {method}'s "
                             f"({', '.join(sorted(own))}).")
    return config, settings


def parse_settings(text: str) -> dict:
    """``"key=value, key=value"`` -> dict, values read as JSON where they parse (numbers, true, null)."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"'{item}' is not KEY=VALUE.")
        out[key.strip()] = parse_value(raw.strip())
    return out


def split_methods(text: str) -> list[str]:
    """Split a comma-separated list of variants, keeping commas inside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def _elastic(x: torch.Tensor, gen: torch.Generator, amplitude: float, smoothness: int) -> torch.Tensor:
    """Random smooth displacement of (1, C, H, W), amplitude in pixels."""
    h, w = x.shape[-2:]
    coarse = torch.randn(1, 2, max(2, h // smoothness), max(2, w // smoothness), generator=gen)
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    flow = flow / flow.abs().amax().clamp_min(1e-6) * amplitude
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs + flow[0, 0] * 2 / w, ys + flow[0, 1] * 2 / h], -1)[None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def write_standin_synthetic(volumes: list[Volume], folder: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` 2D TIFF images made only from the labeled slices of ``volumes``.

    A stand-in for a generative model trained on the labeled set (SRA-Seg uses StyleGAN2-ADA
    images, which we cannot ship or train here): each image is a random labeled slice under a
    smooth elastic deformation, a gamma change and noise. Labels are never written.
    """
    import tifffile

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    items = [(v, s) for v in volumes for s in sorted(v.labeled)]
    if not items:
        raise InputError("Synthetic images are made from labeled slices, and there are none.")
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        v, s = items[int(torch.randint(0, len(items), (1,), generator=gen))]
        x = torch.from_numpy(v.normalised_slice(s))[None]
        x = _elastic(x, gen, amplitude=float(torch.empty(1).uniform_(2, 6, generator=gen)), smoothness=8)
        gamma = float(torch.empty(1).uniform_(0.7, 1.5, generator=gen))
        x = x.clamp(0, 1) ** gamma + torch.randn(x.shape, generator=gen) * 0.02
        img = x[0].clamp(0, 1).numpy().astype(np.float32)
        # grey as float32; colour as 8-bit RGB, which is how TIFF readers recognise colour
        img = img[0] if img.shape[0] == 1 else (np.moveaxis(img, 0, -1) * 255).round().astype(np.uint8)
        tifffile.imwrite(out / f"synthetic_{i:05d}.tif", img)
    return out


def config_for(variant: Variant, base: TrainConfig, train: list[Volume], n_synthetic: int,
               workdir: str | Path | None = None) -> TrainConfig:
    """The variant's configuration; stand-in synthetic images are written when it asks for them."""
    cfg = variant.apply(base)
    if variant.wants_extra_unlabeled:
        folder = Path(workdir or tempfile.mkdtemp(prefix="semiseg-synthetic-")) / "synthetic"
        if not folder.exists():
            write_standin_synthetic(train, folder, n_synthetic, seed=base.seed)
        cfg = replace(cfg, unlabeled_dir=str(folder))
    return cfg
