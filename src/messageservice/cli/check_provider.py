"""`messageservice check-provider URL`: the conformance battery against a provider app, on a throwaway portal."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from messageservice.cli.output import JsonOption, console, err_console, print_json

if TYPE_CHECKING:  # the battery is imported when the command runs: the CLI starts fast
    from messageservice.checks import Options, Report

STYLE = {"pass": "green", "fail": "bold red", "n/a": "yellow"}


def _names(values: list[str] | None) -> frozenset[str]:
    from messageservice.checks import unknown_names

    names = frozenset(part.strip() for value in values or [] for part in value.split(",") if part.strip())
    unknown = unknown_names(sorted(names))
    if unknown:
        from messageservice.checks import NAMES

        raise typer.BadParameter(f"unknown check {', '.join(unknown)}; the checks are: {', '.join(NAMES)}")
    return names


def check_provider(
    url: Annotated[str, typer.Argument(help="The provider app's URL: where ONAPPINSTALL is POSTed.")],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only these checks (names, or a comma-separated list).")
    ] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Leave these checks out.")] = None,
    handler_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a HANDLER may take to answer.")] = 5.0,
    report_timeout: Annotated[float, typer.Option(min=0.5, help="Seconds until a message's status report.")] = 15.0,
    host: Annotated[str, typer.Option(help="The throwaway portal's address.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The throwaway portal's port (0: any free one); point the app at it.")
    ] = 0,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write a JUnit XML report to this file.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Install a provider app on a throwaway portal and check how it speaks the protocol; exit 1 on any failure."""
    from messageservice.checks import Options

    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("an http(s) URL", param_hint="URL")
    options = Options(handler_timeout, report_timeout, only=_names(only), skip=_names(skip))
    # The throwaway portal's own warnings (an event it will retry, a refused call) are not the report.
    logger = logging.getLogger("messageservice")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        report = _run(url, options, host, port, quiet=as_json)
    finally:
        logger.setLevel(level)
    if junit is not None:
        junit.write_text(report.to_junit(), encoding="utf-8")
    if as_json:
        print_json(report.to_dict())
    else:
        show(report)
    if not report.ok:
        raise typer.Exit(1)


def _run(url: str, options: Options, host: str, port: int, *, quiet: bool) -> Report:
    from messageservice.checks import CheckPortal, check_provider, throwaway_settings

    with tempfile.TemporaryDirectory(prefix="check-provider-") as folder:
        settings = throwaway_settings(Path(folder), handler_timeout=options.hard_timeout)
        portal = CheckPortal(settings, host=host, port=port)
        try:
            portal.start()
        except OSError as exc:
            err_console.print(Text(f"error: the throwaway portal could not listen on {host}:{port}: {exc.strerror}"))
            raise typer.Exit(2) from None
        try:
            if not quiet:
                err_console.print(Text(f"checking {url} on a throwaway portal at {portal.base_url} ..."))
            return check_provider(url, options, portal=portal)
        finally:
            portal.stop()


def show(report: Report) -> None:
    table = Table(title=f"check-provider {report.provider_url}", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("what")
    table.add_column("notes")
    for r in report.results:
        note = "" if r.failed else r.happened
        table.add_row(r.name, Text(r.outcome.value, style=STYLE[r.outcome.value]), Text(r.title), Text(note))
    console.print(table)
    for r in report.results:
        if r.failed:
            console.print(Text(f"\n{r.name} failed: {r.title}", style="bold red"))
            console.print(Text(f"  rule:     {r.rule}\n  source:   {r.source}"))
            console.print(Text(f"  expected: {r.expected}\n  happened: {r.happened}\n  fix:      {r.fix}"))
    counts = report.counts()
    summary = f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['n/a']} not applicable"
    summary += f" in {report.seconds:.1f} s"
    console.print(Text(summary, style="bold green" if report.ok else "bold red"))
