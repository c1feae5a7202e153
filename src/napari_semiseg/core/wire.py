"""What crosses the network between a training server and its clients: arrays as a compressed
``.npz`` (zip, deflate) with a JSON ``meta`` entry. Read with ``allow_pickle=False`` and its
uncompressed size checked from the zip directory before anything is inflated, so a hostile body
can neither run code nor expand into more memory than the server allows."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from .errors import InputError

MAX_MEMBERS = 16
# training settings the server chooses for its own machine: a client's are refused
SERVER_CHOOSES = ("unlabeled_dir", "device", "threads")


def pack(meta: dict, **arrays: np.ndarray) -> bytes:
    """An .npz, deflated at level 1: label maps shrink nearly as much as at the default level, and a
    CT's 315 MB upload reaches the first pseudo-labels 4 s sooner (RESULTS §13)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, value in {"meta": np.array(json.dumps(meta)), **arrays}.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def unpack(data: bytes, max_bytes: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The meta and arrays of a :func:`pack` body; InputError in one sentence for anything else."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise InputError(f"The body holds {len(infos)} arrays; at most {MAX_MEMBERS} are accepted.")
            size = sum(i.file_size for i in infos)
            if size > max_bytes:
                raise InputError(f"The body would expand to {size / 2**20:.0f} MiB; this server accepts at "
                                 f"most {max_bytes / 2**20:.0f} MiB.")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("meta is not an object")
        return meta, arrays
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - garbage of any kind is one answer
        raise InputError("The body is not a napari-semiseg message (a compressed .npz with a JSON meta entry).") from None


# ---- training reports

REPORT_FIELDS = ("iteration", "losses", "lr", "slices_per_second", "elapsed", "progress", "paused", "finished")


def report_message(report) -> tuple[dict, bytes | None]:
    """A report as a JSON-able dict, and its pseudo-labels (a few slices, or every volume whole at
    the end) packed as binary; None when it carries none."""
    meta = {k: getattr(report, k) for k in REPORT_FIELDS}
    meta["checkpoint"] = report.checkpoint is not None
    if report.slices is not None:
        s = report.slices
        meta["slices"] = {"volume_index": s.volume_index, "slices": [int(i) for i in s.slices]}
        return meta, pack({}, labels=s.labels, uncertainty=s.uncertainty, scores=s.scores)
    if report.prediction:
        p = report.prediction[0]
        meta["prediction"] = True
        return meta, pack({}, labels=p.labels, uncertainty=p.uncertainty, scores=p.slice_scores)
    return meta, None


def report_from(meta: dict, payload: bytes | None, max_bytes: int):
    """The client's :class:`~.trainer.Report` from :func:`report_message`'s two parts."""
    from .inference import Prediction, SlicePrediction
    from .trainer import Report

    # checkpoints stay on the server (a path there means nothing here)
    report = Report(**{k: meta[k] for k in REPORT_FIELDS})
    if payload is not None:
        _, a = unpack(payload, max_bytes)
        if "slices" in meta:
            report.slices = SlicePrediction(meta["slices"]["volume_index"], meta["slices"]["slices"], a["labels"],
                                            a["uncertainty"], a["scores"])
        else:
            report.prediction = [Prediction(a["labels"], a["uncertainty"], a["scores"])]
    return report
