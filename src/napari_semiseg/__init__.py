"""napari-semiseg: interactive semi-supervised segmentation of medical images in napari."""

__version__ = "0.1.0"
