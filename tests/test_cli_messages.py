"""The message commands as an operator runs them: against a live portal's database and a real HANDLER on
a loopback port, on SQLite and PostgreSQL, in this process through the CLI's own group (test_cli.invoke).

Input refused before the database is opened is checked once, not once per engine, with the database
pointing at a port nothing listens on: a command that reached it would exit 1, not 2. `messages follow`
runs as a real process where Ctrl+C and a second process writing are the point."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from messageservice.cli import send as send_module
from messageservice.cli.csvfile import MessageFile
from messageservice.cli.input import Draft, InputError, send_params
from tests.portal import AppCredentials, LivePortal
from tests.postgres import free_port
from tests.receiver import Receiver
from tests.test_cli import COMMAND, WIDTH, Ran, invoke, portal_env
from tests.test_messages import FAST, get, handler_url, register, wait_for


def ms(portal: LivePortal, *args: str, code: int | None = 0, stdin: bytes | None = None) -> Ran:
    result = invoke(portal_env(portal), *args, stdin=stdin)
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def no_database(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Settings whose database refuses connections: input checks must answer before they try it."""
    folder = tmp_path_factory.mktemp("no-database")
    return {
        "MESSAGESERVICE_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        "MESSAGESERVICE_DATA_DIR": str(folder),
        "COLUMNS": WIDTH,
    }


def refused(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Ran:
    """A command that must be refused as bad input (exit 2) without opening the database."""
    result = invoke(env, *args, stdin=stdin)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "cannot reach the database" not in result.stderr, result.stderr
    return result


def ms_json(portal: LivePortal, *args: str, code: int = 0) -> Any:
    return json.loads(ms(portal, *args, "--json", code=code).stdout)


def show(portal: LivePortal, message_id: int | str) -> dict[str, Any]:
    return ms_json(portal, "messages", "show", str(message_id))


def settled(portal: LivePortal, app: AppCredentials, message_id: int) -> dict[str, Any]:
    """Waits through the REST API (a process per look would be slow); `messages show` has its own tests."""
    return wait_for(lambda: (m := get(portal, app.access_token, message_id))["DELIVERY"]["STATE"] != "pending" and m)


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app()


@pytest.fixture
def sender(portal: LivePortal, app: AppCredentials, handler: Receiver) -> str:
    return register(portal, app, handler_url(handler))


# --- send ------------------------------------------------------------------------------------


def test_send_reaches_the_handler(portal: LivePortal, sender: str, handler: Receiver) -> None:
    sent = ms_json(
        portal, "send", "--from", sender, "--to", "8 (999) 000-00-00", "--text", "Hello <b> & ü",
        "--binding", "contact:42", "--binding", "2:7",
    )  # fmt: skip
    assert sent["STATUS"] == "pending" and len(sent["MESSAGE_ID"]) == 32
    form = handler.wait_for(1)[0].form
    assert form["message_id"] == sent["MESSAGE_ID"] and form["message_to"] == "+79990000000"
    assert form["message_body"] == "Hello <b> & ü" and form["auth[user_id]"] == "1"
    assert (form["bindings[0][OWNER_TYPE_ID]"], form["bindings[0][OWNER_ID]"]) == ("3", "42")
    assert (form["bindings[1][OWNER_TYPE_ID]"], form["bindings[1][OWNER_ID]"]) == ("2", "7")

    # Text mode, another author, the text from standard input, a business process.
    author = portal.add_user("Operator")
    text = ms(
        portal, "send", "--from", sender, "--to", "+1 555 000 1111", "--text", "-", "--user", str(author),
        "--module", "bizproc", "--workflow-id", "wf.1", "--document-id", "crm,CCrmDocumentLead,LEAD_98",
        "--document-type", "crm,CCrmDocumentLead,LEAD", stdin=b"line one\nline two\n",
    ).stdout  # fmt: skip
    assert text.startswith("queued message ") and "pending" in text
    form = handler.wait_for(2)[1].form
    assert form["auth[user_id]"] == str(author) and form["message_body"] == "line one\nline two"
    assert form["module_id"] == "bizproc" and form["workflow_id"] == "wf.1" and form["document_id[2]"] == "LEAD_98"


def test_send_with_an_idempotency_key_sends_once(portal: LivePortal, sender: str, handler: Receiver) -> None:
    args = ("send", "--from", sender, "--to", "+15550002222", "--text", "once", "--idempotency-key", "order-9")
    first, second = ms_json(portal, *args), ms_json(portal, *args)
    assert first["ID"] == second["ID"]
    assert handler.wait_for(1)[0].form["message_id"] == first["MESSAGE_ID"]
    # One message was stored, so one is delivered: the queue holds nothing else for this recipient.
    listed = ms_json(portal, "messages", "list", "--sender", sender, "--to", "+15550002222")
    assert [m["ID"] for m in listed["messages"]] == [first["ID"]]


def send_options(sender: str, *args: str) -> list[str]:
    options = {"--from": sender, "--to": "+15550003333", "--text": "hi"}
    options.update(zip(args[::2], args[1::2], strict=True))
    return [part for pair in options.items() for part in pair]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "call me"], "not a phone number: 'call me'"),
        (["--to", "+1 555"], "not a phone number"),
        (["--text", ""], "no text"),
        (["--from", "nopipe"], "the sender must be client_id|CODE"),
        (["--binding", "planet:1"], "not a binding: 'planet:1'"),
        (["--module", "bizproc"], "module bizproc needs a workflow id"),
        (["--module", "tasks"], "unknown module 'tasks'"),
        (["--workflow-id", "w"], "needs module bizproc"),
        (["--text", "x" * 65_536], "65,536 characters long; at most 65,535"),
        (["--idempotency-key", "k" * 256], "longer than 255"),
    ],
)
def test_send_refuses_bad_input_before_the_database(no_database: dict[str, str], args: list[str], message: str) -> None:
    result = refused(no_database, "send", *send_options("local.a.1|code", *args))
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--from", "local.nope.1|x"], 1, "no sender local.nope.1|x"),
        (["--user", "999999"], 2, "there is no user 999999"),
    ],
)
def test_send_refused_by_the_portal(portal: LivePortal, sender: str, args: list[str], code: int, message: str) -> None:
    result = ms(portal, "send", *send_options(sender, *args), code=code)
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_send_usage_errors(no_database: dict[str, str]) -> None:
    missing = refused(no_database, "send", "--from", "a|b", "--text", "x")
    assert "Missing option" in missing.stderr and "--to" in missing.stderr
    empty = refused(no_database, "send", *send_options("a|b", "--text", "-"), stdin=b"")
    assert "no text" in empty.stderr
    binary = refused(no_database, "send", *send_options("a|b", "--text", "-"), stdin=b"caf\xe9")
    assert "the text on standard input is not UTF-8" in binary.stderr


def write_rows(path: Path, rows: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


# --- input checks, once (no database) -----------------------------------------------------------


def test_send_params_from_a_draft() -> None:
    draft = Draft(sender="local.a.1|c", to=" 8 (999) 000-00-00 ", text="hi", bindings=["contact:42", "2:7"])
    assert send_params(draft) == {
        "MESSAGE_FROM": "local.a.1|c",
        "MESSAGE_TO": "8 (999) 000-00-00",
        "MESSAGE_BODY": "hi",
        "BINDINGS": [{"OWNER_TYPE_ID": "3", "OWNER_ID": "42"}, {"OWNER_TYPE_ID": "2", "OWNER_ID": "7"}],
    }
    process = Draft(
        sender="local.a.1|c", to="+15550001111", text="t", module="BizProc", workflow_id="wf",
        document_id="crm, CCrmDocumentLead ,LEAD_1", document_type="crm,CCrmDocumentLead,LEAD", idempotency_key="k",
    )  # fmt: skip
    params = send_params(process)
    assert params["MODULE_ID"] == "bizproc" and params["DOCUMENT_ID"] == ["crm", "CCrmDocumentLead", "LEAD_1"]
    assert params["IDEMPOTENCY_KEY"] == "k" and "BINDINGS" not in params
    for bad in ("abc", "+1 555", "+7 999 ０００ 00 00", "555-0000-x"):
        with pytest.raises(InputError, match="not a phone number"):
            send_params(Draft(sender="a|b", to=bad, text="x"))


def test_a_message_file_reports_bad_rows_and_reads_on(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "rows.csv",
        [
            b"\xef\xbb\xbfMESSAGE_TO;text;from;",  # a byte order mark, Bitrix's name, a trailing separator
            b"+15550001000;first;;",
            b"",
            b'+15550001002;"two; lines\nhere";local.a.1|x;',
            b"+15550001003;too few",
            b"+15550001004;caf\xe9;;",
            b'+15550001005;"broken"quote;;',
            b"+15550001006;last;;",
        ],
    )
    message_file = MessageFile(path, ";")
    assert message_file.columns == ["to", "text", "from", ""] and message_file.count() == 6
    rows = list(message_file.rows("local.default.1|d"))
    assert [(row.line, row.error) for row in rows] == [
        (2, None),
        (4, None),
        (6, "2 fields where the header has 4"),
        (7, "column 'text' is not UTF-8 text (byte 0xe9)"),
        (8, "not valid CSV: ',' expected after '\"'".replace(",", ";", 1)),
        (9, None),
    ]
    first, second = rows[0].draft, rows[1].draft
    assert first is not None and (first.sender, first.to, first.text) == ("local.default.1|d", "+15550001000", "first")
    assert second is not None and (second.sender, second.text) == ("local.a.1|x", "two; lines\nhere")


# --- send-bulk -------------------------------------------------------------------------------


def test_bulk_send_of_many_rows_skips_the_malformed_ones(
    portal: LivePortal, sender: str, handler: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 250 rows in chunks of 50 (200 in use): five chunks, a malformed row in each, as 1,000 rows would have.
    monkeypatch.setattr(send_module, "BULK_CHUNK", 50)
    rows = 250
    lines = [b"to,text,bindings"]
    for i in range(rows):
        lines.append(f"+1555{i:07d},bulk {i},contact:{i + 1}".encode())
    # Line numbers in the file are the index + 1 (the header is line 1, row i is line i + 2).
    bad = {
        27: (b"+15550000025,missing a field", "2 fields where the header has 3"),
        77: (
            b"not-a-phone,bulk 75,",
            "not a phone number: 'not-a-phone' (at least 10 digits, e.g. +1 555 010 2030 or 8 (999) 000-00-00)",
        ),
        127: (b"+15550000125,caf\xe9 broken,", "column 'text' is not UTF-8 text (byte 0xe9)"),
        177: (b"+15550000175," + b"y" * 70_000 + b",", "the text is 70,000 characters long; at most 65,535 fit"),
        227: (b",bulk 225,", "no recipient ('to' is empty)"),
    }
    for line, (raw, _) in bad.items():
        lines[line - 1] = raw
    csv_file = write_rows(tmp_path / "bulk.csv", lines)
    good = rows - len(bad)

    summary = ms_json(portal, "send-bulk", str(csv_file), "--from", sender)
    assert summary["rows"] == rows and summary["sent"] == good and summary["already_sent"] == 0
    assert summary["skipped"] == [{"line": line, "reason": reason} for line, (_, reason) in bad.items()]
    assert summary["stopped"] is None
    assert [m["line"] for m in summary["messages"]] == [n for n in range(2, rows + 2) if n not in bad]
    ids = [m["id"] for m in summary["messages"]]
    assert len(set(ids)) == good and ids == sorted(ids)

    # The running server delivers them all: every row after a malformed one went on.
    received = handler.wait_for(good, timeout=120)
    bodies = {r.form["message_body"] for r in received}
    expected = {f"bulk {i}" for i in range(rows) if i + 2 not in bad}
    assert bodies == expected
    one = next(r.form for r in received if r.form["message_body"] == "bulk 248")
    assert one["message_to"] == "+15550000248" and one["bindings[0][OWNER_ID]"] == "249"
    listed = ms_json(portal, "messages", "list", "--sender", sender, "--limit", "1")
    assert listed["total"] == good


def test_bulk_send_text_summary(portal: LivePortal, sender: str, handler: Receiver, tmp_path: Path) -> None:
    csv_file = write_rows(
        tmp_path / "few.csv",
        [
            b"\xef\xbb\xbfMESSAGE_TO;text;from",  # a byte order mark, Bitrix's name, another delimiter
            b"+15550001000;first;",
            b"+15550001001;second;local.nope.1|zz",
            b"",
            b'+15550001002;"quoted; with a line break\nand more";',
            b'+15550001003;"broken"quote;',
        ],
    )
    result = ms(portal, "send-bulk", str(csv_file), "--from", sender, "--delimiter", ";")
    out = result.stdout
    assert f"sent 2 of 4 rows from {csv_file}" in out and "skipped 2:" in out
    assert "line 3: no sender local.nope.1|zz" in out
    assert "line 7: not valid CSV" in out
    bodies = sorted(r.form["message_body"] for r in handler.wait_for(2))
    assert bodies == ["first", "quoted; with a line break\nand more"]


def test_bulk_send_groups_many_skips(portal: LivePortal, sender: str, tmp_path: Path) -> None:
    rows = [b"to,text"] + [b"+155500,short number"] * 30 + [b"+15550004444,fine"]
    out = ms(portal, "send-bulk", str(write_rows(tmp_path / "g.csv", rows)), "--from", sender).stdout
    assert "sent 1 of 31 rows" in out and "skipped 30" in out
    assert "not a phone number: '+155500'" in out and "2-31" in out and "--json lists every" in out


def test_bulk_send_again_with_an_idempotency_prefix(
    portal: LivePortal, sender: str, handler: Receiver, tmp_path: Path
) -> None:
    rows = [
        b"to,text,idempotency_key",
        b"+15550005000,a,",
        b"+15550005001,b,",
        b"+15550005002,c,k-1",
        b"+1555000503,d,k-1",
    ]
    csv_file = write_rows(tmp_path / "again.csv", rows)
    first = ms_json(portal, "send-bulk", str(csv_file), "--from", sender, "--idempotency-prefix", "run")
    # The last row repeats the third row's key: the same message, so it is reported, not sent twice.
    assert first["sent"] == 3 and first["skipped"] == [{"line": 5, "reason": "the same idempotency key as line 4"}]
    handler.wait_for(3)
    again = ms_json(portal, "send-bulk", str(csv_file), "--from", sender, "--idempotency-prefix", "run")
    assert again["sent"] == 0 and again["already_sent"] == 3
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in first["messages"]]
    # Nothing new was stored, so nothing new is delivered.
    assert ms_json(portal, "messages", "list", "--sender", sender)["total"] == 3


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "cannot read"),
        (b"", [], "is empty"),
        (b"\n\n", [], "is empty"),
        (b"to,body\n+15550006000,x\n", [], "unknown column 'body'"),
        (b"to\n+15550006000\n", [], "no 'text' column"),
        (b"to,text,to\n1,2,3\n", [], "column 'to' appears twice"),
        (b"to,text\n+15550006000,x\n", ["--delimiter", "ab"], "the delimiter must be one character"),
        (b"\xff\xfeto,text\n", [], "the header row is not UTF-8"),
    ],
)
def test_bulk_send_refuses_a_bad_file_before_the_database(
    no_database: dict[str, str], tmp_path: Path, content: bytes | None, extra: list[str], message: str
) -> None:
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    result = refused(no_database, "send-bulk", str(path), "--from", "local.a.1|code", *extra)
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("content", "extra", "code", "message"),
    [
        (b"to,text\n", [], 1, "sent 0 of 0 rows"),
        (b"to,text\nnope,x\n", [], 1, "line 2: not a phone number"),
        (b"to,text\n+15550006000,x\n", ["--user", "999999"], 2, "there is no user 999999"),
    ],
)
def test_bulk_send_refusals(
    portal: LivePortal, sender: str, tmp_path: Path, content: bytes, extra: list[str], code: int, message: str
) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    result = ms(portal, "send-bulk", str(path), "--from", sender, *extra, code=code)
    assert message in result.stderr + result.stdout, (result.stdout, result.stderr)


def test_bulk_send_without_a_sender_anywhere(portal: LivePortal, tmp_path: Path) -> None:
    path = write_rows(tmp_path / "nofrom.csv", [b"to,text", b"+15550007000,x"])
    summary = ms_json(portal, "send-bulk", str(path), code=1)
    assert summary["sent"] == 0 and summary["skipped"][0]["reason"].startswith("no sender: give --from")


# --- messages list | show ----------------------------------------------------------------------


def test_messages_list_filters_and_pages(
    portal: LivePortal, app: AppCredentials, sender: str, handler: Receiver
) -> None:
    rows = [b"to,text"] + [f"+1555000{i:04d},list {i}".encode() for i in range(7)]
    csv_file = write_rows(portal.settings.data_dir / f"{sender.split('|')[1]}.csv", rows)
    ids = [m["id"] for m in ms_json(portal, "send-bulk", str(csv_file), "--from", sender)["messages"]]
    for message_id in ids:
        settled(portal, app, message_id)
    page = ms_json(portal, "messages", "list", "--sender", sender, "--limit", "3", "--offset", "2")
    assert page["total"] == 7 and page["offset"] == 2 and page["next"] == 5
    assert [m["ID"] for m in page["messages"]] == sorted(ids, reverse=True)[2:5]
    last = ms_json(portal, "messages", "list", "--sender", sender, "--offset", "5")
    assert last["next"] is None and len(last["messages"]) == 2
    code = sender.split("|")[1]
    by_code = ms_json(portal, "messages", "list", "--sender", code, "--to", "+15550000003")
    assert [m["ID"] for m in by_code["messages"]] == [ids[3]] and by_code["messages"][0]["MESSAGE_BODY"] == "list 3"
    assert ms_json(portal, "messages", "list", "--sender", sender, "--status", "sent")["total"] == 7
    assert ms_json(portal, "messages", "list", "--sender", sender, "--status", "delivered")["total"] == 0
    assert ms_json(portal, "messages", "list", "--sender", sender, "--since", "1h", "--until", "0m")["total"] == 7
    assert ms_json(portal, "messages", "list", "--sender", sender, "--until", "2020-01-01")["total"] == 0
    assert ms_json(portal, "messages", "list", "--sender", sender, "--dead")["total"] == 0
    assert ms_json(portal, "messages", "list", "--sender", sender, "--delivery", "done")["total"] == 7

    text = ms(portal, "messages", "list", "--sender", sender, "--limit", "2").stdout
    # The id column of each row (a bare "5" could also be part of a phone number or a text).
    assert re.findall(r"^│\s*(\d+)\s*│", text, re.MULTILINE) == [str(ids[-1]), str(ids[-2])], text
    assert "list 6" in text and "sent" in text and "1-2 of 7; next page: --offset 2" in text
    assert "no messages" in ms(portal, "messages", "list", "--sender", "local.none|x").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "bogus"], "unknown status 'bogus'"),
        (["--delivery", "lost"], "unknown delivery state 'lost'"),
        (["--since", "last tuesday"], "not a time: 'last tuesday'"),
        (["--until", "12"], "not a time: '12'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--offset", "-1"], "Invalid value for '--offset'"),
        (["--dead", "--delivery", "done"], "--dead and --delivery disagree"),
        (["--user", "99999999999999999999"], "Invalid value for '--user'"),
        (["--offset", "99999999999999999999"], "Invalid value for '--offset'"),
    ],
)
def test_messages_list_bad_input(no_database: dict[str, str], args: list[str], message: str) -> None:
    result = refused(no_database, "messages", "list", *args)
    assert message in result.stderr and result.stdout == ""


def test_messages_list_as_an_unknown_user(portal: LivePortal) -> None:
    result = ms(portal, "messages", "list", "--user", "999999", code=2)
    assert "there is no user 999999" in result.stderr and result.stdout == ""


def test_messages_show_attempts_and_timeline(
    portal: LivePortal, app: AppCredentials, sender: str, handler: Receiver
) -> None:
    body = "Hi \x1b[2J there\u202e"
    sent = ms_json(portal, "send", "--from", sender, "--to", "+15550008000", "--text", body, "--binding", "deal:5")
    settled(portal, app, sent["ID"])
    form = handler.wait_for(1)[0].form
    report = {"CODE": form["code"], "MESSAGE_ID": form["message_id"], "STATUS": "delivered"}
    assert portal.call("messageservice.message.status.update", report, token=form["auth[access_token]"]).ok
    assert portal.call("messageservice.message.status.update", {**report, "STATUS": "sent"}, token=app.access_token).ok

    view = show(portal, sent["MESSAGE_ID"])  # by the 32-hex id, as a provider knows it
    assert view["ID"] == sent["ID"] and view["STATUS"] == "delivered" and view["MESSAGE_BODY"] == body
    assert view["BINDINGS"] == [{"OWNER_TYPE_ID": 2, "OWNER_ID": 5}]
    assert [(a["NUMBER"], a["HTTP_STATUS"], a["RESPONSE"]) for a in view["ATTEMPTS"]] == [(1, 200, "ok")]
    assert [(h["STATUS"], h["APPLIED"]) for h in view["HISTORY"]] == [
        ("pending", True),
        ("sent", True),
        ("delivered", True),
        ("sent", False),
    ]

    text = ms(portal, "messages", "show", str(sent["ID"])).stdout
    for expected in (
        "Attempts",
        "Status timeline",
        "dispatcher",
        "delivered",
        "no (late or repeated)",
        "crm, bound to deal:5",
    ):
        assert expected in text, expected
    assert f"app {view['HISTORY'][2]['APP_ID']} (user 1)" in text
    # Someone's text cannot drive the operator's terminal: escapes and direction overrides are shown, not obeyed.
    assert "\x1b[2J" not in text and "\\x1b[2J" in text and "\u202e" not in text and "\\u202e" in text

    # --body: the fields the HANDLER got, exactly and in order; the per-attempt token and the secret are not shown.
    received = parse_qsl(handler.requests[0].body.decode(), keep_blank_values=True)
    with_fields = ms_json(portal, "messages", "show", str(sent["ID"]), "--body")
    assert with_fields["HANDLER_URL"] == handler_url(handler)
    fields = [tuple(f) for f in with_fields["HANDLER_FIELDS"]]
    assert [name for name, _ in fields] == [name for name, _ in received]
    hidden = {"auth[access_token]", "auth[expires]", "auth[application_token]"}
    assert [f for f in fields if f[0] not in hidden] == [pair for pair in received if pair[0] not in hidden]
    assert not {value for name, value in fields if name in hidden} & {value for name, value in received}
    with_body = ms(portal, "messages", "show", str(sent["ID"]), "--body").stdout
    assert f"HANDLER call to {handler_url(handler)}" in with_body and "bindings[0][OWNER_TYPE_ID]" in with_body
    assert form["auth[access_token]"] not in with_body and app.application_token not in with_body
    code = sender.split("|")[1]
    assert portal.call("messageservice.sender.delete", {"CODE": code}, token=app.access_token).ok
    orphan = ms_json(portal, "messages", "show", str(sent["ID"]), "--body")
    assert orphan["HANDLER_URL"] is None and len(orphan["HANDLER_FIELDS"]) == len(fields)
    assert "the sender was deleted" in ms(portal, "messages", "show", str(sent["ID"]), "--body").stdout


def test_messages_show_bad_input(portal: LivePortal, no_database: dict[str, str]) -> None:
    assert "not a message id: 'abc'" in refused(no_database, "messages", "show", "abc").stderr
    for ref in ("999999999", "0" * 32):
        assert f"error: no message {ref}" in ms(portal, "messages", "show", ref, code=1).stderr


# --- messages follow -------------------------------------------------------------------------


def start_follow(portal: LivePortal, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*COMMAND, "messages", "follow", *args],
        env={**os.environ, **portal_env(portal)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=portal.settings.data_dir,
    )
    assert process.stderr is not None
    ready = process.stderr.readline()
    assert "following new messages" in ready, ready
    return process


def read_lines(process: subprocess.Popen[str], count: int, timeout: float = 30.0) -> list[str]:
    """The next `count` lines a process prints, waiting for each (queue.Empty after `timeout`)."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for _ in range(count):
            lines.put(stdout.readline().rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return [lines.get(timeout=timeout) for _ in range(count)]


def test_messages_follow_prints_new_messages_and_status_changes(
    portal: LivePortal, app: AppCredentials, sender: str, handler: Receiver
) -> None:
    follower = start_follow(portal, "--sender", sender, "--count", "3", "--timeout", "60", "--json")
    try:
        sent = ms_json(portal, "send", "--from", sender, "--to", "+15550009000", "--text", "followed")
        form = handler.wait_for(1)[0].form
        # The provider reports after the dispatcher has noted "sent" (a report first would leave no "sent").
        settled(portal, app, sent["ID"])
        report = {"CODE": form["code"], "MESSAGE_ID": form["message_id"], "STATUS": "delivered"}
        assert portal.call("messageservice.message.status.update", report, token=form["auth[access_token]"]).ok
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["EVENT"], e["STATUS"]) for e in events] == [
        ("created", "pending"),
        ("status", "sent"),
        ("status", "delivered"),
    ]
    assert {e["ID"] for e in events} == {sent["ID"]} and events[0]["MESSAGE_BODY_START"] == "followed"
    assert events[1]["USER_ID"] is None and events[2]["APP_ID"] is not None and events[2]["APPLIED"] is True


def test_messages_follow_text_and_ctrl_c(
    portal: LivePortal, app: AppCredentials, sender: str, handler: Receiver
) -> None:
    follower = start_follow(portal, "--sender", sender)
    try:
        sent = ms_json(portal, "send", "--from", sender, "--to", "+15550009001", "--text", "watch me")
        settled(portal, app, sent["ID"])
        lines = read_lines(follower, 2)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0 and "Traceback" not in err, err
    assert out == "", out  # nothing after the two events
    assert f"#{sent['ID']} new {sender} → +15550009001  watch me" in lines[0]
    assert f"#{sent['ID']} sent  by dispatcher" in lines[1]


def test_messages_follow_timeouts(portal: LivePortal, no_database: dict[str, str]) -> None:
    quiet = "local.silent.1|nobody"
    assert ms(portal, "messages", "follow", "--sender", quiet, "--timeout", "0.3", "--json").stdout == ""
    short = ms(portal, "messages", "follow", "--sender", quiet, "--timeout", "0.3", "--count", "2", code=1)
    assert "timed out after 0.3 s with 0 of 2 events" in short.stderr
    assert "Invalid value for '--count'" in refused(no_database, "messages", "follow", "--count", "0").stderr


# --- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_replay_dead_letters(fresh_portal: LivePortal) -> None:
    portal = fresh_portal
    app = portal.add_app()
    handler = Receiver(status=500).start()
    try:
        sender = register(portal, app, handler_url(handler))
        ids = [
            ms_json(portal, "send", "--from", sender, "--to", f"+155500091{i:02d}", "--text", f"r{i}")["ID"]
            for i in range(3)
        ]
        for message_id in ids:
            assert settled(portal, app, message_id)["DELIVERY"]["STATE"] == "dead"
        dead = ms_json(portal, "messages", "list", "--dead")
        assert sorted(m["ID"] for m in dead["messages"]) == ids

        assert ms_json(portal, "replay", "--dead", "--dry-run") == {"would_replay": ids, "replayed": [], "skipped": []}
        handler.status = 200
        one = ms_json(portal, "replay", str(ids[0]))
        assert one == {"replayed": [ids[0]], "skipped": []}
        assert settled(portal, app, ids[0])["STATUS"] == "sent"
        # Already sent now: named, not replayed, and the exit code says so.
        again = ms(portal, "replay", str(ids[0]), "--json", code=1)
        assert json.loads(again.stdout)["skipped"] == [
            {"message": str(ids[0]), "reason": "not a dead letter (delivery done, status sent)"}
        ]
        rest = ms(portal, "replay", "--dead", "--sender", sender).stdout
        assert rest.strip() == f"replayed 2: {ids[1]}, {ids[2]}"
        for message_id in ids[1:]:
            view = settled(portal, app, message_id)
            assert view["STATUS"] == "sent" and [h["STATUS"] for h in view["HISTORY"]][-3:] == [
                "error",
                "replayed",
                "sent",
            ]
        assert ms_json(portal, "replay", "--dead") == {"replayed": [], "skipped": []}
    finally:
        handler.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name the messages to replay, or give --dead"),
        (["5", "--dead"], "not both"),
        (["5", "--sender", "a|b"], "--sender narrows --dead"),
        (["x5"], "not a message id: 'x5'"),
    ],
)
def test_replay_bad_input(no_database: dict[str, str], args: list[str], message: str) -> None:
    assert message in refused(no_database, "replay", *args).stderr


def test_replay_of_no_such_message(portal: LivePortal) -> None:
    result = ms(portal, "replay", "999999999", code=1)
    assert "not replayed 999999999: no message 999999999" in result.stderr


# --- stats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_stats_command(fresh_portal: LivePortal) -> None:
    portal = fresh_portal
    app = portal.add_app()
    good, bad = Receiver().start(), Receiver(status=500).start()
    try:
        good_from, bad_from = register(portal, app, handler_url(good)), register(portal, app, handler_url(bad))
        rows = [b"to,text,from"] + [f"+1555000{i:04d},s{i},{good_from}".encode() for i in range(4)]
        rows.append(f"+15550001234,doomed,{bad_from}".encode())
        csv_file = write_rows(portal.settings.data_dir / "stats.csv", rows)
        sent = ms_json(portal, "send-bulk", str(csv_file))
        for message in sent["messages"]:
            settled(portal, app, message["id"])
    finally:
        good.stop()
        bad.stop()
    stats = ms_json(portal, "stats", "--window", "15m")
    assert stats["window_seconds"] == 900 and len(stats["per_minute"]) in (15, 16)
    assert sum(m["created"] for m in stats["per_minute"]) == 5
    assert sum(m["delivered"] for m in stats["per_minute"]) == 4 and sum(m["failed"] for m in stats["per_minute"]) == 1
    assert stats["by_status"] == {"sent": 4, "error": 1} and stats["by_delivery_state"] == {"done": 4, "dead": 1}
    assert (stats["queue_depth"], stats["due_now"], stats["oldest_due_at"], stats["dead"]) == (0, 0, None, 1)
    health = {h["sender_code"]: h for h in stats["handlers"]}
    assert health[good_from.split("|")[1]]["success_rate"] == 1.0
    assert (
        health[bad_from.split("|")[1]]["last_error"] == "HTTP 500" and health[bad_from.split("|")[1]]["attempts"] == 4
    )

    text = ms(portal, "stats").stdout
    for expected in (
        "Last 1 h",
        "created",
        "Queue now",
        "dead letters",
        "Handlers, last 1 h",
        "HTTP 500",
        "100%",
        "0%",
    ):
        assert expected in text, expected
    assert bad_from in text and handler_url(bad) in text


@pytest.mark.parametrize(("window", "message"), [("10s", "the window must be 1m to 7d"), ("soon", "not a duration")])
def test_stats_bad_window(no_database: dict[str, str], window: str, message: str) -> None:
    assert message in refused(no_database, "stats", "--window", window).stderr
