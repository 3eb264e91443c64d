"""A local Trello: the REST paths py-trello calls for boards, lists, labels, cards, checklists,
comments and card moves, under /1/, with key/token authentication, plus webhooks.

A webhook registered through py-trello's `create_hook` is called like Trello calls it: a JSON
action POSTed to the callback URL, signed with the app secret (HMAC-SHA1 over body + callback
URL, base64, header X-Trello-Webhook), whenever a card is created or moves between lists.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from factorylm.trello.webhook import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

_POS_STEP = 16384.0


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeTrello:
    api_key: str = "fake-trello-key"
    token: str = "fake-trello-token"
    app_secret: str = "fake-trello-app-secret"
    boards: dict[str, dict[str, Any]] = field(default_factory=dict)
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    checklists: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by card id
    hooks: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def _id(self) -> str:
        # Trello ids are 24 hex digits (time first); py-trello's paging reads them as hex
        # numbers. Unique across runs, so dedup keys built from card ids never collide.
        return f"{int(time.time()):08x}{secrets.token_hex(4)}{next(self._ids):08x}"

    # -- state helpers for tests and the demo ----------------------------------------------

    def add_board(self, name: str) -> str:
        board_id = self._id()
        self.boards[board_id] = {
            "id": board_id,
            "name": name,
            "desc": "",
            "closed": False,
            "url": f"https://trello.com/b/{board_id}",
        }
        return board_id

    def list_named(self, board_id: str, name: str) -> dict[str, Any]:
        for lst in self.lists.values():
            if lst["idBoard"] == board_id and lst["name"] == name:
                return lst
        raise KeyError(f"no list {name!r} on board {board_id}")

    def cards_in(self, board_id: str, list_name: str) -> list[dict[str, Any]]:
        list_id = self.list_named(board_id, list_name)["id"]
        found = [c for c in self.cards.values() if c["idList"] == list_id and not c["closed"]]
        return sorted(found, key=lambda c: c["pos"])

    def card_named(self, name: str) -> dict[str, Any]:
        return next(c for c in self.cards.values() if c["name"] == name)

    def comments(self, card_id: str) -> list[str]:
        return [
            a["data"]["text"] for a in self.actions.get(card_id, []) if a["type"] == "commentCard"
        ]

    def comment_as_person(self, card_id: str, text: str) -> None:
        """Play a person writing a comment on the card in the Trello UI."""
        self._action(self.cards[card_id], "commentCard", {"text": text})

    def list_of(self, card_id: str) -> str:
        return str(self.lists[self.cards[card_id]["idList"]]["name"])

    # -- HTTP --------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        q = request.query_params
        return q.get("key") == self.api_key and q.get("token") == self.token

    async def _args(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return dict(request.query_params)
        if request.headers.get("content-type", "").startswith("application/json"):
            data = json.loads(raw)
            return data if isinstance(data, dict) else {}
        form = await request.form()
        return {k: v for k, v in form.items()}

    def _pos(self, siblings: list[dict[str, Any]], pos: Any) -> float:
        positions = [s["pos"] for s in siblings]
        if pos in (None, "", "bottom"):
            return (max(positions) if positions else 0.0) + _POS_STEP
        if pos == "top":
            return (min(positions) / 2) if positions else _POS_STEP
        return float(pos)

    def _card_json(self, card: dict[str, Any]) -> dict[str, Any]:
        comments = sum(1 for a in self.actions.get(card["id"], []) if a["type"] == "commentCard")
        checklists = [c for c in self.checklists.values() if c["idCard"] == card["id"]]
        items = sum(len(c["checkItems"]) for c in checklists)
        return {
            **card,
            "labels": [self.labels[i] for i in card["idLabels"] if i in self.labels],
            "idChecklists": [c["id"] for c in checklists],
            "badges": {"checkItems": items, "comments": comments, "attachments": 0},
        }

    def _action(self, card: dict[str, Any], kind: str, data: dict[str, Any]) -> dict[str, Any]:
        action = {
            "id": self._id(),
            "idMemberCreator": "fake-member",
            "type": kind,
            "date": _now(),
            "data": {
                "card": {"id": card["id"], "name": card["name"]},
                "board": {"id": card["idBoard"]},
                **data,
            },
        }
        self.actions.setdefault(card["id"], []).append(action)
        return action

    def _notify(self, board_id: str, action: dict[str, Any]) -> None:
        for hook in self.hooks:
            if hook["idModel"] == board_id and hook["active"]:
                task = asyncio.get_running_loop().create_task(self._deliver(hook, action))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _deliver(self, hook: dict[str, Any], action: dict[str, Any]) -> None:
        body = json.dumps({"action": action, "model": {"id": hook["idModel"]}}).encode()
        signature = sign(self.app_secret, body, hook["callbackURL"])
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.post(
                    hook["callbackURL"],
                    content=body,
                    headers={SIGNATURE_HEADER: signature, "content-type": "application/json"},
                )
        except httpx.HTTPError as exc:
            log.warning(
                "fake Trello could not deliver a webhook to %s: %s", hook["callbackURL"], exc
            )

    async def _route(self, request: Request) -> Response:
        method, path = request.method, request.path_params["path"].strip("/")
        self.requests.append((method, path))
        if path.startswith("tokens/") and path.endswith("webhooks") and method == "POST":
            # py-trello's create_hook posts a form without a token query parameter.
            args = await self._args(request)
            if args.get("key") != self.api_key or path.split("/")[1] != self.token:
                return Response("invalid key", status_code=401)
            return JSONResponse(self._create_hook(args))
        if not self._authorised(request):
            return Response("invalid key", status_code=401)
        args = await self._args(request) if method in ("POST", "PUT") else {}
        parts = path.split("/")
        try:
            result = self._dispatch(method, parts, args, request)
        except KeyError as exc:
            return Response(f"The requested resource was not found. ({exc})", status_code=404)
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    def _create_hook(self, args: dict[str, Any]) -> dict[str, Any]:
        hook = {
            "id": self._id(),
            "description": args.get("description") or "",
            "idModel": args["idModel"],
            "callbackURL": args["callbackURL"],
            "active": True,
        }
        self.hooks.append(hook)
        return hook

    def _dispatch(  # one table of routes reads better than a dozen handlers
        self, method: str, parts: list[str], args: dict[str, Any], request: Request
    ) -> Any:
        match (method, parts):
            case ("POST", ["boards"]):
                board_id = self.add_board(str(args["name"]))
                return self.boards[board_id]
            case ("GET", ["boards", board_id]):
                return self.boards[board_id]
            case ("GET", ["boards", board_id, "lists"]):
                self.boards[board_id]
                wanted = request.query_params.get("filter", "all")
                found = [
                    lst
                    for lst in self.lists.values()
                    if lst["idBoard"] == board_id and (wanted != "open" or not lst["closed"])
                ]
                return sorted(found, key=lambda lst: lst["pos"])
            case ("POST", ["lists"]):
                board_id = str(args["idBoard"])
                self.boards[board_id]
                siblings = [x for x in self.lists.values() if x["idBoard"] == board_id]
                list_id = self._id()
                self.lists[list_id] = {
                    "id": list_id,
                    "name": str(args["name"]),
                    "closed": False,
                    "pos": self._pos(siblings, args.get("pos")),
                    "idBoard": board_id,
                    "subscribed": False,
                }
                return self.lists[list_id]
            case ("GET", ["lists", list_id]):
                return self.lists[list_id]
            case ("GET", ["lists", list_id, "cards"]):
                self.lists[list_id]
                found = [
                    c for c in self.cards.values() if c["idList"] == list_id and not c["closed"]
                ]
                return [self._card_json(c) for c in sorted(found, key=lambda c: c["pos"])]
            case ("GET", ["boards", board_id, "labels"]):
                self.boards[board_id]
                return [x for x in self.labels.values() if x["idBoard"] == board_id]
            case ("POST", ["labels"]):
                board_id = str(args["idBoard"])
                self.boards[board_id]
                label_id = self._id()
                self.labels[label_id] = {
                    "id": label_id,
                    "idBoard": board_id,
                    "name": str(args["name"]),
                    "color": args.get("color"),
                }
                return self.labels[label_id]
            case ("GET", ["boards", board_id, "cards", *_]) | (
                "GET",
                ["boards", board_id, "cards"],
            ):
                self.boards[board_id]
                found = [c for c in self.cards.values() if c["idBoard"] == board_id]
                return [self._card_json(c) for c in found if not c["closed"]]
            case ("POST", ["cards"]):
                return self._create_card(args)
            case ("GET", ["cards", card_id]):
                return self._card_json(self.cards[card_id])
            case ("PUT", ["cards", card_id, "idList"]):
                return self._move_card(self.cards[card_id], str(args["value"]))
            case ("PUT", ["cards", card_id, "pos"]):
                card = self.cards[card_id]
                card["pos"] = float(args["value"])
                return self._card_json(card)
            case ("POST", ["cards", card_id, "actions", "comments"]):
                card = self.cards[card_id]
                return self._action(card, "commentCard", {"text": str(args["text"])})
            case ("GET", ["cards", card_id, "actions"]):
                kinds = request.query_params.get("filter", "commentCard").split(",")
                return [a for a in self.actions.get(card_id, []) if a["type"] in kinds][::-1]
            case ("POST", ["cards", card_id, "checklists"]):
                self.cards[card_id]
                checklist_id = self._id()
                siblings = [c for c in self.checklists.values() if c["idCard"] == card_id]
                self.checklists[checklist_id] = {
                    "id": checklist_id,
                    "name": str(args.get("name") or "Checklist"),
                    "idCard": card_id,
                    "pos": self._pos(siblings, None),
                    "checkItems": [],
                }
                return self.checklists[checklist_id]
            case ("GET", ["cards", card_id, "checklists"]):
                self.cards[card_id]
                return [c for c in self.checklists.values() if c["idCard"] == card_id]
            case ("POST", ["checklists", checklist_id, "checkItems"]):
                checklist = self.checklists[checklist_id]
                checked = args.get("checked") in (True, "true")
                item = {
                    "id": self._id(),
                    "name": str(args["name"]),
                    "state": "complete" if checked else "incomplete",
                    "pos": self._pos(checklist["checkItems"], None),
                    "idChecklist": checklist_id,
                }
                checklist["checkItems"].append(item)
                return item
            case ("GET", ["cards", card_id, "pluginData"]):
                self.cards[card_id]
                return []
            case ("GET", ["cards", card_id, "attachments"]):
                self.cards[card_id]
                return []
        return Response(f"Cannot {method} /1/{'/'.join(parts)}", status_code=404)

    def _create_card(self, args: dict[str, Any]) -> dict[str, Any]:
        trello_list = self.lists[str(args["idList"])]
        siblings = [c for c in self.cards.values() if c["idList"] == trello_list["id"]]
        label_ids = [x for x in str(args.get("idLabels") or "").split(",") if x]
        for label_id in label_ids:
            self.labels[label_id]
        card_id = self._id()
        card = {
            "id": card_id,
            "name": str(args["name"]),
            "desc": str(args.get("desc") or ""),
            "due": None,
            "dueComplete": False,
            "closed": False,
            "url": f"https://trello.com/c/{card_id}",
            "shortUrl": f"https://trello.com/c/{card_id[-8:]}",
            "pos": self._pos(siblings, args.get("pos")),
            "idMembers": [],
            "idLabels": label_ids,
            "idBoard": trello_list["idBoard"],
            "idList": trello_list["id"],
            "idShort": len(self.cards) + 1,
            "dateLastActivity": _now(),
        }
        self.cards[card_id] = card
        action = self._action(card, "createCard", {"list": {"id": trello_list["id"]}})
        self._notify(card["idBoard"], action)
        return self._card_json(card)

    def _move_card(self, card: dict[str, Any], list_id: str) -> dict[str, Any]:
        before, after = self.lists[card["idList"]], self.lists[list_id]
        if before["id"] != after["id"]:
            card["idList"] = list_id
            card["pos"] = self._pos(
                [c for c in self.cards.values() if c["idList"] == list_id and c is not card], None
            )
            card["dateLastActivity"] = _now()
            action = self._action(
                card,
                "updateCard",
                {
                    "listBefore": {"id": before["id"], "name": before["name"]},
                    "listAfter": {"id": after["id"], "name": after["name"]},
                    "old": {"idList": before["id"]},
                },
            )
            self._notify(card["idBoard"], action)
        return self._card_json(card)

    def move_card(self, card_id: str, list_name: str) -> None:
        """Play a person dragging a card in the Trello UI (sends the webhook like Trello)."""
        card = self.cards[card_id]
        self._move_card(card, self.list_named(card["idBoard"], list_name)["id"])

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE"]
        return Starlette(routes=[Route("/1/{path:path}", self._route, methods=methods)])
