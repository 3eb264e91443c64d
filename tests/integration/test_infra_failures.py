"""Parts that fail to start say why, with the tail of their log and where to look further."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from app.pgcluster import Cluster, ClusterError
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import free_port
from temporal.devserver import DevServer, DevServerError


def test_postgres_on_a_taken_port_names_the_port_and_setting(settings: Settings) -> None:
    # A state dir inside the project: as root the server user must be able to reach it.
    state = PROJECT_ROOT / ".factorylm" / f"test-{uuid.uuid4().hex[:6]}"
    try:
        cluster = Cluster.from_settings(settings.model_copy(update={"state_dir": state}))
        with pytest.raises(ClusterError, match=rf"port {settings.pg_port} .*FACTORYLM_PG_PORT"):
            cluster.start()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_temporal_that_cannot_start_shows_its_log(settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(
        update={
            "state_dir": tmp_path,
            "temporal_address": f"127.0.0.1:{free_port()}",
            "temporal_ui_port": free_port(),
        }
    )
    (tmp_path / "temporal" / "temporal.db").mkdir(parents=True)  # a directory where the DB goes
    with pytest.raises(DevServerError) as err:
        DevServer(s).start(timeout_s=30)
    message = str(err.value)
    assert "did not start" in message and "last lines of" in message
    assert "look further: less" in message and str(tmp_path / "log" / "temporal.log") in message
