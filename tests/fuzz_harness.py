"""Seeded byte mutation of real image files, for the readers' promise: every file either reads as a
sane image or is refused with one sentence (an ``InputError``), never another exception.

Used by ``tests/test_fuzz_readers.py`` (a few hundred cases) and ``benchmarks/fuzz_readers.py``
(a longer run whose counts are in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np

from napari_semiseg.core.io import InputError, read_image

FORMATS = ("nii", "nii.gz", "tif", "png", "jpg", "h5")


def make_seed_files(folder: Path) -> dict[str, Path]:
    """One small real file per format, cut from the bundled MSD hippocampus sample (a real MRI)."""
    import h5py
    import imageio.v3 as iio
    import nibabel as nib
    import tifffile

    from napari_semiseg.samples import sample_image, sample_labels

    folder.mkdir(parents=True, exist_ok=True)
    scan = nib.load(str(sample_image()))
    vol = np.asarray(scan.dataobj)[8:24, 10:30, 10:22]
    lab = np.asarray(nib.load(str(sample_labels())).dataobj)[8:24, 10:30, 10:22].astype(np.uint8)
    grey = (255 * (vol - vol.min()) / max(1e-6, float(np.ptp(vol)))).astype(np.uint8)
    rgb = np.stack([grey[:, :, 5], grey[:, :, 6], grey[:, :, 7]], -1)
    files = {"nii": folder / "scan.nii", "nii.gz": folder / "scan.nii.gz", "tif": folder / "scan.tif",
             "png": folder / "photo.png", "jpg": folder / "photo.jpg", "h5": folder / "case.h5"}
    nib.save(nib.Nifti1Image(vol, scan.affine), str(files["nii"]))
    nib.save(nib.Nifti1Image(vol, scan.affine), str(files["nii.gz"]))
    tifffile.imwrite(files["tif"], grey, compression="lzw")
    iio.imwrite(files["png"], rgb)
    iio.imwrite(files["jpg"], rgb, quality=90)
    with h5py.File(files["h5"], "w") as f:
        f["image"] = (vol / max(1e-6, float(vol.max()))).astype(np.float32)
        f["label"] = lab
    return files


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to a few corruptions of the kinds disks, transfers and bad writers make."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 6))
        n = len(buf)
        if n == 0:
            break
        # headers are where damage matters most: half the edits land in the first 512 bytes
        at = int(rng.integers(0, min(n, 512))) if rng.random() < 0.5 else int(rng.integers(0, n))
        if kind == 0:  # bit flips
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, n))
                buf[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # random bytes
            k = int(rng.integers(1, 17))
            buf[at:at + k] = rng.integers(0, 256, min(k, n - at), dtype=np.uint8).tobytes()
        elif kind == 2:  # a huge or negative number where a size might be
            buf[at:at + 4] = bytes(rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff",
                                               b"\x00\x00\x00\x00", b"\x10\x27\x00\x00"]))[: n - at]
        elif kind == 3:  # truncation
            del buf[max(1, int(rng.integers(0, n))):]
        elif kind == 4:  # a chunk duplicated
            k = int(rng.integers(1, 65))
            buf[at:at] = buf[at:at + k]
        else:  # zeroed run
            k = int(rng.integers(1, 65))
            buf[at:at + k] = bytes(min(k, n - at))
    return bytes(buf)


def check_outcome(path: Path, as_labels: bool | None) -> str:
    """'read' (sane) or 'refused' (one sentence); any other exception propagates to the caller."""
    try:
        loaded = read_image(path, as_labels=as_labels)
    except InputError as err:
        text = str(err)
        assert text and "\n" not in text and "Traceback" not in text, f"not one sentence: {text!r}"
        return "refused"
    data = loaded.data
    spatial = data.ndim - (1 if loaded.rgb else 0)
    assert spatial in (2, 3) and all(s > 0 for s in data.shape), f"insane shape {data.shape} from {path.name}"
    assert np.issubdtype(data.dtype, np.number) or data.dtype == bool, f"non-numeric dtype {data.dtype}"
    if loaded.is_label:
        assert np.issubdtype(data.dtype, np.unsignedinteger), f"labels of dtype {data.dtype}"
    return "read"


def fuzz(folder: Path, cases: int, seed: int = 0, formats=FORMATS) -> dict:
    """Run ``cases`` mutated files (spread over ``formats``); return counts per format and outcome."""
    seeds = make_seed_files(folder / "seeds")
    rng = np.random.default_rng(seed)
    counts: dict = collections.defaultdict(collections.Counter)
    slowest = (0.0, "")
    for i in range(cases):
        fmt = formats[i % len(formats)]
        src = seeds[fmt]
        bad = folder / f"case{i % 8}{src.name[src.name.index('.'):]}"
        if fmt == "nii.gz" and rng.random() < 0.5:  # a damaged NIfTI inside an intact gzip stream
            import gzip

            bad.write_bytes(gzip.compress(mutate(gzip.decompress(src.read_bytes()), rng)))
        else:
            bad.write_bytes(mutate(src.read_bytes(), rng))
        as_labels = (None, True, False)[int(rng.integers(0, 3))]
        t0 = time.perf_counter()
        try:
            outcome = check_outcome(bad, as_labels)
        except Exception as err:  # noqa: BLE001 - what the harness exists to find
            raise AssertionError(f"case {i} ({fmt}, seed {seed}, as_labels={as_labels}): {type(err).__name__}: "
                                 f"{err}") from err
        dt = time.perf_counter() - t0
        slowest = max(slowest, (dt, f"case {i} ({fmt})"))
        counts[fmt][outcome] += 1
    return {"counts": {k: dict(v) for k, v in counts.items()}, "slowest": slowest}
