"""Kubernetes resource quantities ("20Gi", "1.5G", "512Mi", "21474836480") as bytes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "": 1,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def parse_bytes(text: str) -> int:
    """Bytes in a quantity; ValueError with the allowed forms if it is not one."""
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError("a byte quantity such as 20Gi, 512Mi, 40G or 21474836480")
    try:
        value = Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ValueError("a byte quantity such as 20Gi") from None
    return int(value)
