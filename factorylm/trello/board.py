"""The Monkey's board through py-trello: lists and labels, cards in and out, comments.

py-trello is synchronous (requests); callers in the event loop run these methods in a
thread. Its `http_service=` takes a requests.Session: ours sets a timeout on every call and,
when a base URL is configured, sends Trello's hosts to it (tests and the demo use a local fake).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from trello import TrelloClient
from trello.board import Board
from trello.card import Card
from trello.exceptions import ResourceUnavailable, Unauthorized
from trello.label import Label
from trello.trellolist import List

from factorylm.models.monkey import BACKLOG, LABELS, LISTS, SprintCard
from factorylm.settings import Settings
from factorylm.trello.cards import estimated_tokens, render_description, success_checks
from factorylm.trello.plan import PlanCard

_TRELLO_ORIGINS = ("https://api.trello.com", "https://trello.com")
# Every comment the Monkey writes starts with this; the others on a card are people's.
MONKEY_MARK = "FactoryLM Monkey"
_FEEDBACK_LIMIT = 4000


class TrelloError(RuntimeError):
    """Trello refused or failed; the message names the call and what to check."""


class TrelloNotConfigured(TrelloError):
    pass


class TrelloSession(requests.Session):
    def __init__(self, base_url: str = "", timeout_s: float = 30.0) -> None:
        super().__init__()
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s

    def request(
        self, method: str, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        target = url.decode() if isinstance(url, bytes) else url
        if self._base:
            for origin in _TRELLO_ORIGINS:
                if target.startswith(origin + "/"):
                    target = self._base + target[len(origin) :]
                    break
        kwargs.setdefault("timeout", self._timeout_s)
        return super().request(method, target, *args, **kwargs)


def trello_client(settings: Settings) -> TrelloClient:
    if not settings.trello_api_key or settings.trello_token is None:
        raise TrelloNotConfigured(
            "Trello is not configured: set FACTORYLM_TRELLO_API_KEY and FACTORYLM_TRELLO_TOKEN "
            "(https://trello.com/power-ups/admin → API key, then generate a token)"
        )
    # Without OAuth py-trello sends api_secret as the `token` query parameter: that is the
    # user token Trello's key/token authentication expects.
    return TrelloClient(
        api_key=settings.trello_api_key,
        api_secret=settings.trello_token.get_secret_value(),
        http_service=TrelloSession(settings.trello_base_url),
    )


@dataclass(frozen=True)
class BoardSetup:
    board_id: str
    lists_added: list[str]
    labels_added: list[str]


class TrelloBoard:
    def __init__(self, client: TrelloClient, board_id: str) -> None:
        if not board_id:
            raise TrelloNotConfigured(
                "no Trello board: set FACTORYLM_TRELLO_BOARD_ID (run `factorylm trello init` "
                "to create one)"
            )
        self._client = client
        self.board_id = board_id
        self._board = Board(client=client, board_id=board_id)
        self._lists: dict[str, List] = {}
        self._labels: dict[str, Label] = {}

    @classmethod
    def from_settings(cls, settings: Settings, board_id: str | None = None) -> TrelloBoard:
        return cls(trello_client(settings), board_id or settings.trello_board_id)

    @classmethod
    def create(cls, settings: Settings, name: str) -> TrelloBoard:
        client = trello_client(settings)
        board = _call("create the board", client.add_board, name, default_lists=False)
        return cls(client, board.id)

    # -- structure -------------------------------------------------------------------------

    def ensure_structure(self) -> BoardSetup:
        """Add whatever lists and labels the Monkey needs and the board lacks; never removes."""
        lists = {lst.name: lst for lst in _call("read lists", self._board.list_lists, "open")}
        lists_added = []
        for name in LISTS:
            if name not in lists:
                lists[name] = _call(f"add list {name}", self._board.add_list, name, "bottom")
                lists_added.append(name)
        labels = {label.name: label for label in _call("read labels", self._board.get_labels)}
        labels_added = []
        for name, colour in LABELS.items():
            if name not in labels:
                labels[name] = _call(f"add label {name}", self._board.add_label, name, colour)
                labels_added.append(name)
        self._lists, self._labels = lists, labels
        return BoardSetup(self.board_id, lists_added, labels_added)

    def _list(self, name: str) -> List:
        if name not in self._lists:
            self._lists = {
                lst.name: lst for lst in _call("read lists", self._board.list_lists, "open")
            }
        if name not in self._lists:
            raise TrelloError(
                f"board {self.board_id} has no list {name!r}: run `factorylm trello init`"
            )
        return self._lists[name]

    def _label(self, name: str) -> Label:
        if name not in self._labels:
            self._labels = {label.name: label for label in _call("labels", self._board.get_labels)}
        if name not in self._labels:
            raise TrelloError(
                f"board {self.board_id} has no label {name!r}: run `factorylm trello init`"
            )
        return self._labels[name]

    # -- cards -----------------------------------------------------------------------------

    def cards(self, list_name: str) -> list[SprintCard]:
        trello_list = self._list(list_name)
        found = _call(f"read cards of {list_name}", trello_list.list_cards, "open", None, {})
        return [self._sprint_card(card) for card in found]

    def _sprint_card(self, card: Card) -> SprintCard:
        items: list[str] = []
        for checklist in _call(f"read checklists of {card.name}", lambda: card.checklists):
            items += [str(item["name"]) for item in checklist.items]
        description = card.desc or ""
        return SprintCard(
            id=card.id,
            name=card.name,
            description=description,
            labels=[label.name for label in card.labels],
            pos=float(card.pos),
            checklist=items,
            estimated_tokens=estimated_tokens(description),
            success_checks=success_checks(description),
            url=getattr(card, "url", "") or "",
            short_id=(getattr(card, "shortUrl", "") or "").rstrip("/").rsplit("/", 1)[-1],
        )

    def card(self, card_id: str) -> SprintCard:
        found = _call(f"read card {card_id}", self._client.get_card, card_id)
        return self._sprint_card(found)

    def feedback(self, card_id: str) -> list[str]:
        """People's comments since the Monkey's last one (oldest first, bounded): what a
        reviewer said when sending the card back."""
        card = Card(self._board, card_id)
        comments = _call(f"read comments of {card_id}", card.fetch_comments, True)
        texts = [str((c.get("data") or {}).get("text") or "") for c in comments]
        since: list[str] = []
        for text in texts:
            if text.startswith(MONKEY_MARK):
                since = []
            elif text.strip():
                since.append(text.strip())
        joined, kept = 0, list[str]()
        for text in reversed(since):
            joined += len(text)
            if joined > _FEEDBACK_LIMIT:
                break
            kept.insert(0, text)
        return kept

    def card_names(self) -> set[str]:
        cards = _call("read cards", self._board.open_cards)
        return {card.name for card in cards}

    def add_card(self, card: PlanCard, list_name: str = BACKLOG) -> str:
        trello_list = self._list(list_name)
        labels = [self._label(name) for name in card.labels]
        created = _call(
            f"create card {card.name}",
            trello_list.add_card,
            card.name,
            render_description(card.description, card.estimated_tokens, card.success_checks),
            labels,
            position="bottom",
        )
        if card.checklist:
            _call(
                f"add checklist to {card.name}", created.add_checklist, "Checklist", card.checklist
            )
        return str(created.id)

    def import_plan(self, cards: list[PlanCard]) -> tuple[list[str], list[str]]:
        """Create the plan's cards in Backlog; a card whose name is already on the board is
        skipped, so importing the same plan twice adds nothing."""
        existing = self.card_names()
        added, skipped = [], []
        for card in cards:
            if card.name in existing:
                skipped.append(card.name)
                continue
            self.add_card(card)
            added.append(card.name)
        return added, skipped

    def move(self, card_id: str, list_name: str) -> None:
        target = self._list(list_name)
        _call(
            f"move card {card_id} to {list_name}", Card(self._board, card_id).change_list, target.id
        )

    def comment(self, card_id: str, text: str) -> None:
        # Trello caps comments at 16 384 characters.
        _call(f"comment on card {card_id}", Card(self._board, card_id).comment, text[:16000])

    def counts(self) -> dict[str, int]:
        return {name: len(self.cards(name)) for name in LISTS if name in self._all_lists()}

    def _all_lists(self) -> set[str]:
        self._lists = {lst.name: lst for lst in _call("read lists", self._board.list_lists, "open")}
        return set(self._lists)


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Unauthorized as exc:
        raise TrelloError(
            f"Trello refused to {what}: check FACTORYLM_TRELLO_API_KEY / FACTORYLM_TRELLO_TOKEN "
            f"({exc})"
        ) from exc
    except ResourceUnavailable as exc:
        raise TrelloError(f"Trello could not {what}: {exc}") from exc
    except requests.RequestException as exc:
        raise TrelloError(f"Trello unreachable while trying to {what}: {exc}") from exc
