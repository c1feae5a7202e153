"""The dock widget. Layout only: training controls arrive with the engine."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class SemisegWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.setObjectName("semiseg_widget")
        layout = QVBoxLayout(self)
        info = QLabel(
            "Semi-supervised segmentation.\n"
            "Open a scan (File > Open, or File > Open Sample > Semi-supervised segmentation),\n"
            "paint a few slices in a Labels layer, and export it with File > Save Selected Layers\n"
            "(.nii.gz keeps the scan's affine; .tif for TIFF)."
        )
        info.setWordWrap(True)
        info.setObjectName("status_label")
        layout.addWidget(info)
        layout.addStretch(1)
