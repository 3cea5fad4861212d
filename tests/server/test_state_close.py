"""`KeyturnState.close`: pollers stop, counts are flushed, the database is released."""

from __future__ import annotations

from pathlib import Path

from keyturn.server import KeyturnState
from keyturn.testing import FakeClock

from .conftest import make_settings


async def test_close_stops_the_pollers_and_flushes_the_tallies(
    sqlite_database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    state = await KeyturnState.open(
        make_settings(sqlite_database_url, tmp_path), background=True, clock=clock
    )
    tasks = state.background_tasks
    assert len(tasks) == 2
    assert not any(task.done() for task in tasks)
    tally = state.metrics.tally("public", "GET", "/t", 200)
    tally.add(0.001)

    await state.close()

    assert all(task.cancelled() for task in tasks)
    assert state.background_tasks == ()
    labels = {"listener": "public", "method": "GET", "route": "/t", "status": "200"}
    assert state.metrics.registry.get_sample_value("keyturn_http_requests_total", labels) == 1
    assert state.storage.engine.sync_engine.pool.checkedout() == 0
