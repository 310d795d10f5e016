"""`IOD_HTTP_THREADS`: the threads an API process runs its blocking request work on (anyio's
default limiter, 40 unless set), set by the app's lifespan in the process's event loop."""

from __future__ import annotations

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
