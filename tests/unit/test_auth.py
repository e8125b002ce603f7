"""The token verifier on its own: issuers, grants, service accounts, reloads."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agentmem.runtime.auth import (
    AuthConfig,
    AuthError,
    Grant,
    SigningKey,
    Verifier,
    issuer_entry,
    load_verifier,
)

AUD = "agentmem.io/team/memory"


def write_config(
    path: Path, *keys: SigningKey, accounts: list[dict[str, object]] | None = None
) -> None:
    doc = {
        "audience": AUD,
        "issuers": [issuer_entry("https://issuer.test", keys)],
        "serviceAccounts": accounts or [],
    }
    path.write_text(json.dumps(doc))


def refused(verifier: Verifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as exc:
        verifier.authenticate(f"Bearer {token}")
    return exc.value


def test_a_service_account_token_is_granted_by_the_mapping(tmp_path: Path) -> None:
    key = SigningKey.generate()
    write_config(
        tmp_path / "auth.json", key,
        accounts=[{"namespace": "agents", "name": "planner", "tenant": "acme",
                   "agents": ["plan-*"], "scopes": ["read", "write"]}],
    )  # fmt: skip
    verifier = Verifier(str(tmp_path / "auth.json"))
    token = key.mint("https://issuer.test", AUD, "system:serviceaccount:agents:planner")
    grant = verifier.authenticate(f"Bearer {token}")
    assert grant.tenant == "acme" and grant.agents == ("plan-*",)
    grant.check("write", "acme", "plan-1")
    with pytest.raises(AuthError, match="does not cover agent"):
        grant.check("write", "acme", "bot-1")
    stranger = key.mint("https://issuer.test", AUD, "system:serviceaccount:agents:other")
    error = refused(verifier, stranger)
    assert error.status == 403 and "spec.auth.serviceAccounts" in error.message


def test_removing_a_key_from_the_file_revokes_its_remembered_tokens(tmp_path: Path) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "auth.json"
    write_config(path, old, new)
    verifier = Verifier(str(path))
    token = old.mint("https://issuer.test", AUD, "bot", tenant="acme", scopes=["read"])
    assert verifier.authenticate(f"Bearer {token}").subject == "bot"  # now remembered
    write_config(path, new)
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert verifier.reload()
    assert refused(verifier, token).code == "unknown_key"
    fresh = new.mint("https://issuer.test", AUD, "bot", tenant="acme", scopes=["read"])
    assert verifier.authenticate(f"Bearer {fresh}").tenant == "acme"


def test_a_remembered_token_still_expires() -> None:
    key = SigningKey.generate()
    config = AuthConfig.from_dict(
        {"audience": AUD, "issuers": [issuer_entry("https://issuer.test", [key])]}
    )
    verifier = Verifier.from_config(config)
    token = key.mint("https://issuer.test", AUD, "bot", tenant="a", scopes=["read"], ttl=1,
                     now=time.time() - 30)  # fmt: skip
    verifier.authenticate(f"Bearer {token}")  # within the leeway
    time.sleep(2)
    assert refused(verifier, token).code == "expired_token"


def test_grants_imply_and_bound() -> None:
    admin = Grant("a", "acme", None, frozenset({"admin"}), 0)
    admin.check("read", "acme", "x")
    admin.check("write", "acme", "x")
    with pytest.raises(AuthError, match="'metrics'"):
        admin.check("metrics")
    every = Grant("ops", "*", None, frozenset({"read"}), 0)
    every.check("read", "any-tenant", "any-agent")
    nobody = Grant("prom", None, None, frozenset({"metrics"}), 0)
    nobody.check("metrics")
    with pytest.raises(AuthError, match="no tenant"):
        nobody.check("metrics", "acme")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "audience"),
        ({"audience": AUD, "issuers": [{"jwks": {"keys": []}}]}, "issuers[0]: 'issuer'"),
        ({"audience": AUD, "issuers": [{"issuer": "x"}]}, "jwks"),
        ({"audience": AUD, "issuers": [{"issuer": "x", "jwks": []}]}, "JWKS"),
        (
            {"audience": AUD, "serviceAccounts": [{"namespace": "a", "name": "b", "scopes": 3}]},
            "serviceAccounts[0]: scopes",
        ),
    ],
)
def test_a_bad_config_names_what_is_wrong(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AuthConfig.from_dict(doc)


def test_tokens_of_shared_secrets_are_never_accepted() -> None:
    config = AuthConfig.from_dict(
        {"audience": AUD, "issuers": [{"issuer": "x", "jwks": {"keys": [
            {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "s"}
        ]}, "jwksUrl": "http://127.0.0.1:9/jwks"}]}
    )  # fmt: skip
    assert config.issuers["x"].keys == {}


def test_a_node_or_router_without_issuers_starts_only_when_told_to() -> None:
    with pytest.raises(ValueError, match="--no-auth"):
        load_verifier(None, "agentmem node")
    assert load_verifier(None, "agentmem node", no_auth=True) is None
