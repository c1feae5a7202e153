"""The README's main job without a window: the sample volume through the plugin's own writers."""

from __future__ import annotations

from pathlib import Path

from .core.io import read_image, read_labels
from .napari.layers import layer_data
from .napari.writer import write_labels_nifti, write_labels_tiff
from .samples import sample_image, sample_labels


def run_headless(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    image = read_image(sample_image(), as_labels=False)
    labels = read_labels(sample_labels())
    data, attrs, _ = layer_data(labels, name="reference labels")
    written = [Path(p) for p in write_labels_nifti(str(out / "hippocampus_001_labels.nii.gz"), data, attrs)]
    written += [Path(p) for p in write_labels_tiff(str(out / "hippocampus_001_labels.tif"), data, attrs)]
    print(f"No display: ran headless on the sample volume {Path(image.source.path).name} "
          f"{tuple(image.data.shape)}.")
    for p in written:
        print(f"  wrote {p.resolve()}")
    return written
