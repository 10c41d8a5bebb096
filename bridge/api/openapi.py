"""The OpenAPI 3.1 document served at /api/openapi.json (docs/api.md in prose)."""

from __future__ import annotations

from typing import Any

from bridge.api.index import INSTANCE_STATUSES
from bridge.api.query import ACTIONS, MAX_LIMIT


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_NAMES = {"type": "array", "items": {"type": "string"}}
_COMMAND_REF = {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/CommandRef"}]}


def document(version: str, flows: list[str]) -> dict[str, Any]:
    """The document for a worker serving `flows` (the flow names it loaded)."""
    flow_param = {
        "name": "flow",
        "in": "path",
        "required": True,
        "description": "A loaded flow",
        "schema": {"type": "string", "enum": flows},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sagabridge worker API",
            "version": version,
            "description": "Sagas tracked by a sagabridge worker group. Any worker answers for "
            "the whole group.",
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Whether this worker has recovered its state",
                    "operationId": "health",
                    "responses": {
                        "200": _json("Ready", "Health"),
                        "503": _json("Still recovering", "Health"),
                    },
                }
            },
            "/api/flows": {
                "get": {
                    "summary": "Every loaded flow with its definition and live counts",
                    "operationId": "listFlows",
                    "responses": {
                        "200": _json("The flows", "FlowList"),
                        "503": _error("The group is rebalancing"),
                    },
                }
            },
            "/api/flows/{flow}/instances": {
                "get": {
                    "summary": "Search a flow's instances across the group, ordered by key",
                    "operationId": "searchInstances",
                    "parameters": [
                        flow_param,
                        {
                            "name": "status",
                            "in": "query",
                            "description": "An instance status or a comma-separated list",
                            "schema": {"type": "string"},
                            "examples": {"one": {"value": "RUNNING"}},
                        },
                        {"name": "step", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "overdue",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                        {"name": "key_prefix", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("A page of instances", "InstancePage"),
                        "400": _error("A bad parameter"),
                        "404": _error("No such flow"),
                        "503": _error("The group is rebalancing"),
                    },
                }
            },
            "/api/flows/{flow}/instances/{key}": {
                "get": {
                    "summary": "One instance: state, steps with timings, history",
                    "operationId": "getInstance",
                    "parameters": [flow_param, _KEY],
                    "responses": {
                        "200": _json("The instance", "Instance"),
                        "404": _error("No such flow or instance"),
                        "503": _error("The group is rebalancing"),
                    },
                }
            },
            "/api/flows/{flow}/instances/{key}/actions": {
                "post": {
                    "summary": "Ask for retry, skip or terminate; applied in order with events",
                    "operationId": "postAction",
                    "parameters": [
                        flow_param,
                        _KEY,
                        {
                            "name": "X-Sagabridge-User",
                            "in": "header",
                            "required": False,
                            "description": "Who asks; recorded with the action",
                            "schema": {"type": "string"},
                        },
                    ],
                    "security": [{}, {"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ActionRequest"}
                            }
                        },
                    },
                    "responses": {
                        "202": _json("Accepted onto the input topic", "ActionAccepted"),
                        "400": _error("A bad body"),
                        "401": _error("Missing or wrong bearer token"),
                        "403": _error("Actions refused: no token set on a non-loopback address"),
                        "404": _error("No such flow or instance"),
                        "503": _error("The group is rebalancing"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this worker",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "starting"]},
                        "partitions": {"type": "array", "items": {"type": "integer"}},
                        "flows": _NAMES,
                        "uptime_s": {"type": "number"},
                    },
                },
                "CommandRef": {
                    "type": "object",
                    "required": ["name", "to"],
                    "properties": {"name": {"type": "string"}, "to": {"type": "string"}},
                },
                "Step": {
                    "type": "object",
                    "required": ["name", "after", "mode"],
                    "properties": {
                        "name": {"type": "string"},
                        "after": _NAMES,
                        "mode": {"type": "string", "enum": ["observe", "shadow", "orchestrate"]},
                        "deadline_ms": {"type": ["integer", "null"]},
                        "attempts": {"type": "integer"},
                        "done": _NAMES,
                        "failed": _NAMES,
                        "command": _COMMAND_REF,
                        "compensate": _COMMAND_REF,
                    },
                },
                "Counts": {
                    "type": "object",
                    "required": ["total", "status", "steps"],
                    "properties": {
                        "total": {"type": "integer"},
                        "status": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "steps": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                        },
                    },
                },
                "Flow": {
                    "type": "object",
                    "required": ["name", "version", "versions", "key", "steps", "counts"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "integer"},
                        "versions": {"type": "array", "items": {"type": "integer"}},
                        "key": {"type": "string"},
                        "mode": {"type": "string"},
                        "on_failure": {"type": "string"},
                        "deadline_ms": {"type": ["integer", "null"]},
                        "start": {"type": "string"},
                        "events": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "source": {"type": "string"},
                                },
                            },
                        },
                        "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                        "complete_when": _NAMES,
                        "counts": {"$ref": "#/components/schemas/Counts"},
                    },
                },
                "FlowList": {
                    "type": "object",
                    "required": ["flows"],
                    "properties": {
                        "flows": {"type": "array", "items": {"$ref": "#/components/schemas/Flow"}},
                        "workers": {"type": "integer"},
                        "partial": {"type": "boolean"},
                    },
                },
                "InstanceSummary": {
                    "type": "object",
                    "required": ["flow", "key", "status"],
                    "properties": {
                        "flow": {"type": "string"},
                        "version": {"type": "integer"},
                        "key": {"type": "string"},
                        "status": {"type": "string", "enum": list(INSTANCE_STATUSES)},
                        "started_at": _TIME,
                        "ended_at": _TIME,
                        "updated_at": _TIME,
                        "deadline_at": _TIME,
                        "active": _NAMES,
                        "overdue": _NAMES,
                        "failed": _NAMES,
                        "reason": {"type": ["string", "null"]},
                    },
                },
                "InstancePage": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/InstanceSummary"},
                        },
                        "next_cursor": {"type": ["string", "null"]},
                        "partial": {"type": "boolean"},
                    },
                },
                "Instance": {
                    "type": "object",
                    "required": ["flow", "version", "key", "status", "steps", "history"],
                    "properties": {
                        "flow": {"type": "string"},
                        "version": {"type": "integer"},
                        "key": {"type": "string"},
                        "status": {"type": "string", "enum": list(INSTANCE_STATUSES)},
                        "started_at": _TIME,
                        "ended_at": _TIME,
                        "deadline_at": _TIME,
                        "reason": {"type": "string"},
                        "steps": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["status", "attempts"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "attempts": {"type": "integer"},
                                    "activated_at": _TIME,
                                    "ended_at": _TIME,
                                    "due_at": _TIME,
                                    "retry_at": _TIME,
                                    "late": {"type": "boolean"},
                                },
                            },
                        },
                        "history": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["at", "type"],
                                "properties": {
                                    "at": {"type": "string"},
                                    "type": {"type": "string"},
                                    "step": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "ActionRequest": {
                    "type": "object",
                    "required": ["action"],
                    "additionalProperties": False,
                    "properties": {
                        "action": {"type": "string", "enum": list(ACTIONS)},
                        "step": {"type": "string", "description": "Needed by retry and skip"},
                        "reason": {"type": "string", "maxLength": 500},
                    },
                },
                "ActionAccepted": {
                    "type": "object",
                    "required": ["accepted", "id", "action", "by"],
                    "properties": {
                        "accepted": {"type": "boolean"},
                        "id": {"type": "string"},
                        "action": {"type": "string"},
                        "step": {"type": ["string", "null"]},
                        "by": {"type": "string"},
                    },
                },
            },
        },
    }
