"""The README's main job without a window: train on the sample volume from three labeled slices.

It is the same loop the widget runs: the slices a clinician would label, a short mean-teacher run on
the CPU, then the final masks and the uncertainty map written through the plugin's writers.
"""

from __future__ import annotations

from pathlib import Path

from .core.benchmark import evenly_spaced_slices, unlabeled_dice
from .core.files import check_output_folder
from .core.interpolation import interpolate_labels
from .core.io import read_image, read_labels, write_float_map
from .core.session import LocalSession
from .core.trainer import TrainConfig
from .core.volume import Volume, final_segmentation, labels_on_slices
from .napari.layers import layer_data
from .napari.writer import write_labels_nifti, write_labels_tiff
from .samples import sample_image, sample_labels

DEMO_AXIS = 2  # sagittal: the hippocampus's long axis lies in the slice
DEMO_SECONDS = 45.0
DEMO_MIN_ITERATIONS = 400  # about 45 s of an idle 2-core CPU; a busy one trains longer rather than worse


def run_headless(out: Path, seconds: float = DEMO_SECONDS, min_iterations: int = DEMO_MIN_ITERATIONS) -> list[Path]:
    check_output_folder(out, [sample_image(), sample_labels()])  # before the training time is spent
    out.mkdir(parents=True, exist_ok=True)
    image = read_image(sample_image(), as_labels=False)
    reference = read_labels(sample_labels())
    labeled = evenly_spaced_slices(reference.data, DEMO_AXIS, 3)
    painted = labels_on_slices(reference.data, labeled, DEMO_AXIS)
    volume = Volume(image.data, painted, set(labeled), axis=DEMO_AXIS, name="hippocampus_001")
    print(f"No display: running headless. Training a mean teacher on {Path(image.source.path).name} "
          f"{image.data.shape} from the 3 labeled slices {labeled} (axis {DEMO_AXIS}) for {seconds:.0f} s on the CPU "
          f"(at least {min_iterations} steps, longer if the machine is busy).")
    config = TrainConfig(method="mean-teacher", minutes=seconds / 60.0, min_iterations=min_iterations)
    session = LocalSession([volume], config, out_dir=out / "model")
    report = session.run(progress_bar=True)
    pred = report.prediction[0]
    # the user's labels win on the slices they labeled; the teacher fills the rest
    final = final_segmentation(pred.labels, painted, labeled, DEMO_AXIS)
    data, attrs, _ = layer_data(reference, name="segmentation")
    written = [Path(p) for p in write_labels_nifti(str(out / "hippocampus_001_segmentation.nii.gz"), final, attrs)]
    written += [Path(p) for p in write_labels_tiff(str(out / "hippocampus_001_segmentation.tif"), final, attrs)]
    written.append(write_float_map(out / "hippocampus_001_uncertainty.nii.gz", pred.uncertainty, image.source))
    classes = [1, 2]
    engine = unlabeled_dice(pred.labels, reference.data, labeled, DEMO_AXIS, classes)
    interp = unlabeled_dice(interpolate_labels(painted, labeled, DEMO_AXIS), reference.data, labeled, DEMO_AXIS, classes)
    print(f"{report.iteration} iterations in {report.elapsed:.0f} s. Dice on the {volume.n_slices - 3} slices "
          f"nobody labeled: engine {engine:.3f}, slice interpolation {interp:.3f}.")
    for p in written + [out / "model"]:
        print(f"  wrote {p.resolve()}")
    return written
