"""Request limits (spec 3.7): the leaky bucket per app or webhook, and the operating-time limit."""

from __future__ import annotations

import pytest

from messageservice.rest.limiter import LeakyBucket, OperatingMeter
from tests.portal import LivePortal


@pytest.mark.parametrize("fresh_portal", [{"rate_limit_burst": 3, "rate_limit_per_second": 0.01}], indirect=True)
def test_query_limit_exceeded_per_app(fresh_portal: LivePortal) -> None:
    first, second = fresh_portal.add_app(), fresh_portal.add_app()
    statuses = [fresh_portal.call("user.admin", token=first.access_token).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 503]
    refused = fresh_portal.call("user.admin", token=first.access_token)
    assert refused.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    # Another app has a bucket of its own.
    assert fresh_portal.call("user.admin", token=second.access_token).status_code == 200


@pytest.mark.parametrize("fresh_portal", [{"operating_limit_seconds": 1e-9}], indirect=True)
def test_operation_time_limit(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    assert fresh_portal.call("messageservice.sender.list", token=app.access_token).status_code == 200
    blocked = fresh_portal.call("messageservice.sender.list", token=app.access_token)
    assert blocked.status_code == 429
    assert blocked.json() == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit",
    }
    # The limit is per method.
    assert fresh_portal.call("user.admin", token=app.access_token).status_code == 200


def test_bucket_drains() -> None:
    bucket = LeakyBucket(capacity=2, rate=1.0)
    assert bucket.admit("k", 0.0) and bucket.admit("k", 0.0) and not bucket.admit("k", 0.0)
    assert bucket.admit("k", 1.0) and not bucket.admit("k", 1.0)
    assert bucket.admit("other", 1.0)


def test_operating_window_is_ten_minutes() -> None:
    meter = OperatingMeter(limit=1.0)
    total, reset_at = meter.add("app", "m", 600.0, 0.6)
    assert total == pytest.approx(0.6) and reset_at == 1200
    meter.add("app", "m", 660.0, 0.5)
    assert meter.blocked("app", "m", 700.0)
    # Ten minutes after the first bucket it drops out.
    assert not meter.blocked("app", "m", 1200.0)


@pytest.mark.parametrize("fresh_portal", [{"operating_limit_seconds": 1e-9}], indirect=True)
def test_batch_meters_its_sub_calls_not_itself(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    cmd = {"a": "messageservice.sender.list", "b": "messageservice.sender.list"}
    first = fresh_portal.call("batch", {"cmd": cmd}, token=app.access_token)
    assert first.status_code == 200
    result = first.json()["result"]
    assert result["result"] == {"a": []}
    assert result["result_error"]["b"]["error"] == "OPERATION_TIME_LIMIT"
    # The batch call itself is not metered: a second one still runs (and reports the blocked sub-call).
    second = fresh_portal.call("batch", {"cmd": cmd}, token=app.access_token)
    assert second.status_code == 200 and set(second.json()["result"]["result_error"]) == {"a", "b"}
