"""REST methods, one module per scope; `build_registry` collects them all."""

from __future__ import annotations

from messageservice.rest.registry import Registry


def build_registry() -> Registry:
    from messageservice.methods import messageservice, system

    registry = Registry()
    system.register(registry)
    messageservice.register(registry)
    return registry
