"""Type checking of settings that arrive as text or JSON: ``--set``, widget fields, model files.

A wrong type must be one sentence when the setting is given, not a traceback minutes later.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields

from .errors import InputError


def check_types(cls, values: dict, owner: str) -> dict:
    """``values`` for the dataclass ``cls``, each converted to its declared type or refused."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise InputError(f"Unknown {owner} setting '{key}'; known: {', '.join(sorted(names))}.")
        out[key] = convert(value, hints[key], f"The {owner} setting '{key}'")
    return out


def convert(value, tp, name: str):
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else tp
    if value is None:
        if optional:
            return None
        raise InputError(f"{name} needs a value.")
    base = typing.get_origin(tp) or tp
    if base is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"{name} must be true or false, not '{value}'.")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"{name} must be a whole number, not '{value}'.")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, not '{value}'.")
            return float(value)
        raise InputError(f"{name} must be a number, not '{value}'.")
    if base is str:
        if isinstance(value, str):
            return value
        raise InputError(f"{name} must be text, not '{value}'.")
    if base is dict:
        if isinstance(value, dict):
            return value
        raise InputError(f"{name} must be a set of KEY=VALUE settings, not '{value}'.")
    if base in (tuple, list):
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     and math.isfinite(v) for v in value):
            return base(value)
        raise InputError(f"{name} must be a list of numbers such as [1, 0.5], not '{value}'.")
    return value


def require(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)
