"""Who may do what: bearer tokens (JWT) verified by nodes and routers.

A request carries ``Authorization: Bearer <JWT>``. The token must be signed by
a key of an issuer this cluster trusts, name the cluster's audience
(``agentmem.io/<namespace>/<cluster>``), and be unexpired. What it may do is a
:class:`Grant`:

- a token of an agentmem issuer names it in claims: ``tenant`` (a tenant, or
  ``*`` for every tenant), ``agents`` (optional: agent ids, and prefixes ending
  in ``*``; absent means every agent of the tenant) and ``scopes`` (a list or a
  space-separated string of ``read``, ``write``, ``admin``, ``status``,
  ``metrics``);
- a Kubernetes service-account token (a pod's projected token, subject
  ``system:serviceaccount:<namespace>:<name>``) carries no such claims: the
  cluster's ``serviceAccounts`` mapping grants them.

``admin`` implies ``read`` and ``write``. ``status`` (the node's
``/v1/status``, polled by the operator) and ``metrics`` (``/metrics``, scraped
by Prometheus) concern the cluster, not a tenant.

The trusted issuers come from a JSON file (the operator mounts it from a
ConfigMap; ``agentmem up`` writes one), reread when it changes, so keys rotate
without a restart. Nodes and routers never call an API server for this. A
verified token is remembered until it expires (verifying a signature costs far
more than a request); a reload of the file forgets them all, so a key removed
from the file revokes its tokens at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentmem.runtime.errors import json_error
from agentmem.runtime.serve import run_while_serving
from agentmem.runtime.tls import private_pem

log = logging.getLogger(__name__)

#: Scopes over a tenant's memory, and over the cluster's own endpoints.
TENANT_SCOPES = ("read", "write", "admin")
CLUSTER_SCOPES = ("status", "metrics")
SCOPES = TENANT_SCOPES + CLUSTER_SCOPES
ANY_TENANT = "*"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
#: Asymmetric algorithms only: a verifier holds no secret that could sign.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
#: Clock skew tolerated between the issuer and this process.
LEEWAY_SECONDS = 30
#: Verified tokens remembered (forgotten all at once when full).
CACHE_ENTRIES = 50_000
#: How often a JWKS URL is fetched again (and at most how often an unknown key
#: id makes it fetched early).
JWKS_REFRESH_SECONDS = 300.0
JWKS_MIN_REFETCH_SECONDS = 30.0


def data_scope(method: str) -> str:
    """The scope a request on an agent's memory needs (batch-get is a POST that reads)."""
    return "write" if method in ("PUT", "PATCH", "DELETE") else "read"


class AuthError(Exception):
    """A request that is not authenticated (401) or not allowed (403)."""

    def __init__(self, status: int, code: str, message: str, scope: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.scope = scope

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750)."""
        text = self.message.replace("\\", "").replace('"', "'")
        if self.status == 403:
            return f'Bearer realm="agentmem", error="insufficient_scope", scope="{self.scope}"'
        if self.code == "missing_token":
            return 'Bearer realm="agentmem"'
        return f'Bearer realm="agentmem", error="invalid_token", error_description="{text}"'


def _unauthorized(code: str, message: str) -> AuthError:
    return AuthError(401, code, message)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one verified token may do."""

    subject: str
    tenant: str | None  # None: no tenant's memory; ANY_TENANT: every tenant
    agents: tuple[str, ...] | None  # None: every agent of the tenant
    scopes: frozenset[str]
    expires: float

    def has(self, scope: str) -> bool:
        return scope in self.scopes or (scope in ("read", "write") and "admin" in self.scopes)

    def check(self, scope: str, tenant: str | None = None, agent: str | None = None) -> None:
        """Raise a 403 :class:`AuthError` unless this grant covers the request."""
        if not self.has(scope):
            held = " ".join(sorted(self.scopes)) or "none"
            raise AuthError(
                403, "forbidden", f"this needs the scope {scope!r}; the token has: {held}", scope
            )
        if tenant is None:
            return
        if self.tenant not in (ANY_TENANT, tenant):
            mine = f"tenant {self.tenant!r}" if self.tenant else "no tenant"
            raise AuthError(
                403, "forbidden", f"the token is for {mine}, not tenant {tenant!r}", scope
            )
        if self.agents is None:
            return
        if agent is None:
            raise AuthError(
                403, "forbidden",
                "the token is limited to some agents; a tenant-wide request needs a token for "
                "all of them", scope,
            )  # fmt: skip
        if not any(a == agent or (a[-1] == "*" and agent.startswith(a[:-1])) for a in self.agents):
            raise AuthError(
                403, "forbidden",
                f"the token does not cover agent {agent!r} (it covers {', '.join(self.agents)})",
                scope,
            )  # fmt: skip


#: The grant of every request when authentication is off (local experiments).
ANONYMOUS = Grant("", ANY_TENANT, None, frozenset(SCOPES), float("inf"))


def _scopes(raw: Any, where: str) -> frozenset[str]:
    items = raw.split() if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"{where}: scopes must be a list of strings or a space-separated string")
    return frozenset(s for s in items if s in SCOPES)


def _agents(raw: Any, where: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(a, str) and a for a in raw):
        raise ValueError(f"{where}: agents must be a list of agent ids or prefixes ending in '*'")
    return tuple(raw)


@dataclass(frozen=True)
class AccountGrant:
    """The cluster's grant to one Kubernetes service account."""

    namespace: str
    name: str
    tenant: str | None
    agents: tuple[str, ...] | None
    scopes: frozenset[str]

    @property
    def subject(self) -> str:
        return f"{SERVICE_ACCOUNT_PREFIX}{self.namespace}:{self.name}"


@dataclass
class Issuer:
    """One trusted issuer and its public keys (by key id)."""

    name: str
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    jwks_url: str | None = None
    fetched: float = 0.0


@dataclass
class AuthConfig:
    audience: str
    issuers: dict[str, Issuer]
    accounts: dict[str, AccountGrant]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], base_dir: str = ".") -> AuthConfig:
        audience = doc.get("audience")
        if not isinstance(audience, str) or not audience:
            raise ValueError("auth config: 'audience' must name this cluster's audience")
        issuers: dict[str, Issuer] = {}
        for i, entry in enumerate(doc.get("issuers") or []):
            where = f"auth config: issuers[{i}]"
            name = entry.get("issuer")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: 'issuer' must be the tokens' iss")
            issuer = Issuer(name, jwks_url=entry.get("jwksUrl"))
            jwks = entry.get("jwks")
            if entry.get("jwksFile"):
                path = os.path.join(base_dir, entry["jwksFile"])
                with open(path, encoding="utf-8") as f:
                    jwks = json.load(f)
            if jwks is not None:
                issuer.keys = keys_of(jwks, where)
            if not issuer.keys and not issuer.jwks_url:
                raise ValueError(f"{where}: give 'jwks', 'jwksFile' or 'jwksUrl'")
            issuers[name] = issuer
        accounts: dict[str, AccountGrant] = {}
        for i, entry in enumerate(doc.get("serviceAccounts") or []):
            where = f"auth config: serviceAccounts[{i}]"
            grant = AccountGrant(
                namespace=str(entry["namespace"]),
                name=str(entry["name"]),
                tenant=entry.get("tenant"),
                agents=_agents(entry.get("agents"), where),
                scopes=_scopes(entry.get("scopes", []), where),
            )
            accounts[grant.subject] = grant
        return cls(audience, issuers, accounts)


def keys_of(jwks: Any, where: str) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by key id ('' when it has none)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError(f'{where}: a JWKS is {{"keys": [...]}}')
    keys: dict[str, jwt.PyJWK] = {}
    for raw in jwks["keys"]:
        if raw.get("use", "sig") != "sig" or raw.get("kty") == "oct":
            continue  # encryption keys, and shared secrets, never verify tokens here
        try:
            key = jwt.PyJWK(raw)
        except jwt.PyJWTError as exc:
            log.warning("%s: skipping key %s: %s", where, raw.get("kid"), exc)
            continue
        keys[str(raw.get("kid", ""))] = key
    return keys


class Verifier:
    """Checks bearer tokens against the trusted issuers of an auth config file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = 0.0
        self._cache: dict[str, Grant] = {}
        self._refetch = False
        self.config = self._read()

    @classmethod
    def from_config(cls, config: AuthConfig) -> Verifier:
        verifier = cls.__new__(cls)
        verifier.path, verifier._mtime, verifier._cache, verifier._refetch = "", 0.0, {}, False
        verifier.config = config
        return verifier

    def _read(self) -> AuthConfig:
        try:
            self._mtime = os.stat(self.path).st_mtime
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the auth config {self.path}: {exc}") from exc
        return AuthConfig.from_dict(doc, os.path.dirname(self.path))

    def reload(self) -> bool:
        """Read the file again if it changed; True when it did (and forget tokens)."""
        if not self.path:
            return False
        try:
            if os.stat(self.path).st_mtime == self._mtime:
                return False
            config = self._read()
        except (OSError, ValueError) as exc:
            log.warning("keeping the auth config we have: %s", exc)
            return False
        for name, issuer in config.issuers.items():
            old = self.config.issuers.get(name)
            if issuer.jwks_url and old is not None and old.jwks_url == issuer.jwks_url:
                issuer.keys, issuer.fetched = old.keys, old.fetched
        self.config = config
        self._cache = {}
        log.info("auth config reloaded: %s issuer(s)", len(config.issuers))
        return True

    def refresh_urls(self, force: bool = False) -> None:
        """Fetch the JWKS of issuers configured by URL (blocking: run it in a thread)."""
        now = time.monotonic()
        for issuer in self.config.issuers.values():
            if not issuer.jwks_url:
                continue
            due = JWKS_MIN_REFETCH_SECONDS if force else JWKS_REFRESH_SECONDS
            if issuer.fetched and now - issuer.fetched < due:
                continue
            issuer.fetched = now
            try:
                with urllib.request.urlopen(issuer.jwks_url, timeout=5) as answer:
                    keys = keys_of(json.load(answer), f"JWKS of {issuer.name}")
            except (OSError, ValueError) as exc:
                log.warning("fetching the JWKS of %s failed: %s", issuer.name, exc)
                continue
            if set(keys) != set(issuer.keys):
                self._cache = {}
            issuer.keys = keys

    async def follow(self, interval: float = 1.0) -> None:
        """Reload the file when it changes and refetch JWKS URLs, until cancelled."""
        while True:
            self.reload()
            if any(i.jwks_url for i in self.config.issuers.values()):
                force, self._refetch = self._refetch, False
                await asyncio.to_thread(self.refresh_urls, force)
            await asyncio.sleep(interval)

    def authenticate(self, authorization: str | None) -> Grant:
        """The grant of an ``Authorization`` header's token, or a 401 :class:`AuthError`."""
        if not authorization:
            raise _unauthorized(
                "missing_token",
                "send a bearer token: 'Authorization: Bearer <JWT>' (see docs/security.md)",
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("invalid_token", "the Authorization header is not 'Bearer <JWT>'")
        token = token.strip()
        if not token.isascii():
            raise _unauthorized("invalid_token", "a JWT is ASCII: base64url parts and dots")
        grant = self._cache.get(token)
        now = time.time()
        if grant is not None:
            if grant.expires + LEEWAY_SECONDS > now:
                return grant
            del self._cache[token]
        grant = self._verify(token)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache = {}
        self._cache[token] = grant
        return grant

    def _verify(self, token: str) -> Grant:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _unauthorized("invalid_token", f"the token is not a JWT: {exc}") from None
        name = unverified.get("iss")
        issuer = self.config.issuers.get(name) if isinstance(name, str) else None
        if issuer is None:
            raise _unauthorized("untrusted_issuer", f"this cluster does not trust issuer {name!r}")
        if header.get("alg") not in ALGORITHMS:
            raise _unauthorized(
                "invalid_token", f"tokens signed with {header.get('alg')!r} are not accepted"
            )
        key = self._key(issuer, str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.config.audience,
                issuer=issuer.name,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("expired_token", "the token has expired; get a new one") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized(
                "wrong_audience",
                f"the token is not for this cluster: its audience must include "
                f"{self.config.audience!r}",
            ) from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _unauthorized("invalid_token", f"the token was refused: {exc}") from None
        return self._grant(claims)

    def _key(self, issuer: Issuer, kid: str) -> jwt.PyJWK:
        key = issuer.keys.get(kid)
        if key is None and not kid and len(issuer.keys) == 1:
            key = next(iter(issuer.keys.values()))
        if key is None:
            self._refetch = bool(issuer.jwks_url)  # a rotation: fetch the keys again soon
            raise _unauthorized(
                "unknown_key",
                f"issuer {issuer.name!r} has no key {kid!r} here; if its keys were just "
                "rotated, retry in a minute",
            )
        return key

    def _grant(self, claims: Mapping[str, Any]) -> Grant:
        subject = str(claims["sub"])
        expires = float(claims["exp"])
        if "tenant" in claims or "scopes" in claims:
            tenant = claims.get("tenant")
            if tenant is not None and not isinstance(tenant, str):
                raise _unauthorized("invalid_token", "the token's tenant claim is not a string")
            try:
                agents = _agents(claims.get("agents"), "token")
                scopes = _scopes(claims.get("scopes", []), "token")
            except ValueError as exc:
                raise _unauthorized("invalid_token", str(exc)) from None
            return Grant(subject, tenant, agents, scopes, expires)
        account = self.config.accounts.get(subject)
        if account is None:
            raise AuthError(
                403, "forbidden",
                f"{subject} is authenticated but granted nothing: name it in the cluster's "
                "spec.auth.serviceAccounts, or use a token with tenant and scopes claims", "read",
            )  # fmt: skip
        return Grant(subject, account.tenant, account.agents, account.scopes, expires)


def follow_while_serving(app: web.Application, verifier: Verifier) -> None:
    """Keep ``verifier`` following its config file for as long as ``app`` serves."""
    run_while_serving(app, verifier.follow)


def load_verifier(path: str | None, service: str, no_auth: bool = False) -> Verifier | None:
    """The verifier of an auth config file; None (with a warning) when turned off.

    Off must be asked for: without a file and without ``no_auth``, this refuses
    to start (a ValueError that says what to give).
    """
    if path:
        return Verifier(path)
    if not no_auth:
        raise ValueError(
            f"{service}: give the trusted token issuers (--auth-file or AGENTMEM_AUTH_FILE, see "
            "docs/security.md), or --no-auth (AGENTMEM_NO_AUTH=true) to run without "
            "authentication for a local experiment"
        )
    log.warning(
        "%s: authentication is OFF: anyone who can reach this port reads and writes every "
        "tenant", service
    )  # fmt: skip
    return None


def refusal(exc: AuthError) -> web.Response:
    """The JSON 401/403 answer of an :class:`AuthError`, with its challenge."""
    return json_error(exc.status, exc.code, exc.message, {"WWW-Authenticate": exc.challenge})


# Signing: agentmem's own issuers (``agentmem up``, the operator) ------------------


class SigningKey:
    """An ES256 key that issues tokens; its public half is a JWKS."""

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        self.private = private
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the signing key is not an EC private key")
        return cls(key)

    def pem(self) -> bytes:
        return private_pem(self.private)

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(
            self.private.public_key(), as_dict=True
        )
        return {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}

    def mint(
        self,
        issuer: str,
        audience: str,
        subject: str,
        *,
        tenant: str | None = None,
        scopes: Iterable[str] = (),
        agents: Iterable[str] | None = None,
        ttl: float = 3600.0,
        now: float | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        scopes = tuple(scopes)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            "iat": issued,
            "exp": issued + int(ttl),
        }
        if scopes:
            claims["scopes"] = " ".join(scopes)
        if tenant is not None:
            claims["tenant"] = tenant
        if agents is not None:
            claims["agents"] = list(agents)
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": self.kid})


def issuer_entry(issuer: str, keys: Iterable[SigningKey]) -> dict[str, Any]:
    """An ``issuers`` entry of the auth config for keys of agentmem's own."""
    return {"issuer": issuer, "jwks": {"keys": [k.jwk() for k in keys]}}
