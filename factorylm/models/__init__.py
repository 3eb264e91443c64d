"""Domain models passed between the ingest, workflows and activities, one module per feature.

One pydantic model per workflow/activity input and output, serialised by temporalio's pydantic
data converter. They stay small: blobs travel as references, never inline. Import each model
from its feature's module (`factorylm.models.drift`, `factorylm.models.approvals`, …).
"""
