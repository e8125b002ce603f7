"""AgentmemSaver through LangGraph's own checkpointer conformance suite.

``langgraph-checkpoint-conformance`` registers a factory and validates every
capability: the five base ones (put, put_writes, get_tuple, list,
delete_thread) and the three optional ones (delete_for_runs, copy_thread,
prune). Every test must pass; none is skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES, BASE_CAPABILITIES

from agentmem.client import Memory
from agentmem.integrations.langgraph import AgentmemSaver
from agentmem.local import LocalCluster


def test_agentmem_saver_passes_the_conformance_suite(up: LocalCluster) -> None:
    # A tenant of its own: list() without a thread spans only this test's threads.
    tenant = f"conformance-{uuid.uuid4().hex[:8]}"

    @checkpointer_test(name="AgentmemSaver")
    async def saver() -> AsyncGenerator[AgentmemSaver, None]:
        memory = Memory(up.router_url, tenant=tenant)
        try:
            yield AgentmemSaver(memory)
        finally:
            memory.close()

    report = asyncio.run(validate(saver))
    results = report.results
    summary = {
        name: (r.tests_passed, r.tests_failed, r.tests_skipped) for name, r in results.items()
    }
    print("conformance:", summary)
    failures = {name: r.failures for name, r in results.items() if r.failures}
    assert not failures, failures
    assert {c.value for c in ALL_CAPABILITIES} == {n for n, r in results.items() if r.detected}
    base = sum(results[c.value].tests_passed for c in BASE_CAPABILITIES)
    assert base >= 58, summary
    assert all(r.passed for r in results.values()), summary
