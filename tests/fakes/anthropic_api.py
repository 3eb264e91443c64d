"""The local Anthropic API moved to the product (the demo and benchmarks use it too)."""

from dev.fakes.anthropic import anthropic_app, fake_anthropic

__all__ = ["anthropic_app", "fake_anthropic"]
