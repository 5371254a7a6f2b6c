"""check-provider's battery: the demo provider passes every check; each broken provider fails its own.

Real HTTP on loopback ports: a throwaway portal (the server with its recorder) and the provider under
check, both uvicorn in threads. Timeouts are short (a second for the HANDLER, five for reports).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from messageservice.checks import NAMES, CheckPortal, Options, Outcome, Report, check_provider, throwaway_settings
from messageservice.checks.battery import backward, unknown_names
from messageservice.checks.results import CheckResult
from messageservice.provider.checking import ServedApp, report_text
from tests.databases import new_database_url

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from broken_providers import FLAWS  # noqa: E402
from broken_providers import create_app as create_broken_app  # noqa: E402
from demo_provider.app import DemoConfig, create_app  # noqa: E402

OPTIONS = Options(handler_timeout=1.0, report_timeout=5.0)
DELAYS = (0.05, 0.05, 0.05)


def start_portal(folder: Path, database_url: str | None = None) -> CheckPortal:
    overrides = {"database_url": database_url} if database_url else {}
    return CheckPortal(throwaway_settings(folder, handler_timeout=OPTIONS.hard_timeout, **overrides)).start()


@pytest.fixture(scope="module")
def shared_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckPortal]:
    """One portal for the broken providers: each run installs an app of its own."""
    portal = start_portal(tmp_path_factory.mktemp("check-portal"))
    try:
        yield portal
    finally:
        portal.stop()


def explain(report: Report) -> str:
    return "\n".join(f"{r.outcome.value} {r.name}: {r.happened}" for r in report.results)


def demo(portal: CheckPortal) -> ServedApp:
    return ServedApp(lambda url: create_app(DemoConfig(portal_url=portal.base_url, public_url=url, delays=DELAYS)))


def broken(portal: CheckPortal, flaw: str) -> ServedApp:
    return ServedApp(lambda url: create_broken_app(DemoConfig(portal.base_url, url, delays=DELAYS), flaw))


def test_the_demo_provider_passes_every_check(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    portal = start_portal(tmp_path, new_database_url(request, backend, tmp_path))
    try:
        with demo(portal) as provider:
            report = check_provider(provider.url + "/", OPTIONS, portal=portal)
    finally:
        portal.stop()
    assert [r.name for r in report.results] == list(NAMES)
    assert report.ok and all(r.outcome is Outcome.PASS for r in report.results), explain(report)
    assert "403" in report.result("security.wrong_token").happened
    assert "retried after" in report.result("robust.retry_after").happened


@pytest.mark.parametrize("flaw", sorted(FLAWS))
def test_a_broken_provider_fails_exactly_the_check_for_its_flaw(shared_portal: CheckPortal, flaw: str) -> None:
    with broken(shared_portal, flaw) as provider:
        report = check_provider(provider.url + "/", OPTIONS, portal=shared_portal)
    expected = FLAWS[flaw]
    failed = [r.name for r in report.failures]
    assert failed == list(expected if isinstance(expected, tuple) else (expected,)), explain(report)
    assert all(r.outcome is Outcome.PASS for r in report.results if r.name not in failed), explain(report)
    for r in report.failures:
        assert r.expected and r.happened and r.fix, r
    assert report_text(report).startswith(f"check-provider: {len(failed)} of {len(NAMES)} checks failed")


def test_a_refused_report_is_a_failure_with_the_portals_error(shared_portal: CheckPortal) -> None:
    with broken(shared_portal, "no_code") as provider:
        report = check_provider(
            provider.url + "/",
            OPTIONS,
            portal=shared_portal,
        )
    happened = report.result("status.code").happened
    assert "Empty sender code!" in happened and " reports)" in happened


def test_only_and_skip_narrow_the_report(shared_portal: CheckPortal) -> None:
    with demo(shared_portal) as provider:
        options = Options(handler_timeout=1.0, report_timeout=5.0, only=frozenset({"install.answered", "handler.crm"}))
        report = check_provider(provider.url + "/", options, portal=shared_portal)
    assert [r.name for r in report.results] == ["install.answered", "handler.crm"]
    assert report.ok


def test_an_app_that_registers_nothing_makes_the_rest_not_applicable() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("OK")

    with ServedApp(lambda url: Starlette(routes=[Route("/", ok, methods=["POST"])])) as provider:
        # On a throwaway portal of its own. The wait for senders runs out whatever its length (nothing will
        # register): a second proves it as well as the five the other runs allow for reports.
        report = check_provider(provider.url + "/", Options(handler_timeout=1.0, report_timeout=1.0))
    assert report.result("install.answered").outcome is Outcome.PASS
    assert report.result("install.senders").outcome is Outcome.FAIL
    assert "no messageservice.sender.add" in report.result("install.senders").happened
    assert {r.outcome for r in report.results[2:]} == {Outcome.NOT_APPLICABLE}
    assert not report.ok


# -- pure parts ----------------------------------------------------------------------------------------


def test_backward_sequences() -> None:
    assert not backward(["queued", "sent", "delivered"])
    assert not backward(["queued", "queued", "sent", "sent", "failed"])
    assert not backward(["delivered", "delivered"])
    assert backward(["queued", "delivered", "sent"])
    assert backward(["sent", "queued"])
    assert backward(["delivered", "failed"])


def test_unknown_check_names_are_named() -> None:
    assert unknown_names(["status.code", "status.nope", "install"]) == ["status.nope", "install"]


def sample_report() -> Report:
    results = [
        CheckResult("install.answered", "Install", Outcome.PASS, "rule a", "https://x/a"),
        CheckResult("status.code", "Code", Outcome.FAIL, "rule b", "https://x/b", "CODE", "none & <none>", "send it"),
        CheckResult("robust.retry_after", "503", Outcome.NOT_APPLICABLE, "rule c", "https://x/c", happened="no"),
    ]
    return Report("http://127.0.0.1:1/", "http://127.0.0.1:2", results, 1.5)


def test_the_json_form() -> None:
    data = json.loads(json.dumps(sample_report().to_dict()))
    assert data["ok"] is False and data["counts"] == {"pass": 1, "fail": 1, "n/a": 1}
    assert data["checks"][1] == {
        "name": "status.code",
        "title": "Code",
        "outcome": "fail",
        "rule": "rule b",
        "source": "https://x/b",
        "expected": "CODE",
        "happened": "none & <none>",
        "fix": "send it",
        "seconds": 0.0,
    }


def test_the_junit_form() -> None:
    suite = ET.fromstring(sample_report().to_junit())
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failure = cases["status.code"].find("failure")
    assert failure is not None and "none & <none>" in (failure.text or "") and "Fix: send it" in (failure.text or "")
    assert cases["robust.retry_after"].find("skipped") is not None
    assert cases["install.answered"].find("failure") is None
