"""Topic settings that every event topic gets, whatever the spec says."""

from __future__ import annotations

from typing import Final

#: The log is the state: compacted, never deleted by age. Its timestamps are the
#: broker's append times, so every replica applies expiry and request-id
#: deduplication against the same clock.
FIXED_TOPIC_CONFIG: Final = {
    "cleanup.policy": "compact",
    "message.timestamp.type": "LogAppendTime",
}
