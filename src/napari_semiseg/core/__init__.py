"""The Qt-free, napari-free engine: importable and testable without a display."""
