"""The OPC UA collector: data-change subscriptions (the way OPC UA delivers data), polling as
the fallback, and reconnection after the server goes away.

One subscription per PLC, publishing every poll_interval_ms, one monitored item per metric
sampled at its sampling_interval_ms (the poll interval unless the plant file says) with its
deadband. A notification's value is a sample at its source timestamp (the server's, when the
source gives none); a Bad or Uncertain status is bad quality for that metric, counted, never a
sample. A metric whose node is unknown or of another type than the plant file says is bad
quality from the start, logged once with its node; the others are collected.

When the connection drops (asyncua's watchdog reads the server state every second) or the
server stops publishing, the collector counts the failure, closes, and reconnects with backoff;
each connection creates its subscription and items afresh, so a restarted server, which has
forgotten them, delivers again without a restart of the ingest. A server that refuses
subscriptions, or a plant file that says `subscribe: false`, is polled instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from factorylm.drivers import PlcDriver, PlcError, driver_for
from factorylm.drivers.opcua import OpcUaDriver, sample
from factorylm.plant import Plc
from ingest.collector import CollectorBase, SampleSink

log = logging.getLogger(__name__)

KEEPALIVE_S = 1.0  # the server says "nothing changed" at least this often
# Subscription refusals after which the collector polls instead.
NO_SUBSCRIPTIONS = {
    StatusCodes.BadServiceUnsupported,
    StatusCodes.BadTooManySubscriptions,
    StatusCodes.BadNotSupported,
}


class _Lost(Exception):
    """The connection or the subscription is gone; the message says how."""


class _Delivery(Subscription):
    """asyncua's subscription, with the publish responses handled here in one pass instead of
    one task per changed value (5 000 items every 100 ms would be 50 000 tasks a second)."""

    def __init__(
        self, client: Client, params: ua.CreateSubscriptionParameters, owner: OpcUaCollector
    ):
        super().__init__(client.uaclient.session, params, handler=_NoHandler())
        self.owner = owner

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()
        try:
            self.owner._published(publish_result)
        except Exception as exc:
            # Whatever a server sends must not break the publish loop or the ingest: this
            # connection is dropped and the next one starts clean.
            log.exception("PLC %s: a publish response could not be handled", self.owner.plc.id)
            self.owner._lose(f"a publish response could not be handled ({exc!r})")


class _NoHandler:
    """asyncua needs a handler to take the callback path; _Delivery never calls it."""

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        raise AssertionError("_Delivery handles publish responses itself")


class OpcUaCollector(CollectorBase):
    def __init__(
        self,
        plc: Plc,
        sink: SampleSink,
        *,
        driver: PlcDriver | None = None,
        max_backoff_s: float = 30.0,
        on_change: Callable[[CollectorBase], None] | None = None,
        phase_s: float = 0.0,
    ) -> None:
        super().__init__(
            plc, sink, max_backoff_s=max_backoff_s, on_change=on_change, phase_s=phase_s
        )
        self._driver = cast(OpcUaDriver, driver or driver_for(plc))
        self._handles: dict[int, tuple[str, ua.VariantType]] = {}
        self._nodes: dict[str, str] = {}  # metric -> its NodeId, for the log lines
        self._lost: asyncio.Event = asyncio.Event()
        self._lost_why = ""
        self._sequence: int | None = None
        self._last_publish = 0.0  # time.monotonic() of the last publish response or poll
        self.subscribed = False  # this connection receives data changes (False: polls)
        self.connections = 0  # successful connections since start
        self.notifications = 0  # values received (good or bad)

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = max(self._period, 1.0)
        try:
            while True:
                try:
                    await self._connect()
                    backoff = max(self._period, 1.0)
                    if self.subscribed:
                        await self._receive()
                    else:
                        await self._poll()
                except (PlcError, _Lost) as exc:
                    error = str(exc)
                except (OSError, TimeoutError, ConnectionError, UaError) as exc:
                    error = f"PLC {self.plc.id}: {self._driver.url}: {exc!r}"
                self._failed(error, backoff)
                await self._driver.close()
                self.subscribed = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        finally:
            await self._driver.close()

    async def _connect(self) -> None:
        self._lost = asyncio.Event()
        self._driver.on_lost = self._connection_lost
        await self._driver.connect()
        self.connections += 1
        for name, why in self._driver.unusable.items():
            if self.plc.metric(name) is not None:
                self._bad(name, why)
        settings = self.plc.opcua
        if settings is not None and not settings.subscribe:
            return
        try:
            await self._subscribe()
        except UaStatusCodeError as exc:
            if exc.code not in NO_SUBSCRIPTIONS:
                raise
            log.warning(
                "PLC %s: %s refuses subscriptions (%s): polling every %d ms instead",
                self.plc.id,
                self._driver.url,
                exc,
                self.plc.poll_interval_ms,
            )

    async def _connection_lost(self, exc: Exception) -> None:
        self._lose(f"connection lost ({exc!r})")

    def _lose(self, why: str) -> None:
        if not self._lost.is_set():
            self._lost_why = why
            self._lost.set()

    async def _subscribe(self) -> None:
        client = self._driver.client
        assert client is not None
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = self.plc.poll_interval_ms
        keepalive = max(1, math.ceil(KEEPALIVE_S * 1000 / self.plc.poll_interval_ms))
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = keepalive * 10
        params.MaxNotificationsPerPublish = 0  # no limit: a publish carries every change
        params.PublishingEnabled = True
        params.Priority = 0
        sub = _Delivery(client, params, self)
        self._handles.clear()
        self._sequence = None
        await sub.init()
        requests = []
        names = []
        for metric in self.plc.metrics:
            resolved = self._driver.resolved.get(metric.name)
            if resolved is None:
                continue
            sampling = metric.sampling_interval_ms
            if sampling is None:
                sampling = self.plc.poll_interval_ms
            # Enough queue for every sample taken between two publishes.
            queue = max(1, math.ceil(self.plc.poll_interval_ms / max(sampling, 1)))
            mfilter = None
            if metric.deadband is not None:
                mfilter = ua.DataChangeFilter()
                mfilter.Trigger = ua.DataChangeTrigger.StatusValue
                mfilter.DeadbandType = ua.DeadbandType.Absolute
                mfilter.DeadbandValue = metric.deadband
            request = sub._make_monitored_item_request(
                resolved.node,
                AttributeIds.Value,
                mfilter,
                queue,
                ua.MonitoringMode.Reporting,
                ua.Double(sampling),
            )
            requests.append(request)
            names.append((metric.name, resolved.variant_type))
            handle = request.RequestedParameters.ClientHandle
            self._handles[handle] = (metric.name, resolved.variant_type)
            self._nodes[metric.name] = resolved.node.nodeid.to_string()
        results = await sub.create_monitored_items(requests) if requests else []
        for (name, _vt), result in zip(names, results, strict=True):
            if isinstance(result, ua.StatusCode):
                self._bad(name, f"the server refused to monitor it ({result.name})")
        self.subscribed = True
        log.info(
            "PLC %s: subscribed to %d of %d metrics at %s (publishing every %d ms)",
            self.plc.id,
            sum(1 for r in results if not isinstance(r, ua.StatusCode)),
            len(self.plc.metrics),
            self._driver.url,
            self.plc.poll_interval_ms,
        )

    async def _receive(self) -> None:
        """Wait for the connection to be lost; notifications arrive through _published.
        Silence longer than the subscription's keep-alive is a loss too."""
        silent_after = max(3 * KEEPALIVE_S, 3 * self._period)
        last = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                pass
            if self._lost.is_set():
                raise _Lost(f"PLC {self.plc.id}: {self._driver.url}: {self._lost_why}")
            last = max(last, self._last_publish)
            if time.monotonic() - last > silent_after:
                raise _Lost(
                    f"PLC {self.plc.id}: {self._driver.url} sent nothing for "
                    f"{time.monotonic() - last:.0f} s (no data, no keep-alive)"
                )

    async def _poll(self) -> None:
        """The fallback: read every metric every poll_interval_ms, on a fixed cadence."""
        next_at = time.monotonic()
        while True:
            if self._lost.is_set():
                raise _Lost(f"PLC {self.plc.id}: {self._driver.url}: {self._lost_why}")
            mono = time.monotonic()
            self.lateness.append(mono - next_at)
            values = await self._driver.read_values(list(self.plc.metrics))
            good: dict[datetime, dict[str, float]] = {}
            for name, (value, why, when) in values.items():
                self.notifications += 1
                if value is None:
                    resolved = self._driver.resolved.get(name)
                    where = f"node {resolved.node.nodeid.to_string()}: " if resolved else ""
                    self._bad(name, f"{where}{why or 'not good'}")
                else:
                    good.setdefault(when, {})[name] = value
            self._last_publish = time.monotonic()
            for when, batch in sorted(good.items()):
                self._deliver(when, mono, batch)
            next_at += self._period
            delay = next_at - time.monotonic()
            if delay < 0:
                skipped = int(-delay // self._period) + 1
                self.missed += skipped
                next_at += skipped * self._period
                delay = next_at - time.monotonic()
            await asyncio.sleep(delay)

    # -- notifications ------------------------------------------------------------------------
    def _published(self, result: ua.PublishResult) -> None:
        """One publish response: data changes become samples grouped by timestamp, bad ones
        are counted, a keep-alive is a sign of life, a status change ends the connection."""
        mono = time.monotonic()
        self._last_publish = mono
        message = result.NotificationMessage
        data = message.NotificationData
        if not data:
            # A keep-alive: nothing changed, and the server is there. After a failure it ends
            # the episode even when no value has changed since (a deadband, a quiet machine).
            if self.consecutive_errors:
                self._deliver(datetime.now(UTC), mono, {})
            else:
                self.last_good = datetime.now(UTC)
            return
        seq = int(message.SequenceNumber)
        if self._sequence is not None and seq > self._sequence + 1:
            self.missed += seq - self._sequence - 1  # notifications the server sent and lost
        self._sequence = seq
        now = datetime.now(UTC)
        good: dict[datetime, dict[str, float]] = {}
        for notification in data:
            if isinstance(notification, ua.StatusChangeNotification):
                self._lose(f"the subscription ended ({notification.Status.name})")
                continue
            if not isinstance(notification, ua.DataChangeNotification):
                continue
            for item in notification.MonitoredItems:
                known = self._handles.get(item.ClientHandle)
                if known is None:
                    continue
                name, vt = known
                self.notifications += 1
                value, why, when = sample(item.Value, vt, now)
                if value is None:
                    self._bad(name, f"node {self._nodes.get(name, '?')}: {why or 'not good'}")
                    continue
                good.setdefault(when, {})[name] = value
        for when, batch in sorted(good.items()):
            self.lateness.append((now - when).total_seconds())
            self._deliver(when, mono, batch)
