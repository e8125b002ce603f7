"""Semantic memory: embedders, and the vector index (Milvus) as a projection of
the event log.

The configuration of a node's semantic memory is one JSON document
(``--semantic`` / ``AGENTMEM_SEMANTIC``, rendered by the operator from
``spec.semantic``); :class:`SemanticConfig` reads and checks it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agentmem.semantic.vectors import MAX_DIMENSIONS

Metric = Literal["COSINE", "IP", "L2"]
METRICS: Final = ("COSINE", "IP", "L2")
INDEX_TYPES: Final = ("HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX")
EMBEDDERS: Final = ("none", "hashing", "openai", "python")
#: The longest text a write may carry to be found by (Milvus's VARCHAR limit).
MAX_TEXT_BYTES: Final = 65_535
_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class SemanticConfigError(ValueError):
    """A semantic configuration that cannot work; the message names the field."""


@dataclass(frozen=True)
class EmbedderConfig:
    #: ``none`` (callers send vectors), ``hashing`` (a deterministic lexical
    #: embedder: tests and local use), ``openai`` (an OpenAI-compatible
    #: ``/embeddings`` endpoint), ``python`` (a callable named ``module:function``).
    kind: str = "none"
    url: str = ""
    model: str = ""
    api_key_file: str = ""
    callable: str = ""
    timeout_seconds: float = 10.0
    #: Texts sent in one request to the endpoint at most.
    batch: int = 64


@dataclass(frozen=True)
class SemanticConfig:
    #: The Milvus server (``http(s)://host:19530``); Milvus Lite serves the same API.
    uri: str
    dimensions: int
    collection: str = "agentmem"
    metric: Metric = "COSINE"
    index_type: str = "HNSW"
    index_params: dict[str, Any] = field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    #: Search-time parameters (HNSW ``ef``, IVF ``nprobe``).
    search_params: dict[str, Any] = field(default_factory=lambda: {"ef": 128})
    #: A file holding Milvus's token (``user:password`` or an API key), reread on start.
    token_file: str = ""
    db_name: str = ""
    #: Which replica writes the index: ``auto`` is replica 0 of each shard.
    writer: Literal["auto", "true", "false"] = "auto"
    #: Values up to this size are copied into the index for filters on their fields.
    value_bytes: int = 16_384
    #: Seal the index's in-memory rows into segments after this many written rows
    #: (0: leave it to Milvus). Milvus Lite evaluates filters and deletes row by row
    #: on what it holds in memory (20,000 rows: 0.85 s a delete; sealed: 0.05 s), so
    #: ``agentmem up`` seals every 5,000; a Milvus server seals by itself.
    flush_rows: int = 0
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)

    @classmethod
    def from_json(cls, text: str) -> SemanticConfig | None:
        """The configuration in ``text`` (empty: semantic memory is off)."""
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SemanticConfigError(f"the semantic configuration is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SemanticConfigError("the semantic configuration is a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SemanticConfig:
        def text(name: str, default: str = "") -> str:
            value = data.get(name, default)
            if not isinstance(value, str):
                raise SemanticConfigError(f"semantic.{name} is a string")
            return value

        uri = text("uri")
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
            raise SemanticConfigError(
                f"semantic.uri {uri!r} is not a Milvus address (http://host:19530)"
            )
        dimensions = data.get("dimensions")
        if not isinstance(dimensions, int) or not 2 <= dimensions <= MAX_DIMENSIONS:
            raise SemanticConfigError(
                f"semantic.dimensions is a whole number from 2 to {MAX_DIMENSIONS}"
            )
        metric = text("metric", "COSINE").upper()
        if metric not in METRICS:
            raise SemanticConfigError(f"semantic.metric {metric!r} is not one of {METRICS}")
        index = data.get("index", {})
        if not isinstance(index, dict):
            raise SemanticConfigError("semantic.index is an object")
        index_type = str(index.get("type", "HNSW")).upper()
        if index_type not in INDEX_TYPES:
            raise SemanticConfigError(
                f"semantic.index.type {index_type!r} is not one of {INDEX_TYPES}"
            )
        defaults = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024},
                    "IVF_SQ8": {"nlist": 1024}}  # fmt: skip
        search_defaults = {
            "HNSW": {"ef": 128},
            "IVF_FLAT": {"nprobe": 32},
            "IVF_SQ8": {"nprobe": 32},
        }
        collection = text("collection", "agentmem")
        if not _COLLECTION.fullmatch(collection):
            raise SemanticConfigError(
                f"semantic.collection {collection!r}: letters, digits and '_', not starting with "
                "a digit"
            )
        writer = text("writer", "auto")
        if writer not in ("auto", "true", "false"):
            raise SemanticConfigError("semantic.writer is auto, true or false")
        embedder = data.get("embedder", {})
        if not isinstance(embedder, dict):
            raise SemanticConfigError("semantic.embedder is an object")
        kind = str(embedder.get("kind", "none"))
        if kind not in EMBEDDERS:
            raise SemanticConfigError(f"semantic.embedder.kind {kind!r} is not one of {EMBEDDERS}")
        if kind == "openai" and not str(embedder.get("url", "")).startswith(
            ("http://", "https://")
        ):
            raise SemanticConfigError(
                "semantic.embedder.url (http(s)://.../v1) is required for openai"
            )
        if kind == "python" and ":" not in str(embedder.get("callable", "")):
            raise SemanticConfigError("semantic.embedder.callable is 'module:function' for python")
        flush_rows = data.get("flushRows", 0)
        if not isinstance(flush_rows, int) or not 0 <= flush_rows <= 10_000_000:
            raise SemanticConfigError("semantic.flushRows is a whole number from 0 to 10000000")
        value_bytes = data.get("valueBytes", 16_384)
        if not isinstance(value_bytes, int) or not 0 <= value_bytes <= 65_536:
            raise SemanticConfigError("semantic.valueBytes is a whole number from 0 to 65536")
        return cls(
            uri=uri,
            dimensions=dimensions,
            collection=collection,
            metric=metric,  # type: ignore[arg-type]
            index_type=index_type,
            index_params=dict(index.get("params") or defaults.get(index_type, {})),
            search_params=dict(index.get("searchParams") or search_defaults.get(index_type, {})),
            token_file=text("tokenFile"),
            db_name=text("dbName"),
            writer=writer,  # type: ignore[arg-type]
            value_bytes=value_bytes,
            flush_rows=flush_rows,
            embedder=EmbedderConfig(
                kind=kind,
                url=str(embedder.get("url", "")).rstrip("/"),
                model=str(embedder.get("model", "")),
                api_key_file=str(embedder.get("apiKeyFile", "")),
                callable=str(embedder.get("callable", "")),
                timeout_seconds=float(embedder.get("timeoutSeconds", 10.0)),
                batch=int(embedder.get("batch", 64)),
            ),
        )

    @property
    def higher_is_closer(self) -> bool:
        """Whether a larger score is a better match (similarity) or a smaller (distance)."""
        return self.metric != "L2"
