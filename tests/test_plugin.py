"""The plugin inside a real napari viewer: manifest, samples, widget, reader and writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_semiseg.core.io import InputError
from napari_semiseg.samples import sample_image, sample_labels

WIDGET = "Semi-supervised segmentation"


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).with_name("npe2")
    r = subprocess.run([str(npe2), "validate", "napari-semiseg"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_napari_discovers_the_plugin_and_its_contributions():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-semiseg")
    contrib = manifest.contributions
    assert {w.display_name for w in contrib.widgets} == {WIDGET}
    assert {s.key for s in contrib.sample_data} == {"hippocampus", "hippocampus_reference"}
    assert {tuple(w.filename_extensions) for w in contrib.writers} == {(".nii.gz", ".nii"), (".tif", ".tiff"), (".png",)}
    assert "napari/layers/segment" in contrib.menus


def test_samples_widget_and_export_in_a_real_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-semiseg", "hippocampus")
    image, labels = viewer.layers
    assert image._type_string == "image" and labels._type_string == "labels"
    assert labels.data.shape == image.data.shape and not labels.data.any()
    assert tuple(image.scale) == (1.0, 1.0, 1.0)

    viewer.open_sample("napari-semiseg", "hippocampus_reference")
    reference = viewer.layers["reference labels"]
    assert set(np.unique(reference.data)) == {0, 1, 2}

    dock, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    assert widget.objectName() == "semiseg_widget"

    # paint a few voxels as a user would and export through the plugin's writers
    labels.data[10, 20:25, 15:18] = 2
    labels.refresh()
    nii = tmp_path / "annotations.nii.gz"
    tif = tmp_path / "annotations.tif"
    viewer.layers.selection = {labels}
    assert viewer.layers.save(str(nii), selected=True, plugin="napari-semiseg")
    assert viewer.layers.save(str(tif), selected=True, plugin="napari-semiseg")

    scan = nib.load(str(sample_image()))
    saved = nib.load(str(nii))
    assert saved.shape == scan.shape
    np.testing.assert_allclose(saved.affine, scan.affine)
    np.testing.assert_array_equal(tifffile.imread(str(tif)), labels.data)

    # reading the export back gives the same mask, as a Labels layer
    layers = viewer.open(str(nii), plugin="napari-semiseg")
    assert layers[0]._type_string == "labels"
    np.testing.assert_array_equal(layers[0].data, labels.data)


def test_reader_opens_nifti_with_scale_and_metadata(make_napari_viewer):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(sample_image()), plugin="napari-semiseg")
    assert layer._type_string == "image"
    meta = layer.metadata["semiseg_source"]
    np.testing.assert_allclose(meta["affine"], nib.load(str(sample_image())).affine)
    [lab] = viewer.open(str(sample_labels()), plugin="napari-semiseg")
    assert lab._type_string == "labels" and lab.data.shape == layer.data.shape


def test_writer_refuses_to_overwrite_the_scan(make_napari_viewer, tmp_path):
    import shutil

    scan = tmp_path / "scan.nii.gz"
    shutil.copy(sample_image(), scan)
    before = scan.read_bytes()
    viewer = make_napari_viewer()
    [image] = viewer.open(str(scan), plugin="napari-semiseg")
    labels = viewer.add_labels(np.zeros(image.data.shape, np.uint8), metadata=dict(image.metadata))
    viewer.layers.selection = {labels}
    with pytest.raises(InputError, match="Refusing to overwrite"):
        viewer.layers.save(str(scan), selected=True, plugin="napari-semiseg")
    assert scan.read_bytes() == before
