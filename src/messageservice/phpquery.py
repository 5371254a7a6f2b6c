"""PHP's query-string format: `parse_str` for what clients send, `http_build_query` for what we send.

qs-codec was evaluated first: it follows the JavaScript `qs` package (array limits, depth 5, no
PHP name mangling), so bracketed Bitrix parameters would parse differently from PHP. Both
directions are small enough to write to PHP's own rules.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any
from urllib.parse import unquote_to_bytes

# PHP's defaults: max_input_nesting_level=64, max_input_vars=1000 (we allow more; batches are large).
MAX_DEPTH = 64
MAX_VARS = 10_000
# The total of name segments (`a[b][c]` is 3) one query string or body may build: variables times depth
# would allow 640,000 nested levels, seconds of CPU. Ten thousand variables five deep fit; like the two
# limits above, what is past it is dropped.
MAX_SEGMENTS = 50_000


class EncodingError(ValueError):
    """The query decodes to bytes that are not UTF-8."""


def _decode(component: bytes) -> str:
    raw = unquote_to_bytes(component.replace(b"+", b" "))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(str(exc)) from exc


def _mangle(name: str) -> str:
    return name.replace(".", "_").replace(" ", "_")


def top_key(key: str) -> tuple[str, bool] | None:
    """The parameter a name assigns to and whether it is an array (`a[b]`), without splitting the rest:
    what the credentials check needs, at a cost independent of the name's depth."""
    key = key.lstrip(" ")
    bracket = key.find("[")
    if bracket <= 0:
        if bracket == 0 or not key:
            return None
        return _mangle(key), False
    if key.find("]", bracket + 1) == -1:
        # An unmatched '[' in the first segment: PHP turns it into '_' and keeps the rest.
        return _mangle(key[:bracket] + "_" + key[bracket + 1 :]), False
    return _mangle(key[:bracket]), True


def _split_key(key: str) -> list[str] | None:
    """`a[b][]` -> ['a', 'b', '']; PHP's mangling of the base name included."""
    top = top_key(key)
    if top is None or not top[1]:
        return None if top is None else [top[0]]
    key = key.lstrip(" ")
    rest = key[key.find("[") :]
    parts: list[str] = []
    pos = 0
    # Segments past the depth limit are dropped, so they are not even looked for.
    while pos < len(rest) and rest[pos] == "[" and len(parts) < MAX_DEPTH - 1:
        close = rest.find("]", pos + 1)
        if close == -1:
            break
        parts.append(rest[pos + 1 : close])
        pos = close + 1
    return [top[0], *parts]


_PHP_INT_MAX = 2**63 - 1


def _php_int(key: str) -> int | None:
    """The integer PHP would turn this array key into: "12" and "-3" do, "012", "+1", " 1" do not."""
    body = key[1:] if key[:1] == "-" else key
    if not (body.isascii() and body.isdigit()) or len(body) > 19 or (body[0] == "0" and body != "0"):
        return None
    value = int(key)
    if key == "-0" or not -_PHP_INT_MAX - 1 <= value <= _PHP_INT_MAX:
        return None
    return value


class _Builder:
    """Assigns decoded pairs into nested dicts; `a[]=` appends at PHP's next free integer index."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}
        # Next free index per array (keyed by id): a scan per append would make `a[]=` quadratic.
        self._next: dict[int, int] = {}

    def _slot(self, node: dict[str, Any], part: str) -> str:
        if part == "":
            index = self._next.get(id(node), 0)
            self._next[id(node)] = index + 1
            return str(index)
        number = _php_int(part)
        if number is not None and number >= self._next.get(id(node), 0):
            self._next[id(node)] = number + 1
        return part

    def assign(self, parts: list[str], value: str) -> None:
        node = self.root
        for depth, part in enumerate(parts):
            key = self._slot(node, part)
            if depth == len(parts) - 1:
                node[key] = value
                return
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child

    def result(self) -> dict[str, Any]:
        # The top level is always a map of parameter names, whatever its keys look like.
        return {key: listify(value) for key, value in self.root.items()}


def split_pairs(query: str | bytes) -> list[tuple[str, str]]:
    """The decoded name/value pairs of a query string, up to MAX_VARS of them: linear work, no nesting."""
    if isinstance(query, str):
        query = query.encode("utf-8", "surrogateescape")
    if b"%" not in query and b"+" not in query:
        # Nothing to unescape: decode once and split in C (an unauthenticated body is split like this
        # before its credentials are known, so its cost matters). Bad bytes take the exact path below.
        try:
            text = query.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            named = [pair.partition("=") for pair in text.split("&") if pair][:MAX_VARS]
            # top_key(name) is None exactly for these: "" and "[..." once leading spaces are gone.
            return [(name, value) for name, _, value in named if name.lstrip(" ")[:1] not in ("", "[")]
    pairs: list[tuple[str, str]] = []
    for count, pair in enumerate(p for p in query.split(b"&") if p):
        if count >= MAX_VARS:
            break
        raw_name, _, value = pair.partition(b"=")
        name = _decode(raw_name)
        # A name PHP ignores ("", "[x]") leaves its value undecoded, as parse_str does.
        if top_key(name) is not None:
            pairs.append((name, _decode(value)))
    return pairs


def parse_str(query: str | bytes) -> dict[str, Any]:
    """Parse like PHP's parse_str; arrays with keys 0..n-1 in order become lists."""
    return parse_pairs(split_pairs(query))


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Build the parameters from decoded pairs (a query string's or multipart form fields)."""
    builder = _Builder()
    segments = 0
    for count, (name, value) in enumerate(pairs):
        if count >= MAX_VARS:
            break
        parts = _split_key(name)
        if parts is None:
            continue
        segments += len(parts)
        if segments > MAX_SEGMENTS:
            break
        builder.assign(parts, value)
    return builder.result()


@functools.lru_cache(maxsize=16)
def _prefix_search(wanted: tuple[str, ...]) -> Any:
    # Mangling changes only '.' and ' ', so a wanted name's first four letters are in the pair's name:
    # a cheap test that skips top_key for nearly every pair. Built once per set of names (one per caller).
    return re.compile("|".join(re.escape(want[:4]) for want in wanted)).search


def scalar_params(pairs: Iterable[tuple[str, str]], names: tuple[str, ...]) -> dict[str, str | None]:
    """What parse_pairs would give the top-level `names` among `pairs`: the last assignment wins; an
    array is None. Cheap: no name is split past its first bracket."""
    wanted = set(names)
    search = _prefix_search(names)
    found: dict[str, str | None] = {}
    for name, value in [pair for pair in islice(pairs, MAX_VARS) if search(pair[0])]:
        top = top_key(name)
        if top is not None and top[0] in wanted:
            found[top[0]] = None if top[1] else value
    return found


def listify(value: Any) -> Any:
    """PHP arrays are ordered maps; JSON shows the ones keyed 0..n-1 as lists, and so do we."""
    if isinstance(value, dict):
        converted = {k: listify(v) for k, v in value.items()}
        if converted and all(k == str(i) for i, k in enumerate(converted)):
            return list(converted.values())
        return converted
    if isinstance(value, list):
        return [listify(v) for v in value]
    return value


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}[{key}]", item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)


# PHP's urlencode keeps only ASCII alphanumerics and "-_." (Python's quote also keeps "~"), and
# writes a space as "+". A byte table is about three times as fast as urllib's quote_plus, which
# matters: every HANDLER call body is built with it.
_URLENCODED = [
    chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.") else "+" if b == 32 else f"%{b:02X}"
    for b in range(256)
]


def _php_urlencode(text: str) -> str:
    if text.isascii() and text.isalnum():  # ids, tokens, numbers: nothing to encode
        return text
    return "".join([_URLENCODED[b] for b in text.encode()])


@functools.lru_cache(maxsize=4096)
def _encoded_name(name: str) -> str:
    # Field names repeat from body to body (auth[domain], bindings[0][OWNER_ID]): encoded once each.
    return _php_urlencode(name)


def http_build_query(data: Mapping[str, Any]) -> str:
    """Encode like PHP's http_build_query (RFC 1738: space as '+', brackets as %5B/%5D, nulls dropped)."""
    pairs: list[str] = []
    for key, value in data.items():
        for name, text in _flatten(str(key), value):
            pairs.append(f"{_encoded_name(name)}={_php_urlencode(text)}")
    return "&".join(pairs)
