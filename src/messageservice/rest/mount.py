"""/rest/ calls handed straight to the REST endpoint, ahead of Starlette's exception middleware and router.

Every REST call would otherwise match the routing table, pass the exception middleware's wrapper around
`send`, and be handed over by the route: 4.6 us of a sender.list's 51.9 (in-process, no sockets),
for nothing the endpoint uses (it answers every error itself, for every HTTP method). The routes keep
`/rest` and `/rest/{path}` for what lists them; the paths they match are exactly the ones taken here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/rest"


def rest_path(scope: Scope) -> str | None:
    """The part after `/rest/` ('' for `/rest` and `/rest/`), or None when the path is not a REST one;
    relative to the app's root path, as the router matches it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        path = path[len(root) :]
    if path == PREFIX:
        return ""
    if path.startswith(PREFIX + "/"):
        return path[len(PREFIX) + 1 :]
    return None


class RestFirst:
    """ASGI middleware, innermost: REST calls to `rest`, everything else on to the router."""

    def __init__(self, app: ASGIApp, rest: ASGIApp) -> None:
        self.app = app
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = rest_path(scope)
            if path is not None:
                scope["path_params"] = {"path": path}
                await self.rest(scope, receive, send)
                return
        await self.app(scope, receive, send)
