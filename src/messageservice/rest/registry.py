"""One registry of REST methods: it feeds the router, scope checks, `methods`/`scope`/`method.get`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from messageservice.core.context import Core
from messageservice.rest.limiter import OperatingMeter

GLOBAL_SCOPE = ""


@dataclass(frozen=True)
class Caller:
    """Who is calling: a user through an app token or through a webhook."""

    user_id: int
    is_admin: bool
    scopes: frozenset[str]
    client_id: str | None = None
    app_id: int | None = None
    webhook_id: int | None = None

    @property
    def is_webhook(self) -> bool:
        return self.webhook_id is not None

    @property
    def limiter_key(self) -> str:
        return f"app:{self.app_id}" if self.app_id is not None else f"webhook:{self.webhook_id}"


@dataclass
class CallContext:
    core: Core
    caller: Caller
    registry: Registry
    start: Any = None  # the raw `start` parameter, for list methods
    in_batch: bool = False
    meter: OperatingMeter | None = None


@dataclass
class MethodResult:
    result: Any
    next: int | None = None
    total: int | None = None
    # Filled in by dispatch from the operating-time meter, for the envelope's time block.
    operating: float | None = None
    operating_reset_at: int | None = None


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[MethodResult]]


@dataclass(frozen=True)
class Method:
    name: str
    scope: str
    handler: Handler
    summary: str
    # Our additions that Bitrix24 does not have are flagged in the generated API document.
    extension: bool = False
    batchable: bool = True
    # Calls that never read each other's effects (sends): in a batch without `halt`, a run of them goes
    # at once, so that group commit (store/group_commit.py) can put them in one transaction.
    independent: bool = False


@dataclass
class Registry:
    methods: dict[str, Method] = field(default_factory=dict)

    def method(
        self,
        name: str,
        *,
        scope: str,
        summary: str,
        extension: bool = False,
        batchable: bool = True,
        independent: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            key = name.lower()
            if key in self.methods:
                raise ValueError(f"method {name} registered twice")
            self.methods[key] = Method(key, scope, handler, summary, extension, batchable, independent)
            return handler

        return register

    def get(self, name: str) -> Method | None:
        return self.methods.get(name.lower())

    def scopes(self) -> list[str]:
        return sorted({m.scope for m in self.methods.values() if m.scope != GLOBAL_SCOPE})

    def available(self, method: Method, caller: Caller) -> bool:
        return method.scope == GLOBAL_SCOPE or method.scope in caller.scopes
