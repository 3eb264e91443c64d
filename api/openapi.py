"""GET /openapi.json: the API as OpenAPI 3.0, for integrators and for the schemathesis run in
the tests that throws generated requests at every operation and wants no 5xx back."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

_ERROR = {
    "description": "refused, with the reason",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    },
}
_JSON = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
_GUARDED = {"401": _ERROR, "403": _ERROR}
_HTML = {"description": "a page", "content": {"text/html": {"schema": {"type": "string"}}}}


def _read(summary: str, **extra: Any) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary + " (viewer, approver or admin token)",
            "security": [{"bearer": []}],
            "responses": {"200": _JSON, **_GUARDED, "400": _ERROR, "404": _ERROR},
            **extra,
        }
    }


def _form(*fields: str) -> dict[str, Any]:
    """A urlencoded form body of string fields (Twilio's webhooks, the board's sign-in)."""
    properties = {name: {"type": "string"} for name in fields}
    schema = {"type": "object", "properties": properties}
    return {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_PAYLOADS = {
    "type": "object",
    "required": ["payloads"],
    "properties": {
        "payloads": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "data": {"type": "string"},
                },
            },
        }
    },
}


def _codec(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary + " (viewer token; for the Temporal Web UI)",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _PAYLOADS}},
            },
            "responses": {
                "200": _JSON,
                **_GUARDED,
                "400": _ERROR,
                "404": _ERROR,
                "413": _ERROR,
                "422": _ERROR,
            },
        }
    }


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "FactoryLM API",
        "version": "1",
        "description": "Operator endpoints (bearer tokens with roles, made with "
        "`factorylm tokens add`) and the Twilio and Trello webhooks (signed by their senders).",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/health": {
            "get": {
                "summary": "what is up (unauthenticated, for load balancers)",
                "responses": {"200": _JSON, "503": _JSON},
            }
        },
        "/collectors": _read("collector and writer status per PLC"),
        "/baselines": _read("the latest baseline per PLC and metric"),
        "/forecasts": _read("metrics trending toward a threshold: when, soonest first"),
        "/budget": _read("LLM token budgets and use"),
        "/work-log": _read(
            "every agent's work",
            parameters=[
                _query("agent", {"type": "string"}),
                _query("since", {"type": "string"}),
                _query("until", {"type": "string"}),
                _query("outcome", {"type": "string"}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
        ),
        "/work-orders/{wo_id}": _read("one work order", parameters=[_path_param("wo_id")]),
        "/photos/{photo_id}": _read("one photo's record", parameters=[_path_param("photo_id")]),
        "/photos/{photo_id}/image": _read("one photo", parameters=[_path_param("photo_id")]),
        "/assets/{asset_id}/photos": _read(
            "an asset's photo history", parameters=[_path_param("asset_id")]
        ),
        "/approvals/{workflow_id}": {
            "post": {
                "summary": "approve or deny a pending request as the token's approver",
                "security": [{"bearer": []}],
                "parameters": [_path_param("workflow_id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["approve", "code"],
                                "properties": {
                                    "approve": {"type": "boolean"},
                                    "code": {"type": "string", "pattern": "^[0-9]{4}$"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _JSON,
                    **_GUARDED,
                    "400": _ERROR,
                    "404": _ERROR,
                    "409": _ERROR,
                    "422": _ERROR,
                },
            }
        },
        "/photos": {
            "post": {
                "summary": "upload an equipment photo (uploader or admin token)",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {"type": "string", "format": "binary"},
                                    "asset_id": {"type": "string"},
                                    "note": {"type": "string"},
                                    "reply_to": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _JSON,
                    **_GUARDED,
                    "413": _ERROR,
                    "415": _ERROR,
                    "422": _ERROR,
                },
            }
        },
        "/codec/decode": _codec("decode Temporal payloads"),
        "/codec/encode": _codec("encode Temporal payloads"),
        "/webhooks/twilio/whatsapp": {
            "post": {
                "summary": "inbound WhatsApp messages (Twilio-signed)",
                "requestBody": _form("MessageSid", "From", "Body"),
                "responses": {
                    "200": {"description": "TwiML"},
                    "400": _ERROR,
                    "403": _ERROR,
                    "413": _ERROR,
                    "503": {"description": "not configured"},
                },
            }
        },
        "/webhooks/twilio/status": {
            "post": {
                "summary": "delivery status of a message FactoryLM sent (Twilio-signed)",
                "parameters": [
                    {
                        "name": "m",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "the outbox row the callback is about",
                    }
                ],
                "requestBody": _form("AccountSid", "MessageSid", "MessageStatus", "ErrorCode"),
                "responses": {
                    "204": {"description": "applied (or not about a message of ours)"},
                    "400": _ERROR,
                    "403": _ERROR,
                    "413": _ERROR,
                    "503": {"description": "not configured"},
                },
            }
        },
        "/webhooks/trello": {
            "post": {
                "summary": "board events (Trello-signed)",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": _JSON, "400": _ERROR, "403": _ERROR, "413": _ERROR},
            }
        },
        # The plant board (api/board.py): pages for a browser, signed in by a cookie that
        # POST /board/login sets from a token (or a bearer token, as here).
        "/": {
            "get": {
                "summary": "the plant board; its sign-in page (401) without a valid token",
                "security": [{"bearer": []}],
                "responses": {"200": _HTML, "401": _HTML, "503": _HTML},
            }
        },
        "/board/login": {
            "post": {
                "summary": "sign in to the board with a token: sets its HttpOnly cookie",
                "requestBody": _form("token"),
                "responses": {"303": {"description": "to the board"}, "400": _HTML, "401": _HTML},
            }
        },
        "/board/logout": {
            "post": {
                "summary": "sign out of the board (the cookie is cleared)",
                "responses": {"303": {"description": "to the sign-in page"}},
            }
        },
        "/board/data": _read(
            "the board's data: PLCs, trends bucketed to the chart's width, drift responses "
            "(gzip-compressed when Accept-Encoding admits it)",
            parameters=[
                _query("range", {"type": "string", "enum": ["15m", "1h", "6h", "24h", "7d"]}),
                _query("width", {"type": "integer"}),
            ],
        ),
        "/board/events": {
            "get": {
                "summary": "the board's live updates, as server-sent events (open until the "
                "browser leaves, the token is revoked or the API stops)",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "ok", "content": {"text/event-stream": {}}},
                    **_GUARDED,
                    "503": _ERROR,
                },
            }
        },
        "/board/static/{name}": {
            "get": {
                "summary": "the board's script, styles and charting library",
                "parameters": [_path_param("name")],
                "responses": {"200": {"description": "the file"}, "404": _ERROR, "503": _ERROR},
            }
        },
    },
}


async def openapi(_request: Request) -> JSONResponse:
    return JSONResponse(SPEC)
