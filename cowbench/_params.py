"""Parameter parsing and the one error form every public entry point uses.

Validation happens here, in Python, once: nothing that reaches a jitted kernel
is checked again, so every value that becomes an index must pass through one
of these helpers first.
"""
from __future__ import annotations

import numbers
import re
from fractions import Fraction

import numpy as np

__all__ = ["ScenarioError", "check_choice", "parse_size", "safe_repr", "MAX_BYTES"]

#: The largest size any parameter may name: 2**63 - 1 bytes (the engine counts in int64).
MAX_BYTES = 2**63 - 1


class ScenarioError(ValueError):
    """A scenario or a simulate() call that cannot be run as given."""


def check_choice(func: str, param: str, value, choices) -> None:
    """Raise unless `value` is one of `choices` (scikit-learn's message form).

    Types are strict, on purpose: a bool choice takes True or False only (not 1.0
    or 1), an int choice an integer that is not a bool (overcommit=True is refused),
    a str choice a str; arrays and other containers are refused whatever they hold."""
    if not any(_same(value, c) for c in choices):
        listed = ", ".join(repr(c) for c in choices)
        raise ScenarioError(
            f"The {param!r} parameter of {func} must be one of {listed}; got {safe_repr(value)}"
        )


def _same(value, choice) -> bool:
    if isinstance(choice, bool):
        return isinstance(value, (bool, np.bool_)) and bool(value) == choice
    if isinstance(choice, int):
        return (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
                and int(value) == choice)
    if isinstance(choice, str):
        return isinstance(value, str) and value == choice
    return value is choice


def safe_repr(value, limit: int = 80) -> str:
    """repr(value) for a message: never raises, never longer than `limit` characters."""
    try:
        text = repr(value)
    except Exception as e:              # a user's object whose __repr__ fails
        text = f"<{type(value).__name__} object (repr failed: {type(e).__name__})>"
    return text if len(text) <= limit else text[:limit - 5] + "...>"


_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*$")


def parse_size(func: str, param: str, value) -> int:
    """Bytes from an int or a string like "64MiB" / "1.5 GiB" / "4k".

    Units are binary (KiB = 1024), as the kernel and /proc speak them; "MB" is
    accepted as a synonym for MiB because that is how people write it.
    """
    what = f"The {param!r} parameter of {func} must be a size such as 4096, '64MiB' or '1GiB'"
    if isinstance(value, (bool, np.bool_)):
        raise ScenarioError(f"{what}; got {value!r}")
    if isinstance(value, numbers.Integral):
        n = int(value)
    elif isinstance(value, str) and len(value) <= 40:
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ScenarioError(f"{what}; got {safe_repr(value)}")
        n = int(Fraction(m.group(1)) * _UNITS[unit])        # exact: "9" * 30 must not become a float
    else:
        raise ScenarioError(f"{what}; got {safe_repr(value)}")
    if n <= 0:
        raise ScenarioError(f"The {param!r} parameter of {func} must be positive; got {safe_repr(value)}")
    if n > MAX_BYTES:
        raise ScenarioError(f"The {param!r} parameter of {func} must be at most 2**63 - 1 bytes; "
                            f"got {safe_repr(value)}")
    return n
