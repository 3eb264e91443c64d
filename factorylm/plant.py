"""The plant description: PLCs, the metrics each one serves, writable setpoints and the action
catalog. Loaded from one YAML file and validated; errors name the file, the PLC and the field.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factorylm.protocols import PROTOCOLS, Protocol

__all__ = ["Protocol"]  # re-exported: the plant file's protocol names


class PlantConfigError(ValueError):
    """The plant file is missing or invalid; the message names the file and the field."""


class Policy(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"
    NEVER = "never"


RegisterType = Literal["u16", "i16", "u32", "i32", "f32"]
# S7 data-block and Logix tag types (the PLC's own names, lower-cased).
PlcDataType = Literal["real", "int", "dint", "bool"]
# OPC UA built-in types a numeric variable may have (the server's names, lower-cased).
OpcUaDataType = Literal[
    "double",
    "float",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "byte",
    "sbyte",
    "boolean",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Baseline(_Strict):
    """A starting baseline for a metric, used until the baseline workflow has computed one."""

    mean: float
    std: float = Field(gt=0)
    # Lag-1 autocorrelation of the samples (an AR(1) φ): CUSUM and EWMA run on the prewhitened
    # sample when it is set, or correlated noise looks like a shift. 0: independent samples.
    phi: float = Field(default=0.0, ge=-0.99, le=0.99)


class Point(_Strict):
    """One addressable value on a PLC. Which address fields apply depends on the protocol."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    unit: str = ""
    # Modbus (written `register:` in the plant file; BaseModel already has a `register`)
    address: int | None = Field(default=None, ge=0, le=65535, alias="register")
    type: RegisterType | PlcDataType | OpcUaDataType = "u16"
    scale: float = 1.0
    word_order: Literal["big", "little"] = "big"
    # S7
    db: int | None = Field(default=None, ge=1)
    offset: int | None = Field(default=None, ge=0)
    bit: int | None = Field(default=None, ge=0, le=7)  # for an S7 bool: DBX offset.bit
    # Logix
    tag: str | None = None
    # OPC UA: the variable's NodeId ("ns=2;s=Line1.Temp") or its browse path from Objects
    # ("2:Line1/2:Temp", namespace index:browse name per step); a data-change deadband in the
    # point's unit (absolute; none: every change) and how often the server samples it.
    node_id: str | None = Field(default=None, min_length=1, max_length=4096)
    browse_path: str | None = Field(default=None, min_length=1, max_length=4096)
    deadband: float | None = Field(default=None, ge=0)
    sampling_interval_ms: int | None = Field(default=None, ge=0)
    # Sparkplug B: the metric's name on the edge node ("Motor/Speed"); the point's name if unset
    metric: str | None = Field(default=None, min_length=1, max_length=256)
    # MQTT JSON: the topic a value arrives on and where it is in the message ("data.temp";
    # numbers index lists: "readings.0.value")
    topic: str | None = Field(default=None, min_length=1, max_length=512)
    json_path: str | None = Field(default=None, min_length=1, max_length=256)

    @property
    def sparkplug_name(self) -> str:
        return self.metric or self.name

    @property
    def register_count(self) -> int:
        return 2 if self.type in ("u32", "i32", "f32") else 1


# The shipped detector defaults were chosen from `factorylm bench detection` (docs/drift.md):
# at a 1 s poll on autocorrelated noise with a daily cycle they find a 6σ step in about a
# second and a 3σ step in ≲ 25 s with well under one false alarm per metric and week. The
# textbook k = 0.5, h = 5 alarms every few minutes at that poll rate.


class Cusum(_Strict):
    """Two-sided CUSUM on the (prewhitened) sample in baseline-σ units: reference k (half the
    shift it is tuned to find, in σ) and decision interval h (in σ). Larger h: fewer false
    alarms, later detection."""

    k: float = Field(default=0.75, ge=0)
    h: float = Field(default=10.0, gt=0)


class Ewma(_Strict):
    """EWMA of the (prewhitened) sample in baseline-σ units: weight λ of the newest sample,
    alarm at L times the EWMA's own standard deviation. Small λ: long memory, sees slow ramps
    and small shifts. The default λ = 1 is a limit on each prewhitened sample: the one jump an
    autocorrelated signal shows at a step, which the CUSUM needs many samples to add up."""

    lam: float = Field(default=1.0, gt=0, le=1, alias="lambda")
    width: float = Field(default=5.5, gt=0, alias="L")


class Stuck(_Strict):
    """A flat line: the value has stayed within tolerance_sigma·σ for after_s seconds, although
    its baseline says it varies."""

    after_s: float = Field(default=120.0, gt=0)
    tolerance_sigma: float = Field(default=0.0, ge=0)


# A PLC polled so slowly that the default flat-line time is few polls gets ten polls instead.
STUCK_MIN_POLLS = 10


class Metric(Point):
    baseline: Baseline | None = None
    drift_threshold_sigma: float | None = Field(default=None, gt=0)
    # Further detectors beside the windowed mean, on by default; `cusum: null` (etc.) in the
    # plant file turns one off for this metric.
    cusum: Cusum | None = Cusum()
    ewma: Ewma | None = Ewma()
    stuck: Stuck | None = Stuck()
    # Hard limits in the metric's unit, whatever the baseline (e.g. a temperature never > 90).
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _limits(self) -> Metric:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Setpoint(Point):
    """A writable point. Bounds are enforced before any write reaches the PLC."""

    min: float
    max: float

    @model_validator(mode="after")
    def _bounds(self) -> Setpoint:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class OpcUa(_Strict):
    """How to reach an OPC UA server: the endpoint's path, its security, the trust list.

    The user name and password are the PLC's `username` and `password_env`."""

    path: str = Field(default="", pattern=r"^(/[^\s]*)?$")  # after host:port, e.g. /server/
    # none, or Basic256Sha256 with signed (sign) or signed and encrypted messages.
    security: Literal["none", "sign", "sign_and_encrypt"] = "none"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: str | None = None  # the client's certificate (PEM or DER)
    private_key: str | None = None  # and its key (PEM or DER, unencrypted)
    # The server certificates (or the CAs that issued them) this client trusts: files or
    # directories of PEM/DER files. A secured connection to any other server is refused.
    trust: list[str] = Field(default_factory=list)
    # Data-change subscriptions (the normal way); false: read every poll_interval_ms.
    subscribe: bool = True

    @model_validator(mode="after")
    def _secured(self) -> OpcUa:
        if self.security != "none" and not (self.certificate and self.private_key and self.trust):
            raise ValueError(
                f"security {self.security} needs certificate, private_key and trust (the "
                "server certificates this client trusts)"
            )
        return self


class Plc(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    # The site the PLC is at: set by the plant file's loader from the site it is listed under
    # (a PLC that names one must name that one).
    site: str = ""
    vendor: str
    protocol: Protocol
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    poll_interval_ms: int = Field(default=1000, ge=10)
    device_id: int = Field(default=1, ge=0, le=247)
    rack: int = Field(default=0, ge=0)
    slot: int = Field(default=1, ge=0)
    # Modbus RTU serial line (the device is `serial_port`, e.g. /dev/ttyUSB0).
    serial_port: str | None = None
    baudrate: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    timeout_ms: int = Field(default=1000, ge=10)
    # MQTT (sparkplug_b, mqtt_json): the broker is host:port. Sparkplug ids of the edge node
    # (and of its device, when the metrics are a device's).
    group: str | None = Field(default=None, pattern=r"^[^/+#]+$")
    edge_node: str | None = Field(default=None, pattern=r"^[^/+#]+$")
    device: str | None = Field(default=None, pattern=r"^[^/+#]+$")
    username: str | None = None
    # The password is a secret: the plant file names the environment variable that holds it.
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    tls: bool = False
    ca_file: str | None = None  # the CA that signed the broker's certificate (system CAs if unset)
    opcua: OpcUa | None = None  # OPC UA: endpoint path, security, trust list
    metrics: list[Metric] = Field(min_length=1)
    setpoints: list[Setpoint] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _stuck_default(cls, data: object) -> object:
        """The default flat-line time is at least STUCK_MIN_POLLS polls of this PLC."""
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
            return data
        poll = data.get("poll_interval_ms", 1000)
        if not isinstance(poll, int | float) or isinstance(poll, bool):
            return data  # the field's own validation says what is wrong
        after = STUCK_MIN_POLLS * poll / 1000
        if after <= Stuck().after_s:
            return data
        metrics = [
            {**m, "stuck": {"after_s": after}} if isinstance(m, dict) and "stuck" not in m else m
            for m in data["metrics"]
        ]
        return {**data, "metrics": metrics}

    @model_validator(mode="after")
    def _addresses(self) -> Plc:
        names = [p.name for p in [*self.metrics, *self.setpoints]]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"point names must be unique, repeated: {', '.join(dupes)}")
        spec = PROTOCOLS[self.protocol]
        plc_problem = spec.check_plc(self)
        if plc_problem:
            raise ValueError(plc_problem)
        if spec.needs_serial_port and not self.serial_port:
            raise ValueError(f"a {self.protocol} PLC needs serial_port (e.g. /dev/ttyUSB0)")
        for point in [*self.metrics, *self.setpoints]:
            missing = spec.missing_address(point)
            if missing:
                raise ValueError(
                    f"point {point.name!r} needs {missing} for protocol {self.protocol}"
                )
            if point.type not in spec.point_types:
                raise ValueError(
                    f"point {point.name!r}: type {point.type!r} is not a {self.protocol} type; "
                    f"use one of {', '.join(sorted(spec.point_types))}"
                )
            problem = spec.check_point(point)
            if problem:
                raise ValueError(f"point {point.name!r}: {problem}")
        for metric in self.metrics:
            # Shorter than one poll it would call every unchanged pair of samples stuck.
            if metric.stuck and metric.stuck.after_s * 1000 < self.poll_interval_ms:
                raise ValueError(
                    f"metrics[{metric.name}].stuck.after_s: {metric.stuck.after_s:g} s is "
                    f"shorter than poll_interval_ms ({self.poll_interval_ms} ms)"
                )
        return self

    @property
    def tcp_port(self) -> int:
        """The configured port, or the protocol's standard one."""
        return self.port or PROTOCOLS[self.protocol].default_port or 502

    def point(self, name: str) -> Point | None:
        for point in [*self.metrics, *self.setpoints]:
            if point.name == name:
                return point
        return None

    def setpoint(self, name: str) -> Setpoint | None:
        return next((s for s in self.setpoints if s.name == name), None)

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)


class ActionKind(StrEnum):
    PLC_WRITE = "plc_write"
    NOTIFY = "notify"
    WORK_ORDER = "work_order"
    PROGRAM_CHANGE = "program_change"


class CatalogAction(_Strict):
    """An action the system may propose. Nothing outside the catalog ever reaches a PLC."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    site: str = ""  # set by the loader, like a PLC's: an action belongs to one site's catalog
    description: str
    kind: ActionKind
    policy: Policy
    plc: str | None = None
    setpoint: str | None = None
    value: float | None = None
    # Which drifting metrics this action answers, and from what magnitude.
    metrics: list[str] = Field(default_factory=list)
    min_sigma: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _shape(self) -> CatalogAction:
        if self.kind is ActionKind.PLC_WRITE and (
            self.plc is None or self.setpoint is None or self.value is None
        ):
            raise ValueError("a plc_write action needs plc, setpoint and value")
        return self


class MqttPublish(_Strict):
    """Where FactoryLM publishes its own events (drift alarms, approvals, PLC writes, work
    orders) for the plant's SCADA or unified namespace: a broker and a topic namespace."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # The topic tree's root ("acme/plant-1"), the plant's name if unset; for Sparkplug, its group.
    namespace: str | None = Field(default=None, pattern=r"^[^+#$][^+#]*$", max_length=200)
    format: Literal["json", "sparkplug"] = "json"
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    tls: bool = False
    ca_file: str | None = None
    interval_ms: int = Field(default=1000, ge=50)  # how often the audit tables are read
    timeout_ms: int = Field(default=5000, ge=100)

    @property
    def id(self) -> str:
        """Names the connection in error messages, as a PLC's id does."""
        return "publisher"

    @property
    def tcp_port(self) -> int:
        return self.port


SITE_NAME = r"^[a-z0-9][a-z0-9-]{0,30}$"
# A single-site plant file's site, when it names none and the plant has no name either.
DEFAULT_SITE = "plant"


def _tagged(items: object, site: str, what: str) -> object:
    """The site's PLCs or actions, each marked with the site (a raw mapping or a model)."""
    if not isinstance(items, list):
        return items  # the field's own validation says what is wrong
    out: list[object] = []
    for item in items:
        if isinstance(item, dict):
            named, label = item.get("site"), item.get("id") or item.get("name") or "?"
        elif isinstance(item, Plc | CatalogAction):
            named, label = item.site, item.id if isinstance(item, Plc) else item.name
        else:
            out.append(item)  # the field's own validation says what is wrong
            continue
        if named not in (None, "", site):
            raise ValueError(f"{what} {label!r} names site {named!r} but is listed under {site!r}")
        if isinstance(item, dict):
            item = {**item, "site": site}
        elif item.site != site:
            item = item.model_copy(update={"site": site})
        out.append(item)
    return out


class Site(_Strict):
    """One site of the plant: its PLCs, its action catalog, who may approve its writes and,
    optionally, its own Trello board. One edge process (`factorylm edge --site NAME`) serves
    one site and holds only this site's catalog, so it cannot write another site's PLCs."""

    name: str = Field(pattern=SITE_NAME)
    plcs: list[Plc] = Field(min_length=1)
    actions: list[CatalogAction] = Field(default_factory=list)
    # Who may approve this site's writes: phone numbers (E.164), or a roster file (a path
    # relative to the plant file). Unset: the deployment's FACTORYLM_APPROVERS/ROSTER_FILE.
    approvers: list[str] | None = None
    roster: Path | None = None
    trello_board: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _mark(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return data
        name = data["name"]
        if not data.get("plcs"):
            raise ValueError(f"site {name} has no PLCs: an empty site serves nothing")
        return {
            **data,
            "plcs": _tagged(data.get("plcs"), name, "PLC"),
            "actions": _tagged(data.get("actions", []), name, "action"),
        }

    @model_validator(mode="after")
    def _references(self) -> Site:
        ids = [p.id for p in self.plcs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"PLC ids must be unique, repeated: {', '.join(dupes)}")
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ValueError("action names must be unique")
        for action in self.actions:
            if action.plc is None:
                continue
            plc = self.plc(action.plc)
            if plc is None:
                raise ValueError(
                    f"action {action.name!r}: unknown PLC {action.plc!r} (not at site {self.name})"
                )
            if action.setpoint is not None:
                sp = plc.setpoint(action.setpoint)
                if sp is None:
                    raise ValueError(
                        f"action {action.name!r}: PLC {action.plc!r} has no setpoint "
                        f"{action.setpoint!r}"
                    )
                if action.value is not None and not sp.min <= action.value <= sp.max:
                    raise ValueError(
                        f"action {action.name!r}: value {action.value} is outside "
                        f"{sp.name} bounds [{sp.min}, {sp.max}]"
                    )
        return self

    def plc(self, plc_id: str) -> Plc | None:
        return next((p for p in self.plcs if p.id == plc_id), None)


# What a site has; a one-site plant file has them at its top level.
_SITE_KEYS = ("plcs", "actions", "approvers", "roster", "trello_board")


class Plant(_Strict):
    """The whole plant: its sites (one, for a plant file without `sites:`), and where the
    product publishes its events. The central stack loads all of it; an edge process only its
    own site (`for_site`)."""

    name: str = "plant"
    sites: list[Site] = Field(min_length=1)
    publish: MqttPublish | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_site(cls, data: object) -> object:
        """A plant file without `sites:` is one site: its PLCs and actions at the top level,
        named by `site:` (the plant's name if unset)."""
        if not isinstance(data, dict) or "sites" in data:
            if isinstance(data, dict):
                stray = [k for k in ("site", *_SITE_KEYS) if k in data]
                if stray:
                    raise ValueError(
                        f"a plant file with sites: lists {', '.join(stray)} under each site, "
                        "not at the top level"
                    )
            return data
        rest = {k: v for k, v in data.items() if k != "site" and k not in _SITE_KEYS}
        site = data.get("site") or data.get("name") or DEFAULT_SITE
        entry = {"name": site, **{k: data[k] for k in _SITE_KEYS if k in data}}
        return {**rest, "sites": [entry]}

    @model_validator(mode="after")
    def _unique(self) -> Plant:
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"site names must be unique, repeated: {', '.join(dupes)}")
        claimed: dict[str, str] = {}
        for site in self.sites:
            for plc in site.plcs:
                other = claimed.setdefault(plc.id, site.name)
                if other != site.name:
                    raise ValueError(
                        f"PLC id {plc.id!r} is claimed by two sites, {other} and {site.name}: "
                        "a PLC id names one PLC in the whole plant"
                    )
        return self

    @property
    def plcs(self) -> list[Plc]:
        """Every PLC of every site."""
        return [p for s in self.sites for p in s.plcs]

    @property
    def actions(self) -> list[CatalogAction]:
        """Every site's catalog; an action's `site` says whose."""
        return [a for s in self.sites for a in s.actions]

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def site(self, name: str) -> Site | None:
        return next((s for s in self.sites if s.name == name), None)

    def for_site(self, name: str) -> Plant:
        """This plant as one site sees it: that site's PLCs and catalog only."""
        site = self.site(name)
        if site is None:
            raise PlantConfigError(
                f"unknown site {name!r}; this plant's sites are {', '.join(self.site_names)}"
            )
        return self.model_copy(update={"sites": [site]})

    @property
    def only_site(self) -> Site:
        """The site of a one-site plant (an edge's view); a many-site plant has no such."""
        if len(self.sites) != 1:
            raise PlantConfigError(
                f"the plant has {len(self.sites)} sites ({', '.join(self.site_names)}): name "
                "one (`factorylm edge --site NAME`, FACTORYLM_SITE)"
            )
        return self.sites[0]

    def plc(self, plc_id: str) -> Plc | None:
        return next((p for s in self.sites for p in s.plcs if p.id == plc_id), None)

    def action(self, name: str, site: str | None = None) -> CatalogAction | None:
        """A catalog action by name: of `site`, or of the only site. Two sites may each have
        an action of one name, so a many-site plant needs the site."""
        sites = [self.site(site)] if site is not None else self.sites
        found = [a for s in sites if s is not None for a in s.actions if a.name == name]
        if len(found) > 1:
            raise PlantConfigError(
                f"action {name!r} is in the catalogs of sites "
                f"{', '.join(a.site for a in found)}: name the site"
            )
        return found[0] if found else None


def _describe(exc: ValidationError, raw: dict[str, object]) -> str:
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        if "sites" not in raw and loc[:2] == ["sites", 0]:
            loc = loc[2:]  # a one-site file: say where it is in the file as written
        where = []
        # Name PLCs and actions by id rather than list index: "plcs[press-1].metrics[2].offset".
        node: object = raw
        for key in loc:
            label = str(key)
            if isinstance(node, list) and isinstance(key, int) and key < len(node):
                item = node[key]
                ident = item.get("id") or item.get("name") if isinstance(item, dict) else None
                label = f"[{ident or key}]"
                node = item
            elif isinstance(node, dict):
                node = node.get(str(key))
            where.append(label)
        path = ".".join(where).replace(".[", "[")
        parts.append(f"{path or '(top level)'}: {err['msg']}")
    return "; ".join(parts)


# libyaml's safe loader where PyYAML was built with it (its wheels are): a 200-PLC plant file
# loads in a tenth of the pure-Python loader's 1.6 s, and the same documents load the same.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# A plant file (or a site's) larger than this is refused: a 200-PLC plant is about 1 MB, and a
# file that never ends (a FIFO, /dev/zero behind a symlink) must not hang or fill the start.
MAX_PLANT_FILE_BYTES = 16 * 1024 * 1024


def _load_yaml(path: Path) -> object:
    """The file's YAML, read at most MAX_PLANT_FILE_BYTES (its size on disk is not trusted:
    a device or a pipe says 0); OSError when it cannot be read."""
    with path.open("rb") as f:
        data = f.read(MAX_PLANT_FILE_BYTES + 1)
    if len(data) > MAX_PLANT_FILE_BYTES:
        raise PlantConfigError(f"{path}: larger than {MAX_PLANT_FILE_BYTES} bytes")
    return yaml.load(data, Loader=_SAFE_LOADER)  # a safe loader, C or Python


def load_plant(path: Path) -> Plant:
    try:
        raw = _load_yaml(path)
    except OSError as exc:
        raise PlantConfigError(f"{path}: cannot read plant file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise PlantConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise PlantConfigError(f"{path}: expected a mapping with 'plcs' and 'actions'")
    if isinstance(raw.get("sites"), list):
        raw = {**raw, "sites": [_site_entry(path, entry) for entry in raw["sites"]]}
    elif isinstance(raw.get("roster"), str):
        raw = {**raw, "roster": str(path.parent / raw["roster"])}
    try:
        plant = Plant.model_validate(raw)
    except ValidationError as exc:
        raise PlantConfigError(f"{path}: {_describe(exc, raw)}") from exc
    return plant


def _site_entry(path: Path, entry: object) -> object:
    """A `sites:` entry as the plant model takes it: a `file:` entry read from its own plant
    file (beside this one), a roster path made relative to the file that names it."""
    if not isinstance(entry, dict):
        return entry
    name = entry.get("name", "?")
    if "file" in entry:
        extra = sorted(set(entry) - {"name", "file"})
        if extra:
            raise PlantConfigError(
                f"{path}: sites[{name}]: a site with file: has everything else in that file "
                f"({', '.join(extra)} found here)"
            )
        site_path = path.parent / str(entry["file"])
        try:
            site_raw = _load_yaml(site_path)
        except OSError as exc:
            raise PlantConfigError(
                f"{path}: sites[{name}]: cannot read site file {site_path} ({exc.strerror})"
            ) from exc
        except yaml.YAMLError as exc:
            raise PlantConfigError(f"{site_path}: not valid YAML ({exc})") from exc
        if not isinstance(site_raw, dict):
            raise PlantConfigError(f"{site_path}: expected a mapping with 'plcs' and 'actions'")
        unknown = sorted(set(site_raw) - {*_SITE_KEYS, "name", "site"})
        if unknown:
            raise PlantConfigError(
                f"{site_path}: a site file has {', '.join(_SITE_KEYS)}; not {', '.join(unknown)}"
            )
        named = site_raw.get("site")
        if named not in (None, name):
            raise PlantConfigError(
                f"{site_path}: names site {named!r} but {path} lists it as {name!r}"
            )
        base = site_path.parent
        entry = {"name": name, **{k: site_raw[k] for k in _SITE_KEYS if k in site_raw}}
    else:
        base = path.parent
    if isinstance(entry.get("roster"), str):
        entry = {**entry, "roster": str(base / entry["roster"])}
    return entry
