"""Class names and colours: kept with the labels, written into exported files where the format allows
(a NIfTI header extension, the TIFF image description) and read back from them."""

from __future__ import annotations

import json

import numpy as np

CLASSES_KEY = "semiseg_classes"
# In the labels handed to the engine, this value marks a pixel of a labeled slice as not known: it is
# left out of every supervised term (and to the semi-supervised part). Classes go from 1 to 254.
UNKNOWN = 255
# What unpainted pixels of a labeled slice mean: background (the user paints slices whole) or unknown
# (the user paints some structure and some background, with the PAINTED_BACKGROUND value).
UNPAINTED = ("background", "unknown")
PAINTED_BACKGROUND = 255  # the value of painted background in a labels layer
PAINTED_BACKGROUND_CLASS = {"name": "background (painted)", "colour": "#7f7f7f"}
NIFTI_COMMENT_CODE = 6  # NIFTI_ECODE_COMMENT: free text, kept by other readers and ignored by them
# distinct on a grey scan and for the common colour-vision deficiencies come first
PALETTE = ("#e6194b", "#3cb4ff", "#ffe119", "#3cb44b", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff")

ClassTable = dict[int, dict[str, str]]  # value -> {"name": ..., "colour": "#rrggbb"}


def default_class(value: int) -> dict[str, str]:
    return {"name": f"class {value}", "colour": PALETTE[(value - 1) % len(PALETTE)]}


def complete(table: ClassTable | None, values) -> ClassTable:
    """``table`` with an entry for every value in ``values`` (and the classes it already names)."""
    out = {int(k): dict(v) for k, v in (table or {}).items()}
    for v in values:
        if int(v) > 0 and int(v) not in out:
            out[int(v)] = default_class(int(v))
    return dict(sorted(out.items()))


def engine_labels(painted: np.ndarray, unpainted: str = "background") -> np.ndarray:
    """What the engine learns from a labels layer's data: painted background becomes 0 and, when
    unpainted pixels mean "unknown", they become UNKNOWN (both values are 255: a swap with 0)."""
    if unpainted not in UNPAINTED:
        raise ValueError(f"unpainted pixels mean one of {', '.join(UNPAINTED)}, not '{unpainted}'")
    painted = np.asarray(painted)
    bg = painted == PAINTED_BACKGROUND
    if unpainted == "background":
        return np.where(bg, 0, painted).astype(painted.dtype) if bg.any() else painted.copy()
    out = np.where(painted == 0, UNKNOWN, painted).astype(np.uint8 if painted.dtype.itemsize == 1 else painted.dtype)
    out[bg] = 0
    return out


def to_text(table: ClassTable) -> str:
    return json.dumps({CLASSES_KEY: {str(k): v for k, v in sorted(table.items())}})


def from_text(text: str | bytes | None) -> ClassTable | None:
    """The table in ``text`` (JSON written by :func:`to_text`); None for anything else."""
    try:
        found = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)[CLASSES_KEY]
        return {int(k): {"name": str(v["name"]), "colour": str(v["colour"])} for k, v in found.items()
                if int(k) > 0}
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
