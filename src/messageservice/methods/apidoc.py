"""The API reference (docs/api.md), generated from the method registry so that it cannot drift from the code.

    python -m messageservice.methods.apidoc docs/api.md     # or: messageservice api-doc > docs/api.md

Each method's parameters, answer and errors come from its declaration (methods/declare.py); the errors
every method can give and the status table come from the code that raises and defines them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from messageservice.config import Settings
from messageservice.core import statuses
from messageservice.methods.declare import Declaration, Failure, declaration_of
from messageservice.rest import errors
from messageservice.rest.registry import GLOBAL_SCOPE, Method, Registry

REGENERATE = "python -m messageservice.methods.apidoc docs/api.md"

HEADER = f"""# REST API reference

Generated from the method registry by `{REGENERATE}` (or `messageservice api-doc`);
do not edit by hand. For the calls a provider receives (the HANDLER call, app events), see
[providers.md](providers.md).

## Calling a method

- **URL**: `/rest/{{method}}`, `/rest/{{method}}.json` (or `.xml`), or with an incoming webhook
  `/rest/{{user_id}}/{{secret}}/{{method}}`. A trailing slash and any case of the method name are accepted.
- **Parameters**: in the query string, a form body (`application/x-www-form-urlencoded` or multipart, with PHP
  brackets: `NAME[en]=Demo`) or a JSON body; GET and POST alike; the body wins over the query string. The
  `messageservice.*` methods, `batch`, `scope` and `methods` read their parameter names in any case
  (`message_id` = `MESSAGE_ID`).
- **Auth**: an app's OAuth access token as `auth` (or `access_token`) parameter or `Authorization: Bearer`
  header; or the webhook path. "basic" methods need no scope; the others need the scope shown.
- **Success**: HTTP 200, `{{"result": ..., "time": {{"start", "finish", "duration", "processing", "date_start",
  "date_finish", "operating", "operating_reset_at"}}}}`; list methods add `total` and, while more rows remain,
  `next` (pass it as `start`).
- **Failure**: `{{"error": "CODE", "error_description": "text"}}` with the HTTP status below; no `time`.
  Codes and texts are Bitrix24's, so that clients written for Bitrix24 recognise them.
- **Extensions** are ours: Bitrix24 does not have them.

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else ""


def _anchor(name: str) -> str:
    return name.replace(".", "")


def _status(failure: Failure) -> str:
    return str(failure.status) if failure.status is not None else "200, in `result_error`"


def _error_rows(failures: tuple[Failure, ...] | list[Failure]) -> list[str]:
    rows = ["| error | error_description | HTTP | when |", "|---|---|---|---|"]
    for f in failures:
        text = f"`{_cell(f.text)}`" if f.text else "(empty)"
        rows.append(f"| `{f.code}` | {text} | {_status(f)} | {_cell(f.when)} |")
    return rows


def _ordered(registry: Registry) -> list[Method]:
    # Bitrix24's messageservice methods first, then our extensions, then the basic methods.
    def key(m: Method) -> tuple[int, str]:
        group = 2 if m.scope == GLOBAL_SCOPE else 1 if m.extension else 0
        return group, m.name

    return sorted(registry.methods.values(), key=key)


def _scope(method: Method) -> str:
    return method.scope if method.scope != GLOBAL_SCOPE else "basic"


def _index(methods: list[Method]) -> list[str]:
    rows = ["## Method index", "", "| method | scope | what it does |", "|---|---|---|"]
    for m in methods:
        summary = m.summary + (" (extension)" if m.extension else "")
        rows.append(f"| [`{m.name}`](#{_anchor(m.name)}) | {_scope(m)} | {_cell(summary)} |")
    return [*rows, ""]


def common_errors() -> list[Failure]:
    """Errors any call can meet before or around its method, as rest/ raises them."""
    limit = Settings.model_fields["max_body_bytes"].default
    return [
        Failure.of(errors.method_not_found(), "No such method (checked before auth)."),
        Failure.of(errors.no_auth_found(), "No token and no webhook path."),
        Failure.of(errors.invalid_token(), "The token is unknown (revoked, or from another server)."),
        Failure.of(errors.expired_token(), "The access token is over an hour old: refresh it at `/oauth/token/`."),
        Failure.of(errors.invalid_credentials(), "A webhook path with a wrong user id or secret."),
        Failure.of(errors.https_required(), "A webhook over http while `MESSAGESERVICE_WEBHOOK_REQUIRE_HTTPS` is on."),
        Failure.of(errors.insufficient_scope(False), "The app lacks the method's scope."),
        Failure.of(errors.insufficient_scope(True), "The webhook lacks the method's scope."),
        Failure.of(
            errors.query_limit_exceeded(),
            "Over the request rate (`MESSAGESERVICE_RATE_LIMIT_BURST`, `..._PER_SECOND`); wait and retry.",
        ),
        Failure.of(
            errors.operation_time_limit(),
            "The method used its operating time (`MESSAGESERVICE_OPERATING_LIMIT_SECONDS`, off by default); "
            "see `time.operating_reset_at`.",
        ),
        Failure.of(errors.wrong_encoding(), "Text that is not UTF-8, or holds a NUL."),
        Failure.of(errors.body_too_large(limit), "The body is over `MESSAGESERVICE_MAX_BODY_BYTES` (this default)."),
        Failure("ERROR_ARGUMENT", "Malformed multipart body", 400, "A multipart body that cannot be parsed."),
        Failure.of(errors.store_unavailable(), "The database cannot take the call now; `Retry-After` says when."),
        Failure.of(errors.sql_error(), "A database error."),
        Failure.of(errors.internal_error(), "A bug; the server's log has the details."),
    ]


def _statuses() -> list[str]:
    rows = [
        "## Message statuses",
        "",
        "A provider reports the values marked *reportable* with `messageservice.message.status.update`",
        "(exactly these, lower case); the others are set by the server. The current status only moves forward",
        "(rank); every report is kept in the history.",
        "",
        "| STATUS_ID | name | description (`status.get`) | semantic | rank | reportable |",
        "|---|---|---|---|---|---|",
    ]
    reportable = {s.id for s in statuses.REPORTABLE.values()}
    for s in statuses.BY_ID.values():
        mark = "yes" if s.id in reportable else ""
        rows.append(f"| {s.id} | `{s.name}` | {s.description} | {s.semantic} | {s.rank} | {mark} |")
    return [*rows, ""]


def _method(method: Method, declared: Declaration | None) -> list[str]:
    rows = [f"## {method.name}", ""]
    kind = "Extension (not in Bitrix24). " if method.extension else ""
    rows += [f"{kind}{method.summary} Scope: {_scope(method)}.", ""]
    if declared is None:
        return [*rows, "(Not declared.)", ""]
    rows += [f"**Who may call:** {declared.caller}", ""]
    if declared.params:
        rows += ["**Parameters:**", "", "| name | type | required | limits | meaning |", "|---|---|---|---|---|"]
        for p in declared.params:
            required = "yes" if p.required else "no"
            rows.append(f"| `{p.name}` | {_cell(p.type)} | {required} | {_cell(p.limits)} | {_cell(p.about)} |")
        rows.append("")
    else:
        rows += ["**Parameters:** none.", ""]
    rows += [f"**Answer (`result`):** {declared.answer}", ""]
    if declared.errors:
        rows += ["**Errors** (besides the common ones):", "", *_error_rows(declared.errors), ""]
    else:
        rows += ["**Errors:** only the common ones.", ""]
    if declared.notes:
        rows += [declared.notes, ""]
    return rows


def render(registry: Registry) -> str:
    methods = _ordered(registry)
    lines = _index(methods)
    lines += ["## Errors every method can give", "", *_error_rows(common_errors()), ""]
    lines += _statuses()
    for method in methods:
        lines += _method(method, declaration_of(method.handler))
    return HEADER + "\n".join(lines).rstrip("\n") + "\n"


def write(path: Path) -> None:
    from messageservice.methods import build_registry

    path.write_text(render(build_registry()), encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python -m messageservice.methods.apidoc [docs/api.md]", file=sys.stderr)
        return 2
    if argv:
        write(Path(argv[0]))
    else:
        from messageservice.methods import build_registry

        sys.stdout.write(render(build_registry()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
