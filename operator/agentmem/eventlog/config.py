"""Topic settings that every event topic gets, whatever the spec says."""

from __future__ import annotations

from typing import Final

#: Events are deleted, never compacted: agentmem truncates each partition itself
#: behind the durable store (the broker's retention is only a distant backstop).
#: Compaction would keep the newest event of a key whatever its outcome, and a
#: conditional event whose predecessor was compacted away replays wrong.
#: Timestamps are the broker's append times, so every replica applies expiry
#: and request-id deduplication against the same clock.
FIXED_TOPIC_CONFIG: Final = {
    "cleanup.policy": "delete",
    "message.timestamp.type": "LogAppendTime",
}
