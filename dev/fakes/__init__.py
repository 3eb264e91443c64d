"""Local stand-ins for hosted services, speaking their documented HTTP APIs.

The official clients talk to these in tests and in `make demo` (no network here); in
production the same clients talk to the real services.
"""
