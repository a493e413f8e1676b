"""Parameter parsing and the one error form every public entry point uses.

Validation happens here, in Python, once: nothing that reaches a jitted kernel
is checked again, so every value that becomes an index must pass through one
of these helpers first.
"""
from __future__ import annotations

import re

__all__ = ["ScenarioError", "check_choice", "parse_size"]


class ScenarioError(ValueError):
    """A scenario or a simulate() call that cannot be run as given."""


def check_choice(func: str, param: str, value, choices) -> None:
    """Raise unless `value` is one of `choices` (scikit-learn's message form)."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ScenarioError(
            f"The {param!r} parameter of {func} must be one of {listed}; got {value!r}"
        )


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
    if isinstance(value, bool):
        raise ScenarioError(f"The {param!r} parameter of {func} must be a size; got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, str)):
        n = int(value)
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ScenarioError(
                f"The {param!r} parameter of {func} must be a size such as 4096, '64MiB' or '1GiB'; got {value!r}"
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise ScenarioError(
            f"The {param!r} parameter of {func} must be a size such as 4096, '64MiB' or '1GiB'; got {value!r}"
        )
    if n <= 0:
        raise ScenarioError(f"The {param!r} parameter of {func} must be positive; got {value!r}")
    return n
