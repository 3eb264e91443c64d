"""Deterministic workflow code only: imports models, never I/O libraries."""
