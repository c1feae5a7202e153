"""Reading and writing real files: round trips, orientation, and every bad input."""

from __future__ import annotations

import gzip
import os

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_semiseg.core.io import (
    InputError, read_h5, read_image, read_labels, read_ssl4mis_split, write_labels, check_same_shape,
)
from conftest import write_nifti


def test_real_hippocampus_round_trip_keeps_array_and_affine(hippo_case, tmp_path):
    img_path, lab_path = hippo_case
    image = read_image(img_path)
    labels = read_image(lab_path)  # a file in labels/ is a label map
    assert labels.is_label and not image.is_label
    check_same_shape(image, labels)
    out = write_labels(tmp_path / "exported.nii.gz", labels.data, image.source)
    back = nib.load(str(out))
    ref = nib.load(str(lab_path))
    assert back.shape == ref.shape  # no added axes
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(ref.dataobj).astype(np.uint8))
    np.testing.assert_allclose(back.affine, ref.affine)
    assert back.get_data_dtype() == np.uint8
    again = read_labels(out)
    np.testing.assert_array_equal(again.data, labels.data)


def test_oblique_flipped_nifti_displays_lps_and_exports_on_the_file_grid(tmp_path):
    # file axes: 0 -> posterior->anterior? build a permuted, flipped affine with 2 mm slices
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3, size=(5, 6, 7)).astype(np.int16)
    affine = np.array([[0, 0, -2.0, 10], [-1.0, 0, 0, 5], [0, 0.5, 0, -3], [0, 0, 0, 1]])
    src = write_nifti(tmp_path / "scan.nii.gz", data.astype(np.float32), affine)
    lab = write_nifti(tmp_path / "scan_seg.nii.gz", data, affine)
    image = read_image(src)
    # display axes are (S, P, L): file axis 1 is S (+), file axis 0 is -A (=P), file axis 2 is -R (=L)
    assert image.data.shape == (6, 5, 7)
    assert image.source.spacing == (0.5, 1.0, 2.0)
    labels = read_image(lab)
    assert labels.is_label
    np.testing.assert_array_equal(labels.data, np.transpose(data, (1, 0, 2)))
    out = write_labels(tmp_path / "out.nii", labels.data, image.source)
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, affine)


def test_tiff_round_trip_and_smallest_dtype(tmp_path):
    labels = np.zeros((4, 8, 9), np.int64)
    labels[1, 2:5, 3:6] = 300  # needs uint16
    out = write_labels(tmp_path / "mask.tif", labels)
    back = tifffile.imread(str(out))
    assert back.dtype == np.uint16 and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)
    assert read_labels(out).data.dtype == np.uint16


def test_nifti_export_without_source_round_trips(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1, 2] = 1
    out = write_labels(tmp_path / "m.nii.gz", labels, spacing=(3.0, 0.5, 0.5))
    back = read_labels(out)
    np.testing.assert_array_equal(back.data, labels)
    assert back.source.spacing == (3.0, 0.5, 0.5)


def test_chase_rgb_fundus_and_vessel_mask(chase_case, tmp_path):
    img_path, lab_path = chase_case
    image = read_image(img_path)
    assert image.rgb and image.data.shape == (960, 999, 3)
    labels = read_image(lab_path)
    assert labels.is_label and labels.data.shape == (960, 999)
    assert set(np.unique(labels.data)) <= {0, 1, 255}
    out = write_labels(tmp_path / "vessels.tif", labels.data)
    np.testing.assert_array_equal(tifffile.imread(str(out)), labels.data)


def test_png_grey_and_rgba(tmp_path):
    import imageio.v3 as iio

    grey = (np.arange(120).reshape(10, 12) % 255).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", grey)
    assert np.array_equal(read_image(tmp_path / "g.png").data, grey)
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 0] = 200
    iio.imwrite(tmp_path / "c.png", rgba)
    loaded = read_image(tmp_path / "c.png")
    assert loaded.rgb and loaded.data.shape == (6, 7, 3)


def test_png_label_maps_round_trip_as_palette_or_16_bit_and_only_in_2d(tmp_path):
    from PIL import Image

    from napari_semiseg.core.io import write_float_map

    labels = np.zeros((20, 30), np.uint8)
    labels[2:6, 3:9], labels[10:12, 20:25] = 1, 2
    classes = {1: {"name": "vessel", "colour": "#00ff00"}, 2: {"name": "disc", "colour": "#0000ff"}}
    out = write_labels(tmp_path / "drawn.png", labels, classes=classes)  # no label word in the name
    back = read_image(out)  # the classes it carries make it a label map
    assert back.is_label and back.source.header["classes"] == classes
    np.testing.assert_array_equal(back.data, labels)
    with Image.open(out) as im:
        assert im.mode == "P" and im.getpalette()[3:9] == [0, 255, 0, 0, 0, 255]
    many = np.zeros((5, 6), np.uint16)
    many[1, 1] = 300  # more classes than a palette holds: 16-bit grey
    np.testing.assert_array_equal(read_labels(write_labels(tmp_path / "many_mask.png", many)).data, many)
    with pytest.raises(InputError, match="PNG holds one 2D image"):
        write_labels(tmp_path / "vol.png", np.zeros((2, 5, 6), np.uint8))
    with pytest.raises(InputError):  # a float map in a PNG would lose its values
        write_float_map(tmp_path / "u.png", np.zeros((5, 6), np.float32))
    assert not (tmp_path / "vol.png").exists() and not (tmp_path / "u.png").exists()


def test_a_palette_photo_opens_in_colour_and_a_palette_mask_as_its_indices(tmp_path):
    from PIL import Image

    idx = np.zeros((8, 9), np.uint8)
    idx[2:4, 2:5] = 1
    for name in ("drawing.png", "drawing_mask.png"):
        im = Image.fromarray(idx, mode="P")
        im.putpalette([10, 20, 30, 200, 100, 50])
        im.save(tmp_path / name)
    photo = read_image(tmp_path / "drawing.png")
    assert photo.rgb and tuple(photo.data[2, 2]) == (200, 100, 50)
    mask = read_image(tmp_path / "drawing_mask.png")
    assert mask.is_label and np.array_equal(mask.data, idx)


def test_ssl4mis_h5_file_and_split_folder(tmp_path):
    data = tmp_path / "ACDC" / "data"
    (data / "slices").mkdir(parents=True)
    img = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    lab = np.zeros((3, 16, 16), np.uint8)
    lab[:, 4:8, 4:8] = 2
    with h5py.File(data / "patient001_frame01.h5", "w") as f:
        f["image"], f["label"] = img, lab
    with h5py.File(data / "slices" / "patient001_frame01_slice_1.h5", "w") as f:
        f["image"], f["label"] = img[1], lab[1]
    (tmp_path / "ACDC" / "train_slices.list").write_text("patient001_frame01_slice_1\n")
    (tmp_path / "ACDC" / "test.list").write_text("patient001_frame01\n")
    split = read_ssl4mis_split(tmp_path / "ACDC")
    assert split.train_slices == ["patient001_frame01_slice_1"] and split.val == []
    i2, l2 = read_h5(split.slice_path(split.train_slices[0]))
    np.testing.assert_array_equal(i2, img[1])
    np.testing.assert_array_equal(l2, lab[1])
    i3, l3 = read_h5(split.volume_path("patient001_frame01"))
    assert i3.shape == l3.shape == (3, 16, 16)


# ---------------------------------------------------------------- bad input: one sentence each

def _one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        read_image(tmp_path / "nope.nii.gz")
    assert "not found" in _one_sentence(e)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "scan.mha"
    p.write_bytes(b"x")
    with pytest.raises(InputError) as e:
        read_image(p)
    assert "Unsupported" in _one_sentence(e)
    with pytest.raises(InputError):
        write_labels(tmp_path / "out.jpg", np.zeros((3, 3), np.uint8))


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii", "scan.tif", "scan.png", "scan.h5"])
def test_truncated_or_corrupt_files(tmp_path, name):
    good = tmp_path / f"good_{name}"
    arr = np.random.default_rng(0).integers(0, 200, (20, 24, 22)).astype(np.uint8)
    if name.endswith((".nii.gz", ".nii")):
        write_nifti(good, arr)
    elif name.endswith(".tif"):
        tifffile.imwrite(good, arr)
    elif name.endswith(".png"):
        import imageio.v3 as iio
        iio.imwrite(good, arr[0])
    else:
        with h5py.File(good, "w") as f:
            f["image"] = arr
    raw = good.read_bytes()
    bad = tmp_path / name
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as e:
        read_image(bad)
    assert "corrupt or truncated" in _one_sentence(e)


def test_4d_nifti_is_refused(tmp_path):
    p = write_nifti(tmp_path / "cine.nii.gz", np.zeros((4, 4, 3, 5), np.float32))
    with pytest.raises(InputError) as e:
        read_image(p)
    assert "4 dimensions" in _one_sentence(e)


def test_shape_mismatch(tmp_path):
    a = read_image(write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.float32)))
    b = read_labels(write_nifti(tmp_path / "a_label.nii.gz", np.zeros((4, 5, 7), np.uint8)))
    with pytest.raises(InputError) as e:
        check_same_shape(a, b)
    assert "must match" in _one_sentence(e)


def test_float_labels_with_fractions_and_negative_labels(tmp_path):
    frac = write_nifti(tmp_path / "x_label.nii.gz", np.full((3, 3, 3), 0.5, np.float32))
    with pytest.raises(InputError) as e:
        read_image(frac)
    assert "non-integer" in _one_sentence(e)
    neg = write_nifti(tmp_path / "y_label.nii.gz", np.full((3, 3, 3), -1, np.int16))
    with pytest.raises(InputError) as e:
        read_image(neg)
    assert "negative" in _one_sentence(e)
    # integer-valued floats (as some MSD label files are stored) are accepted
    ok = write_nifti(tmp_path / "z_label.nii.gz", np.full((3, 3, 3), 2.0, np.float32))
    assert read_image(ok).data.dtype == np.uint8
    with pytest.raises(InputError):
        write_labels(tmp_path / "w.tif", np.full((3, 3), -2))


def test_never_overwrites_the_source_image_and_leaves_no_partial_file(tmp_path):
    src_path = write_nifti(tmp_path / "scan.nii.gz", np.zeros((4, 5, 6), np.float32))
    image = read_image(src_path)
    before = src_path.read_bytes()
    with pytest.raises(InputError) as e:
        write_labels(src_path, np.zeros(image.data.shape, np.uint8), image.source)
    assert "Refusing to overwrite" in _one_sentence(e)
    assert src_path.read_bytes() == before
    # a failing write (wrong shape for the scan's grid) leaves neither target nor temp file
    with pytest.raises(InputError):
        write_labels(tmp_path / "out.nii.gz", np.zeros((2, 2, 2), np.uint8), image.source)
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]


def test_existing_export_is_replaced_atomically(tmp_path):
    target = tmp_path / "m.tif"
    write_labels(target, np.ones((3, 3), np.uint8))
    write_labels(target, np.full((3, 3), 2, np.uint8))
    assert tifffile.imread(str(target)).max() == 2
    assert sorted(os.listdir(tmp_path)) == ["m.tif"]


def test_gzip_stream_that_is_not_nifti(tmp_path):
    p = tmp_path / "fake.nii.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"not a nifti header at all" * 20)
    with pytest.raises(InputError) as e:
        read_image(p)
    _one_sentence(e)
