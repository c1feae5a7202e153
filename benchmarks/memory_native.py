"""Peak memory and speed on images of real size (issue 11): a synthetic 512x512x300 float32 CT-like
volume (315 MB) and a 3504x2336 RGB photograph.

    .venv/bin/python benchmarks/memory_native.py [--src SRC_DIR] [--threads 1]

Each measurement runs in its own process, which reports its peak resident memory (VmHWM):
reading the image + two training steps (and the model save), then reading it + predicting it whole
with the saved model. ``--src`` measures another checkout's code (e.g. the commit before issue 11).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# peak resident memory of this process: VmHWM, not ru_maxrss, which Linux carries over from the
# parent across fork and exec (a child would report at least the parent's size)
PEAK = textwrap.dedent("""
    def peak_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
""")

TRAIN = PEAK + textwrap.dedent("""
    import json, sys, time
    from napari_semiseg.core.io import read_image, read_labels
    from napari_semiseg.core.trainer import TrainConfig, Trainer
    from napari_semiseg.core.volume import Volume
    img_path, lab_path, axis, labeled, out, threads = sys.argv[1:7]
    labeled = {int(s) for s in labeled.split(",")}
    img, lab = read_image(img_path, as_labels=False), read_labels(lab_path)
    vol = Volume(img.data, lab.data, labeled, axis=int(axis), channels=img.rgb)
    t0 = time.perf_counter()
    trainer = Trainer([vol], TrainConfig(method="mean-teacher", iterations=2, threads=int(threads), device="cpu",
                                         first_refresh_seconds=1e9, refresh_seconds=1e9, final_prediction=False),
                      out_dir=out)
    trainer.train()
    print(json.dumps({"peak_mb": peak_mb(), "seconds": time.perf_counter() - t0, "image_mb": img.data.nbytes / 2**20}))
""")

PREDICT = PEAK + textwrap.dedent("""
    import json, sys, time
    from napari_semiseg.core.io import read_image
    try:
        from napari_semiseg.core.checkpoint import load_method, predict_with_model, volume_for_model
    except ImportError:  # the code before issue 10
        from napari_semiseg.core.trainer import load_method, predict_with_model, volume_for_model
    import torch
    model, img_path, threads = sys.argv[1:4]
    torch.set_num_threads(int(threads))
    method, meta = load_method(model)
    img = read_image(img_path, as_labels=False)
    vol = volume_for_model(img.data, meta, channels=img.rgb)
    t0 = time.perf_counter()
    pred = predict_with_model(method, meta, vol, device="cpu")
    dt = time.perf_counter() - t0
    print(json.dumps({"peak_mb": peak_mb(), "seconds": dt,
                      "seconds_per_slice": dt / vol.n_slices, "image_mb": img.data.nbytes / 2**20}))
""")


def ct_arrays():
    """A 512x512x300 float32 CT-like volume (display order z, y, x) and its labels (organ 1, vessel 2)."""
    import numpy as np

    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:300, :512, :512]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 230.0) ** 2 <= 1
    vol = np.where(np.broadcast_to(body, (300, 512, 512)), 40.0, -1000.0).astype(np.float32)
    organ = np.broadcast_to(((z - 150) / 90.0) ** 2 + ((y - 230) / 70.0) ** 2 + ((x - 300) / 80.0) ** 2 <= 1,
                            vol.shape)
    vessel = np.broadcast_to((y - 300) ** 2 + (x - 200) ** 2 <= 36, vol.shape)
    vol[organ] = 120.0
    vol[vessel] = 300.0
    vol += rng.normal(0, 15, vol.shape).astype(np.float32)
    lab = np.zeros(vol.shape, np.uint8)
    lab[organ] = 1
    lab[vessel] = 2
    return vol, lab


def make_ct(folder: Path) -> tuple[Path, Path, str]:
    import nibabel as nib
    import numpy as np

    vol, lab = ct_arrays()
    keep = np.zeros(300, bool)
    keep[[100, 150, 200]] = True
    lab[~keep] = 0
    # stored (x, y, z) with an LPS-flipped affine: display order (z, y, x) after the reader's reorientation
    img_p, lab_p = folder / "ct.nii", folder / "ct_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.diag([-1, -1, 1, 1.0])), str(img_p))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lab.transpose(2, 1, 0)), np.diag([-1, -1, 1, 1.0])), str(lab_p))
    return img_p, lab_p, "100,150,200"


def make_photo(folder: Path) -> tuple[Path, Path, str]:
    import imageio.v3 as iio
    import numpy as np
    from skimage.draw import line_aa

    rng = np.random.default_rng(1)
    h, w = 2336, 3504
    yy, xx = np.ogrid[:h, :w]
    fundus = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2.2)) ** 2 <= 1
    img = np.zeros((h, w, 3), np.uint8)
    img[fundus] = (170, 80, 40)
    lab = np.zeros((h, w), np.uint8)
    for _ in range(60):
        r0, c0, r1, c1 = rng.integers(0, h), rng.integers(0, w), rng.integers(0, h), rng.integers(0, w)
        rr, cc, _ = line_aa(int(r0), int(c0), int(r1), int(c1))
        for d in range(-2, 3):
            ok = (rr + d >= 0) & (rr + d < h)
            lab[rr[ok] + d, cc[ok]] = 1
    img[lab == 1] = (110, 30, 20)
    img = np.clip(img.astype(np.int16) + rng.normal(0, 8, img.shape).astype(np.int16), 0, 255).astype(np.uint8)
    img_p, lab_p = folder / "photo.png", folder / "photo_labels.png"
    iio.imwrite(img_p, img)
    iio.imwrite(lab_p, lab)
    return img_p, lab_p, "0"


def run(code: str, args: list[str], src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="PYTHONPATH of the code to measure (default: the installed package)")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, maker, axis in (("CT 512x512x300 float32", make_ct, "0"), ("RGB 3504x2336", make_photo, "0")):
            img, lab, labeled = maker(tmp)
            out = tmp / f"model-{maker.__name__}"
            t = run(TRAIN, [str(img), str(lab), axis, labeled, str(out), args.threads], args.src)
            p = run(PREDICT, [str(out), str(img), args.threads], args.src) if "error" not in t else {"error": "-"}
            print(json.dumps({"case": name, "train_2_steps": t, "predict_whole": p}), flush=True)


if __name__ == "__main__":
    main()
