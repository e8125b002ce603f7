"""Embedders: text in, vectors out, called once by the node that accepts a write
(and for a search's query text).

- :class:`HashingEmbedder`: deterministic feature hashing of words and word
  pairs (no model, no network). Texts sharing words land close together, which
  is what tests and a local cluster need; it knows nothing of meaning.
- :class:`OpenAIEmbedder`: any OpenAI-compatible ``POST {url}/embeddings``
  (OpenAI, vLLM, Ollama, text-embeddings-inference, LiteLLM ...).
- :class:`CallableEmbedder`: a Python function ``(texts) -> vectors``, sync or
  async, named ``module:function`` in the configuration.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aiohttp

from agentmem.semantic import EmbedderConfig, SemanticConfigError

_WORD = re.compile(r"\w+", re.UNICODE)


class EmbedderError(Exception):
    """The embedder did not answer or answered something unusable."""


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class HashingEmbedder:
    """Words and word pairs hashed into ``dimensions`` signed buckets, unit length."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        words = _WORD.findall(text.lower())
        features = [(w, 1.0) for w in words]
        features += [(f"{a} {b}", 0.5) for a, b in itertools.pairwise(words)]
        for feature, weight in features:
            digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest())
            sign = 1.0 if digest & 1 else -1.0
            vector[(digest >> 1) % self.dimensions] += sign * weight
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            vector[0] = 1.0  # no words: one fixed direction (a zero vector has no cosine)
            return vector
        return [x / norm for x in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(t) for t in texts]

    async def aclose(self) -> None:
        return None


class OpenAIEmbedder:
    """``POST {url}/embeddings`` with ``{"model", "input": [texts]}``."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _key(self) -> str:
        if not self.config.api_key_file:
            return ""
        with open(self.config.api_key_file, encoding="utf-8") as f:
            return f.read().strip()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        vectors: list[list[float]] = []
        step = max(1, self.config.batch)
        for i in range(0, len(texts), step):
            chunk = list(texts[i : i + step])
            body: dict[str, Any] = {"input": chunk}
            if self.config.model:
                body["model"] = self.config.model
            url = f"{self.config.url}/embeddings"
            try:
                async with self._session.post(url, json=body, headers=headers) as response:
                    if response.status != 200:
                        detail = (await response.text())[:200]
                        raise EmbedderError(f"{url} answered {response.status}: {detail}")
                    data = await response.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise EmbedderError(f"{url} did not answer: {exc}") from exc
            try:
                items = sorted(data["data"], key=lambda item: item.get("index", 0))
                vectors += [list(map(float, item["embedding"])) for item in items]
            except (KeyError, TypeError, ValueError) as exc:
                raise EmbedderError(f"{url} answered no embeddings: {exc!r}") from None
        if len(vectors) != len(texts):
            raise EmbedderError(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        return vectors

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class CallableEmbedder:
    """A function of a list of texts returning a list of vectors (sync or async)."""

    def __init__(self, fn: Callable[[list[str]], Any]) -> None:
        self.fn = fn

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(list(texts))
        else:
            result = await asyncio.to_thread(self.fn, list(texts))
        try:
            vectors = [list(map(float, v)) for v in result]
        except (TypeError, ValueError) as exc:
            raise EmbedderError(
                f"the embedder returned something else than vectors: {exc}"
            ) from None
        if len(vectors) != len(texts):
            raise EmbedderError(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        return vectors

    async def aclose(self) -> None:
        return None


def embedder_for(config: EmbedderConfig, dimensions: int) -> Embedder | None:
    """The configured embedder; None when callers must send vectors themselves."""
    if config.kind == "none":
        return None
    if config.kind == "hashing":
        return HashingEmbedder(dimensions)
    if config.kind == "openai":
        return OpenAIEmbedder(config)
    module, _, name = config.callable.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SemanticConfigError(
            f"semantic.embedder.callable {config.callable!r} cannot be imported: {exc}"
        ) from None
    return CallableEmbedder(fn)
