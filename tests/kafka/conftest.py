"""Real servers for the memory node: a Kafka broker (single-node KRaft, jars from
Maven Central) and Debian's redis-server, started on 127.0.0.1 by the fixtures.

``make testenv`` fetches the Kafka jars into ~/.cache/agentmem-testenv and
installs redis-server when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from agentmem.eventlog.kafka import KafkaSettings, TopicSpec, ensure_topic
from tests.conftest import ROOT
from tests.controlplane.conftest import free_port

KAFKA_ENV = ROOT / "testenv" / "kafka"
PARTITIONS = 8
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kafka" in str(item.path):
            item.add_marker(pytest.mark.kafka)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@dataclass
class Broker:
    workdir: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"  # the address clients use (pods: the e2e bridge)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        result = subprocess.run(
            ["bash", str(KAFKA_ENV / "broker.sh"), "start", str(self.workdir),
             str(self.port), str(self.controller_port)],
            capture_output=True, text=True, check=False, timeout=180,
            env={**os.environ, "AGENTMEM_KAFKA_HOST": self.host},
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"the Kafka broker did not start:\n{result.stderr[-3000:]}")

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(KAFKA_ENV / "broker.sh"), "stop", str(self.workdir)],
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    fetched = subprocess.run(
        ["bash", str(KAFKA_ENV / "fetch.sh")], capture_output=True, text=True, check=False
    )
    if fetched.returncode != 0:
        pytest.fail(f"the Kafka jars are missing: run `make testenv`\n{fetched.stderr[-2000:]}")
    broker = Broker(tmp_path_factory.mktemp("kafka"), free_port(), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class RedisServer:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    maxmemory: str = "0"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make testenv`")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--maxmemory", self.maxmemory,
             "--maxmemory-policy", "noeviction", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        import redis

        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port) as client:
                    if client.ping():
                        return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def make(maxmemory: str = "0") -> RedisServer:
        workdir = tmp_path / f"redis-{len(servers)}"
        workdir.mkdir()
        server = RedisServer(free_port(), workdir, maxmemory=maxmemory).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def topic(kafka: Broker) -> str:
    name = f"agentmem.test.{uuid.uuid4().hex[:10]}.events"
    ensure_topic(kafka.settings(), TopicSpec(name, PARTITIONS, 1, {"min.insync.replicas": "1"}))
    return name


class NodeProcess:
    """``agentmem node`` as a real process on Kafka and Redis."""

    def __init__(
        self, broker: Broker, topic: str, redis_url: str, log: Path, **options: str
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.redis_url = redis_url
        self.log = log
        self.options = options
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> NodeProcess:
        env = {
            **os.environ,
            "AGENTMEM_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "AGENTMEM_LOG_LEVEL": "INFO",
        }
        args = [
            sys.executable, "-m", "agentmem", "node", "--log", "kafka",
            "--state", self.redis_url, "--topic", self.topic,
            "--partitions", str(self.options.get("partitions", PARTITIONS)),
            "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        if "auth_file" not in self.options:
            args.append("--no-auth")  # these tiers test the data path, not its door
        for name, value in self.options.items():
            if name != "partitions":
                args += [f"--{name.replace('_', '-')}", value]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the node exited:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the node did not become ready:\n{self.tail()}")

    def ready(self) -> bool:
        return self.readyz()[0] == 200

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """/readyz's status and body (0 when the node does not answer)."""
        return self.get_json("/readyz")

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            return 0, {}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def node_factory(kafka: Broker, tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    nodes: list[NodeProcess] = []

    def make(topic: str, redis_url: str, wait_ready: bool = True, **options: str) -> NodeProcess:
        node = NodeProcess(kafka, topic, redis_url, tmp_path / f"node-{len(nodes)}.log", **options)
        nodes.append(node)
        return node.start(wait_ready)

    yield make
    for node in nodes:
        node.kill(signal.SIGTERM)


class Client:
    """A small async HTTP client for one agent's keys."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, tenant: str = "acme", agent: str = "bot-1"
    ) -> None:
        self.session = session
        self.base = base
        self.prefix = f"{base}/v1/tenants/{tenant}/agents/{agent}"

    async def put(self, key: str, value: Any, **headers: str) -> tuple[int, dict[str, Any]]:
        params = {}
        if "ttl" in headers:
            params["ttl"] = headers.pop("ttl")
        async with self.session.put(
            f"{self.prefix}/keys/{key}", data=json.dumps(value), params=params,
            headers={"Content-Type": "application/json", **_headers(headers)},
        ) as r:  # fmt: skip
            return r.status, await r.json()

    async def patch(self, key: str, patch: Any, **headers: str) -> tuple[int, dict[str, Any]]:
        async with self.session.patch(
            f"{self.prefix}/keys/{key}", data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json", **_headers(headers)},
        ) as r:  # fmt: skip
            return r.status, await r.json()

    async def delete(self, key: str, **headers: str) -> tuple[int, dict[str, Any]]:
        async with self.session.delete(f"{self.prefix}/keys/{key}", headers=_headers(headers)) as r:
            return r.status, await r.json()

    async def get(self, key: str, **params: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.prefix}/keys/{key}", params=params) as r:
            return r.status, await r.json()

    async def raw(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.base}{path}", **kwargs) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text


def _headers(headers: dict[str, str]) -> dict[str, str]:
    names = {
        "if_match": "If-Match", "if_none_match": "If-None-Match",
        "request_id": "X-Request-Id", "actor": "X-Agentmem-Actor", "epoch": "X-Agentmem-Epoch",
    }  # fmt: skip
    return {names[k]: v for k, v in headers.items()}
