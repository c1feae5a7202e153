"""Training methods behind one interface; ``METHODS`` maps the CLI / widget names to classes."""

from .barl import BARL
from .base import Batch, Method, TrainState
from .copy_paste import BCP, SRASeg
from .mean_teacher import MeanTeacher
from .sgrs import SGRSNet
from .supervised import Supervised
from .transmedseg import TransMedSeg

METHODS: dict[str, type[Method]] = {m.name: m for m in (Supervised, MeanTeacher, BCP, SRASeg, SGRSNet, BARL,
                                                         TransMedSeg)}


def build_method(name: str, in_channels: int, n_classes: int, settings: dict | None = None) -> Method:
    if name not in METHODS:
        from ..io import InputError

        raise InputError(f"Unknown method '{name}': choose one of {', '.join(METHODS)}.")
    try:
        return METHODS[name](in_channels, n_classes, settings)
    except (ValueError, TypeError) as err:
        from ..io import InputError

        raise InputError(f"{name}: {err}") from None


__all__ = ["Batch", "Method", "TrainState", "METHODS", "build_method"]
