"""HTTPS everywhere on a local cluster (``agentmem up --tls``): clients to the
router, mutual TLS from the router to the nodes, certificates rotated under
load without a restart or a failed request."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from agentmem.client import AsyncMemory, Memory
from agentmem.directory import Directory, partition_for
from agentmem.local import LocalCluster
from agentmem.runtime.tls import Authority, client_context
from tests.local.conftest import start_cluster


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("tls"), shards=2, tls=True)
    yield cluster
    cluster.stop()


def node_url(cluster: LocalCluster, shard: int = 0) -> str:
    return f"https://{cluster.host}:{cluster.node_port(shard)}"


def get(url: str, context: ssl.SSLContext, token: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def served_serial(url: str, context: ssl.SSLContext) -> int:
    host, port = url.removeprefix("https://").split(":")
    import socket

    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_clients_reach_the_router_over_https_and_nodes_want_a_client_certificate(
    secure: LocalCluster,
) -> None:
    ca = str(secure.tls_dir / "ca.crt")
    token_file = secure.token_file
    token = token_file.read_text().strip()
    with Memory(secure.router_url, tenant="acme", token_file=token_file, tls_ca=ca) as mem:
        mem.put("bot-1", "plan", {"goal": "explore"})
        item = mem.get("bot-1", "plan")
        assert item is not None and item.value == {"goal": "explore"}
    # Without the cluster's CA the server is not trusted.
    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(f"{secure.router_url}/readyz", timeout=5)
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    # A node: its probes are open, its data endpoints want a client certificate.
    trusting = client_context(ca)
    directory = Directory.from_json((secure.data / "directory.json").read_text())
    agent = next(
        a
        for a in (f"bot-{i}" for i in range(100))
        if directory.owner(partition_for("acme", a, directory.partitions)).id == 0
    )
    path = f"/v1/tenants/acme/agents/{agent}/keys/plan"
    assert get(f"{node_url(secure)}/readyz", trusting, token)[0] == 200
    status, body = get(f"{node_url(secure)}{path}", trusting, token)
    assert (status, body["error"]) == (401, "client_certificate_required"), body
    with_cert = client_context(ca, str(secure.tls_dir / "tls.crt"), str(secure.tls_dir / "tls.key"))
    status, body = get(f"{node_url(secure)}{path}?consistency=eventual", with_cert, token)
    assert (status, body["error"]) == (404, "not_found"), body  # past the door
    # A certificate of another CA does not get through the handshake.
    stranger = Authority.create("stranger")
    cert, key = stranger.issue("eve", ["localhost"], ["127.0.0.1"])
    tmp = secure.data / "stranger"
    tmp.mkdir(exist_ok=True)
    (tmp / "c.pem").write_bytes(cert)
    (tmp / "k.pem").write_bytes(key)
    forged = client_context(ca, str(tmp / "c.pem"), str(tmp / "k.pem"))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        get(f"{node_url(secure)}{path}", forged, token)
    # Plain HTTP to a TLS port is no way in.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{secure.host}:{secure.port}/readyz", timeout=5)


def test_a_certificate_rotation_under_load_fails_no_request(secure: LocalCluster) -> None:
    ca = str(secure.tls_dir / "ca.crt")
    trusting = client_context(ca)
    before = {url: served_serial(url, trusting) for url in (secure.router_url, node_url(secure))}
    errors: list[BaseException] = []
    done = threading.Event()
    counts = [0]

    async def load() -> None:
        async with AsyncMemory(
            secure.router_url, tenant="rotation", token_file=secure.token_file, tls_ca=ca
        ) as mem:
            i = 0
            while not done.is_set():
                try:
                    await mem.put(f"bot-{i % 8}", "n", i)
                    item = await mem.get(f"bot-{i % 8}", "n")
                    assert item is not None and item.value == i
                    counts[0] += 1
                except Exception as exc:
                    errors.append(exc)
                i += 1

    worker = threading.Thread(target=lambda: asyncio.run(load()))
    worker.start()
    try:
        time.sleep(2)
        secure.issue_certificate()  # the files swapped, as the kubelet swaps a Secret's
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = {url: served_serial(url, trusting) for url in before}
            if all(now[url] != before[url] for url in before):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the new certificate was not served within 30 s")
        time.sleep(2)  # and requests go on over new connections
    finally:
        done.set()
        worker.join(30)
    assert not errors, errors[:3]
    assert counts[0] > 50
    assert all(p.poll() is None for p in secure.processes.values())  # nothing restarted


def test_a_cluster_without_tls_answers_plain_http(up: LocalCluster) -> None:
    assert up.router_url.startswith("http://")
    assert Path(up.data / "tls").exists() is False
