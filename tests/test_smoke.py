from tests.portal import LivePortal


def test_sender_add_then_list(portal: LivePortal) -> None:
    app = portal.add_app()
    response = portal.call(
        "messageservice.sender.add",
        {"CODE": "smoke", "TYPE": "SMS", "HANDLER": "http://127.0.0.1:9000/h", "NAME": "Smoke"},
        token=app.access_token,
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] is True
    listed = portal.call("messageservice.sender.list", token=app.access_token).json()
    assert listed["result"] == ["smoke"]
