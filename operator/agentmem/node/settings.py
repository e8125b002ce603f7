"""The node's settings: one object per process, from flags or the ``AGENTMEM_*``
variables the operator sets on the pods."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from agentmem.runtime.tls import TlsFiles
from agentmem.semantic import SemanticConfig

Consistency = Literal["eventual", "session", "strong"]


@dataclass(frozen=True)
class NodeSettings:
    partitions: int
    listen: str = "0.0.0.0:7070"
    #: The event log: ``kafka`` (AGENTMEM_KAFKA_* settings) or ``sqlite:PATH``.
    log: str = "kafka"
    #: The state: a ``redis://`` URL or ``memory``.
    state: str = "memory"
    #: The durable store: a ``postgresql://`` URL, ``sqlite:PATH``, or empty for none
    #: (then the log is the state and is never truncated).
    store: str = ""
    store_schema: str = ""
    store_pool_size: int = 4
    #: Extra connection settings of the store (TLS: sslmode, sslrootcert, ...).
    store_options: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    shard: int = 0
    cluster: str = "agentmem"
    namespace: str = "default"
    #: The cluster's identity in the store's offset rows (the resource's UID).
    cluster_uid: str = ""
    directory_file: str | None = None
    #: The trusted issuers (JSON, see agentmem.runtime.auth); None: no authentication.
    auth_file: str | None = None
    #: Authentication off, explicitly (without it and without auth_file, no start).
    no_auth: bool = False
    #: The cluster's audit signing key (PEM); the signer is replica 0 of each shard
    #: (``audit_signer`` auto), or as set.
    audit_key_file: str | None = None
    audit_signer: Literal["auto", "true", "false"] = "auto"
    #: How often the signer signs each partition's new events.
    audit_interval: float = 5.0
    #: HTTPS: the node's certificate and key, and the CA whose client certificates
    #: the data endpoints require (mutual TLS); unset: plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: Quotas per tenant and bounds per client (JSON, see agentmem.node.limits).
    quotas: str = ""
    #: Semantic memory (JSON, see agentmem.semantic.SemanticConfig); empty: off.
    semantic: str = ""
    max_value_bytes: int = 1024 * 1024
    consistency: Consistency = "session"
    #: How long a client-supplied request id is remembered, by log time.
    dedup_window_seconds: int = 600
    #: Request ids remembered per partition before writes with new ids are refused.
    max_request_ids: int = 50_000
    #: How much history the log keeps, whatever the store reflects.
    audit_window_seconds: int = 7 * 24 * 3600
    wait_timeout: float = 10.0
    cache_entries: int = 100_000
    memory_admission: float = 0.95
    #: How long a partition that moved away is still served, while clients and
    #: routers pick up the new directory.
    handoff_seconds: float = 60.0
    tick_interval: float = 1.0
    truncate_interval: float = 60.0
    node_name: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "node"))

    @property
    def uid(self) -> str:
        """The cluster UID, or ``namespace/cluster`` for a node run on its own."""
        return self.cluster_uid or f"{self.namespace}/{self.cluster}"

    @property
    def tls(self) -> TlsFiles | None:
        if not self.tls_cert or not self.tls_key:
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca or None)

    @property
    def signs_audit(self) -> bool:
        """Whether this node signs its partitions' audit chain (it needs the store)."""
        if not self.audit_key_file or not self.store:
            return False
        if self.audit_signer == "auto":
            return self.node_name.rsplit("-", 1)[-1] == "0"  # replica 0 of the shard
        return self.audit_signer == "true"

    @property
    def semantic_config(self) -> SemanticConfig | None:
        return SemanticConfig.from_json(self.semantic)

    def writes_index(self, config: SemanticConfig) -> bool:
        """Whether this node writes its partitions into the vector index."""
        if config.writer == "auto":
            return self.node_name.rsplit("-", 1)[-1] == "0"  # replica 0 of the shard
        return config.writer == "true"

    @property
    def window_ms(self) -> int:
        return self.dedup_window_seconds * 1000
