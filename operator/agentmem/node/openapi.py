"""The OpenAPI 3.1 document of the memory node's API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from agentmem import __version__
from agentmem.directory.names import MAX_ID_LENGTH, MAX_KEY_LENGTH
from agentmem.node.searchapi import MEMORY

_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_KEY_PATTERN = "^[A-Za-z0-9._:=@+-]+(/[A-Za-z0-9._:=@+-]+)*$"
_VERSION_PATTERN = "^[0-9]+:[0-9]+$"


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_AUTH_ERRORS = {
    "401": _error("No bearer token, or one this cluster does not accept (WWW-Authenticate)."),
    "403": _error("The token lacks the scope this endpoint needs."),
}

_ERRORS = {
    "307": {"description": "Another shard serves this agent; Location names it."},
    "400": _error(
        "Invalid name, version, parameter or JSON (values and patches nest at most 100 deep)."
    ),
    "401": _error("No bearer token, or one this cluster does not accept (WWW-Authenticate)."),
    "403": _error("The token does not cover this tenant, agent or scope."),
    "429": _error(
        "A quota of the tenant or a bound of the client is reached; nothing was applied "
        "(Retry-After)."
    ),
    "421": _error("This node's directory is older than the caller's; retry."),
    "503": _error(
        "The event log or the state is unavailable, or the agent's partition is being loaded "
        "or rebuilt on this node; retry (Retry-After) or ask another replica."
    ),
    "504": _error("Not caught up in time; retry."),
}


def openapi_document(max_value_bytes: int) -> dict[str, Any]:
    tenant = _param(
        "tenant",
        "path",
        {"type": "string", "pattern": _ID_PATTERN, "maxLength": MAX_ID_LENGTH},
        "Tenant.",
    )
    agent = _param(
        "agent",
        "path",
        {"type": "string", "pattern": _ID_PATTERN, "maxLength": MAX_ID_LENGTH},
        "Agent id.",
    )
    key = _param(
        "key",
        "path",
        {"type": "string", "pattern": _KEY_PATTERN, "maxLength": MAX_KEY_LENGTH},
        "Key; may contain '/'.",
    )
    epoch = _param(
        "X-Agentmem-Epoch",
        "header",
        {"type": "string", "pattern": "^[0-9]+$"},
        "The caller's directory epoch.",
    )
    consistency = _param(
        "consistency",
        "query",
        {"type": "string", "enum": ["eventual", "session", "strong"]},
        "eventual: local state; session: wait for min_version; strong: wait for the log end.",
    )
    min_version = _param(
        "min_version",
        "query",
        {"type": "string", "pattern": _VERSION_PATTERN},
        "Version token to wait for (session reads).",
    )
    if_match = _param(
        "If-Match",
        "header",
        {"type": "string", "pattern": _VERSION_PATTERN},
        "Write only if the key is at this version.",
    )
    if_none = _param(
        "If-None-Match",
        "header",
        {"type": "string", "enum": ["*"]},
        "Write only if the key is absent.",
    )
    request_id = _param(
        "X-Request-Id",
        "header",
        {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        "Makes retries safe: the same id returns the first outcome.",
    )
    ttl = _param(
        "ttl",
        "query",
        {"type": "integer", "minimum": 1, "maximum": 315360000},
        "Seconds until the key expires.",
    )
    after = _param(
        "after",
        "query",
        {"type": "string", "pattern": _VERSION_PATTERN},
        "Continue after this version.",
    )
    embed = _param(
        "embed",
        "query",
        {"type": "string", "maxLength": 3200},
        "Value fields (dotted paths, comma-separated) whose text the node embeds: the key "
        "is found by their meaning (docs/semantic.md).",
    )
    memory_body = {
        "schema": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "value": {},
                "text": {"type": "string", "maxLength": 65535},
                "vector": {"type": "array", "items": {"type": "number"}, "maxItems": 32768},
            },
            "additionalProperties": False,
        }
    }
    search_properties: dict[str, Any] = {
        "query": {"type": "string", "minLength": 1, "maxLength": 65535},
        "vector": {"type": "array", "items": {"type": "number"}, "maxItems": 32768},
        "k": {"type": "integer", "minimum": 1, "maximum": 1000},
        "filter": {"type": "object"},
        "key_prefix": {"type": "string", "maxLength": 512},
        "consistency": {"type": "string", "enum": ["eventual", "session", "strong"]},
        "min_version": {"type": "string", "pattern": _VERSION_PATTERN},
    }
    tenant_search_properties = {
        **search_properties,
        "agent_prefix": {"type": "string", "maxLength": 128},
        "min_versions": {"type": "object", "additionalProperties": {"type": "integer"}},
        "partitions": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    }
    found = {
        "description": "The closest items, best first (score: similarity, or distance for L2).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    write_ok = {
        "description": "Applied.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WriteResult"}}},
    }
    conflict = _error("The key is not at the expected version; current_version says where it is.")
    any_json: dict[str, Any] = {}
    key_params = [tenant, agent, key, epoch]
    write_errors = {
        **_ERRORS,
        "409": conflict,
        "413": _error(f"The value is larger than {max_value_bytes} bytes."),
        "415": _error("Wrong Content-Type."),
        "507": _error("The shard's store is full; writes are refused."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentmem memory node",
            "version": __version__,
            "description": (
                "Shared, event-sourced memory for AI agents. Every write is an event in "
                "the log; reads come from the node's materialized state."
            ),
        },
        "paths": {
            "/v1/tenants/{tenant}/agents/{agent}/keys/{key}": {
                "get": {
                    "summary": "Read a key.",
                    "parameters": [*key_params, consistency, min_version],
                    "responses": {
                        "200": {
                            "description": "The value.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Record"}
                                }
                            },
                        },
                        "404": _error("Not set."),
                        **_ERRORS,
                    },
                },
                "put": {
                    "summary": "Set a key (with a text or vector: found by meaning).",
                    "parameters": [*key_params, if_match, if_none, request_id, ttl, embed],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": any_json},
                            MEMORY: memory_body,
                        },
                    },
                    "responses": {"200": write_ok, **write_errors},
                },
                "patch": {
                    "summary": "Apply a JSON merge patch (RFC 7396) to a key.",
                    "parameters": [*key_params, if_match, if_none, request_id, ttl],
                    "requestBody": {
                        "required": True,
                        "content": {"application/merge-patch+json": {"schema": any_json}},
                    },
                    "responses": {"200": write_ok, **write_errors},
                },
                "delete": {
                    "summary": "Delete a key.",
                    "parameters": [*key_params, if_match, request_id],
                    "responses": {"200": write_ok, **write_errors},
                },
            },
            "/v1/tenants/{tenant}/agents/{agent}/keys": {
                "get": {
                    "summary": "List an agent's keys.",
                    "parameters": [tenant, agent, epoch, consistency, min_version],
                    "responses": {
                        "200": {
                            "description": "The keys.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "keys": {"type": "array", "items": {"type": "string"}}
                                        },
                                    }
                                }
                            },
                        },
                        **_ERRORS,
                    },
                },
            },
            "/v1/tenants/{tenant}/agents/{agent}/batch-get": {
                "post": {
                    "summary": "Read several keys of one agent.",
                    "parameters": [tenant, agent, epoch, consistency, min_version],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["keys"],
                                    "properties": {
                                        "keys": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 1000,
                                            "items": {"type": "string", "pattern": _KEY_PATTERN},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "One item per key, null when not set.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "413": write_errors["413"],
                        "415": write_errors["415"],
                        **_ERRORS,
                    },
                },
            },
            "/v1/tenants/{tenant}/agents/{agent}/history": {
                "get": {
                    "summary": "The agent's changes in the audit window, from the log.",
                    "parameters": [
                        tenant,
                        agent,
                        epoch,
                        after,
                        _param(
                            "limit",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                            "At most this many events.",
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "Events, oldest first, and where to continue.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_ERRORS,
                    },
                },
            },
            "/v1/tenants/{tenant}/agents/{agent}/watch": {
                "get": {
                    "summary": (
                        "Server-sent events of the agent's changes; resume with after=<version>."
                    ),
                    "parameters": [tenant, agent, epoch, after],
                    "responses": {
                        "200": {"description": "text/event-stream of change events."},
                        **_ERRORS,
                    },
                },
            },
            "/v1/tenants/{tenant}/agents/{agent}/search": {
                "post": {
                    "summary": "The agent's keys closest in meaning to a query or vector.",
                    "parameters": [tenant, agent, epoch],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": search_properties}
                            }
                        },
                    },
                    "responses": {
                        "200": found,
                        "404": _error("No semantic memory on this cluster."),
                        "415": write_errors["415"],
                        **_ERRORS,
                    },
                },
            },
            "/v1/tenants/{tenant}/search": {
                "post": {
                    "summary": "The tenant's keys closest in meaning, in the partitions this node "
                    "owns (ask every shard and merge for the whole cluster).",
                    "parameters": [tenant, epoch],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": tenant_search_properties}
                            }
                        },
                    },
                    "responses": {
                        "200": found,
                        "404": _error("No semantic memory on this cluster."),
                        "415": write_errors["415"],
                        **_ERRORS,
                    },
                },
            },
            "/v1/tenants/{tenant}/agents": {
                "get": {
                    "summary": "The tenant's agents with keys in the partitions this node owns "
                    "(ask every shard and unite the answers for the whole cluster).",
                    "parameters": [tenant, epoch],
                    "responses": {
                        "200": {
                            "description": "The agents, and the partitions answered for with "
                            "the applied offset of each.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "agents": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                            "partitions": {
                                                "type": "object",
                                                "additionalProperties": {"type": "integer"},
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **_ERRORS,
                    },
                },
            },
            "/v1/status": {
                "get": {
                    "summary": "Partitions, applied offsets, epoch (scope: status).",
                    "responses": {"200": {"description": "Status."}, **_AUTH_ERRORS},
                }
            },
            "/v1/directory": {
                "get": {
                    "summary": "The directory this node follows (any token of the cluster).",
                    "responses": {
                        "200": {"description": "Directory."},
                        **_AUTH_ERRORS,
                        "404": _error("No directory."),
                    },
                }
            },
            "/livez": {
                "get": {
                    "summary": "Liveness.",
                    "security": [],
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready when caught up on its partitions.",
                    "security": [],
                    "responses": {"200": {"description": "Ready."}, "503": _error("Not ready.")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (scope: metrics).",
                    "responses": {"200": {"description": "Metrics."}, **_AUTH_ERRORS},
                }
            },
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token of an issuer the cluster trusts, for its audience "
                    "agentmem.io/<namespace>/<cluster>; claims tenant, agents, scopes "
                    "(see docs/security.md).",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Record": {
                    "type": "object",
                    "properties": {
                        "tenant": {"type": "string"},
                        "agent": {"type": "string"},
                        "key": {"type": "string"},
                        "version": {"type": "string"},
                        "expires_at": {"type": ["integer", "null"]},
                        "value": {},
                    },
                },
                "WriteResult": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string"},
                        "version": {"type": "string"},
                        "duplicate": {"type": "boolean"},
                    },
                },
            },
        },
    }
