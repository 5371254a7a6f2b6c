"""docs/providers.md names every field the server sends, quotes the examples as they are, and the docs
stand alone (no link into a folder a clone does not have)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import select

from messageservice.core import apps as app_service
from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.payload import AUTH_FIELDS, HandlerMessage, handler_fields
from messageservice.phpquery import parse_str
from messageservice.store.tables import app_events
from tests.portal import LivePortal

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "providers.md"
# Written by another part of this round's work; it exists once the branches are merged.
LINKED_ELSEWHERE = {ROOT / "docs" / "check-provider.md"}


def field_names(value: Any, prefix: str = "") -> list[str]:
    """`auth[access_token]`-style names of a nested form, every index written as [0]."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        names = []
        for key, item in items:
            part = "0" if isinstance(key, int) or str(key).isdigit() else str(key)
            names += field_names(item, f"{prefix}[{part}]" if prefix else part)
        return names
    return [prefix]


def undocumented(names: list[str]) -> list[str]:
    guide = GUIDE.read_text()
    return sorted({name for name in names if f"`{name}`" not in guide})


def test_the_guide_names_every_field_of_the_app_events_the_server_sends(any_portal: LivePortal) -> None:
    async def life(core: Core) -> dict[str, dict[str, Any]]:
        app, _ = await app_service.add_app(core, "Guide check", "http://127.0.0.1:9/", "messageservice")
        await app_service.install_app(core, app.client_id, 1)
        await app_service.update_app(core, app.client_id, version=2)
        await app_service.uninstall_app(core, app.client_id, clean=True)
        async with core.store.connection() as conn:
            rows = (
                await conn.execute(select(app_events.c.event, app_events.c.body).where(app_events.c.app_id == app.id))
            ).all()
        return {row.event: parse_str(core.box.decrypt(row.body)) for row in rows}

    events = any_portal.run(life)
    assert set(events) == {"ONAPPINSTALL", "ONAPPUPDATE", "ONAPPUNINSTALL"}
    for name, body in events.items():
        assert name in GUIDE.read_text()
        assert undocumented(field_names(body)) == [], f"{name} fields missing from docs/providers.md"
    assert "refresh_token" in events["ONAPPINSTALL"]["auth"] and "access_token" not in events["ONAPPUNINSTALL"]["auth"]


def test_the_guide_names_every_field_of_the_handler_call() -> None:
    auth = {key: "x" for key in AUTH_FIELDS}
    crm = HandlerMessage("crm", {"bindings": [{"OWNER_TYPE_ID": 3, "OWNER_ID": 1}]}, "SMS", "c", "m", "+1", "b", 1)
    bizproc = HandlerMessage(
        "bizproc",
        {"workflow_id": "w", "document_id": ["crm", "CCrmDocumentLead", "LEAD_1"], "document_type": ["a", "b", "c"]},
        "SMS",
        "c",
        "m",
        "+1",
        "b",
        1,
    )
    for message in (crm, bizproc):
        assert undocumented(field_names(handler_fields(message, auth))) == []


def test_the_guide_lists_every_status_a_provider_may_report() -> None:
    guide = GUIDE.read_text()
    for name, status in statuses.REPORTABLE.items():
        assert f"| `{name}` |" in guide and f'"{status.description}"' in guide, name


def test_quoted_example_code_is_what_the_example_says() -> None:
    quotes = re.findall(r"<!-- quote: (\S+) -->\n```\w*\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(quotes) >= 3
    for path, block in quotes:
        assert block in (ROOT / path).read_text(), f"docs/providers.md quotes {path} as it no longer is"


def test_docs_links_resolve_and_stay_inside_the_project() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text()
        assert "../shared" not in text and "/work/shared" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            resolved = (page.parent / unquote(target)).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name} links outside the project: {target}"
            assert resolved.exists() or resolved in LINKED_ELSEWHERE, f"{page.name}: broken link {target}"


def test_the_readme_leads_to_the_guide_and_the_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/providers.md)" in readme and "(docs/api.md)" in readme


def test_every_table_row_has_as_many_cells_as_its_header() -> None:
    """An unescaped `|` inside a cell (e.g. in `{client_id}|{CODE}`) would split it and break the table."""
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        width = None
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if not line.startswith("|"):
                width = None
                continue
            cells = len(re.findall(r"(?<!\\)\|", line))
            width = cells if width is None else width
            assert cells == width, f"{page.name}:{number}: {cells - 1} cells where the header has {width - 1}"


def slugs(markdown: str) -> set[str]:
    """Heading anchors as GitHub makes them: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_anchors_in_the_docs_name_headings_that_exist() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue  # another site's page
            linked = (page.parent / target) if target else page
            if linked.resolve() in LINKED_ELSEWHERE:
                continue
            assert anchor in slugs(linked.read_text()), f"{page.name}: no heading for {target}#{anchor}"
