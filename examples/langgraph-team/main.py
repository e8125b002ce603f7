"""A LangGraph graph whose nodes share memory through agentmem.

A researcher node stores findings in the long-term store (namespace
``("team", "findings")``); a writer node searches them and drafts a report.
The graph's checkpoints go to agentmem too, so the thread can be resumed from
any process. Run a cluster first (``agentmem up``), then:

    python examples/langgraph-team/main.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from agentmem.integrations.langgraph import AgentmemSaver, AgentmemStore


class State(TypedDict):
    topic: str
    report: str


async def researcher(state: State, *, store: BaseStore) -> dict[str, str]:
    for i, fact in enumerate(["agents share memory", "the log orders writes", "reads see writes"]):
        await store.aput(("team", "findings"), f"{state['topic']}-{i}", {"fact": fact, "n": i})
    return {}


async def writer(state: State, *, store: BaseStore) -> dict[str, str]:
    found = await store.asearch(("team", "findings"), filter={"n": {"$gte": 0}}, limit=10)
    facts = sorted((item.value["n"], item.value["fact"]) for item in found)
    return {"report": f"{state['topic']}: " + "; ".join(fact for _, fact in facts)}


async def main(url: str) -> int:
    tenant = f"example-{uuid.uuid4().hex[:6]}"
    builder = StateGraph(State)
    builder.add_node("researcher", researcher)
    builder.add_node("writer", writer)
    builder.add_edge(START, "researcher")
    builder.add_edge("researcher", "writer")
    builder.add_edge("writer", END)
    with AgentmemSaver.connect(url, tenant=tenant) as saver:
        async with AgentmemStore.connect(url, tenant=tenant) as store:
            graph = builder.compile(checkpointer=saver, store=store)
            config = {"configurable": {"thread_id": "report-1"}}
            result = await graph.ainvoke({"topic": "memory", "report": ""}, config)
            print(result["report"])
            saved = await graph.aget_state(config)
            steps = len([c async for c in saver.alist(config)])
    print(f"checkpoints saved for the thread: {steps}")
    ok = result["report"].count(";") == 2 and saved.values["report"] == result["report"]
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7070", help="agentmem up's router")
    sys.exit(asyncio.run(main(parser.parse_args().url)))
