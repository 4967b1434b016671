"""The contract of an interrupted run_plan: cancelling its task raises Interrupted(rows)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from scanner.engine import Interrupted, build_plan, run_plan
from scanner.models import Depth, Target
from scanner.probes.base import Settings
from scanner.profiles import load_catalogue
from tests.cli.test_interrupted_scan import _PROFILE
from tests.lab.hostile import hostile_server


async def test_cancelling_run_plan_raises_interrupted_with_every_finished_check(tmp_path: Path) -> None:
    (tmp_path / "slow-lab.yaml").write_text(_PROFILE)  # a tcp row that answers, an http row that never does
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    with hostile_server("silent", lifetime=60) as (_, silent_port):
        settings = Settings(timeout=30.0, retries=0, values={"ports": {
            "lab-open-port": listener.getsockname()[1], "lab-slow-port": silent_port}})  # fmt: skip
        catalogue = load_catalogue([tmp_path])
        rows = list(catalogue.profiles["slow-lab"].rows)
        plan = build_plan(rows, {"monitored-computers": [Target("monitored-computers", "127.0.0.1")]},
                          depth=Depth.PROTOCOL, settings=settings)  # fmt: skip
        finished = asyncio.Event()
        task = asyncio.ensure_future(run_plan(plan, settings, on_check=lambda _r: finished.set()))
        await finished.wait()  # the open port's check is done; the silent one never will be
        task.cancel()
        with pytest.raises(Interrupted) as err:
            await task
    listener.close()
    (row,) = err.value.rows  # the http row never finished: left out, not invented
    assert row.row.id == "fast-open" and [c.status.value for c in row.checks] == ["pass"]
