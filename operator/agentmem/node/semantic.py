"""Semantic memory on a node: embedding writes once, and answering searches.

The accepting node turns a write's embedding request into a text and a packed
vector that travel in the event (so nothing is embedded again on replay). A
search embeds its query text, waits for the consistency it asks for (the
applier, then the index), asks Milvus for candidates, and keeps only those
whose version is the key's current one in this node's state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from agentmem.eventlog.ports import LogReader
from agentmem.node import errors
from agentmem.node.indexer import IndexOffsets, IndexWriter, Lookup
from agentmem.node.metrics import NodeMetrics
from agentmem.node.requests import Embedding
from agentmem.semantic import MAX_TEXT_BYTES, SemanticConfig
from agentmem.semantic.embed import Embedder, EmbedderError, embedder_for
from agentmem.semantic.milvus import Hit, IndexUnavailableError, MilvusIndex
from agentmem.semantic.vectors import VectorError, pack

log = logging.getLogger(__name__)

#: The most results one search returns.
MAX_K = 1000


def text_of(value: Any, fields: Sequence[str]) -> str | None:
    """The text of ``fields`` of a value (dotted paths), joined by blank lines;
    None when none of them is there."""
    parts = []
    for name in fields:
        found = value
        for step in name.split(".") if name != "." else ():
            found = found.get(step) if isinstance(found, dict) else None
        if found is None:
            continue
        parts.append(found if isinstance(found, str) else json.dumps(found, sort_keys=True))
    return "\n\n".join(parts) if parts else None


class Semantic:
    def __init__(
        self, config: SemanticConfig, partitions: int, writes: bool, metrics: NodeMetrics
    ) -> None:
        self.config = config
        self.partitions = partitions
        self.writes = writes
        self.metrics = metrics
        self.embedder: Embedder | None = embedder_for(config.embedder, config.dimensions)
        self.index = MilvusIndex(config, partitions)
        self.writer: IndexWriter | None = None
        self.offsets = IndexOffsets(self.index, None)

    def start(
        self,
        reader: Callable[[], LogReader],
        lookup: Lookup,
        report: Callable[[str | None], None],
        applied: Callable[[], dict[int, int]],
    ) -> IndexWriter | None:
        if self.writes:
            # Its own client: the writer thread's calls never queue behind searches.
            self.writer = IndexWriter(
                MilvusIndex(self.config, self.partitions),
                self.config,
                reader,
                lookup,
                self.metrics,
                report,
                applied,
            )
            self.offsets.writer = self.writer
            self.writer.start()
        return self.writer

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.stop()
            await asyncio.to_thread(self.writer.join, 10)
        if self.embedder is not None:
            await self.embedder.aclose()
        await asyncio.to_thread(self.index.close)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self.embedder is None:
            raise errors.InvalidRequest(
                "no_embedder",
                "this cluster has no embedder (spec.semantic.embedder): send a vector with "
                "the text",
            )
        try:
            vectors = await self.embedder.embed(texts)
        except EmbedderError as exc:
            raise errors.Unavailable(
                f"the embedder failed: {exc}; nothing was written: retry in a moment",
                code="embedder_unavailable",
                retry_after=1,
            ) from exc
        self.metrics.embeddings.inc(len(texts))
        return vectors

    async def packed(
        self, embedding: Embedding, value: str | None
    ) -> tuple[str | None, str | None]:
        """(text, packed vector) for the event of a write; (None, None): not indexed."""
        text = embedding.text
        if text is None and embedding.fields and value is not None:
            text = text_of(json.loads(value), embedding.fields)
        if text is not None and len(text.encode()) > MAX_TEXT_BYTES:
            raise errors.InvalidRequest(
                "text_too_long", f"the text to index is longer than {MAX_TEXT_BYTES} bytes"
            )
        vector = embedding.vector
        if vector is None:
            if text is None:
                return None, None
            (vector,) = await self.embed([text])
        try:
            return text, pack(vector, self.config.dimensions)
        except VectorError as exc:
            code = "invalid_vector" if embedding.vector is not None else "embedder_mismatch"
            raise errors.InvalidRequest(code, str(exc)) from None

    async def query_vector(self, text: str | None, vector: list[float] | None) -> list[float]:
        if vector is not None:
            try:
                pack(vector, self.config.dimensions)  # checks length and numbers
            except VectorError as exc:
                raise errors.InvalidRequest("invalid_vector", str(exc)) from None
            return [float(x) for x in vector]
        assert text is not None
        (found,) = await self.embed([text])
        return found

    async def candidates(
        self, vector: list[float], limit: int, expr: str, partitions: Sequence[int]
    ) -> list[Hit]:
        try:
            return await asyncio.to_thread(self.index.search, vector, limit, expr, partitions)
        except IndexUnavailableError as exc:
            raise errors.Unavailable(
                f"{exc}; retry the search in a moment", code="index_unavailable", retry_after=1
            ) from exc

    def status(self, partitions: Sequence[int]) -> dict[str, Any]:
        writer = self.writer
        return {
            "uri": self.config.uri,
            "collection": self.config.collection,
            "writer": writer is not None,
            "error": writer.error if writer is not None else None,
            "indexed": {str(p): self.offsets.get(p) for p in partitions},
        }
