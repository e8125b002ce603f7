"""Vectors as events carry them: little-endian float32, base64.

An embedding of 384 dimensions is 2 KiB in an event this way (about 8 KiB as a
JSON list of numbers), and it is exact: the float32 the accepting node packed is
the float32 every replica and the index unpack.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections.abc import Sequence

#: The most dimensions a vector may have (Milvus's own limit is 32,768).
MAX_DIMENSIONS = 32_768


class VectorError(ValueError):
    """A vector that cannot be stored: wrong length, or not finite numbers."""


def pack(vector: Sequence[float], dimensions: int) -> str:
    """``vector`` as an event carries it; VectorError if it is not ``dimensions``
    finite numbers."""
    if len(vector) != dimensions:
        raise VectorError(
            f"the vector has {len(vector)} dimensions; this cluster's have {dimensions}"
        )
    try:
        values = array("f", vector)
    except (TypeError, OverflowError):
        raise VectorError("a vector holds numbers only") from None
    if not all(math.isfinite(x) for x in values):
        raise VectorError("a vector holds finite numbers only (no NaN or infinity)")
    if sys.byteorder != "little":  # pragma: no cover - every platform agentmem runs on
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def unpack(packed: str) -> list[float]:
    values = array("f")
    values.frombytes(base64.b64decode(packed))
    if sys.byteorder != "little":  # pragma: no cover
        values.byteswap()
    return values.tolist()
