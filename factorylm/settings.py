"""Runtime settings, read from FACTORYLM_* environment variables (and an optional .env file).

Every process (ingest, workers, API, CLI) builds its settings here, so a malformed value fails
at start with the variable's name and the expected form instead of deep inside a connection.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it and the expected form."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACTORYLM_", env_file=".env", extra="ignore", validate_default=True
    )

    # Where the project keeps its own state: Postgres cluster, Temporal SQLite, logs.
    state_dir: Path = Field(default=PROJECT_ROOT / ".factorylm")
    cache_dir: Path = Field(default=Path.home() / ".cache" / "factorylm")

    # PostgreSQL (TimescaleDB + pgvector). The embedded cluster listens on loopback only.
    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=54329, ge=1, le=65535)
    pg_user: str = "postgres"
    pg_password: SecretStr | None = None
    pg_database: str = "factorylm"

    # Temporal.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "factorylm"
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    temporal_version: str = "1.5.1"
    # Client security for a Temporal server outside this machine (docs/security.md): mTLS
    # (the server's CA, this client's certificate and key) and/or an API key. Empty: plain
    # TCP, as the embedded dev server on loopback speaks.
    temporal_tls_ca: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_server_name: str = ""
    temporal_api_key: SecretStr | None = None
    # Payload encryption (AES-256-GCM): "KEYID:BASE64KEY" pairs, comma-separated; the first
    # encrypts, every one decrypts, so keys rotate by putting a new one first.
    payload_keys: SecretStr | None = None
    task_queue: str = "factorylm-agents"
    # Each site's edge worker serves `<plc_task_queue>-<site>` (edge_queue).
    plc_task_queue: str = "factorylm-plc-edge"
    # The site an edge process serves (`factorylm edge --site`, `ingest`, `worker --queue
    # plc-edge`); unset: the plant file's only site. The central processes serve all sites.
    site: str = ""

    # Plant description: PLCs, metrics, action catalog.
    plant_file: Path = Field(default=PROJECT_ROOT / "config" / "plant.yaml")

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # A bootstrap admin token (optional): per-client tokens are made with `factorylm tokens`.
    api_token: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"

    # Photo intake (docs/photos.md). Photos are stored outside Temporal; empty dir: state_dir/photos.
    photo_store: Literal["filesystem", "s3"] = "filesystem"
    photo_dir: Path | None = None
    photo_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Decoded size: a 48-megapixel phone photo fits; a decompression bomb does not.
    photo_max_pixels: int = Field(default=50_000_000, ge=1_000_000)
    # Photos decoded at once (each can take hundreds of MB while decoding).
    photo_decode_concurrency: int = Field(default=2, ge=1)
    # How long a photo of an unidentified machine waits for "which machine is this?".
    photo_asset_wait_s: float = Field(default=3600.0, gt=0)
    # Gemini attempts per photo before Claude is asked; below this confidence a person reviews.
    photo_gemini_attempts: int = Field(default=2, ge=1, le=5)
    photo_review_below_confidence: float = Field(default=0.4, ge=0, le=1)

    # WhatsApp through Twilio. Without an account SID and auth token messages go to the log.
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr | None = None
    twilio_whatsapp_from: str = "whatsapp:+14155238886"
    # Empty means Twilio's own API; the demo and tests point it at a local fake.
    twilio_api_base_url: str = ""
    # Content template (approved by WhatsApp) used outside the 24-hour session window.
    twilio_approval_template_sid: str = ""
    # An SMS-capable Twilio number ("+1555…"): a WhatsApp message that fails goes to the
    # person's SMS number from it (docs/approvals.md). Empty: no SMS fallback.
    twilio_sms_from: str = ""
    # One Twilio API call's limit: a call that times out may still have been sent (counted).
    twilio_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # How long the workflow waits for the technician's outcome reply after the work order.
    outcome_wait_hours: float = Field(default=72.0, gt=0)

    # Work orders: the built-in tables, or Atlas CMMS over its REST API.
    cmms: Literal["builtin", "atlas"] = "builtin"
    atlas_url: str = ""
    atlas_email: str = ""
    atlas_password: SecretStr | None = None
    # A FactoryLM asset (PLC id) with no Atlas asset of that name: create one (true) or open the
    # work order without an asset (false, the default: assets are usually curated in Atlas).
    atlas_create_assets: bool = False

    # People allowed to approve risky actions, as channel addresses ("whatsapp:+15551230001").
    # The order is the escalation order: the first is on duty, the second the backup.
    # None by default: a plant names its own people (the demo uses a fictional 555-01xx number).
    approvers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    approval_timeout_s: float = Field(default=300.0, gt=0)
    # On-call roster and escalation chains (factorylm/roster.py, docs/approvals.md), a YAML
    # file kept beside the plant file; unset: the approvers above are the roster.
    roster_file: Path | None = None
    # How long a given approval may still be acted on: after it the edge refuses the write
    # (an approved shutdown must not run hours later, when the edge worker comes back).
    approval_validity_s: float = Field(default=600.0, gt=0)

    # Drift detection (streaming, in the ingest process).
    drift_window_s: float = Field(default=300.0, gt=0)
    drift_threshold_sigma: float = Field(default=2.0, gt=0)
    drift_clear_sigma: float = Field(default=1.5, gt=0)
    # 60 s: a 5-minute mean that crosses 2σ for less than a minute is the noise's own wander
    # (autocorrelated noise, the daily cycle); steps are the CUSUM's, seconds (docs/drift.md).
    drift_on_delay_s: float = Field(default=60.0, ge=0)
    # A trend forecast to reach 4σ or a hard limit within this many seconds opens a
    # low-severity alarm (and so a low-priority work order) before any detector fires.
    # 0 turns that off; forecasts then only ride along with alarms and GET /forecasts.
    drift_forecast_horizon_s: float = Field(default=0.0, ge=0)

    # Alarm management (ISA-18.2, docs/operations.md "Alarm management"). A flood: more than
    # `alarm_flood_alarms` alarms within `alarm_flood_window_s` on the site (0: never); its
    # alarms are then listed in one grouped message every `alarm_flood_gather_s` instead of
    # one each. Chattering: more than `alarm_chatter_raises` raises of one alarm within
    # `alarm_chatter_window_s` flag it as a bad actor (0: never). SHELVE lasts at most
    # `alarm_shelve_max_s` (a shift).
    alarm_flood_alarms: int = Field(default=10, ge=0)
    alarm_flood_window_s: float = Field(default=600.0, gt=0)
    alarm_flood_gather_s: float = Field(default=60.0, gt=0)
    alarm_chatter_raises: int = Field(default=10, ge=0)
    alarm_chatter_window_s: float = Field(default=3600.0, gt=0)
    alarm_shelve_max_s: float = Field(default=8 * 3600.0, gt=0)

    # Baselines: a Temporal Schedule recomputes them from the last window of samples.
    baseline_every_s: float = Field(default=3600.0, ge=10)
    baseline_window_hours: float = Field(default=48.0, gt=0)
    baseline_min_samples: int = Field(default=100, ge=2)

    # Data lifecycle (a Temporal Schedule): raw samples are rolled up into 1-minute rows, kept
    # for years, and dropped by day-chunks after `raw_retention_days`. At 10 000 samples/s a
    # day of raw samples is ~0.9 billion rows, so retention is what keeps the disk bounded.
    raw_retention_days: float = Field(default=14.0, ge=1.0)
    rollup_lookback_minutes: int = Field(default=120, ge=0)
    lifecycle_every_s: float = Field(default=900.0, ge=60)

    # Operations: the health monitor's period, the daily summary's local time and zone.
    health_every_s: float = Field(default=300.0, ge=10)
    daily_summary_at: str = Field(default="07:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    plant_timezone: str = "UTC"
    # Grafana (production compose): alert messages link to dashboards filtered to the event.
    grafana_url: str = ""

    # Ingest.
    batch_max_rows: int = Field(default=5000, ge=1)
    batch_max_delay_s: float = Field(default=1.0, gt=0)
    buffer_max_rows: int = Field(default=1_000_000, ge=1)
    # Store-and-forward (ingest/spool.py, docs/operations.md): samples PostgreSQL cannot take
    # go to local disk and are backfilled when it is back. The directory defaults to
    # state_dir/spool/<database>; each ingest needs its own (it is locked). A kill -9 loses at
    # most `spool_fsync_s` of spooled samples; past `spool_max_bytes` the oldest go, counted.
    spool_enabled: bool = True
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    spool_fsync_s: float = Field(default=1.0, gt=0, le=60)

    # Embedding model directory (ONNX all-MiniLM-L6-v2); empty means fastembed's download.
    embedding_model_dir: Path | None = Field(
        default=PROJECT_ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    )
    embedding_batch_size: int = Field(default=16, ge=1)
    # HNSW candidate list for similarity search: higher is better recall, slower (pgvector).
    memory_ef_search: int = Field(default=100, ge=1, le=1000)

    # LLM providers (docs/agents.md). No key at all means the offline rules-based provider.
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-sonnet-4-6"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str | None = None
    gemini_api_version: str = "v1beta"
    gemini_model: str = "gemini-2.5-flash"
    llm_primary: Literal["anthropic", "gemini"] = "anthropic"
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_tokens: int = Field(default=2048, ge=64)

    # The Monkey (docs/monkey.md): token budgets over llm_usage, the Trello board it works from.
    budget_hourly_tokens: int = Field(default=10_000, ge=0)  # 0: no hourly limit
    budget_daily_tokens: int = Field(default=50_000, ge=0)  # 0: no daily limit
    # Per-agent daily limits, e.g. FACTORYLM_BUDGET_AGENT_DAILY_TOKENS='{"monkey": 30000}'.
    budget_agent_daily_tokens: dict[str, int] = Field(default_factory=dict)
    budget_alert_fraction: float = Field(default=0.8, gt=0, le=1)
    trello_api_key: str = ""
    trello_token: SecretStr | None = None
    # The Trello app's secret: Trello signs its webhooks with it.
    trello_app_secret: SecretStr | None = None
    trello_board_id: str = ""
    # Empty means Trello's own API; the demo and tests point py-trello at a local fake.
    trello_base_url: str = ""
    monkey_workflow_id: str = "monkey"
    monkey_report_every_s: float = Field(default=4 * 3600.0, ge=60)
    monkey_idle_poll_s: float = Field(default=300.0, gt=0)
    # The repository the Monkey changes (a local path or a URL it can clone and push to) and
    # the branch its card branches start from and merge into (docs/monkey.md).
    monkey_repo: str = ""
    monkey_base_branch: str = "main"
    # Its clone and worktrees; empty: state_dir/monkey.
    monkey_workspace_dir: Path | None = None
    # Tokens of file contents the prompt may carry (about 4 characters a token).
    monkey_context_tokens: int = Field(default=12_000, ge=500)
    # The largest change (diff or whole files) accepted from the model.
    monkey_max_change_bytes: int = Field(default=200_000, ge=1000)
    # Success checks run under bubblewrap with this PATH, wall-clock timeout and rlimits.
    monkey_check_path: str = "/usr/local/bin:/usr/bin:/bin"
    monkey_check_timeout_s: float = Field(default=60.0, gt=0)
    monkey_check_cpu_s: int = Field(default=60, ge=1)
    monkey_check_memory_mb: int = Field(default=1024, ge=64)
    monkey_check_processes: int = Field(default=64, ge=4)
    monkey_check_file_mb: int = Field(default=16, ge=1)
    monkey_check_uid: int = Field(default=65534, ge=1)

    @field_validator("approvers", mode="before")
    @classmethod
    def _split_approvers(cls, value: object) -> object:
        # Operators write FACTORYLM_APPROVERS=whatsapp:+1...,whatsapp:+1... in env files.
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "anthropic_api_key",
        "anthropic_base_url",
        "gemini_api_key",
        "gemini_base_url",
        "trello_token",
        "trello_app_secret",
        "twilio_auth_token",
        "atlas_password",
        "pg_password",
        "api_token",
        "temporal_api_key",
        "payload_keys",
        "temporal_tls_ca",
        "temporal_tls_cert",
        "temporal_tls_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("photo_dir", "roster_file", "spool_dir", mode="before")
    @classmethod
    def _empty_is_state_dir(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("embedding_model_dir", mode="before")
    @classmethod
    def _empty_is_download(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / "spool" / self.pg_database

    @model_validator(mode="after")
    def _atlas_complete(self) -> Settings:
        if self.cmms == "atlas" and not (
            self.atlas_url and self.atlas_email and self.atlas_password
        ):
            raise ValueError(
                "FACTORYLM_CMMS=atlas needs FACTORYLM_ATLAS_URL, FACTORYLM_ATLAS_EMAIL and "
                "FACTORYLM_ATLAS_PASSWORD"
            )
        return self

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:7233")
        return value

    def edge_queue(self, site: str) -> str:
        """The task queue of one site's edge worker: only it holds that site's catalog."""
        return f"{self.plc_task_queue}-{site}"

    @property
    def pg_dsn(self) -> str:
        return self.dsn_for(self.pg_database)

    def dsn_for(self, database: str) -> str:
        password = reveal(self.pg_password)
        auth = self.pg_user + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{database}"

    @property
    def temporal_ui_url(self) -> str:
        host = self.temporal_address.rpartition(":")[0]
        return f"http://{host}:{self.temporal_ui_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"])
        env = f"FACTORYLM_{field.upper()}"
        lines.append(f"setting {env} ({field}): {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from exc


def reveal(secret: SecretStr | None) -> str:
    """A secret setting's value where a client library needs it ("" when it is unset).
    Secrets stay SecretStr everywhere else, so settings printed or logged never show them."""
    return secret.get_secret_value() if secret is not None else ""


# Values that were ever shipped as defaults or examples: never accepted off loopback.
KNOWN_DEFAULT_SECRETS = frozenset({"dev-token-change-me", "change-me", "changeme", "secret"})
MIN_SECRET_LENGTH = 24


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or 0.0.0.0: reachable from elsewhere


def unsafe_listener(settings: Settings) -> str | None:
    """Why the API must not listen on its configured address, or None. Off loopback, every
    secret it authenticates with must be set and must not be a default."""
    if is_loopback(settings.api_host):
        return None
    where = f"FACTORYLM_API_HOST={settings.api_host} is reachable from other machines"
    token = reveal(settings.api_token)
    if settings.api_token is not None and (
        token.lower() in KNOWN_DEFAULT_SECRETS or len(token) < MIN_SECRET_LENGTH
    ):
        return (
            f"{where}, and FACTORYLM_API_TOKEN is a default or short secret: set a random one "
            f"of at least {MIN_SECRET_LENGTH} characters, or leave it empty and make per-client "
            "tokens with `factorylm tokens add`"
        )
    for name, secret in (
        ("FACTORYLM_TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
        ("FACTORYLM_TRELLO_APP_SECRET", settings.trello_app_secret),
    ):
        if secret is not None and reveal(secret).lower() in KNOWN_DEFAULT_SECRETS:
            return f"{where}, and {name} is a default value: set the real one"
    return None
