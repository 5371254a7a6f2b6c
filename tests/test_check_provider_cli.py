"""`messageservice check-provider` in-process (Typer's CliRunner): report, --json, --junit, exit codes."""

from __future__ import annotations

import json
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from messageservice.cli.root import cli
from messageservice.provider.checking import ServedApp
from tests.postgres import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from broken_providers import create_app as create_broken_app
from demo_provider.app import DemoConfig

FAST = ["--handler-timeout", "1", "--report-timeout", "5"]


def test_a_broken_provider_fails_with_exit_1_json_and_junit(tmp_path: Path) -> None:
    port = free_port()
    portal = f"http://127.0.0.1:{port}"
    junit = tmp_path / "report.xml"
    # A flaw the battery sees in what arrives (a MESSAGE_ID of the provider's own), not in a wait that runs out.
    make = lambda url: create_broken_app(DemoConfig(portal, url, delays=(0.05, 0.05, 0.05)), "numeric_id")  # noqa: E731
    with ServedApp(make) as provider:
        args = ["check-provider", provider.url + "/", "--port", str(port), *FAST, "--json", "--junit", str(junit)]
        done = CliRunner().invoke(cli, [*args, "--skip", "robust.retry_after,robust.expired_token"])
    assert done.exit_code == 1, done.output
    # The provider runs in this process and prints its progress to the same stdout: the report is the JSON line.
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("{")]
    report = json.loads(line)
    assert report["ok"] is False and report["portal_url"] == portal
    failed = [c["name"] for c in report["checks"] if c["outcome"] == "fail"]
    assert failed == ["status.message_id"]
    assert "robust.retry_after" not in {c["name"] for c in report["checks"]}
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1" and suite.get("tests") == str(len(report["checks"]))


def test_the_text_report_and_exit_0_when_all_pass() -> None:
    port = free_port()
    portal = f"http://127.0.0.1:{port}"
    make = lambda url: create_broken_app(DemoConfig(portal, url, delays=(0.05, 0.05, 0.05)), "no_reregister")  # noqa: E731
    with ServedApp(make) as provider:
        only = ["--only", "install.answered", "--only", "install.senders,handler.crm"]
        done = CliRunner().invoke(cli, ["check-provider", provider.url + "/", "--port", str(port), *FAST, *only])
    assert done.exit_code == 0, done.output
    assert "install.senders" in done.stdout and "3 passed, 0 failed" in done.stdout
    assert "update.reregisters" not in done.stdout


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    unknown = runner.invoke(cli, ["check-provider", "http://127.0.0.1:9/", "--only", "status.nope"])
    assert unknown.exit_code == 2 and "unknown check status.nope" in unknown.output
    assert runner.invoke(cli, ["check-provider", "ftp://x/"]).exit_code == 2
    assert runner.invoke(cli, ["check-provider"]).exit_code == 2


def test_a_taken_port_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = CliRunner().invoke(cli, ["check-provider", "http://127.0.0.1:9/", "--port", str(port)])
    assert done.exit_code == 2
    assert f"could not listen on 127.0.0.1:{port}" in done.output
