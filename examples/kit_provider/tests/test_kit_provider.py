"""The provider's own tests: check-provider's battery, through the kit's `provider_checks` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kit_provider import CODE, KitProvider

from messageservice.checks import Options
from messageservice.provider.checking import report_text


@pytest.fixture
def provider_check_options() -> Options:
    return Options(handler_timeout=1.0, report_timeout=5.0)  # short: this provider answers at once


@pytest.fixture
def provider() -> Iterator[KitProvider]:
    kit = KitProvider().start()
    yield kit
    kit.stop()


def test_the_provider_passes_check_provider(provider_checks, provider: KitProvider) -> None:
    report = provider_checks.run(provider.url + "/")
    assert report.ok, report_text(report)
    assert "registered " + CODE in report.result("install.senders").happened


def test_a_flaw_shows_as_a_failed_check(provider_checks, provider: KitProvider) -> None:
    provider.on_event = lambda body: 500  # type: ignore[method-assign]  # breaks install: the check says so
    report = provider_checks.run(provider.url + "/", only=["install.answered"])
    assert [r.name for r in report.failures] == ["install.answered"]
