"""npe2 sample data: the hippocampus MRI, empty labels to annotate or the reference labels."""

from __future__ import annotations

from ..core.classes import PALETTE
from ..core.io import read_image, read_labels
from ..samples import sample_image, sample_labels
from .layers import empty_labels_for, layer_data


# the Medical Segmentation Decathlon's names for the hippocampus labels
HIPPOCAMPUS_CLASSES = {1: {"name": "anterior (head)", "colour": PALETTE[0]},
                       2: {"name": "posterior (body, tail)", "colour": PALETTE[1]}}


def hippocampus_to_annotate() -> list[tuple]:
    image = read_image(sample_image(), as_labels=False)
    return [layer_data(image, name="hippocampus MRI"),
            empty_labels_for(image, "annotations", classes=HIPPOCAMPUS_CLASSES)]


def hippocampus_with_reference() -> list[tuple]:
    image = read_image(sample_image(), as_labels=False)
    labels = read_labels(sample_labels())
    return [layer_data(image, name="hippocampus MRI"), layer_data(labels, name="reference labels")]
