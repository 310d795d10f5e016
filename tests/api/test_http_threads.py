"""`IOD_HTTP_THREADS`: the threads an API process runs its blocking request work on (anyio's
default limiter, 40 unless set), set by the app's lifespan in the process's event loop."""

from __future__ import annotations

import threading
import time

import pytest
from anyio import to_thread
from fastapi.testclient import TestClient

from iod.infra.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"http_threads": 3})


def test_the_default_is_eight() -> None:
    assert Settings().http_threads == 8


def test_the_app_runs_its_blocking_work_on_the_configured_threads(api: TestClient) -> None:
    assert api.portal is not None
    limit = api.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
    assert limit == 3


def test_the_setting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOD_HTTP_THREADS", "0")
    with pytest.raises(ValueError, match="http_threads"):
        Settings()


def test_liveness_answers_while_every_thread_is_busy(api: TestClient) -> None:
    """Requests waiting on a database that drops packets can hold all the threads for
    seconds; /healthz does not need one (a liveness probe must not restart the process)."""
    assert api.portal is not None
    release = threading.Event()
    busy = [api.portal.start_task_soon(to_thread.run_sync, release.wait) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while (
            api.portal.call(lambda: to_thread.current_default_thread_limiter().borrowed_tokens) < 3
        ):
            assert time.monotonic() < deadline, "the threads did not start"
            time.sleep(0.01)
        answer = api.get("/healthz")
        assert answer.status_code == 200
        assert answer.json() == {"status": "ok"}
    finally:
        release.set()
        for future in busy:
            future.result(timeout=10)
