"""Milvus Lite's gRPC server for the tests and benchmarks: the API a Milvus
server has (the same pymilvus client talks to both), as its own process on a
loopback port, its data in a temporary directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.net import free_port


class MilvusLite:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> MilvusLite:
        self.data.mkdir(parents=True, exist_ok=True)
        with (self.data / "milvus.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                 str(self.data / "db"), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(),
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Milvus Lite did not start: {(self.data / 'milvus.log').read_text()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def index_files(self, index_type: str) -> list[Path]:
        """The vector index files Milvus Lite built (one per indexed segment)."""
        return sorted(self.data.glob(f"db/**/*.vector.{index_type.lower()}.idx"))


def clustered(n: int, dimensions: int, clusters: int, seed: int) -> np.ndarray[Any, Any]:
    """``n`` unit vectors around ``clusters`` random centres (as embeddings of
    texts on a few topics are), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dimensions)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    spread = rng.uniform(0.3, 0.8, clusters).astype(np.float32)[which, None]
    points = centres[which] + spread * rng.standard_normal((n, dimensions)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def exact_top(
    points: np.ndarray[Any, Any], queries: np.ndarray[Any, Any], k: int
) -> np.ndarray[Any, Any]:
    """The indexes of each query's ``k`` nearest points by cosine (brute force)."""
    scores = queries @ points.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)
