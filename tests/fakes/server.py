"""Local fake HTTP servers for the tests: the product's LocalServer (dev/fakes/server.py)
under the tests' name, and the scripted replies the LLM fakes answer with."""

from __future__ import annotations

from dev.fakes.scripted import Reply, Script
from dev.fakes.server import LocalServer as FakeServer

__all__ = ["FakeServer", "Reply", "Script"]
