"""Long-running commands: `serve` (HTTP, and delivery unless told otherwise), `worker` (delivery only), and
`api-doc`. Their start goes through the same runner and error mapping as every other command."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from messageservice.cli import runner
from messageservice.cli.output import console
from messageservice.cli.portal import recorded_url
from messageservice.cli.public_url import for_serve

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.core.portal import Portal

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def api_doc() -> None:
    """Print the REST method reference (Markdown), generated from the method registry."""
    from messageservice.methods import build_registry
    from messageservice.methods.apidoc import render

    sys.stdout.write(render(build_registry()))


class LogLevel(StrEnum):
    """uvicorn's levels; `trace` is uvicorn's own below debug (ours log at debug then)."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"

    @property
    def ours(self) -> str:
        return "DEBUG" if self is LogLevel.TRACE else self.value.upper()


def worker(
    log_level: Annotated[LogLevel, typer.Option(help="Log level.", case_sensitive=False)] = LogLevel.INFO,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (see MESSAGESERVICE_METRICS).")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics listener.")] = "127.0.0.1",
) -> None:
    """Deliver messages without serving HTTP: more dispatchers sharing one PostgreSQL queue."""
    settings = runner.load_settings()  # first: a bad setting stops the worker before anything is loaded
    import asyncio
    import signal

    from messageservice.app import background_loops, with_handler_rule
    from messageservice.background import stop_loops
    from messageservice.heap import settle_after_startup
    from messageservice.observability.exposition import metrics_loops
    from messageservice.observability.jsonlog import configure_logging

    configure_logging(settings.log_format, log_level.ours)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # A worker listens nowhere: loopback HANDLERs unless the operator lists networks (set them on the
    # workers of an exposed server as on the server).
    settings = with_handler_rule(settings, ())

    async def work(core: Core) -> None:
        loops = [*background_loops(core), *metrics_loops(core, metrics_host, metrics_port)]
        stopping = asyncio.Event()
        events = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            events.add_signal_handler(number, stopping.set)
        for loop in loops:
            loop.start()
        settle_after_startup()
        console.print("worker running; Ctrl+C stops it", highlight=False)
        try:
            await stopping.wait()
        finally:
            grace = core.settings.shutdown_grace_seconds
            # A second signal: stop now (calls under way are cut off and sent again after their lease).
            for number in (signal.SIGINT, signal.SIGTERM):
                events.add_signal_handler(number, lambda: [loop.cancel() for loop in loops])
            console.print(
                f"worker stopping: unstarted work handed back, calls under way get {grace:g} s to finish",
                highlight=False,
            )
            await stop_loops(loops, grace)

    # uvloop, as `serve` gets from uvicorn: the dispatcher's HTTP client runs markedly cheaper on it.
    runner.run(work, settings, uvloop=True)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    tls: Annotated[bool, typer.Option("--tls", help="Serve https with a self-signed certificate.")] = False,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            help="Log level of the server's own lines and uvicorn's (access lines are info).", case_sensitive=False
        ),
    ] = LogLevel.INFO,
    dispatch: Annotated[
        bool,
        typer.Option(
            "--dispatch/--no-dispatch",
            help="Also deliver messages here (default); --no-dispatch leaves delivery to `messageservice worker`s.",
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(help="API processes sharing the port (PostgreSQL only): one per core to use."),
    ] = 1,
) -> None:
    """Run the server."""
    settings = runner.load_settings()  # first: a bad setting stops the server before anything is loaded
    from messageservice.cli.serve_processes import check_workers, run_processes

    check_workers(settings, workers)
    import uvicorn

    from messageservice.app import create_app
    from messageservice.core.portal import get_portal, set_public_url
    from messageservice.observability.jsonlog import configure_logging, uvicorn_log_config
    from messageservice.tls import ensure_certificate, trust_instructions

    configure_logging(settings.log_format, log_level.ours, access_level=log_level.ours)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl." on every start
    if not dispatch:
        settings = settings.model_copy(update={"serve_dispatch": False})

    scheme = "https" if tls else "http"
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url_host = f"[{url_host}]" if ":" in url_host else url_host
    listening = f"{scheme}://{url_host}:{port}"

    async def check(core: Core) -> tuple[Portal, str]:
        found, recorded = await get_portal(core), await recorded_url(core)
        # Where apps are told to call (see public_url.py): a URL chosen at init or in the console is kept.
        public_url, record = for_serve(settings.public_url, recorded, listening)
        # A real write before anything starts (the URL to record, or the recorded one rewritten as it is):
        # storage that is full or read-only stops `serve` here with one line and a non-zero exit, not with
        # a traceback from the application's start-up.
        await set_public_url(core, record if record is not None else recorded)
        return found, public_url

    portal, public_url = runner.run(check, settings)
    ssl_options: dict[str, Any] = {}
    if tls:
        cert, key = ensure_certificate(settings.data_dir / "tls", [portal.domain])
        ssl_options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        console.print(trust_instructions(cert))
    print_lines(getting_started(public_url, listening))
    options: dict[str, Any] = dict(
        log_level=log_level.value,
        log_config=uvicorn_log_config(settings.log_format),
        # On SIGTERM the requests under way get this long to finish (then the delivery under way gets the
        # same, app.py); a client's idle TLS keep-alive would otherwise hold a shutdown for 30 s (SSL close).
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # X-Forwarded-For/-Proto only from the proxies the operator names (uvicorn's default trusts 127.0.0.1).
        forwarded_allow_ips=settings.trusted_proxies,
        **ssl_options,
    )
    if workers > 1:
        run_processes(settings, host, port, workers, log_level.ours, **options)
        return
    # The public URL is recorded already (check); the app's start-up writes nothing that could fail.
    uvicorn.run(create_app(settings, listening=[host]), host=host, port=port, **options)


def print_lines(lines: list[str]) -> None:
    """Plain lines, never wrapped by a terminal's width: a command in them can be copied whole."""
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def getting_started(public_url: str, listening: str | None = None) -> list[str]:
    """The start banner: from an app to a delivered message, each step one command on one line."""
    ms = sys.argv[0] if sys.argv[0].endswith("messageservice") else "messageservice"
    rest = f"{public_url}/rest"
    lines = ["", f"messageservice portal at {public_url}"]
    if listening and listening != public_url:
        lines.append(
            f"(listening on {listening}; apps are told {public_url}; "
            f"`{ms} init --domain D --public-url URL` changes that)"
        )
    return [
        *lines,
        "In another terminal (your provider's HANDLER at http://127.0.0.1:9000/handler):",
        f"  1. create an app:           {ms} app add --name 'My SMS app' --url http://127.0.0.1:9000/ "
        "--scope messageservice",
        f"  2. install it:              {ms} app install <client_id>",
        f"  3. get a token:             {ms} token <client_id> --user 1",
        f"  4. first call, a sender:    curl -s '{rest}/messageservice.sender.add.json' -d auth=<access_token> "
        "-d CODE=demo -d TYPE=SMS -d HANDLER=http://127.0.0.1:9000/handler --data-urlencode 'NAME[en]=Demo SMS'",
        f"  5. send a message:          {ms} send --from '<client_id>|demo' --to +15550001234 --text Hello",
        " " * 30 + "(the server POSTs it to the HANDLER: message_id=<32 hex>, auth[access_token], …)",
        f"  6. report its status:       curl -s '{rest}/messageservice.message.status.update.json' "
        "-d auth=<access_token> -d CODE=demo -d MESSAGE_ID=<message_id> -d STATUS=delivered",
        f"  7. follow it:               {ms} messages show <ID>    (or in the console: {public_url}/console/)",
        "",
    ]
