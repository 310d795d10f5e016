"""What `iod serve` hands uvicorn: options uvicorn knows, taken from the settings."""

from __future__ import annotations

import uvicorn

from iod.cli.processes import uvicorn_options
from iod.infra.config import Settings


def test_the_supervisor_waits_for_a_busy_process_before_it_takes_it_for_hung() -> None:
    defaults = uvicorn_options(Settings())
    assert defaults["timeout_worker_healthcheck"] == 60, "uvicorn's own is 5 s"
    options = uvicorn_options(
        Settings(http_worker_healthcheck_seconds=90, http_keep_alive_seconds=7)
    )
    config = uvicorn.Config("iod.app:app", **options)  # every option is one uvicorn knows
    assert config.timeout_worker_healthcheck == 90
    assert config.timeout_keep_alive == 7
