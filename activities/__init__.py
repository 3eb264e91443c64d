"""Activities: everything that touches the world (database, PLCs, people, LLMs, CMMS)."""
