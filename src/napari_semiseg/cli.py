"""Command line: ``napari-semiseg train | predict | evaluate | benchmark | demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .core.errors import InputError, is_out_of_memory, out_of_memory_message


def _number(kind, minimum, inclusive: bool):
    """An argparse type: a number of ``kind`` at least (or above) ``minimum``, else one sentence."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {'whole ' if kind is int else ''}number") from None
        if value != value or value in (float("inf"), float("-inf")) or (value < minimum if inclusive
                                                                         else value <= minimum):
            raise argparse.ArgumentTypeError(f"must be {'at least' if inclusive else 'above'} {minimum}, not {text}")
        return value
    return parse


POSITIVE = _number(float, 0, inclusive=False)
AT_LEAST_ONE = _number(int, 1, inclusive=True)


def _fraction(text: str) -> float:
    value = POSITIVE(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 to 1, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-semiseg", description=__doc__)
    p.add_argument("--version", action="version", version=f"napari-semiseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="open napari with the plugin on the sample volume "
                                       "(headless without a display)")
    demo.add_argument("--headless", action="store_true", help="run without a window even if a display exists")
    demo.add_argument("--out", default="semiseg-output", help="output folder for the headless run")
    demo.add_argument("--seconds", type=POSITIVE, default=45.0, help="training time of the headless run")
    demo.add_argument("--min-iterations", type=AT_LEAST_ONE,
                      help="the headless run trains at least this many steps (default 400), however short the "
                           "clock: a busy machine takes longer rather than giving a worse mask")

    tr = sub.add_parser("train", help="train on an image from its labeled slices (and its unlabeled rest), or on "
                                      "a data set folder streamed from disk (under torchrun: on several GPUs/nodes)",
                        epilog=_methods_advice(), formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("image", help="image (NIfTI, TIFF, PNG/JPEG); or a folder with images/ and labels/ (NIfTI, "
                                  "TIFF, HDF5, zarr), images without a label map being unlabeled")
    tr.add_argument("--labels", help="label map of the same shape (not with a data set folder)")
    which = tr.add_mutually_exclusive_group()
    which.add_argument("--labeled-slices", help="comma-separated slice indices whose labels are trusted "
                                                 "(labels elsewhere are ignored); default: every slice with a label")
    which.add_argument("--labeled", choices=["all"], help="'all': every slice is labeled (background included)")
    tr.add_argument("--axis", type=int, default=0, help="slice axis of a 3D image (display order z, y, x; default 0)")
    tr.add_argument("--unpainted", choices=["background", "unknown"], default="background",
                    help="what 0 means on a labeled slice: background (slices labeled whole, the default) or "
                         "unknown (scribbles: only labeled pixels are taught; 255 marks painted background)")
    tr.add_argument("--method", default="mean-teacher", help=f"one of {', '.join(_method_names())}")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=POSITIVE, help="training time budget")
    budget.add_argument("--iterations", type=AT_LEAST_ONE, help="training step budget")
    _add_engine_options(tr)
    tr.add_argument("--resume", metavar="MODEL", help="continue training a saved model")
    tr.add_argument("--out", default="semiseg-model", help="folder for the model, masks and uncertainty map")

    pr = sub.add_parser("predict", help="apply a saved model to an image")
    pr.add_argument("model", help="the folder `train --out` wrote, or its config.json / model.safetensors")
    pr.add_argument("image")
    pr.add_argument("--out", required=True, help="mask file (.nii.gz, .nii, .tif; .png for a 2D image)")
    pr.add_argument("--uncertainty", metavar="MAP", help="also write the uncertainty map (.nii.gz or .tif, float32)")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

    sv = sub.add_parser("serve", help="run a training server (on a machine with a GPU) for the widget to connect to")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--token", action="append", metavar="T",
                    help="a client's token (repeat for several clients, each seeing only its own sessions); "
                         "default: one generated and printed")
    sv.add_argument("--max-upload-mb", type=POSITIVE, default=2048.0, help="largest image or message accepted")
    sv.add_argument("--ssl-certfile", help="serve HTTPS/WSS with this certificate (with --ssl-keyfile)")
    sv.add_argument("--ssl-keyfile")

    ev = sub.add_parser("evaluate", help="per-class Dice, Jaccard, HD95 and ASD of a prediction against a reference")
    ev.add_argument("pred", help="predicted label map (NIfTI or TIFF)")
    ev.add_argument("ref", help="reference label map (NIfTI or TIFF)")
    ev.add_argument("--mm", action="store_true",
                    help="distances in mm from the reference's voxel spacing (default: voxels, as the field reports)")
    ev.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")

    bm = sub.add_parser("benchmark", help="measure methods on real data (dataset, session or loop protocol)")
    bm.add_argument("data", help="folder with images/ and labels/ (NIfTI/TIFF), or an SSL4MIS HDF5 folder")
    bm.add_argument("--protocol", required=True, choices=["dataset", "session", "loop"],
                    help="dataset: the field's split; session: K labeled slices per volume; loop: K slices, "
                         "then rounds of proposing a slice and correcting it")
    bm.add_argument("--methods", default="supervised,mean-teacher",
                    help="comma-separated methods, each optionally with settings: sra-seg[sa_mode=off,blend=hard]")
    bm.add_argument("--axis", type=int, default=0, help="slice axis of 3D volumes (display order)")
    bm.add_argument("--volumes", type=AT_LEAST_ONE, help="session, loop: use the first N volumes (sorted names)")
    bm.add_argument("--k", type=AT_LEAST_ONE, default=3, help="session, loop: labeled slices per volume to start with")
    bm.add_argument("--selection", default="even", choices=["even", "uncertainty"],
                    help="session: K evenly spaced slices, or K-1 then the teacher's most uncertain one")
    bm.add_argument("--seconds", type=POSITIVE, default=60.0,
                    help="session: training seconds per method and volume; loop: before the first round")
    bm.add_argument("--rounds", type=AT_LEAST_ONE, default=3, help="loop: slices proposed and corrected")
    bm.add_argument("--round-seconds", type=POSITIVE, default=20.0, help="loop: training seconds after each correction")
    bm.add_argument("--policies", default="gain,spacing",
                    help="loop: how the next slice is proposed, comma-separated: gain (the widget's), "
                         "uncertainty (the most uncertain slice), spacing (the widest gap between labels)")
    bm.add_argument("--curve-only", action="store_true",
                    help="loop: the curves alone, without training the engine again on K+R evenly spaced slices "
                         "and on every slice (a third of the time)")
    bm.add_argument("--anisotropic", type=AT_LEAST_ONE, default=1, metavar="STEP",
                    help="session: keep every STEP-th slice along the axis (thick slices)")
    bm.add_argument("--warm-start", action="store_true",
                    help="session: start each volume from a model trained on the other volumes (dataset-style, "
                         "--warm-minutes on the volumes not in the session set)")
    bm.add_argument("--warm-minutes", type=POSITIVE, default=5.0)
    bm.add_argument("--minutes", type=POSITIVE, default=10.0, help="dataset: training budget per method")
    bm.add_argument("--iterations", type=AT_LEAST_ONE, help="step budget instead of --minutes (dataset) or --seconds (session)")
    bm.add_argument("--labeled-fraction", type=_fraction, default=0.1, help="dataset: fraction of training volumes labeled")
    bm.add_argument("--labeled-slices", type=AT_LEAST_ONE, default=136, help="SSL4MIS: first N slices of train_slices.list")
    bm.add_argument("--max-test", type=AT_LEAST_ONE, help="dataset: evaluate on at most N test volumes")
    bm.add_argument("--test-count", type=AT_LEAST_ONE, help="dataset: the last N volumes are the test set (default: 20 %%)")
    bm.add_argument("--repeats", type=AT_LEAST_ONE, default=1,
                    help="dataset: train every method this many times (seeds --seed, --seed+1, ...) and compare "
                         "the methods over these runs: one trained model says little about a method")
    _add_engine_options(bm)
    bm.add_argument("--json", metavar="FILE", help="write all results as JSON")
    return p


def _method_names() -> list[str]:
    from .core.methods import METHODS

    return list(METHODS)


def _methods_advice() -> str:
    """Each method's cost and where it loses (measured), under ``train --help``."""
    import textwrap

    from .core.methods import METHODS

    lines = ["methods (Dice against supervised training, benchmarks/RESULTS.md):"]
    for name, cls in METHODS.items():
        lines += textwrap.wrap(cls.advice, 78, initial_indent=f"  {name}: ", subsequent_indent="    ")
    return "\n".join(lines)


def _add_engine_options(p) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--threads", type=AT_LEAST_ONE, help="CPU threads for training (default: all cores)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other engine setting (e.g. --set batch_size=16, --set context=0, "
                        "--set method.consistency=0.5); repeatable")


def _config_from(args, **overrides):
    from .core.trainer import TrainConfig
    from .core.variants import parse_value, route_settings

    cfg = TrainConfig(device=args.device, threads=args.threads, precision=args.precision, seed=args.seed,
                      **overrides)
    values = {}
    for item in args.set:
        if "=" not in item:
            raise InputError(f"--set takes KEY=VALUE, not '{item}'.")
        key, raw = item.split("=", 1)
        values[key] = parse_value(raw)
    config, settings = route_settings(values, str(values.get("method", cfg.method)))
    for key, value in config.items():
        setattr(cfg, key, value)
    cfg.method_settings.update(settings)
    cfg.check()
    if cfg.method_settings:  # the method's own settings too, before any data is read
        from .core.methods import METHODS

        try:
            METHODS[cfg.method].Settings.from_dict(cfg.method_settings)
        except ValueError as err:
            raise InputError(f"{cfg.method}: {err}.") from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    command = {"demo": cmd_demo, "evaluate": cmd_evaluate, "train": cmd_train, "predict": cmd_predict,
               "benchmark": cmd_benchmark, "serve": cmd_serve}[args.command]
    try:
        with _terminate_as_interrupt():
            return command(args)
    except InputError as err:
        return _fail(str(err), 2)
    except FloatingPointError as err:  # training diverged: the user's data or settings, said plainly
        return _fail(str(err), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - the user gets one sentence, never a traceback
        if is_out_of_memory(err):
            doing = {"train": "training", "predict": "predicting", "benchmark": "benchmarking", "serve": "serving",
                     "evaluate": "evaluating", "demo": "running the demo"}[args.command]
            return _fail(out_of_memory_message(doing), 3)
        if os.environ.get("NAPARI_SEMISEG_DEBUG"):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        return _fail(f"internal error ({type(err).__name__}: {first}). This is a bug in napari-semiseg: please "
                     "report it; NAPARI_SEMISEG_DEBUG=1 shows the details.", 1)


def cmd_serve(args) -> int:
    from .core.server import serve

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise InputError("--ssl-certfile and --ssl-keyfile go together.")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.ssl_certfile:
        print("napari-semiseg: warning: listening beyond this machine without TLS: the token and the images "
              "cross the network in clear (see the README: put TLS in front).", file=sys.stderr)
    serve(args.host, args.port, args.token, max_upload_mb=args.max_upload_mb, ssl_certfile=args.ssl_certfile,
          ssl_keyfile=args.ssl_keyfile, announce=lambda line: print(line, flush=True))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"napari-semiseg: error: {message}", file=sys.stderr)
    return code


class _terminate_as_interrupt:
    """SIGTERM (a cluster's time limit, a service stop) ends a command like Ctrl-C: the model is saved."""

    def __enter__(self):
        import signal

        self._old = None
        try:
            self._old = signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:  # not the main thread (tests call main() from threads): leave signals alone
            pass
        return self

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _write_json(path, data) -> None:
    from .core.files import atomic_write

    text = json.dumps(data, indent=2, default=_json_default)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text), "results")


def cmd_evaluate(args) -> int:
    from .core.files import check_output_file
    from .core.io import read_labels
    from .core.metrics import format_table, per_class_metrics, summarise

    if args.json:
        check_output_file(args.json, [args.pred, args.ref], "metrics")
    pred = read_labels(args.pred)
    ref = read_labels(args.ref)
    pred.data = _binary_mask_as_class_one(pred.data, Path(args.pred).name)
    ref.data = _binary_mask_as_class_one(ref.data, Path(args.ref).name)
    if pred.data.shape != ref.data.shape:
        raise InputError(f"The prediction has shape {pred.data.shape} but the reference has "
                         f"{ref.data.shape}; they must match.")
    spacing = ref.source.spacing if args.mm else None
    metrics = per_class_metrics(pred.data, ref.data, spacing=spacing)
    if not metrics:
        raise InputError("Neither label map contains a foreground class: nothing to evaluate.")
    print(format_table(metrics, unit="mm" if args.mm else "voxels"))
    if args.json:
        summary = summarise({Path(args.pred).name: metrics})
        summary["distance_unit"] = "mm" if args.mm else "voxels"
        _write_json(args.json, summary)
        print(f"metrics written to {args.json}")
    return 0


def _load_pair(image_path, labels_path):
    from .core.io import check_same_shape, read_image, read_labels

    image = read_image(image_path, as_labels=False)
    labels = read_labels(labels_path)
    check_same_shape(image, labels)
    _warn_about(image)
    return image, labels


def _warn_about(image) -> None:
    note = image.source.header.get("warning")
    if note:
        print(f"napari-semiseg: warning: {Path(image.source.path).name}: {note}.", file=sys.stderr)


def cmd_train(args) -> int:
    from .core.checkpoint import MODEL_SUBFOLDER
    from .core.io import write_float_map, write_labels
    from .core.session import LocalSession
    from .core.classes import PAINTED_BACKGROUND, engine_labels
    from .core.volume import Volume, labeled_slices_from_labels, labels_on_slices

    cfg = _config_from(args, method=args.method, minutes=args.minutes, iterations=args.iterations)
    if Path(args.image).is_dir():
        return _train_data_set(args, cfg)
    if not args.labels:
        raise InputError("train IMAGE needs --labels LABELS (the label map of the same shape); a data set folder "
                         "needs none.")
    from .core import distributed

    ranks = distributed.start(cfg.device)
    image, labels = _load_pair(args.image, args.labels)
    out = Path(args.out)
    suffix = ".nii.gz" if image.source.format == "nifti" else ".tif"
    mask_path, unc_path, model_path = out / f"mask{suffix}", out / f"uncertainty{suffix}", out / MODEL_SUBFOLDER
    _check_train_outputs(args, cfg, out, mask_path, unc_path, model_path)
    ndim = len(image.spatial_shape)
    axis = args.axis if ndim == 3 else 0
    if ndim == 3 and not 0 <= axis < 3:
        raise InputError(f"--axis {axis} does not exist: a 3D image has axes 0, 1 and 2.")
    n_slices = image.spatial_shape[axis] if ndim == 3 else 1
    if args.unpainted == "unknown":  # 255 is painted background here, not a 0/255 mask's foreground
        if not (np.asarray(labels.data) == PAINTED_BACKGROUND).any():
            raise InputError(f"With --unpainted unknown, mark the background you are sure of with {PAINTED_BACKGROUND} "
                             "in the label map: with none, the model would learn that everything is structure.")
        lab = engine_labels(labels.data, "unknown")
    else:
        lab = _binary_mask_as_class_one(labels.data, Path(args.labels).name)
    if args.labeled == "all":
        labeled = set(range(n_slices))
    elif args.labeled_slices:
        try:
            labeled = {int(s) for s in args.labeled_slices.split(",") if s.strip()}
        except ValueError:
            raise InputError(f"--labeled-slices takes comma-separated integers, not '{args.labeled_slices}'.") from None
        bad = [i for i in sorted(labeled) if not 0 <= i < n_slices]
        if bad:
            raise InputError(f"Labeled slice {bad[0]} is outside the image (0 to {n_slices - 1}).")
        lab = labels_on_slices(lab, labeled, axis)  # labels of other slices must not leak into training
    else:  # slices with paint on them (with --unpainted unknown, 0 became UNKNOWN: look at the file's values)
        labeled = labeled_slices_from_labels(np.asarray(labels.data) if args.unpainted == "unknown" else lab, axis)
    if not labeled:
        raise InputError("The label map is empty: label at least one slice, or name slices with --labeled-slices.")
    if cfg.minutes is None and cfg.iterations is None and args.resume is None:
        cfg.minutes = 1.0
    volume = Volume(image.data, lab, labeled, axis=axis, channels=image.rgb, name=Path(args.image).name)
    if volume.non_finite_voxels:
        print(f"napari-semiseg: warning: {volume.non_finite_voxels} voxel(s) of {Path(args.image).name} are NaN or "
              "infinite; they are treated as the darkest intensity.", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    session = LocalSession([volume], cfg, resume_from=args.resume, out_dir=model_path)
    about = session.build()
    if ranks.main:
        print(f"Training {cfg.method} on {Path(args.image).name} {image.spatial_shape}: {len(labeled)} labeled "
              f"slice(s) along axis {axis}, {about['device']} ({about['precision']}), {_budget(cfg, ranks, model_path)}")
    report, status = _train_to_end(session.run, session, model_path, ranks)
    if report is None:
        return status
    if not ranks.main:  # rank 0 writes the masks
        return 0
    pred = report.prediction[0] if report.prediction else session.predict()[0]
    mask = write_labels(mask_path, pred.labels, image.source)
    unc = write_float_map(unc_path, pred.uncertainty, image.source)
    print(f"{report.iteration} iterations in {report.elapsed:.0f} s. Model: {model_path.resolve()}")
    print(f"Mask: {mask.resolve()}\nUncertainty: {unc.resolve()}")
    return 0


def _budget(cfg, ranks, model_path: Path) -> str:
    """The rest of the line that opens a training: budget, ranks, checkpoints."""
    world = f", world size {ranks.world} (one model, DistributedDataParallel)" if ranks.distributed else ""
    return (f"{'%.1f min' % cfg.minutes if cfg.minutes else '%d iterations' % (cfg.iterations or 0)}{world}; "
            f"a checkpoint every {cfg.checkpoint_seconds:.0f} s into {model_path}.")


def _train_to_end(run, trainer, model_path: Path, ranks):
    """(the last report, None), or (None, the exit status) when training was interrupted or lost a rank."""
    from .core.distributed import PeerLost

    try:
        return run(progress_bar=ranks.main), None
    except KeyboardInterrupt:
        return None, _interrupted(trainer, model_path, ranks)
    except PeerLost as err:
        return None, _fail(f"rank {ranks.rank}: {err}", 1)


def _interrupted(trainer, model_path: Path, ranks) -> int:
    """Ctrl-C, SIGTERM (a cluster's time limit; torchrun stopping the others when one rank failed)."""
    if not ranks.main:
        return 130
    saved = trainer.save(model_path) if trainer.iteration else None
    kept = f"; the model is saved in {saved} (continue with --resume {saved})." if saved else "."
    if ranks.distributed:  # torchrun stops the other ranks this way when one of them fails
        return _fail(f"rank 0: training stopped at iteration {trainer.iteration}: the launcher ended it (another "
                     f"training process failed, or the job was cancelled){kept}", 130)
    print(f"napari-semiseg: interrupted at iteration {trainer.iteration}{kept}", file=sys.stderr)
    return 130


def _train_data_set(args, cfg) -> int:
    """A folder of images (labeled or not), streamed from disk; one model over every torchrun rank."""
    from dataclasses import replace

    from .core import distributed
    from .core.checkpoint import MODEL_SUBFOLDER, check_replaceable
    from .core.files import check_output_folder, expand_inputs, refuse_inputs_inside
    from .core.streaming import scan_folder
    from .core.trainer import Trainer

    if args.labels or args.labeled_slices or args.labeled or args.unpainted != "background":
        raise InputError("A data set folder takes its labels from labels/ (every slice of a labeled image is "
                         "labeled): --labels, --labeled-slices, --labeled and --unpainted are for one image.")
    out = Path(args.out)
    model_path = out / MODEL_SUBFOLDER
    inputs = expand_inputs([args.image, args.resume])
    check_output_folder(out, inputs)
    refuse_inputs_inside(model_path, inputs, "model")
    check_replaceable(model_path)
    if cfg.minutes is None and cfg.iterations is None and args.resume is None:
        cfg.minutes = 1.0
    cfg = replace(cfg, final_prediction=False, refresh_seconds=1e9, first_refresh_seconds=1e9)
    ranks = distributed.start(cfg.device)
    # rank 0 reads the headers and the label maps once; the others receive the index
    data = distributed.from_main(lambda: scan_folder(args.image, axis=args.axis))
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(data, cfg, resume_from=args.resume, out_dir=model_path)
    if ranks.main:
        labeled, unlabeled = len(data.labeled), len(data.unlabeled)
        print(f"Training {cfg.method} on {labeled + unlabeled} images streamed from {args.image} ({labeled} labeled, "
              f"{unlabeled} unlabeled), {trainer.device} ({trainer.precision}), {_budget(cfg, ranks, model_path)}",
              flush=True)
    report, status = _train_to_end(trainer.train, trainer, model_path, ranks)
    if report is None:
        return status
    if ranks.main:
        print(f"{report.iteration} iterations in {report.elapsed:.1f} s. Model: {model_path.resolve()}\n"
              f"Use it: napari-semiseg predict {model_path} IMAGE --out MASK, or Load model… in the widget "
              "(the warm start for a new case).")
    return 0


def _check_train_outputs(args, cfg, out: Path, mask_path: Path, unc_path: Path, model_path: Path) -> None:
    """Before any training: every output writable, none of them (nor the model folder) an input."""
    from .core.checkpoint import check_replaceable
    from .core.files import check_output_folder, expand_inputs, refuse_input_overwrite, refuse_inputs_inside

    inputs = expand_inputs([args.image, args.labels, args.resume, cfg.unlabeled_dir])
    check_output_folder(out, inputs)
    refuse_input_overwrite(mask_path, inputs, "mask")
    refuse_input_overwrite(unc_path, inputs, "uncertainty map")
    refuse_inputs_inside(model_path, inputs, "model")
    check_replaceable(model_path)


def _binary_mask_as_class_one(labels: np.ndarray, name: str) -> np.ndarray:
    """A 0/255 (or 0/65535) mask, as image editors save them, is one class, not class 255."""
    top = int(labels.max())
    if top in (255, 65535) and not np.any((labels != 0) & (labels != top)):
        print(f"napari-semiseg: note: {name} holds only 0 and {top}: read as a binary mask (class 1).",
              file=sys.stderr)
        return (labels != 0).astype(np.uint8)
    return labels


def cmd_predict(args) -> int:
    from .core.checkpoint import load_method, model_dir, predict_with_model, volume_for_model
    from .core.files import expand_inputs, is_same_file
    from .core.io import FLOAT_WRITE_SUFFIXES, check_export_path, read_image, suffix_of, write_float_map, write_labels

    inputs = expand_inputs([model_dir(args.model), args.image])
    check_export_path(args.out, inputs, "mask")
    if args.uncertainty:
        check_export_path(args.uncertainty, inputs, "uncertainty map", FLOAT_WRITE_SUFFIXES)
        if is_same_file(args.out, args.uncertainty):
            raise InputError("--out and --uncertainty name the same file: give each its own name.")
    method, meta = load_method(args.model)
    image = read_image(args.image, as_labels=False)
    _warn_about(image)
    if suffix_of(args.out) == ".png" and len(image.spatial_shape) != 2:
        raise InputError(f"{Path(args.image).name} is a volume and a PNG holds one 2D image: give --out a "
                         ".nii.gz or .tif name.")
    volume = volume_for_model(image.data, meta, channels=image.rgb, name=Path(args.image).name)
    pred = predict_with_model(method, meta, volume, device=args.device)
    written = write_labels(args.out, pred.labels, image.source)
    print(f"Mask: {written.resolve()}")
    if args.uncertainty:
        print(f"Uncertainty: {write_float_map(Path(args.uncertainty), pred.uncertainty, image.source).resolve()}")
    return 0


def cmd_benchmark(args) -> int:
    from .core import benchmark as bm

    from .core.variants import parse_variant, split_methods

    methods = split_methods(args.methods)
    for m in methods:
        parse_variant(m)  # a clear error now rather than after the first method's training
    cfg = _config_from(args)
    data = Path(args.data)
    if not data.exists():
        raise InputError(f"Data folder not found: {data}.")
    if args.json:
        from .core.files import check_output_file, expand_inputs

        check_output_file(args.json, expand_inputs([data]), "results")  # now, not after hours of training
    if args.protocol == "dataset":
        from .core import distributed

        ranks = distributed.start(cfg.device)  # under torchrun every rank trains every run; rank 0 reports
        runs = []
        for repeat in range(args.repeats):
            cfg.seed = args.seed + repeat
            if args.repeats > 1 and ranks.main:
                print(f"run {repeat + 1} of {args.repeats} (seed {cfg.seed})")
            result = _dataset_run(args, bm, methods, cfg, data)
            if result is not None:
                runs.append({**result, "seed": cfg.seed})
        if not ranks.main:
            return 0
        if args.repeats > 1:
            result = {k: v for k, v in runs[0].items() if k not in ("methods", "paired")}  # the split
            result.update(runs=runs, seeds=[args.seed + i for i in range(args.repeats)])
            result["paired_over_runs"] = bm.paired_over_runs(runs) if len(methods) > 1 else {}
            print(f"over the {args.repeats} runs (each run's mean Dice over its test volumes):")
            _print_paired(result["paired_over_runs"], unit="runs")
    elif args.protocol == "loop":
        result = _loop(args, bm, methods, cfg, data)
    else:
        result = _session(args, bm, methods, cfg, data)
    if args.json:
        _write_json(args.json, result)
        print(f"results written to {args.json}")
    return 0


def _dataset_run(args, bm, methods, cfg, data) -> dict | None:
    """One training of every method on the data set's split, printed; None on ranks other than 0."""
    minutes = None if args.iterations else args.minutes  # a step budget is the whole budget: no clock beside it
    if (data / "train_slices.list").exists():
        train, test = bm.load_ssl4mis(data, args.labeled_slices)
        result = bm.run_dataset_volumes(train, test[: args.max_test] if args.max_test else test, methods,
                                        axis=args.axis, minutes=minutes, iterations=args.iterations,
                                        base_config=cfg, progress=True)
    else:  # files, not arrays: volumes stream from disk (and under torchrun train one model on every rank)
        result = bm.run_dataset(bm.case_files(data), methods, axis=args.axis, minutes=minutes,
                                iterations=args.iterations, labeled_fraction=args.labeled_fraction,
                                max_test=args.max_test, test_count=args.test_count, base_config=cfg,
                                progress=True)
    if result is None:
        return None
    if len(result["methods"]) > 1:
        result["paired"] = bm.paired_against(bm.dataset_per_volume_dice(result))
    _print_dataset(result)
    _print_paired(result.get("paired", {}))
    return result


def _session(args, bm, methods, cfg, data) -> dict:
    from tqdm import tqdm

    cases = bm.load_cases(data)
    session_cases = cases[: args.volumes] if args.volumes else cases
    warm = None
    if args.warm_start:
        others = cases[len(session_cases):][:20]
        if not others:
            raise InputError("--warm-start needs volumes beyond --volumes to train the starting model on.")
        warm = bm.train_warm_start(others, methods, Path(args.json or "benchmark.json").parent / ".warm-start",
                                   axis=args.axis, minutes=args.warm_minutes, base_config=cfg)
    rows = []
    for c in tqdm(session_cases, desc="volumes", unit="vol"):
        if args.anisotropic > 1:
            c = bm.make_anisotropic(c, args.axis, args.anisotropic)
        r = bm.run_session(c, methods, k=args.k, axis=args.axis, seconds=args.seconds, base_config=cfg,
                           warm_start=warm, selection=args.selection, iterations=args.iterations)
        rows.append(r)
        tqdm.write(f"{r.case}: interpolation {r.interpolation:.3f} " +
                   " ".join(f"{m} {v['dice']:.3f} (student {v['student_dice']:.3f}, {v['iterations']} it)"
                            for m, v in r.methods.items()))
    mean = {"interpolation": float(np.mean([r.interpolation for r in rows]))}
    for m in methods:
        mean[m] = float(np.mean([r.methods[m]["dice"] for r in rows]))
        mean[m + " (student)"] = float(np.mean([r.methods[m]["student_dice"] for r in rows]))
    print("mean Dice on unlabeled slices: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    compared = bm.paired_against({m: [r.methods[m]["dice"] for r in rows] for m in methods}) if len(methods) > 1 else {}
    _print_paired(compared)
    return {"protocol": "session", "paired": compared, "k": args.k, "seconds": args.seconds, "iterations": args.iterations,
            "axis": args.axis,
            "anisotropic_step": args.anisotropic, "warm_start": bool(args.warm_start), "selection": args.selection,
            "volumes": [r.__dict__ for r in rows], "mean": mean}


def _loop(args, bm, methods, cfg, data) -> dict:
    from tqdm import tqdm

    from .core.proposal import POLICIES, unknown_policy

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        if p not in POLICIES:
            raise unknown_policy(p)
    cases = bm.load_cases(data)
    cases = cases[: args.volumes] if args.volumes else cases
    out = {"protocol": "loop", "k": args.k, "rounds": args.rounds, "seconds": args.seconds,
           "curve_only": args.curve_only, "round_seconds": args.round_seconds, "iterations": args.iterations,
           "axis": args.axis,
           "policies": policies, "methods": {}}
    for m in methods:
        rows = []
        for c in tqdm(cases, desc=f"volumes ({m})", unit="vol"):
            if args.anisotropic > 1:
                c = bm.make_anisotropic(c, args.axis, args.anisotropic)
            r = bm.run_loop(c, m, k=args.k, rounds=args.rounds, axis=args.axis, seconds=args.seconds,
                            round_seconds=args.round_seconds, iterations=args.iterations, policies=policies,
                            base_config=cfg, references=not args.curve_only)
            rows.append(r)
            tqdm.write(f"{r.case} {m}: " + "; ".join(
                f"{pol} " + " ".join(f"{p['dice']:.3f}" for p in pts) for pol, pts in r.curves.items())
                + ("" if args.curve_only else
                   f"; even K+R {r.even_engine['dice']:.3f}; ceiling {r.ceiling['dice']:.3f}"))
        summary = bm.loop_summary(rows)
        print(f"{m}: Dice on the slices not labeled, by slices labeled {summary['labeled_counts']}")
        for pol, curve in summary["curves"].items():
            print(f"  {pol:>11}: engine " + " ".join(f"{x:.3f}" for x in curve["engine"])
                  + " | interpolation " + " ".join(f"{x:.3f}" for x in curve["interpolation"]))
        print("  even spacing: interpolation " + " ".join(f"{x:.3f}" for x in summary["even_interpolation"])
              + ("" if args.curve_only else
                 f" | engine at {summary['labeled_counts'][-1]} slices {summary['even_engine']:.3f}"
                 f" | ceiling (all labeled) {summary['ceiling']:.3f}"))
        out["methods"][m] = {"volumes": [r.__dict__ for r in rows], "summary": summary}
    return out


def _print_paired(compared: dict, unit: str = "") -> None:
    for m, c in compared.items():
        print(f"{m} vs {c['baseline']}: {c['mean_difference']:+.3f} Dice, wins/losses {c['wins']}/{c['losses']} "
              f"of {c['n']}{' ' + unit if unit else ''} (a difference within 0.005 is neither), "
              f"Wilcoxon p = {c['p']:.3f}")


def _print_dataset(result: dict) -> None:
    print(f"train volumes {result['n_train_volumes']} ({result['n_labeled_volumes']} labeled), "
          f"test volumes {len(result['test'])}")
    if "second_observer" in result:
        print(f"second observer (human ceiling): Dice {result['second_observer']['mean']['dice']:.4f}")
    for m, r in result["methods"].items():
        for which in ("teacher", "student"):
            mean = r[which]["mean"]
            print(f"{m:>14} {which:>7}: Dice {mean['dice']:.4f} Jaccard {mean['jaccard']:.4f} "
                  f"HD95 {mean['hd95']:.2f} ASD {mean['asd']:.2f}  ({r['iterations']} it, {r['seconds']} s"
                  f"{', world size %d' % r['ranks'] if r.get('ranks', 1) > 1 else ''})")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, set):
        return sorted(o)
    raise TypeError(type(o).__name__)


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_demo(args) -> int:
    if args.headless or not has_display():
        from .demo import DEMO_MIN_ITERATIONS, run_headless

        run_headless(Path(args.out), seconds=args.seconds, min_iterations=args.min_iterations or DEMO_MIN_ITERATIONS)
        return 0
    from .napari.demo import run_viewer

    run_viewer()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
