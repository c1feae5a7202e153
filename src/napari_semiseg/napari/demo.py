"""The README's main job with a window: napari, the sample volume and the dock widget."""

from __future__ import annotations


def run_viewer() -> None:
    import napari

    viewer = napari.Viewer(title="napari-semiseg")
    viewer.open_sample("napari-semiseg", "hippocampus")
    viewer.window.add_plugin_dock_widget("napari-semiseg", "Semi-supervised segmentation")
    napari.run()
