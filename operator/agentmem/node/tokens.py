"""Version tokens: where in the log the event that last changed a key is."""

from __future__ import annotations

from dataclasses import dataclass

from agentmem.node.errors import InvalidRequest


@dataclass(frozen=True, order=True)
class Version:
    """A version token ``<partition>:<offset>``."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str, partitions: int, what: str = "version") -> Version:
        part, sep, off = text.strip().strip('"').partition(":")
        if not sep or not part.isdigit() or not off.isdigit():
            raise InvalidRequest(
                "invalid_version",
                f"{what} {text!r} is not a version token of the form <partition>:<offset>",
            )
        version = cls(int(part), int(off))
        if version.partition >= partitions:
            raise InvalidRequest(
                "unknown_partition",
                f"{what} {text!r} names partition {version.partition}, but the cluster has "
                f"partitions 0..{partitions - 1}",
            )
        return version
