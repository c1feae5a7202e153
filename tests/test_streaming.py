"""Data sets streamed from disk: the lazy readers show what io.read_image shows, and training runs on them."""

import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_semiseg.core.errors import InputError
from napari_semiseg.core.io import read_image
from napari_semiseg.core.streaming import StreamingSampler, open_lazy, scan_folder
from napari_semiseg.core.trainer import TrainConfig, Trainer


def volume(shape=(20, 24, 7), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, shape).astype(np.int16)


def every_slice(arr):
    for axis in range(arr.ndim):
        for i in range(arr.shape[axis]):
            idx = [slice(None)] * arr.ndim
            idx[axis] = i
            yield tuple(idx)


@pytest.mark.parametrize("affine", [np.diag([1.0, 1.0, 2.5, 1.0]),
                                    # oblique-free but permuted and flipped: a coronal acquisition
                                    np.array([[-1.0, 0, 0, 0], [0, 0, 3.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])])
def test_a_streamed_nifti_reads_every_slice_in_display_order_as_read_image_shows_it(tmp_path, affine):
    data = volume()
    p = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), p)
    shown = np.asarray(read_image(p).data)
    lazy = open_lazy(p)
    assert lazy.shape == shown.shape
    for idx in every_slice(shown):
        assert np.array_equal(lazy[idx], shown[idx]), idx
    assert np.array_equal(np.asarray(lazy), shown)


def test_hdf5_tiff_and_zarr_stream_the_same_voxels_as_they_read(tmp_path):
    data = volume((9, 30, 26))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("image", data=data, chunks=(1, 30, 26))
        f.create_dataset("label", data=(data > 500).astype(np.uint8))
    tifffile.imwrite(tmp_path / "a.tif", data, compression="zlib")  # compressed pages: read through zarr
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype)
    z[...] = data
    for name in ("a.h5", "a.tif", "a.zarr"):
        lazy = open_lazy(tmp_path / name)
        assert lazy.shape == data.shape, name
        for idx in every_slice(data):
            assert np.array_equal(lazy[idx], data[idx]), (name, idx)
    assert np.array_equal(np.asarray(open_lazy(tmp_path / "a.h5", label=True)), (data > 500).astype(np.uint8))


def write_mixed_data_set(root):
    """Two labeled volumes (NIfTI and HDF5 with its own label) and three unlabeled (TIFF, zarr, NIfTI)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(3)
    lab = np.zeros((6, 40, 44), np.uint8)
    lab[:, 10:30, 8:20], lab[:, 5:12, 30:40] = 1, 2

    def img():
        return (rng.normal(100, 20, lab.shape) + 80 * lab).astype(np.float32)

    eye = np.eye(4)
    # NIfTI in file order (x, y, z): display order is (z, y, x) flipped into LPS; the label file likewise
    nib.save(nib.Nifti1Image(np.transpose(img(), (2, 1, 0)), eye), root / "images" / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(lab, (2, 1, 0)), eye), root / "labels" / "a.nii.gz")
    with h5py.File(root / "images" / "b.h5", "w") as f:
        f.create_dataset("image", data=img())
        f.create_dataset("label", data=lab)
    tifffile.imwrite(root / "images" / "c.tif", img(), compression="zlib")
    z = zarr.open_array(str(root / "images" / "d.zarr"), mode="w", shape=lab.shape, chunks=(1, 40, 44), dtype="f4")
    z[...] = img()
    nib.save(nib.Nifti1Image(np.transpose(img(), (2, 1, 0)), eye), root / "images" / "e.nii")
    return root


def streamed_config(iterations: int) -> TrainConfig:
    """Small, fp32 on the CPU, with one reading process: the path a streamed data set takes."""
    return TrainConfig(iterations=iterations, batch_size=4, patch_size=32, threads=1, device="cpu", precision="fp32",
                       loader_workers=1, final_prediction=False)


def test_a_mixed_folder_is_indexed_from_headers_and_trains_a_model_from_streamed_patches(tmp_path):
    data = scan_folder(write_mixed_data_set(tmp_path / "data"))
    assert [f.labels is not None for f in data.files] == [True, True, False, False, False]
    assert data.top_class == 2 and data.n_channels == 1 and data.is_3d
    trainer = Trainer(data, streamed_config(4), out_dir=tmp_path / "model")
    assert isinstance(trainer.sampler, StreamingSampler)
    assert trainer.n_classes == 3 and trainer.sampler.n_labeled == 12 and trainer.sampler.n_unlabeled == 18
    batch = trainer.sampler.next()
    assert batch.x_l.shape == (2, 3, 32, 32) and batch.x_u.shape == (2, 3, 32, 32)  # context 1: 3 channels
    assert set(batch.y_l.unique().tolist()) <= {0, 1, 2} and 0.0 <= float(batch.x_l.min()) <= float(batch.x_l.max()) <= 1.0
    last = trainer.train()
    assert last.iteration == 4 and last.prediction is None
    assert (tmp_path / "model" / "config.json").exists()


def test_the_same_patch_streamed_or_in_memory(tmp_path):
    """A streamed file's patch is normalised and cropped exactly as the in-memory volume's."""
    from napari_semiseg.core.sampling import centre_patch
    from napari_semiseg.core.volume import Volume

    root = write_mixed_data_set(tmp_path / "data")
    data = scan_folder(root)
    f = data.files[1]  # b.h5
    streamed = f.open(0, data.normalisation)
    with h5py.File(f.image) as h:
        image, labels = h["image"][()], h["label"][()]
    in_memory = Volume(image, labels, set(range(6)))
    for s in (0, 3, 5):
        a = centre_patch(streamed, streamed.geometry(1.0), s, 32, 1)
        b = centre_patch(in_memory, in_memory.geometry(1.0), s, 32, 1)
        assert torch.allclose(a, b)


def test_a_folder_without_label_maps_or_images_is_one_sentence(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no image"):
        scan_folder(tmp_path)
    nib.save(nib.Nifti1Image(volume(), np.eye(4)), tmp_path / "images" / "x.nii.gz")
    with pytest.raises(InputError, match="no label map"):
        scan_folder(tmp_path)
    with pytest.raises(InputError, match="images/"):
        scan_folder(tmp_path / "images")
    (tmp_path / "labels").mkdir()
    nib.save(nib.Nifti1Image(np.full(volume().shape, 0.5, np.float32), np.eye(4)), tmp_path / "labels" / "x.nii.gz")
    with pytest.raises(InputError, match="x.nii.gz holds non-integer values"):  # checked as any label map is
        scan_folder(tmp_path)


def test_a_volume_damaged_past_its_header_is_one_sentence_naming_it_when_streaming_reaches_it(tmp_path):
    root = write_mixed_data_set(tmp_path / "data")
    bad = root / "images" / "e.nii"
    bad.write_bytes(bad.read_bytes()[: 352 + 6 * 40 * 44])  # the header and the first x-plane only
    data = scan_folder(root)  # headers are all that is read up front
    config = streamed_config(50)
    # e.nii is unlabeled: a warming or paced method would not read it yet
    config.method_settings = {"warmup": "none", "paced": False}
    with pytest.raises(InputError) as err:
        Trainer(data, config).train()
    text = str(err.value)
    assert "e.nii" in text and "damaged or truncated" in text and "Traceback" not in text and "\n" not in text


def test_the_dataset_protocol_streams_volumes_and_loads_them_for_a_synthetic_variant(tmp_path):
    """Files stream; a variant that writes stand-in synthetic images from the labeled volumes gets them loaded."""
    from napari_semiseg.core import benchmark as bm

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        lab = np.zeros((30, 34, 5), np.uint8)
        lab[6:20, 8:24] = 1
        nib.save(nib.Nifti1Image((rng.normal(0, 1, lab.shape) + 2 * lab).astype(np.float32), np.eye(4)),
                 root / "images" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "labels" / f"c{i}.nii.gz")
    cfg = TrainConfig(patch_size=32, batch_size=2, threads=1, loader_workers=0)
    files = bm.case_files(root)
    out = bm.run_dataset(files, ["supervised"], labeled_fraction=0.5, test_count=1, iterations=2, base_config=cfg)
    assert out["streamed"] and out["test"] == ["c3"] and out["classes"] == [1] and out["n_train_volumes"] == 3
    assert 0.0 <= out["methods"]["supervised"]["teacher"]["mean"]["dice"] <= 1.0
    out = bm.run_dataset(files, ["mean-teacher[unlabeled_source=extra]"], labeled_fraction=0.5, test_count=1,
                         iterations=2, base_config=cfg)
    assert not out["streamed"] and out["n_train_volumes"] == 3


LEFT_RUNNING = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_streaming import streamed_config, write_mixed_data_set
from napari_semiseg.core.streaming import scan_folder
from napari_semiseg.core.trainer import Trainer
trainer = Trainer(scan_folder(write_mixed_data_set(Path(sys.argv[1]))), streamed_config(2))
trainer.sampler.next()
print("leaving", flush=True)
"""


def test_a_process_that_leaves_its_stream_running_still_exits(tmp_path):
    """A sampler alive at exit (a failed run's traceback holds it; a plugin closed mid-run): Python's exit
    stops its reading workers with the trainer's SIGTERM, which they must obey (they ignore everyone else's)."""
    proc = subprocess.run([sys.executable, "-c", LEFT_RUNNING, str(tmp_path / "data"), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "leaving", proc.stderr[-3000:]
    assert "killed by signal" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
