"""The HANDLER call body built with auth[...] encoded once per claim is the same bytes as built whole."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from messageservice.core.payload import HandlerMessage, auth_block, encoded_auth, handler_body, handler_body_with

PORTAL = SimpleNamespace(domain="portal.test", client_endpoint="http://portal.test/rest/", member_id="m" * 32)
ROW = SimpleNamespace(scopes="messageservice,crm", app_status="L", author_id=7)


@pytest.mark.parametrize(
    "headers",
    [
        {"bindings": [{"OWNER_TYPE_ID": "3", "OWNER_ID": "42"}, {"OWNER_TYPE_ID": "2", "OWNER_ID": "7"}]},
        {"workflow_id": "wf 1", "document_id": ["crm", "CCrmDocumentLead", "LEAD_1"], "document_type": ["crm"]},
    ],
)
def test_a_pre_encoded_auth_block_gives_the_same_body(headers: dict[str, object]) -> None:
    message = HandlerMessage("crm", headers, "SMS", "code", "ab" * 16, "+79990000000", 'Привет & "hi" ✓', 1700000000)
    auth = auth_block(
        PORTAL, ROW, access_token="t" * 70, expires=1700003600, expires_in=3600, application_token="app token"
    )
    assert handler_body_with(message, encoded_auth(auth)) == handler_body(message, auth)
