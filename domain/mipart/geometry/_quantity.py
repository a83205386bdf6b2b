"""Byte amounts written the way Kubernetes users read them (``150Gi``, ``23.9Gi``, ``512Mi``),
and read back from what they write (``20Gi``, ``1.5G``, ``21474836480``).

Placement reasons end up in a pod's FailedScheduling event, next to the ``mipart.io/memory``
annotation the user wrote, so they use the same binary suffixes. A value that would need a
fraction shows one decimal; the rounding is chosen by the caller, because "largest free 23Gi"
next to a request of 23Gi that did not fit would be a lie: capacities round down, needs round up.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

_UNITS = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
_SUFFIX = {
    "": 1,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def parse_bytes(text: str) -> int:
    """Bytes in a Kubernetes quantity; ValueError with the allowed forms if it is not one."""
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError("a byte quantity such as 20Gi, 512Mi, 40G or 21474836480")
    # The regex admits only decimals, which Decimal always reads.
    return int(Decimal(match.group(1)) * _SUFFIX[match.group(2)])


class Rounding(StrEnum):
    NEAREST = "nearest"
    DOWN = "down"
    UP = "up"


@lru_cache(maxsize=4096)
def format_bytes(amount: int, rounding: Rounding = Rounding.NEAREST) -> str:
    """``150 * 2**30`` → ``"150Gi"``; one decimal only when needed; plain bytes below 1Ki.

    The largest binary unit not larger than the amount is used, so 1.5 GiB is ``1.5Gi`` and
    512 MiB is ``512Mi``. Cached: reasons repeat across thousands of nodes.
    """
    if amount < 0:
        flipped = {Rounding.DOWN: Rounding.UP, Rounding.UP: Rounding.DOWN}.get(rounding, rounding)
        return "-" + format_bytes(-amount, flipped)
    for suffix, unit in _UNITS:
        if amount >= unit:
            tenths = _divide(amount * 10, unit, rounding)
            whole, fraction = divmod(tenths, 10)
            return f"{whole}{suffix}" if fraction == 0 else f"{whole}.{fraction}{suffix}"
    return str(amount)


def _divide(numerator: int, denominator: int, rounding: Rounding) -> int:
    if rounding is Rounding.DOWN:
        return numerator // denominator
    if rounding is Rounding.UP:
        return -(-numerator // denominator)
    return (2 * numerator + denominator) // (2 * denominator)
