"""Worker entrypoints: which task queue runs which workflows and activities."""
