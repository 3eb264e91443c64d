"""The local Gemini API moved to the product (the demo and benchmarks use it too)."""

from dev.fakes.gemini import fake_gemini, gemini_app

__all__ = ["fake_gemini", "gemini_app"]
