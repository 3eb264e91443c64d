"""The streaming ingest process: collectors, batch writer, drift detector."""
