"""The operator a message command acts as (`--user`, a portal user, default 1) and options several commands share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from messageservice.cli.errors import InputError

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.core.messages import Actor

# core.messages.MAX_ID, repeated so that building the options does not load the store (a test keeps them equal).
MAX_ID = 2**31 - 1

UserOption = Annotated[
    int, typer.Option("--user", min=1, max=MAX_ID, help="The portal user acting (and authoring sends).")
]
SenderFilter = Annotated[str | None, typer.Option("--sender", help="Only this sender: client_id|CODE, or CODE.")]


async def acting(core: Core, user_id: int) -> Actor:
    """The user as an admin of the CLI channel: sends are authored by them, every message is visible."""
    from messageservice.core.messages import Actor
    from messageservice.core.portal import get_user

    user = await get_user(core, user_id)
    if user is None:
        raise InputError(f"there is no user {user_id} (see `messageservice user list`)")
    if not user.active:
        raise InputError(f"user {user_id} is deactivated")
    return Actor(user_id=user.id, is_admin=True, channel="cli")
