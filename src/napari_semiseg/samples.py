"""Where the bundled sample volumes live (installed with the package, or in a source checkout)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_IDS = ("hippocampus_001", "hippocampus_004")


def sample_root() -> Path:
    here = Path(__file__).resolve().parent
    for root in (here / "sample_data", here.parents[1] / "sample_data"):
        if (root / "hippocampus").is_dir():
            return root / "hippocampus"
    raise FileNotFoundError("The sample data is missing from this installation (sample_data/hippocampus).")


def sample_image(case: str = SAMPLE_IDS[0]) -> Path:
    return sample_root() / "images" / f"{case}.nii.gz"


def sample_labels(case: str = SAMPLE_IDS[0]) -> Path:
    return sample_root() / "labels" / f"{case}.nii.gz"
