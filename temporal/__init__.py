"""How the Temporal server is obtained (install.sh) and started (devserver.py)."""
