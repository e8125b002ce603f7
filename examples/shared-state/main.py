"""Several agents update shared state at the same time, and no update is lost.

Eight agents work through a shared task board: each claims open tasks with a
conditional write (only one agent can claim a task), and every agent adds to
shared counters with ``update()`` (read, change, write-if-unchanged, retry).
Run a cluster first (``agentmem up``), then:

    python examples/shared-state/main.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from agentmem.client import AsyncMemory, ConflictError

AGENTS = 8
TASKS = 40


async def agent(name: str, url: str, tenant: str) -> int:
    """Claim tasks until none is left; count each claim on the shared board."""
    claimed = 0
    async with AsyncMemory(url, tenant=tenant) as mem:
        for task in range(TASKS):
            try:
                # Only the first agent to claim a task gets it (If-None-Match: *).
                await mem.put("board", f"claims/{task}", name, if_absent=True)
            except ConflictError:
                continue
            claimed += 1
            await mem.update("board", "stats", lambda s: {
                "claimed": (s or {}).get("claimed", 0) + 1,
                "by_agent": {**(s or {}).get("by_agent", {}),
                             name: (s or {}).get("by_agent", {}).get(name, 0) + 1},
            })  # fmt: skip
    return claimed


async def main(url: str) -> int:
    tenant = f"example-{uuid.uuid4().hex[:6]}"
    claims = await asyncio.gather(*(agent(f"agent-{i}", url, tenant) for i in range(AGENTS)))
    async with AsyncMemory(url, tenant=tenant) as mem:
        stats = await mem.get("board", "stats")
        owners = await mem.get_many("board", [f"claims/{t}" for t in range(TASKS)])
    assert stats is not None
    print(f"claims per agent: {dict(zip(range(AGENTS), claims, strict=True))}")
    print(f"shared stats:     {stats.value}")
    ok = (
        sum(claims) == TASKS
        and stats.value["claimed"] == TASKS
        and sum(stats.value["by_agent"].values()) == TASKS
        and all(item is not None for item in owners.values())
    )
    print("no update lost" if ok else "UPDATES WERE LOST")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7070", help="agentmem up's router")
    sys.exit(asyncio.run(main(parser.parse_args().url)))
