"""Everything that touches napari or Qt: readers, writers, sample data and the dock widget."""
