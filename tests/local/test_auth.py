"""Tokens at the door of a local cluster: the router and the nodes behind it.

Every refusal is JSON with a code and a message that says what is wrong; a
401 carries ``WWW-Authenticate``; a refused request never reaches the log.
The fuzz part sends random and forged tokens and adversarial bodies and checks
that nothing answers 5xx and nothing crosses tenants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmem.client import ForbiddenError, Memory, UnauthorizedError
from agentmem.local import LocalCluster
from agentmem.local.cluster import CLUSTER, ISSUER, NAMESPACE
from agentmem.model.naming import audience as audience_of
from agentmem.runtime.auth import SigningKey
from tests.local.conftest import start_cluster

Answer = tuple[int, dict[str, str], Any]


def call(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> Answer:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}{path}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status, answer_headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode("utf-8", "replace")
    return status, answer_headers, data


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def node_url(up: LocalCluster) -> str:
    return f"http://{up.host}:{up.node_port(0)}"


def key_path(t: str, agent: str = "bot-1", key: str = "plan") -> str:
    return f"/v1/tenants/{t}/agents/{agent}/keys/{key}"


@pytest.fixture(scope="module")
def dev_token(up: LocalCluster) -> str:
    return up.token_file.read_text().strip()


@pytest.mark.parametrize("where", ["router", "node"])
def test_a_request_without_a_valid_token_is_a_json_401_with_a_challenge(
    up: LocalCluster, where: str
) -> None:
    base = up.router_url if where == "router" else node_url(up)
    t = tenant()
    other_key = SigningKey.generate()
    audience = audience_of(NAMESPACE, CLUSTER)
    refused = {
        "missing_token": None,
        "invalid_token": "not-a-jwt",
        "untrusted_issuer": other_key.mint("someone-else", audience, "eve", tenant=t,
                                           scopes=["read", "write"]),
        # The right issuer's name, another key: its key id is unknown here.
        "unknown_key": other_key.mint(ISSUER, audience, "eve", tenant=t, scopes=["write"]),
        "expired_token": up.mint("bot", tenant=t, scopes=("write",), ttl=-120),
        "wrong_audience": up.signing_key().mint(ISSUER, "agentmem.io/other/cluster", "bot",
                                                tenant=t, scopes=["write"]),
    }  # fmt: skip
    for code, token in refused.items():
        status, headers, body = call(base, "PUT", key_path(t), token, b'{"goal": 1}')
        assert status == 401, (code, status, body)
        assert body["error"] == code, body
        assert body["message"]
        assert headers["WWW-Authenticate"].startswith('Bearer realm="agentmem"')
    # Nothing of it reached the log.
    ok = up.mint("reader", tenant=t, scopes=("read",))
    history = call(up.router_url, "GET", f"/v1/tenants/{t}/agents/bot-1/history", ok)
    assert history[2]["events"] == []


def test_a_forged_token_is_refused(up: LocalCluster) -> None:
    t = tenant()
    honest = up.mint("bot", tenant=t, scopes=("read",))
    head, payload, signature = honest.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scopes"] = "read write admin"
    forged_payload = b64(json.dumps(claims).encode())
    forged = f"{head}.{forged_payload}.{signature}"
    none_alg = jwt.encode({**claims, "iss": ISSUER}, None, algorithm="none")
    # The public key used as an HMAC secret (the classic algorithm confusion).
    public = json.dumps(up.signing_key().jwk()).encode()
    kid = up.signing_key().kid
    confused_head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signed = f"{confused_head}.{forged_payload}"
    mac = hmac.new(public, signed.encode(), hashlib.sha256).digest()
    confused = f"{signed}.{b64(mac)}"
    for token in (forged, none_alg, confused):
        status, _, body = call(up.router_url, "PUT", key_path(t), token, b"1")
        assert status == 401, body


def test_scopes_tenants_and_agents_bound_what_a_token_does(up: LocalCluster) -> None:
    t, other = tenant(), tenant()
    base = up.router_url
    writer = up.mint("writer", tenant=t, scopes=("write",))
    reader = up.mint("reader", tenant=t, scopes=("read",))
    planner = up.mint("planner", tenant=t, scopes=("read", "write"), agents=("plan-*",))
    assert call(base, "PUT", key_path(t), writer, b'{"goal": 1}')[0] == 200
    assert call(base, "GET", key_path(t), reader)[0] == 200

    status, headers, body = call(base, "PUT", key_path(t), reader, b"2")
    assert (status, body["error"]) == (403, "forbidden")
    assert "'write'" in body["message"]
    assert 'scope="write"' in headers["WWW-Authenticate"]
    # Another tenant's memory: neither read nor write, by router or node.
    for url in (base, node_url(up)):
        status, _, body = call(url, "GET", key_path(other), reader)
        assert status == 403 and t in body["message"] and other in body["message"], body
    # Agent prefixes.
    assert call(base, "PUT", key_path(t, "plan-7"), planner, b"1")[0] == 200
    status, _, body = call(base, "PUT", key_path(t, "bot-1"), planner, b"1")
    assert status == 403 and "plan-*" in body["message"]
    status, _, body = call(base, "GET", f"/v1/tenants/{t}/agents", planner)
    assert status == 403 and "tenant-wide" in body["message"]
    assert call(base, "GET", f"/v1/tenants/{t}/agents", reader)[2]["agents"] == ["bot-1", "plan-7"]
    # admin implies read and write.
    admin = up.mint("admin", tenant=t, scopes=("admin",))
    assert (
        call(base, "PATCH", key_path(t), admin, b'{"x": 1}', "application/merge-patch+json")[0]
        == 200
    )


def test_the_actor_of_a_write_is_the_token_subject_never_a_header(up: LocalCluster) -> None:
    t = tenant()
    token = up.mint("planner-7", tenant=t, scopes=("read", "write"))
    request = urllib.request.Request(
        f"{up.router_url}{key_path(t)}", data=b"1", method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "X-Agentmem-Actor": "somebody-else"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    history = call(up.router_url, "GET", f"/v1/tenants/{t}/agents/bot-1/history", token)[2]
    assert [e["actor"] for e in history["events"]] == ["planner-7"]


def test_cluster_endpoints_have_their_own_scopes(up: LocalCluster, dev_token: str) -> None:
    node = node_url(up)
    tenant_token = up.mint("bot", tenant=tenant(), scopes=("read", "write", "admin"))
    status_token = up.mint("operator", tenant=None, scopes=("status",))
    metrics_token = up.mint("prometheus", tenant=None, scopes=("metrics",))
    # Probes are open (the kubelet has no token); the rest is not.
    assert call(node, "GET", "/livez")[0] == 200
    assert call(node, "GET", "/readyz")[0] == 200
    assert call(node, "GET", "/v1/status")[0] == 401
    assert call(node, "GET", "/v1/status", tenant_token)[0] == 403
    assert call(node, "GET", "/v1/status", status_token)[0] == 200
    assert call(node, "GET", "/v1/status", metrics_token)[0] == 403
    for url in (node, up.router_url):
        assert call(url, "GET", "/metrics", tenant_token)[0] == 403
        assert call(url, "GET", "/metrics", metrics_token)[0] == 200
        # The directory: any token of this cluster (it holds endpoints, no tenant's data).
        assert call(url, "GET", "/v1/directory")[0] == 401
        assert call(url, "GET", "/v1/directory", metrics_token)[0] == 200
    # A status token holds no tenant.
    assert call(node, "GET", key_path(tenant()), status_token)[0] == 403


def test_the_sdk_sends_its_token_and_raises_typed_errors(up: LocalCluster) -> None:
    t = tenant()
    token = up.mint("bot", tenant=t, scopes=("read",))
    with Memory(up.router_url, tenant=t, token=token) as mem:
        assert mem.get("bot-1", "plan") is None
        with pytest.raises(ForbiddenError) as forbidden:
            mem.put("bot-1", "plan", 1)
        assert forbidden.value.status == 403 and "'write'" in forbidden.value.message
    with (
        pytest.raises(UnauthorizedError) as unauthorized,
        Memory(up.router_url, tenant=t, token="garbage", routing="router") as mem,
    ):
        mem.get("bot-1", "plan")
    assert unauthorized.value.code == "invalid_token"


def test_a_token_file_is_read_again_when_it_changes(up: LocalCluster, tmp_path: Any) -> None:
    t = tenant()
    path = tmp_path / "token"
    path.write_text(up.mint("bot", tenant=t, scopes=("read",)))
    with Memory(up.router_url, tenant=t, token_file=path) as mem:
        with pytest.raises(ForbiddenError):
            mem.put("bot-1", "k", 1)
        # The kubelet swaps a projected token's file for a fresh one.
        fresh = tmp_path / "token.new"
        fresh.write_text(up.mint("bot", tenant=t, scopes=("read", "write")))
        fresh.replace(path)
        time.sleep(1.1)
        assert mem.put("bot-1", "k", 1).version


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_deeply_nested_bodies_are_a_400_that_names_the_limit(
    up: LocalCluster, dev_token: str, method: str
) -> None:
    t = tenant()
    kind = "application/json" if method == "PUT" else "application/merge-patch+json"
    for body in (b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 101 + b"]" * 101):
        status, headers, answer = call(up.router_url, method, key_path(t), dev_token, body, kind)
        assert status == 400, answer
        assert headers["Content-Type"].startswith("application/json")
        assert answer["error"] == "too_deep" and "100" in answer["message"], answer
    deep_ok = b'{"a":' * 99 + b'["[[[ brackets in a string ]]]"]' + b"}" * 99
    status, _, answer = call(up.router_url, method, key_path(t), dev_token, deep_ok, kind)
    assert status == 200, answer


STRANGER = SigningKey.generate()
tokens = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.tuples(st.text(max_size=40), st.text(max_size=80), st.text(max_size=40)).map(".".join),
    # Well-formed tokens of the right issuer and audience, signed by a stranger.
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5).map(
        lambda claims: jwt.encode(
            {
                **claims,
                "iss": ISSUER,
                "aud": audience_of(NAMESPACE, CLUSTER),
                "sub": "eve",
                "tenant": "victim-tenant",
                "scopes": "read write",
                "exp": time.time() + 600,
            },
            STRANGER.private,
            algorithm="ES256",
            headers={"kid": STRANGER.kid},
        )
    ),
)
bodies = st.one_of(
    st.binary(max_size=500),
    st.text(max_size=300).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=30,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    token=tokens,
    body=bodies,
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]),
    to_node=st.booleans(),
    kind=st.sampled_from(["random", "other_tenant", "own_tenant"]),
)
def test_fuzzed_tokens_and_bodies_get_no_5xx_and_cross_no_tenant(
    up: LocalCluster, token: str, body: bytes, method: str, to_node: bool, kind: str
) -> None:
    base = node_url(up) if to_node else up.router_url
    victim = "victim-tenant"
    if kind == "other_tenant":
        token = up.mint("fuzzer", tenant="fuzz", scopes=("read", "write", "admin"))
    elif kind == "own_tenant":
        token = up.mint("fuzzer", tenant=victim, scopes=("read", "write"))
    # Header values are printable Latin-1.
    token = "".join(c for c in token if c.isprintable() and ord(c) < 256)
    data = body if method in ("PUT", "PATCH") else None
    status, _, answer = call(base, method, key_path(victim), token, data)
    assert status < 500, answer
    if kind != "own_tenant":  # no fuzzed token, and no other tenant's, reaches the victim
        assert status in (401, 403), (status, answer)
    assert status < 300 or (isinstance(answer, dict) and answer.get("error")), answer


def test_a_cluster_started_without_auth_answers_without_tokens(tmp_path: Any) -> None:
    cluster = start_cluster(tmp_path / "open", shards=1, auth=False)
    try:
        for base in (cluster.router_url, node_url(cluster)):
            status, _, body = call(base, "GET", key_path("acme"))
            assert (status, body["error"]) == (404, "not_found"), (base, body)
        assert not cluster.token_file.exists()
    finally:
        cluster.stop()
