"""Kubernetes memory quantities to bytes (for Redis maxmemory)."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIXES = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def to_bytes(quantity: str) -> int:
    """``"1Gi"`` -> 1073741824. Raises ValueError for anything that is not a byte quantity."""
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a memory quantity such as 512Mi or 2Gi")
    number, suffix = match.groups()
    return int(Decimal(number) * _SUFFIXES[suffix or ""])
