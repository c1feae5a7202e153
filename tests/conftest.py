from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HIPPO = SHARED_DATA / "hippocampus_msd"
CHASE = SHARED_DATA / "chase_db1"


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Autosaves of every test go to its own folder, never to the real ~/.napari-semiseg."""
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def autosave_root(tmp_path: Path) -> Path:
    return tmp_path / "home" / "autosave"


@pytest.fixture
def hippo_case():
    """A real MSD hippocampus volume and its labels from ../shared/data (skipped when absent)."""
    img = HIPPO / "images" / "hippocampus_003.nii.gz"
    lab = HIPPO / "labels" / "hippocampus_003.nii.gz"
    if not (img.exists() and lab.exists()):
        pytest.skip("../shared/data/hippocampus_msd is not available")
    return img, lab


@pytest.fixture
def hippo_folder(tmp_path, hippo_case):
    """A benchmark data folder (images/, labels/) holding the one real hippocampus volume."""
    import shutil

    data = tmp_path / "hippo"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    img, lab = hippo_case
    shutil.copy(img, data / "images" / img.name)
    shutil.copy(lab, data / "labels" / lab.name)
    return data


@pytest.fixture
def chase_case():
    img = CHASE / "images" / "Image_01L.jpg"
    lab = CHASE / "manual" / "Image_01L_1stHO.png"
    if not (img.exists() and lab.exists()):
        pytest.skip("../shared/data/chase_db1 is not available")
    return img, lab


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def fresh_notifications():
    from napari.utils.notifications import notification_manager

    notification_manager.records.clear()
    yield


def _open_session(viewer):
    from gui_session import WIDGET

    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    widget.refresh_spin.setValue(1)
    widget.batch_spin.setValue(4)
    widget.labeled_batch_spin.setValue(2)
    return widget


@pytest.fixture
def session(make_napari_viewer, fresh_notifications, qtbot):
    """The sample in a viewer with the widget docked, labeling sagittal slices (gui_session.AXIS)."""
    from gui_session import AXIS

    viewer = make_napari_viewer()
    widget = _open_session(viewer)
    widget.axis_spin.setValue(AXIS)
    yield viewer, widget
    widget.controller.shutdown()


@pytest.fixture
def shown(make_napari_viewer, fresh_notifications, qtbot):
    """The same in a shown window, so that mouse positions on the canvas map to voxels."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 800)
    widget = _open_session(viewer)
    yield viewer, widget
    widget.controller.shutdown()
