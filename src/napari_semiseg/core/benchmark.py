"""The two evaluation protocols: the field's ``dataset`` protocol and the clinician's ``session``."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .inference import Predictor, predict_volume
from .interpolation import interpolate_labels
from .io import (NIFTI_SUFFIXES, PHOTO_SUFFIXES, READ_SUFFIXES, TIFF_SUFFIXES, InputError, read_h5, read_image,
                 read_labels, read_ssl4mis_split, stem_of, suffix_of)
from .metrics import mean_metrics, per_class_metrics, summarise
from .streaming import StreamedDataSet
from .trainer import LabelUpdate, TrainConfig, Trainer
from .variants import config_for, parse_variant
from .volume import Volume, labels_on_slices


def synthetic_count(volumes: list[Volume]) -> int:
    """How many stand-in synthetic images (variants.write_standin_synthetic) to make: about 9 per
    labeled slice, as in SRA-Seg's ACDC list (1176 synthetic for 136 labeled), between 64 and 1000."""
    labeled = sum(len(v.labeled) for v in volumes)
    return int(min(1000, max(64, 9 * labeled)))


@dataclass
class Case:
    name: str
    image: np.ndarray
    labels: np.ndarray
    channels: bool = False
    spacing: tuple[float, ...] | None = None
    second_observer: np.ndarray | None = None  # another expert's labels of the same image


FIRST_OBSERVER, SECOND_OBSERVER = "_1stHO", "_2ndHO"


@dataclass(frozen=True)
class CaseFiles:
    """Where a case lies on disk; ``read()`` loads it."""

    name: str
    image: Path
    labels: Path
    second_observer: Path | None = None

    def read(self) -> Case:
        img = read_image(self.image, as_labels=False)
        labels = read_labels(self.labels)
        if labels.data.shape != img.spatial_shape:
            raise InputError(f"{self.image.name} {img.spatial_shape} and its labels {labels.data.shape} differ in shape.")
        second = read_labels(self.second_observer).data if self.second_observer is not None else None
        return Case(self.name, img.data, labels.data, img.rgb, img.source.spacing, second)


def load_cases(data: str | os.PathLike) -> list[Case]:
    """A folder of ``images/`` and matching label maps, sorted by name (see ``case_files``)."""
    return [f.read() for f in case_files(data)]


def case_files(data: str | os.PathLike) -> list[CaseFiles]:
    """A folder of ``images/`` and matching label maps, sorted by name.

    Label maps are in ``labels/`` (or ``manual/``) under the image's name, or under the name plus
    ``_1stHO`` with a second observer's ``_2ndHO`` beside it (the CHASE_DB1 layout), which is kept
    as the human ceiling.
    """
    root = Path(data)
    if (root / "data").is_dir() and (root / "train_slices.list").exists():
        raise InputError(f"{root} is an SSL4MIS HDF5 folder: use load_ssl4mis instead.")
    img_dir = root / "images"
    lab_dir = next((d for d in (root / "labels", root / "manual") if d.is_dir()), None)
    if not img_dir.is_dir() or lab_dir is None:
        raise InputError(f"{root} needs images/ and labels/ (or manual/) subfolders with matching file names.")
    by_stem = {stem_of(q): q for q in lab_dir.iterdir() if suffix_of(q) in READ_SUFFIXES}
    cases = []
    for p in sorted(img_dir.iterdir()):
        if suffix_of(p) not in NIFTI_SUFFIXES + TIFF_SUFFIXES + PHOTO_SUFFIXES:
            continue
        stem = stem_of(p)
        lab = by_stem.get(stem) or by_stem.get(stem + FIRST_OBSERVER)
        if lab is None:
            raise InputError(f"{p.name} has no label map of the same name in {lab_dir}.")
        cases.append(CaseFiles(stem, p, lab, by_stem.get(stem + SECOND_OBSERVER)))
    if not cases:
        raise InputError(f"No image in {img_dir}.")
    return cases


def make_anisotropic(case: Case, axis: int, step: int = 3) -> Case:
    """Keep every ``step``-th slice along ``axis``: thick-slice acquisition from an isotropic scan."""
    idx = np.arange(0, case.image.shape[axis], step)
    spacing = None
    if case.spacing:
        spacing = tuple(s * step if a == axis else s for a, s in enumerate(case.spacing))
    return Case(f"{case.name}_every{step}", np.take(case.image, idx, axis=axis),
                np.take(case.labels, idx, axis=axis), case.channels, spacing)


# --------------------------------------------------------------------------------------------- session

def evenly_spaced_slices(labels: np.ndarray, axis: int, k: int) -> list[int]:
    """K slices evenly spaced inside the labeled structure's extent (its end slices excluded)."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    fg = np.flatnonzero(np.any(labels > 0, axis=other))
    if len(fg) == 0:
        raise InputError("The reference labels are empty: nothing to place slices on.")
    pos = np.linspace(fg.min(), fg.max(), k + 2)[1:-1]
    return sorted({int(round(p)) for p in pos})


def unlabeled_dice(pred: np.ndarray, ref: np.ndarray, labeled: list[int], axis: int, classes) -> float:
    """Mean foreground-class Dice over the slices the user did not label."""
    keep = [i for i in range(ref.shape[axis]) if i not in set(labeled)]
    p = np.take(pred, keep, axis=axis)
    r = np.take(ref, keep, axis=axis)
    return mean_metrics(per_class_metrics(p, r, classes=classes))["dice"]


@dataclass
class SessionResult:
    case: str
    labeled: list[int]
    interpolation: float
    methods: dict[str, dict] = field(default_factory=dict)


def run_session(case: Case, methods: list[str], *, k: int = 3, axis: int = 0, seconds: float = 60.0,
                base_config: TrainConfig | None = None, warm_start: dict[str, str] | None = None,
                selection: str = "even", iterations: int | None = None) -> SessionResult:
    """One volume: K labeled slices, a time budget per method, Dice on the slices nobody labeled.

    ``selection="even"``: K slices evenly spaced inside the structure. ``"uncertainty"``: K-1 evenly
    spaced, and halfway through the budget the teacher's most uncertain unlabeled slice is labeled too
    (what a user pressing "Next uncertain slice" then correcting it does). ``iterations`` replaces the
    time budget by a step budget (to compare settings at equal work).
    """
    if selection not in ("even", "uncertainty"):
        raise InputError(f"Unknown slice selection '{selection}': use even or uncertainty.")
    classes = [c for c in np.unique(case.labels) if c != 0]
    even = evenly_spaced_slices(case.labels, axis, k)
    interp = interpolate_labels(case.labels, even, axis=axis)
    result = SessionResult(case.name, even, unlabeled_dice(interp, case.labels, even, axis, classes))
    start = even if selection == "even" else evenly_spaced_slices(case.labels, axis, k - 1)
    cfg0 = base_config or TrainConfig()
    workdir = tempfile.TemporaryDirectory(prefix="semiseg-session-")
    for name in methods:
        variant = parse_variant(name)
        vol = Volume(case.image, labels_on_slices(case.labels, start, axis), set(start), axis=axis,
                     channels=case.channels, name=case.name)
        cfg = config_for(variant, replace(cfg0, minutes=None if iterations else seconds / 60.0, iterations=iterations),
                         [vol], synthetic_count([vol]), workdir.name)
        t0 = time.perf_counter()
        trainer = Trainer([vol], cfg, resume_from=(warm_start or {}).get(name))
        added = selection == "even"
        report = None
        for report in trainer.run():
            if not added and report.progress is not None and report.progress >= 0.5:
                scores = trainer.predict()[0].slice_scores.copy()
                scores[sorted(vol.labeled)] = -np.inf
                chosen = sorted(vol.labeled | {int(np.argmax(scores))})
                trainer.update_labels(LabelUpdate(labels_on_slices(case.labels, chosen, axis), set(chosen)))
                added = True
        labeled = sorted(vol.labeled)
        teacher = report.prediction[0].labels
        student = predict_volume(Predictor(trainer.method.student), vol, trainer.spec, trainer.runtime).labels
        result.methods[name] = {
            "dice": unlabeled_dice(teacher, case.labels, labeled, axis, classes),
            "student_dice": unlabeled_dice(student, case.labels, labeled, axis, classes),
            "labeled": labeled,
            "iterations": report.iteration,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    workdir.cleanup()
    return result


def paired_against(per_volume: dict[str, list[float]], baseline: str | None = None) -> dict[str, dict]:
    """Each method's per-volume scores against the baseline's (supervised where it ran, else the
    first method): mean difference, wins/losses beyond the tie margin, Wilcoxon p."""
    from .comparison import paired

    names = list(per_volume)
    base = baseline or ("supervised" if "supervised" in names else names[0])
    return {m: {"baseline": base, **paired(per_volume[base], per_volume[m]).__dict__}
            for m in names if m != base}


def paired_over_runs(runs: list[dict], which: str = "teacher") -> dict[str, dict]:
    """Each method against the baseline over repeated runs (seeds) of the dataset protocol, a run's
    score being its mean Dice over the test volumes. Every volume of one run is predicted by the same
    trained model, so a per-volume test says how that model compares on these volumes, not how the
    method does: on the hippocampus at 300 steps single runs came out -0.030 and +0.021, each at
    p < 0.001 per volume (benchmarks/RESULTS.md §15)."""
    per_run = {m: [float(np.mean(dataset_per_volume_dice(r, which)[m])) for r in runs] for m in runs[0]["methods"]}
    return paired_against(per_run)


def dataset_per_volume_dice(result: dict, which: str = "teacher") -> dict[str, list[float]]:
    """Mean foreground Dice of each test volume, per method, in test order (for paired_against)."""
    out = {}
    for m, r in result["methods"].items():
        vols = r[which]["volumes"]
        out[m] = [float(np.mean([c["dice"] for c in vols[name].values()])) for name in result["test"]]
    return out


# --------------------------------------------------------------------------------------------- loop

@dataclass
class LoopResult:
    """One volume of the human-in-the-loop protocol. Each curve point: the slices labeled so far and
    Dice on the slices not labeled (engine and shape-based interpolation from the same slices)."""

    case: str
    method: str
    start: list[int]
    curves: dict[str, list[dict]] = field(default_factory=dict)  # policy -> one point per round
    even: list[dict] = field(default_factory=list)  # K, K+1, ... evenly spaced slices: interpolation
    even_engine: dict = field(default_factory=dict)  # K+R evenly spaced slices, the whole budget
    ceiling: dict = field(default_factory=dict)  # every slice labeled, the whole budget


def train_in_rounds(trainer: Trainer, marks: list[float], on_round) -> object:
    """Run ``trainer`` to the end; when its progress passes each mark, pause it (the clock stops),
    call ``on_round(round)``, then let it go on. Returns the last report."""
    gen = trainer.run()
    report, r = next(gen), 0
    while True:
        if r < len(marks) and not (report.paused or report.finished) and report.progress is not None \
                and report.progress >= marks[r]:
            trainer.pause()
            report = next(gen)  # paused from here: what on_round does is not charged to the budget
            on_round(r)
            r += 1
            trainer.resume()
        try:
            report = next(gen)
        except StopIteration:
            if r < len(marks):
                raise InputError(f"Training ended before round {r + 1} of {len(marks)}: the steps are too slow "
                                 "for this budget; give the rounds more time.") from None
            return report


def run_loop(case: Case, method: str, *, k: int = 3, rounds: int = 3, axis: int = 0, seconds: float = 45.0,
             round_seconds: float = 15.0, iterations: int | None = None, round_iterations: int | None = None,
             policies=("gain", "spacing"), base_config: TrainConfig | None = None,
             references: bool = True) -> LoopResult:
    """A simulated user: K evenly spaced slices, train, then ``rounds`` times the tool proposes a
    slice (``policies``: see proposal.propose_slice), the user corrects it (the reference labels of
    that slice reach the trainer as a LabelUpdate, as Accept-and-correct sends them) and training
    goes on. Beside each curve: interpolation from K, K+1, ... evenly spaced slices, the engine
    trained on K+R evenly spaced slices and on the fully labeled volume (the ceiling) for the same
    total budget (``references=False`` leaves these two trainings out: the curves alone cost a third).
    Budgets are in seconds, or in steps where ``iterations`` is given."""
    from .proposal import propose_slice

    classes = [c for c in np.unique(case.labels) if c != 0]
    n = case.labels.shape[axis]
    start = evenly_spaced_slices(case.labels, axis, k)
    by_steps = iterations is not None
    first, each = (iterations, round_iterations or max(1, iterations // 3)) if by_steps else (seconds, round_seconds)
    total = first + rounds * each
    marks = [(first + r * each) / total for r in range(rounds)]
    variant = parse_variant(method)
    if variant.wants_extra_unlabeled:
        raise InputError("The loop protocol trains on the volume's own slices: leave out unlabeled_source.")
    # a report every step, so that each round starts at its mark, not up to report_every steps late
    cfg0 = replace(variant.apply(base_config or TrainConfig()), minutes=None if by_steps else total / 60.0,
                   iterations=total if by_steps else None, report_every=1)
    result = LoopResult(case.name, method, start)

    def dice_off(pred, labeled):
        return unlabeled_dice(pred, case.labels, sorted(labeled), axis, classes)

    def point(pred, labeled, iteration):  # the engine and interpolation from the same slices, scored off them
        # the steps taken so far: at equal time they tell a slow method from a weak one
        return {"labeled": labeled, "iteration": int(iteration), "dice": dice_off(pred, labeled),
                "interpolation": dice_off(interpolate_labels(case.labels, labeled, axis), labeled)}

    for policy in policies:
        vol = Volume(case.image, labels_on_slices(case.labels, start, axis), set(start), axis=axis,
                     channels=case.channels, name=case.name)
        trainer = Trainer([vol], cfg0)
        curve = result.curves.setdefault(policy, [])

        def on_round(r, trainer=trainer, vol=vol, curve=curve, policy=policy):
            pred = trainer.predict()[0]
            labeled = sorted(vol.labeled)
            curve.append(point(pred.labels, labeled, trainer.iteration))
            chosen = sorted(set(labeled) | {propose_slice(pred.slice_scores, labeled, policy)})
            trainer.update_labels(LabelUpdate(labels_on_slices(case.labels, chosen, axis), set(chosen)))

        last = train_in_rounds(trainer, marks, on_round)
        curve.append(point(last.prediction[0].labels, sorted(vol.labeled), last.iteration))
    for count in range(k, k + rounds + 1):
        even = evenly_spaced_slices(case.labels, axis, count)
        result.even.append({"labeled": even, "interpolation": dice_off(interpolate_labels(case.labels, even, axis),
                                                                       even)})
    for key, labeled in (("even_engine", evenly_spaced_slices(case.labels, axis, k + rounds)),
                         ("ceiling", list(range(n)))) if references else ():
        # the ceiling is scored where the start slices are not: every slice it trained on but those
        scored = labeled if key == "even_engine" else start
        setattr(result, key, {"labeled": labeled, "dice": engine_dice(case, labeled, axis, cfg0, scored)})
    return result


def engine_dice(case: Case, labeled, axis: int, config: TrainConfig, scored_off) -> float:
    """The engine trained on the reference labels of ``labeled`` slices of ``case``; Dice on the
    slices other than ``scored_off``."""
    vol = Volume(case.image, labels_on_slices(case.labels, labeled, axis), set(labeled), axis=axis,
                 channels=case.channels, name=case.name)
    pred = Trainer([vol], config).train().prediction[0].labels
    classes = [c for c in np.unique(case.labels) if c != 0]
    return unlabeled_dice(pred, case.labels, sorted(scored_off), axis, classes)


def loop_summary(results: list[LoopResult]) -> dict:
    """Mean curves over volumes, and each policy's last point against even spacing (paired)."""
    from .comparison import paired

    policies = list(results[0].curves)
    rounds = len(results[0].curves[policies[0]])
    out = {"labeled_counts": [len(p["labeled"]) for p in results[0].curves[policies[0]]], "curves": {}}
    for pol in policies:
        out["curves"][pol] = {
            "engine": [float(np.mean([r.curves[pol][i]["dice"] for r in results])) for i in range(rounds)],
            "interpolation": [float(np.mean([r.curves[pol][i]["interpolation"] for r in results]))
                              for i in range(rounds)]}
    out["even_interpolation"] = [float(np.mean([r.even[i]["interpolation"] for r in results])) for i in range(rounds)]
    if all(r.even_engine and r.ceiling for r in results):  # not when the loop ran without its references
        out["even_engine"] = float(np.mean([r.even_engine["dice"] for r in results]))
        out["ceiling"] = float(np.mean([r.ceiling["dice"] for r in results]))
        even_final = [r.even_engine["dice"] for r in results]
        out["final_vs_even_engine"] = {pol: paired(even_final, [r.curves[pol][-1]["dice"] for r in results]).__dict__
                                       for pol in policies}
    if "spacing" in policies:
        spacing = [r.curves["spacing"][-1]["dice"] for r in results]
        out["final_vs_spacing"] = {pol: paired(spacing, [r.curves[pol][-1]["dice"] for r in results]).__dict__
                                   for pol in policies if pol != "spacing"}
    return out


def train_warm_start(cases: list[Case], methods: list[str], out_dir: str | os.PathLike, *, axis: int,
                     minutes: float, base_config: TrainConfig | None = None) -> dict[str, str]:
    """Models trained on fully labeled other volumes: what a clinician has after the first cases."""
    vols = [Volume(c.image, c.labels, set(range(c.labels.shape[axis])), axis=axis, channels=c.channels,
                   name=c.name) for c in cases]
    out = {}
    for name in methods:
        path = Path(out_dir) / f"warm-{name}"
        cfg = replace(parse_variant(name).apply(base_config or TrainConfig()), minutes=minutes, iterations=None,
                      final_prediction=False)
        Trainer(vols, cfg, out_dir=path).train()
        out[name] = str(path)
    return out


# --------------------------------------------------------------------------------------------- dataset

def split_cases(cases: list[Case], train_fraction: float = 0.8, labeled_fraction: float = 0.1,
                test_count: int | None = None):
    """Sorted names: the first ``train_fraction`` (or all but the last ``test_count``) train, of which
    the first ``labeled_fraction`` are labeled."""
    n_train = len(cases) - test_count if test_count else max(1, int(round(len(cases) * train_fraction)))
    train, test = cases[:n_train], cases[n_train:]
    n_lab = max(1, int(round(n_train * labeled_fraction)))
    if not test:
        raise InputError("No test volumes left: the data set needs at least two volumes.")
    return train[:n_lab], train[n_lab:], test


def run_dataset(cases: list[Case] | list[CaseFiles], methods: list[str], *, axis: int = 0,
                labeled_fraction: float = 0.1, train_fraction: float = 0.8, max_test: int | None = None,
                test_count: int | None = None, **kwargs) -> dict:
    """Sorted cases: the first 80 % train (10 % of those labeled, the rest unlabeled), the rest test.

    Cases given as files (``case_files``) are streamed from disk when every one is NIfTI, TIFF,
    HDF5 or zarr (training reads patches lazily; test cases are read one at a time); photographs,
    and runs of variants that write stand-in synthetic images, are loaded."""
    labeled, unlabeled, test = split_cases(cases, train_fraction, labeled_fraction, test_count)
    test = test[:max_test] if max_test else test
    # stand-in synthetic images are written from labeled volumes in memory: such variants load the data set
    synthetic = any(parse_variant(m).wants_extra_unlabeled for m in methods)
    train = None
    if isinstance(cases[0], CaseFiles):
        if not synthetic:
            train = streamed_training_set(labeled, unlabeled, axis)
        if train is None:
            labeled, unlabeled, test = ([c.read() for c in part] for part in (labeled, unlabeled, test))
    if train is None:
        train = [Volume(c.image, c.labels, set(range(c.labels.shape[axis] if c.labels.ndim == 3 else 1)),
                        axis=axis, channels=c.channels, name=c.name) for c in labeled]
        train += [Volume(c.image, None, set(), axis=axis, channels=c.channels, name=c.name) for c in unlabeled]
    out = run_dataset_volumes(train, test, methods, axis=axis, **kwargs)
    if out is not None:  # rank 0 (or the only one)
        out["labeled"] = [c.name for c in labeled]
    return out


def streamed_training_set(labeled: list[CaseFiles], unlabeled: list[CaseFiles], axis: int):
    """The training cases as a data set streamed from disk, or None when some cannot stream (photographs)."""
    from .streaming import index_data_set, streamable

    pairs = [(c.image, c.labels) for c in labeled] + [(c.image, None) for c in unlabeled]
    if not all(streamable(p) for pair in pairs for p in pair if p):
        return None
    return index_data_set(pairs, axis)


def run_dataset_volumes(train: list[Volume] | StreamedDataSet, test: list[Case] | list[CaseFiles],
                        methods: list[str], *, axis: int = 0, minutes: float | None = 10.0,
                        iterations: int | None = None, base_config: TrainConfig | None = None,
                        progress=None) -> dict | None:
    """Train each method on the same data and budget; metrics of teacher and student on ``test``.

    Under torchrun every rank trains the one model and scores its share of the test cases (each
    read when its turn comes); rank 0 gathers the scores and returns the results, the others None."""
    from . import distributed

    streamed = isinstance(train, StreamedDataSet)
    labeled_train = train.labeled if streamed else [v for v in train if v.labeled]
    classes = list(range(1, train.top_class + 1)) if streamed else \
        sorted({int(c) for case in test for c in np.unique(case.labels) if c != 0})
    out = {"n_train_volumes": len(train.files) if streamed else len(train), "n_labeled_volumes": len(labeled_train),
           "test": [c.name for c in test], "classes": classes, "streamed": streamed, "methods": {}}
    if all(c.second_observer is not None for c in test):  # the human ceiling on the same test images
        out["second_observer"] = summarise({c.name: per_class_metrics(c.second_observer, c.labels, classes=classes)
                                            for c in map(_loaded, test)})
    cfg0 = base_config or TrainConfig()
    workdir = tempfile.TemporaryDirectory(prefix="semiseg-dataset-")
    for name in methods:
        cfg = config_for(parse_variant(name), replace(cfg0, minutes=minutes, iterations=iterations, refresh_seconds=1e9,
                                          first_refresh_seconds=1e9, final_prediction=False),
                         [] if streamed else labeled_train, 0 if streamed else synthetic_count(train), workdir.name)
        t0 = time.perf_counter()
        trainer = Trainer(train, cfg)
        last = trainer.train(progress_bar=progress is not None and trainer.ranks.main)
        ranks = trainer.ranks
        per_net = {}
        for which, net in (("teacher", trainer.method.predictor()), ("student", Predictor(trainer.method.student))):
            mine = {}
            for c in test[ranks.rank::ranks.world]:
                c = _loaded(c)
                v = Volume(c.image, None, set(), axis=axis if c.image.ndim - c.channels == 3 else 0,
                           channels=c.channels, name=c.name)
                pred = predict_volume(net, v, trainer.spec, trainer.runtime).labels
                mine[c.name] = per_class_metrics(pred, c.labels, classes=classes)
            per_volume = distributed.gather_dicts(mine)
            if ranks.main:
                per_net[which] = summarise({c.name: per_volume[c.name] for c in test})
        out["methods"][name] = {"iterations": last.iteration, "seconds": round(time.perf_counter() - t0, 1),
                                "ranks": ranks.world, **per_net}
    workdir.cleanup()
    return out if distributed.current().main else None


def _loaded(c: Case | CaseFiles) -> Case:
    return c.read() if isinstance(c, CaseFiles) else c


def load_ssl4mis(root: str | os.PathLike, labeled_slices: int) -> tuple[list[Volume], list[Case]]:
    """SSL4MIS layout: the first N slices of train_slices.list labeled, the rest unlabeled, test.list held out."""
    split = read_ssl4mis_split(root)
    vols = []
    for i, name in enumerate(split.train_slices):
        image, label = read_h5(split.slice_path(name))
        if image is None:
            raise InputError(f"{name}.h5 has no image.")
        if i < labeled_slices:
            if label is None:
                raise InputError(f"{name}.h5 is in the labeled set but has no label.")
            vols.append(Volume(image, label, {0}, name=name))
        else:
            vols.append(Volume(image, None, set(), name=name))
    tests = []
    for name in split.test:
        image, label = read_h5(split.volume_path(name))
        if image is None or label is None:
            raise InputError(f"Test volume {name}.h5 needs both image and label.")
        tests.append(Case(name, image, label))
    return vols, tests


