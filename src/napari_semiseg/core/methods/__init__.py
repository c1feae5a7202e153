"""Training methods behind one interface; ``METHODS`` maps the CLI / widget names to classes."""

from .base import Batch, Method, TrainState
from .mean_teacher import MeanTeacher
from .supervised import Supervised

METHODS: dict[str, type[Method]] = {m.name: m for m in (Supervised, MeanTeacher)}


def build_method(name: str, in_channels: int, n_classes: int, settings: dict | None = None) -> Method:
    if name not in METHODS:
        from ..io import InputError

        raise InputError(f"Unknown method '{name}': choose one of {', '.join(METHODS)}.")
    return METHODS[name](in_channels, n_classes, settings)


__all__ = ["Batch", "Method", "TrainState", "METHODS", "build_method"]
