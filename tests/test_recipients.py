"""One recipient rule for REST `message.send`, the console's Send form and the CLI: what Bitrix24's
NormalizePhone reads as a phone number (spec 2.2), stored as Bitrix stores it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from messageservice.core import messages as message_service
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.phones import NOT_A_PHONE, RULE, VALIDATION, normalize_phone, phone_number, recipient
from messageservice.store.tables import messages
from tests.console_helpers import ConsoleClient, add_admin, add_sender
from tests.portal import LivePortal
from tests.receiver import Receiver
from tests.test_cli_polish import env_of, run_cli, run_json

ACCEPTED = [
    ("8 (999) 000-00-00", "+79990000000"),  # a leading 8 is read as 7
    ("+1 555 010 2030", "+15550102030"),
    ("0044 20 7946 0958", "+442079460958"),  # 00 and 011 are international prefixes
    ("011 44 20 7946 0958", "+442079460958"),
    ("tel: 79990001122", "+79990001122"),  # other characters are dropped, as Bitrix drops them
]
REFUSED = ["notaphone", "abc", "+1", "555-0102", "123456789", "abcdefghij1", "0012345678"]


@pytest.mark.parametrize(("raw", "stored"), ACCEPTED)
def test_bitrix_reads_these_as_phones(raw: str, stored: str) -> None:
    assert phone_number(raw) == stored == recipient(f"  {raw} ")


@pytest.mark.parametrize("raw", REFUSED)
def test_and_not_these(raw: str) -> None:
    assert phone_number(raw) is None
    assert normalize_phone(raw) == raw  # a search filter keeps what was typed
    with pytest.raises(CoreError) as refused:
        recipient(raw)
    assert (refused.value.code, refused.value.description) == (VALIDATION, NOT_A_PHONE)


def test_the_code_is_message_send_s_own() -> None:
    assert VALIDATION == message_service.VALIDATION


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def count_to(portal: LivePortal, sender: str) -> int:
    async def read(core: Core) -> int:
        async with core.store.connection() as conn:
            query = select(func.count()).select_from(messages).where(messages.c.message_from == sender)
            return int((await conn.execute(query)).scalar_one())

    return portal.run(read)


@pytest.mark.parametrize("raw", ["notaphone", "+1", "123456789"])
def test_rest_refuses_what_is_not_a_phone(any_portal: LivePortal, receiver: Receiver, raw: str) -> None:
    app = any_portal.add_app(name="Recipients")
    sender = add_sender(any_portal, app, receiver.url)
    answer = any_portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": raw, "MESSAGE_BODY": "hi"},
        token=app.access_token,
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "ERROR_MESSAGE_VALIDATION_FAILURE", "error_description": NOT_A_PHONE}
    assert count_to(any_portal, sender) == 0


def test_rest_stores_a_phone_as_bitrix_does(any_portal: LivePortal, receiver: Receiver) -> None:
    app = any_portal.add_app(name="Recipients")
    sender = add_sender(any_portal, app, receiver.url)
    sent = any_portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "0044 20 7946 0958", "MESSAGE_BODY": "hi"},
        token=app.access_token,
    ).json()["result"]
    got = any_portal.call("messageservice.message.get", {"ID": sent["ID"]}, token=app.access_token).json()
    assert got["result"]["MESSAGE_TO"] == "+442079460958"


def test_console_refuses_what_is_not_a_phone(any_portal: LivePortal, receiver: Receiver) -> None:
    app = any_portal.add_app(name="Recipients")
    sender = add_sender(any_portal, app, receiver.url)
    client = ConsoleClient(any_portal).login(add_admin(any_portal))
    form = {"mode": "crm", "sender": sender, "text": "hi", "owner_type": "3", "owner_id": "1"}
    refused = client.post("/send", {**form, "recipient": "notaphone"}, allow_redirects=False)
    assert refused.status_code == 400
    assert f"Recipient: not a phone number ({RULE})." in refused.text
    assert count_to(any_portal, sender) == 0
    sent = client.post("/send", {**form, "recipient": "8 (999) 000-00-01"}, allow_redirects=False)
    assert sent.status_code == 303, sent.text[:500]
    message_id = int(sent.headers["location"].rsplit("/", 1)[1])
    got = any_portal.call("messageservice.message.get", {"ID": message_id}, token=app.access_token).json()
    assert got["result"]["MESSAGE_TO"] == "+79990000001"


def test_cli_refuses_what_is_not_a_phone(any_portal: LivePortal, receiver: Receiver) -> None:
    app = any_portal.add_app(name="Recipients")
    sender = add_sender(any_portal, app, receiver.url)
    env = env_of(any_portal)
    refused = run_cli(env, "send", "--from", sender, "--to", "notaphone", "--text", "hi")
    assert refused.code == 2
    assert f"not a phone number: 'notaphone' ({RULE})" in refused.stderr
    assert count_to(any_portal, sender) == 0
    # What the old CLI rule refused (letters) and Bitrix reads as a phone is sent, as REST sends it.
    sent = run_json(env, "send", "--from", sender, "--to", "tel: 8 999 000-00-02", "--text", "hi")
    got = any_portal.call("messageservice.message.get", {"ID": sent["ID"]}, token=app.access_token).json()
    assert got["result"]["MESSAGE_TO"] == "+79990000002"
