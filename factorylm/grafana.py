"""Links into the Grafana dashboards, pre-filtered to a PLC, a metric and a time range."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

PLANT_DASHBOARD = "d/factorylm-plant/plant-health"


def plant_link(
    base_url: str,
    plc_id: str,
    metric: str,
    around: datetime,
    *,
    before: timedelta = timedelta(hours=1),
) -> str | None:
    """The Plant health dashboard for this PLC·metric, from `before` ahead of `around` to 15
    minutes after it; None when no Grafana is configured."""
    if not base_url:
        return None
    start = around - before
    end = around + timedelta(minutes=15)
    query = urlencode(
        {
            "var-plc": plc_id,
            "var-metric": metric,
            "from": int(start.timestamp() * 1000),
            "to": int(end.timestamp() * 1000),
        }
    )
    return f"{base_url.rstrip('/')}/{PLANT_DASHBOARD}?{query}"
