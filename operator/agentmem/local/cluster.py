"""``agentmem up``: a whole agentmem cluster on this machine, in one command.

Shards are memory-node processes that follow one directory file; a router in
front of them is the one address agents need. By default the event log and
the durable store are SQLite files and each node keeps its state in process
memory, so nothing else has to run; ``--kafka`` and ``--redis`` use real
servers instead. Everything lives in the data directory, so a cluster started
again on the same directory has the data it had: the nodes rebuild their state
from the durable store and the log.

The directory file is written once, at the first start (an existing one is
kept: the partition count of a cluster's data never changes).

Authentication is on: the first start makes a signing key (``auth/signing.pem``)
whose public half the nodes and the router trust (``auth/auth.json``), and
each start writes a development token for every tenant to ``token``.
``agentmem token`` mints narrower ones from the same key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agentmem.directory import Directory, ShardEntry, ShardSlot, assign
from agentmem.model.naming import audience as audience_of
from agentmem.node.settings import NodeSettings
from agentmem.runtime.audit import AuditKey
from agentmem.runtime.auth import SCOPES, SigningKey, issuer_entry
from agentmem.runtime.tls import Authority, client_context

CLUSTER = "local"
NAMESPACE = "agentmem"
TOPIC = "agentmem.local.events"
ISSUER = "agentmem-up"
DEV_SUBJECT = "developer"
DEV_TOKEN_SECONDS = 30 * 24 * 3600


@dataclass
class LocalCluster:
    """The settings of ``agentmem up``."""

    data: Path
    shards: int = 3
    partitions: int = 16
    host: str = "127.0.0.1"
    port: int = 7070
    kafka: str | None = None
    redis: str | None = None
    topic: str = TOPIC
    #: Off only for local experiments: then anyone who reaches the ports has every tenant.
    auth: bool = True
    #: Seconds between signed checkpoints of the audit chain.
    audit_interval: float = 5.0
    #: HTTPS everywhere, with a CA of the data directory; the nodes want the
    #: router's client certificate (mutual TLS).
    tls: bool = False
    #: Semantic memory: a vector index (Milvus Lite in the data directory, unless
    #: ``milvus`` names a Milvus server) and an embedder.
    semantic: bool = False
    dimensions: int = 384
    milvus: str | None = None
    #: ``hashing`` (deterministic, no model), or an OpenAI-compatible endpoint
    #: (``http(s)://.../v1``) with ``embedder_model``.
    embedder: str = "hashing"
    embedder_model: str = ""
    #: Milvus Lite's port (0: the router's port + 50).
    milvus_lite_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def router_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.data / "tls"

    def prepare_tls(self) -> None:
        """The CA (made once) and a certificate for this machine's processes."""
        ca_file, key_file = self.tls_dir / "ca.crt", self.tls_dir / "ca.key"
        if ca_file.exists():
            ca = Authority(ca_file.read_bytes(), key_file.read_bytes())
        else:
            ca = Authority.create(f"agentmem up CA ({self.data.name})")
            _write_private(key_file, ca.key_pem)
            ca_file.write_bytes(ca.cert_pem)
        self.issue_certificate(ca)

    def issue_certificate(self, ca: Authority | None = None) -> None:
        """A new certificate for the nodes and the router (they load it within seconds)."""
        if ca is None:
            ca = Authority(
                (self.tls_dir / "ca.crt").read_bytes(), (self.tls_dir / "ca.key").read_bytes()
            )
        cert, key = ca.issue("agentmem-up", ["localhost"], [self.host])
        _write_private(self.tls_dir / "tls.key.new", key)
        (self.tls_dir / "tls.crt.new").write_bytes(cert)
        (self.tls_dir / "tls.key.new").replace(self.tls_dir / "tls.key")
        (self.tls_dir / "tls.crt.new").replace(self.tls_dir / "tls.crt")

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        d = self.tls_dir
        return ["--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"),
                "--tls-ca", str(d / "ca.crt")]  # fmt: skip

    def node_port(self, shard: int) -> int:
        return self.port + 1 + shard

    @property
    def token_file(self) -> Path:
        return self.data / "token"

    @property
    def auth_file(self) -> Path:
        return self.data / "auth" / "auth.json"

    def signing_key(self) -> SigningKey:
        """The cluster's token signing key (made at the first start)."""
        path = self.data / "auth" / "signing.pem"
        if not path.exists():
            _write_private(path, SigningKey.generate().pem())
        return SigningKey.from_pem(path.read_bytes())

    def audit_key(self) -> AuditKey:
        """The key that signs the audit chain (made at the first start)."""
        path = self.data / "auth" / "audit.pem"
        if not path.exists():
            _write_private(path, AuditKey.generate().pem())
        return AuditKey.from_pem(path.read_bytes())

    def audit_settings(self) -> NodeSettings:
        """Where ``agentmem audit verify --data`` finds the log and the checkpoints
        (for a Kafka log, its bootstrap servers go to the environment, unless set)."""
        settings = json.loads((self.data / "cluster.json").read_text(encoding="utf-8"))
        log = f"sqlite:{self.data / 'log.db'}" if settings["log"] == "sqlite" else "kafka"
        if settings.get("kafka"):
            os.environ.setdefault("AGENTMEM_KAFKA_BOOTSTRAP_SERVERS", settings["kafka"])
        return NodeSettings(
            partitions=settings["partitions"], log=log, topic=settings.get("topic", TOPIC),
            store=f"sqlite:{self.data / 'store.db'}", cluster=CLUSTER, namespace=NAMESPACE,
        )  # fmt: skip

    def mint(
        self,
        subject: str,
        *,
        tenant: str | None,
        scopes: tuple[str, ...],
        agents: tuple[str, ...] | None = None,
        ttl: float = 3600.0,
    ) -> str:
        """A token this cluster accepts."""
        return self.signing_key().mint(
            ISSUER, audience_of(NAMESPACE, CLUSTER), subject,
            tenant=tenant, scopes=scopes, agents=agents, ttl=ttl,
        )  # fmt: skip

    def prepare_auth(self) -> None:
        """Write the trusted issuer and a development token for every tenant."""
        key = self.signing_key()
        config = {
            "audience": audience_of(NAMESPACE, CLUSTER),
            "issuers": [issuer_entry(ISSUER, [key])],
        }
        self.auth_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
        token = self.mint(DEV_SUBJECT, tenant="*", scopes=SCOPES, ttl=DEV_TOKEN_SECONDS)
        _write_private(self.token_file, (token + "\n").encode())

    # Files ---------------------------------------------------------------------------

    def prepare(self) -> Directory:
        """Create the data directory and its directory file, or check the existing ones."""
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        settings_file = self.data / "cluster.json"
        settings = {"partitions": self.partitions, "shards": self.shards,
                    "log": "kafka" if self.kafka else "sqlite", "topic": self.topic,
                    "kafka": self.kafka}  # fmt: skip
        if settings_file.exists():
            before = json.loads(settings_file.read_text(encoding="utf-8"))
            if before.get("partitions") != self.partitions or before.get("log") != settings["log"]:
                raise SystemExit(
                    f"agentmem up: {self.data} holds a cluster with {before.get('partitions')} "
                    f"partitions and a {before.get('log')} log; start it with the same "
                    "--partitions and log, or choose another --data directory"
                )
        settings_file.write_text(json.dumps(settings), encoding="utf-8")
        entries = tuple(
            ShardEntry(
                id=i, name=f"{CLUSTER}-shard-{i}", endpoint=f"{self.host}:{self.node_port(i)}"
            )
            for i in range(self.shards)
        )
        path = self.data / "directory.json"
        if path.exists():
            directory = Directory.from_json(path.read_text(encoding="utf-8"))
            if directory.partitions != self.partitions:
                raise SystemExit(f"agentmem up: {path} has {directory.partitions} partitions")
            if len(directory.shards) != self.shards or directory.shards != entries:
                # Same data, another shape: a new epoch that spreads the partitions again.
                # Every node's state is rebuilt from the durable store and the log.
                directory = Directory(
                    cluster=CLUSTER, namespace=NAMESPACE, topic=TOPIC, epoch=directory.epoch + 1,
                    table=assign(self.partitions, [ShardSlot(id=i) for i in range(self.shards)]),
                    shards=entries,
                )  # fmt: skip
        else:
            directory = Directory(
                cluster=CLUSTER, namespace=NAMESPACE, topic=TOPIC, epoch=1,
                table=assign(self.partitions, [ShardSlot(id=i) for i in range(self.shards)]),
                shards=entries,
            )  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(directory.to_json(), encoding="utf-8")
        tmp.replace(path)
        if self.auth:
            self.prepare_auth()
        if self.tls:
            self.prepare_tls()
        self.audit_key()
        return directory

    def ensure_topic(self) -> None:
        if self.kafka is None:
            return
        from agentmem.eventlog.kafka import KafkaSettings, TopicSpec, ensure_topic

        ensure_topic(
            KafkaSettings(bootstrap_servers=self.kafka),
            TopicSpec(self.topic, self.partitions, 1, {"retention.ms": "-1"}),
        )

    # Processes -----------------------------------------------------------------------

    @property
    def milvus_port(self) -> int:
        return self.milvus_lite_port or self.port + 50

    @property
    def milvus_uri(self) -> str:
        return self.milvus or f"http://{self.host}:{self.milvus_port}"

    def semantic_config(self) -> str:
        if self.embedder == "hashing":
            embedder: dict[str, Any] = {"kind": "hashing"}
        else:
            embedder = {"kind": "openai", "url": self.embedder, "model": self.embedder_model}
        return json.dumps(
            {
                "uri": self.milvus_uri,
                "dimensions": self.dimensions,
                "collection": "agentmem_local",
                "writer": "true",  # one replica per shard: it writes its partitions
                "flushRows": 0 if self.milvus else 5000,  # Milvus Lite: see SemanticConfig
                "embedder": embedder,
            }
        )

    def spawn_milvus(self) -> None:
        """Milvus Lite's server, its data in the data directory."""
        if importlib.util.find_spec("milvus_lite") is None:
            raise SystemExit(
                "agentmem up --semantic: Milvus Lite is not installed: "
                "pip install 'agentmem[milvus-lite]' (or point --milvus at a Milvus server)"
            )
        self._spawn(
            "milvus",
            ["server", "--data-dir", str(self.data / "milvus"), "--host", self.host,
             "--port", str(self.milvus_port)],
            {}, module="milvus_lite",
        )  # fmt: skip

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], module: str = "agentmem"
    ) -> None:
        log_file: IO[bytes] = open(self.data / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        log_file.close()

    def node_args(self, shard: int) -> list[str]:
        if self.kafka:
            log = ["--log", "kafka", "--topic", self.topic]
        else:
            log = ["--log", f"sqlite:{self.data / 'log.db'}"]
        state = f"{self.redis.rstrip('/')}/{shard}" if self.redis else "memory"
        return [
            "node", *log, "--store", f"sqlite:{self.data / 'store.db'}", "--state", state,
            "--partitions", str(self.partitions),
            "--listen", f"{self.host}:{self.node_port(shard)}",
            "--shard", str(shard), "--cluster", CLUSTER, "--namespace", NAMESPACE,
            "--directory-file", str(self.data / "directory.json"), *self._auth_args(),
            "--audit-key-file", str(self.data / "auth" / "audit.pem"), "--audit-signer", "true",
            "--audit-interval", str(self.audit_interval), *self._tls_args(),
            *(["--semantic", self.semantic_config()] if self.semantic else []),
        ]  # fmt: skip

    def _auth_args(self) -> list[str]:
        return ["--auth-file", str(self.auth_file)] if self.auth else ["--no-auth"]

    def spawn_node(self, shard: int) -> None:
        """Start (or start again) the memory node of one shard."""
        env = {"AGENTMEM_KAFKA_BOOTSTRAP_SERVERS": self.kafka} if self.kafka else {}
        self._spawn(f"node-{shard}", self.node_args(shard), env)

    def start(self, progress: IO[str]) -> None:
        """Start every process and wait until each is ready, reporting as it goes."""
        started = time.monotonic()
        if self.semantic and self.milvus is None:
            self.spawn_milvus()
            self._wait_port("milvus", self.milvus_port, started, progress)
        for shard in range(self.shards):
            self.spawn_node(shard)
        self._spawn(
            "router",
            ["router", "--directory-file", str(self.data / "directory.json"),
             "--listen", f"{self.host}:{self.port}", *self._auth_args(), *self._tls_args()],
            {},
        )  # fmt: skip
        waiting = {
            f"node-{s}": f"{self.scheme}://{self.host}:{self.node_port(s)}"
            for s in range(self.shards)
        }
        context = client_context(str(self.tls_dir / "ca.crt")) if self.tls else None
        waiting["router"] = self.router_url
        deadline = time.monotonic() + 120
        while waiting:
            for name, url in list(waiting.items()):
                self.check_alive()
                why = _not_ready(url, context)
                if why is None:
                    progress.write(
                        f"  {name:<8} ready at {url}  ({time.monotonic() - started:.1f} s)\n"
                    )
                    progress.flush()
                    del waiting[name]
            if time.monotonic() > deadline:
                names = ", ".join(waiting)
                raise SystemExit(
                    f"agentmem up: {names} not ready after 120 s; see {self.data / 'logs'}"
                )
            time.sleep(0.1)

    def _wait_port(self, name: str, port: int, started: float, progress: IO[str]) -> None:
        deadline = time.monotonic() + 60
        while True:
            self.check_alive()
            try:
                socket.create_connection((self.host, port), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"agentmem up: {name} not listening after 60 s; see {self.data / 'logs'}"
                    ) from None
                time.sleep(0.1)
                continue
            progress.write(
                f"  {name:<8} ready at {self.host}:{port}  ({time.monotonic() - started:.1f} s)\n"
            )
            progress.flush()
            return

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                tail = _tail(self.data / "logs" / f"{name}.log")
                raise SystemExit(
                    f"agentmem up: {name} exited with status {code}; the end of its log "
                    f"({self.data / 'logs' / f'{name}.log'}):\n{tail}"
                )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process (the router first), wait, then SIGKILL what is left."""
        order = ["router", *sorted(n for n in self.processes if n != "router")]
        for name in order:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            process = self.processes.get(name)
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner reads (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _not_ready(url: str, context: ssl.SSLContext | None = None) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=context) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def banner(cluster: LocalCluster, seconds: float) -> str:
    nodes = "\n".join(
        f"    shard {s}   {cluster.scheme}://{cluster.host}:{cluster.node_port(s)}"
        for s in range(cluster.shards)
    )
    log = f"Kafka at {cluster.kafka}" if cluster.kafka else f"SQLite {cluster.data / 'log.db'}"
    state = f"Redis {cluster.redis}/<shard>" if cluster.redis else "in process memory"
    semantic = ""
    if cluster.semantic:
        where = cluster.milvus or f"Milvus Lite {cluster.data / 'milvus'}"
        semantic = (
            f"\n  vector index   {where} ({cluster.milvus_uri}), {cluster.dimensions} dimensions, "
            f"embedder {cluster.embedder}"
        )
    if cluster.tls:
        nodes += f"""
  TLS            CA {cluster.tls_dir / "ca.crt"} (export AGENTMEM_TLS_CA=...); the nodes
                 want a client certificate of it: agents go through the router"""
    if cluster.auth:
        auth = f"""  token          {cluster.token_file}  (every tenant; for development only)

The cluster wants a bearer token; the SDK reads it from AGENTMEM_TOKEN_FILE:
  export AGENTMEM_TOKEN_FILE={cluster.token_file}
  (narrower tokens: agentmem token --data {cluster.data} --tenant T --scopes read)
"""
    else:
        auth = "  AUTHENTICATION IS OFF: whoever reaches these ports has every tenant.\n"
    return f"""
agentmem is up in {seconds:.1f} s: {cluster.shards} shards, {cluster.partitions} partitions.

  router (give agents this)  {cluster.router_url}
{nodes}
  event log      {log}
  durable store  SQLite {cluster.data / "store.db"}
  state          {state}{semantic}
  logs           {cluster.data / "logs"}
{auth}
Try it:
  python -c "from agentmem.client import Memory; m = Memory('{cluster.router_url}'); \
m.put('bot-1', 'plan', {{'goal': 'explore'}}); print(m.get('bot-1', 'plan')); m.close()"

Ctrl-C stops the cluster; its data stays in {cluster.data}.
"""


class _StopRequestedError(Exception):
    """Ctrl-C or SIGTERM."""


def run(cluster: LocalCluster, out: IO[str] = sys.stdout) -> int:
    """Start the cluster, print where it is, and keep it up until Ctrl-C or SIGTERM."""
    started = time.monotonic()

    def stop_signal(signum: int, frame: Any) -> None:
        raise _StopRequestedError

    previous = {sig: signal.signal(sig, stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    out.write(f"agentmem up: starting {cluster.shards} shards and a router in {cluster.data}\n")
    out.flush()
    code = 0
    try:
        cluster.prepare()
        cluster.ensure_topic()
        cluster.start(out)
        out.write(banner(cluster, time.monotonic() - started))
        out.flush()
        while True:
            cluster.check_alive()
            time.sleep(0.2)
    except _StopRequestedError:
        pass
    except SystemExit as exc:
        out.write(f"{exc}\n")
        code = 1
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        out.write("\nagentmem up: stopping (finishing requests, flushing to the store)...\n")
        out.flush()
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.write("agentmem up: stopped\n")
    out.flush()
    return code
