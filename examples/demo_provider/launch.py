"""`make run`: the server and the demo provider side by side, installed, with a first message delivered.

Idempotent: the demo app is found by name (`messageservice app list --json`) and made only once. The
provider keeps its installation in memory, so each run installs the same app again (a fresh
ONAPPINSTALL, which the provider answers by bringing its sender up to date). Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from messageservice.config import get_settings
from messageservice.provider import ProviderError, SyncRestClient

APP_NAME = "Demo SMS provider"
START_TIMEOUT = 60.0
FIRST_MESSAGE_TIMEOUT = 30.0
EXAMPLES = Path(__file__).resolve().parents[1]


class LaunchError(Exception):
    """Something the person running `make run` has to fix; printed without a traceback."""


def say(text: str) -> None:
    print(f"[make run] {text}", flush=True)


def messageservice_command() -> str:
    beside = Path(sys.executable).with_name("messageservice")
    found = str(beside) if beside.exists() else shutil.which("messageservice")
    if found is None:
        raise LaunchError("the messageservice command is not installed (make .venv/.installed)")
    return found


def cli_json(ms: str, *args: str) -> Any:
    done = subprocess.run([ms, *args, "--json"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LaunchError(f"messageservice {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)


def check_free(host: str, port: int, what: str, setting: str) -> None:
    """Before starting: otherwise another server on the port would answer our readiness checks."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn binds: connections of a previous run in TIME_WAIT do not make the port taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = f"port {port} for {what} is taken ({exc.strerror})"
            raise LaunchError(f"{reason}; choose another: {setting}=...") from None


# Server log lines that the launcher itself causes and that mean nothing to the person watching: its
# polling for the first message's status, the demo provider's sender.add that answers 400 on a rerun
# (the sender exists; the provider then updates it), and the schema check at start.
NOISE = (
    re.compile(r'"(GET|POST) /rest/messageservice\.message\.get[^"]*" 200'),
    re.compile(r'"POST /rest/messageservice\.sender\.add[^"]*" 400'),
    re.compile(r"alembic\.runtime\.migration"),
)


def pump(stream: IO[str], quiet: threading.Event) -> None:
    """Copy the server's output to ours, leaving out the noise while the launcher sets things up."""
    for line in stream:
        if quiet.is_set() and any(pattern.search(line) for pattern in NOISE):
            continue
        sys.stdout.write(line)
        sys.stdout.flush()


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Until `url` answers at all; an early exit of the process is an error."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise LaunchError(f"{what} exited with code {process.returncode} (is the port in use?)")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LaunchError(f"{what} did not answer at {url} within {START_TIMEOUT:.0f} s")
        time.sleep(0.2)


def read_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def find_or_add_app(ms: str, app_url: str) -> str:
    apps = [app for app in cli_json(ms, "app", "list") if app["name"] == APP_NAME]
    if not apps:
        added = cli_json(ms, "app", "add", "--name", APP_NAME, "--url", app_url, "--scope", "messageservice")
        say(f"added the app {APP_NAME!r}: {added['client_id']}")
        return str(added["client_id"])
    client_id = str(apps[0]["client_id"])
    if apps[0]["url"] != app_url:
        cli_json(ms, "app", "update", client_id, "--url", app_url)
        say(f"moved the app {client_id} to {app_url}")
    return client_id


def install(ms: str, client_id: str, provider_url: str) -> None:
    installed = cli_json(ms, "app", "install", client_id)
    if not installed["onappinstall_delivered"]:
        raise LaunchError(f"the demo provider did not take ONAPPINSTALL: {installed['onappinstall_detail']}")
    deadline = time.monotonic() + START_TIMEOUT
    while not read_json(provider_url + "/health")["installed"]:
        if time.monotonic() > deadline:
            raise LaunchError("the demo provider did not register its sender")
        time.sleep(0.1)


def send_first_message(rest: SyncRestClient, message_from: str) -> None:
    sent = rest.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": message_from, "MESSAGE_TO": "+15550001234", "MESSAGE_BODY": "Hello from messageservice"},
    )
    say(f"sent message {sent['ID']} through {message_from}; the demo provider reports back:")
    deadline = time.monotonic() + FIRST_MESSAGE_TIMEOUT
    while True:
        message = rest.call("messageservice.message.get", {"ID": sent["ID"]})
        if message["STATUS"] == "delivered":
            say(f"message {sent['ID']} is delivered; its history: {history(message['HISTORY'])}")
            return
        if time.monotonic() > deadline:
            say(f"message {sent['ID']} is still {message['STATUS']} after {FIRST_MESSAGE_TIMEOUT:.0f} s")
            return
        time.sleep(0.25)


def history(entries: list[dict[str, Any]]) -> str:
    """Who said what: the sender queued it, the server noted the HANDLER's 200 as sent, the provider reported."""
    who = ["you"] + ["server" if entry["USER_ID"] is None else "provider" for entry in entries[1:]]
    return " -> ".join(f"{entry['STATUS']} ({by})" for entry, by in zip(entries, who, strict=True))


def init_portal(ms: str, domain: str) -> str | None:
    """Create the portal if there is none; the console password, when this run created it."""
    created = cli_json(ms, "init", "--domain", domain)
    return str(created["console_password"]) if "console_password" in created else None


def console_login(base_url: str, password: str | None) -> str:
    if password is not None:
        return f"Or watch and send in the console: {base_url}/console/ (login `admin`, password `{password}`)."
    return (
        f"Or watch and send in the console: {base_url}/console/ (login `admin`; the password was printed when\n"
        "the portal was made; `.venv/bin/messageservice user password 1` sets a new one)."
    )


def instructions(base_url: str, client_id: str, message_from: str, token: str, password: str | None = None) -> str:
    return f"""
The demo provider is installed: sender {message_from}.
Send a message (the token is valid for an hour; `.venv/bin/messageservice token {client_id} --user 1` makes another):

  curl -s {base_url}/rest/messageservice.message.send.json -d auth={token} \\
    --data-urlencode 'MESSAGE_FROM={message_from}' --data-urlencode 'MESSAGE_TO=+15550001234' \\
    --data-urlencode 'MESSAGE_BODY=My first message'

The demo provider prints queued, sent and delivered here. Read a message back with its ID:

  curl -s '{base_url}/rest/messageservice.message.get.json?auth={token}&ID=<ID>'

{console_login(base_url, password)}

Ctrl-C stops the server and the demo provider.
"""


def stop(process: subprocess.Popen[bytes] | None, *, interrupted: bool) -> None:
    if process is None or process.poll() is not None:
        return
    if interrupted:  # Ctrl-C reached the whole process group: give it the time to shut down on its own
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _exit_on_sigterm(number: int, frame: object) -> None:
    raise SystemExit(128 + number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_provider.launch", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    parser.add_argument("--port", type=int, default=8000, help="the server's port")
    parser.add_argument("--provider-port", type=int, default=9100, help="the demo provider's port (on 127.0.0.1)")
    parser.add_argument("--delays", default="0.5,1,1", help="the provider's seconds before queued,sent,delivered")
    parser.add_argument("--no-first-message", action="store_true", help="do not send a first message")
    parser.add_argument("--domain", help="create the portal with this domain first, if there is none")
    args = parser.parse_args(argv)

    # SIGTERM (from a supervisor or a test) stops both children as Ctrl-C does.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    url_host = f"[{url_host}]" if ":" in url_host else url_host
    base_url = f"http://{url_host}:{args.port}"
    # Where the portal says it is (auth[client_endpoint]): the provider accepts events from there only.
    portal_url = get_settings().public_url or base_url
    provider_url = f"http://127.0.0.1:{args.provider_port}"
    server: subprocess.Popen[bytes] | None = None
    provider: subprocess.Popen[bytes] | None = None
    interrupted = False
    quiet = threading.Event()
    quiet.set()
    try:
        ms = messageservice_command()
        check_free(args.host, args.port, "the server", "make run PORT")
        check_free("127.0.0.1", args.provider_port, "the demo provider", "make run PROVIDER_PORT")
        password = init_portal(ms, args.domain) if args.domain else None
        server = subprocess.Popen(
            [ms, "serve", "--host", args.host, "--port", str(args.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert server.stdout is not None
        threading.Thread(target=pump, args=(server.stdout, quiet), daemon=True).start()
        wait_until_up(base_url + "/health", server, "the server")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))}
        provider_args = ["--port", str(args.provider_port), "--portal", portal_url, "--delays", args.delays]
        provider = subprocess.Popen([sys.executable, "-m", "demo_provider", *provider_args], env=env)
        wait_until_up(provider_url + "/health", provider, "the demo provider")
        client_id = find_or_add_app(ms, provider_url + "/")
        install(ms, client_id, provider_url)
        message_from = f"{client_id}|{read_json(provider_url + '/health')['sender']}"
        token = cli_json(ms, "token", client_id, "--user", "1")["access_token"]
        if not args.no_first_message:
            send_first_message(SyncRestClient(base_url + "/rest/", token), message_from)
        print(instructions(base_url, client_id, message_from, token, password), flush=True)
        quiet.clear()  # from here on, the server's output is the person's own requests: all of it
        warned = False
        while server.poll() is None:
            if provider.poll() is not None and not warned:
                say(f"the demo provider exited with code {provider.returncode}; the server runs on")
                warned = True
            time.sleep(0.5)
        say(f"the server exited with code {server.returncode}")
        return server.returncode or 0
    except KeyboardInterrupt:
        interrupted = True
        say("stopping the demo provider and the server")
        return 130
    except (LaunchError, ProviderError) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        # A second Ctrl-C reaches the children themselves (uvicorn then exits at once); here it would only
        # cut the wait for them short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop(provider, interrupted=interrupted)
        stop(server, interrupted=interrupted)


if __name__ == "__main__":
    sys.exit(main())
