"""The Starlette API: approvals, health, work orders; webhooks arrive here."""
