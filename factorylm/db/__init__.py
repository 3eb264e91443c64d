"""Database access: connection helpers and versioned migrations."""
