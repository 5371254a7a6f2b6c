"""PHP formats: parse_str, http_build_query, json_encode escaping, empty() (no server needed)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messageservice.php import php_empty, php_string
from messageservice.phpquery import EncodingError, http_build_query, parse_str
from messageservice.rest.envelope import php_json


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&b=2", {"a": "1", "b": "2"}),
        ("a[]=1&a[]=2", {"a": ["1", "2"]}),
        ("NAME[en]=x&NAME[ru]=%D0%AF", {"NAME": {"en": "x", "ru": "Я"}}),
        ("b[0][OWNER_ID]=1&b[1][OWNER_ID]=2", {"b": [{"OWNER_ID": "1"}, {"OWNER_ID": "2"}]}),
        ("e[1]=z&e[0]=y", {"e": {"1": "z", "0": "y"}}),
        ("a.b=1&c d=2", {"a_b": "1", "c_d": "2"}),
        ("x[y=1", {"x_y": "1"}),
        ("a=1&a=2", {"a": "2"}),
        ("a=1&a[x]=2", {"a": {"x": "2"}}),
        ("plus=a+b&pct=a%2Bb", {"plus": "a b", "pct": "a+b"}),
        ("&&=x&[a]=1&k", {"k": ""}),
        ("a[x][]=1&a[x][]=2&a[y]=3", {"a": {"x": ["1", "2"], "y": "3"}}),
    ],
)
def test_parse_str_matches_php(query: str, expected: dict[str, object]) -> None:
    assert parse_str(query) == expected


def test_parse_str_rejects_invalid_utf8() -> None:
    with pytest.raises(EncodingError):
        parse_str("a=%FF")


def test_http_build_query_matches_php() -> None:
    data = {
        "module_id": "crm",
        "bindings": [{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}],
        "flag": True,
        "off": False,
        "gone": None,
        "text": "Hi there~ & Привет/",
    }
    assert http_build_query(data) == (
        "module_id=crm&bindings%5B0%5D%5BOWNER_TYPE_ID%5D=3&bindings%5B0%5D%5BOWNER_ID%5D=123"
        "&flag=1&off=0&text=Hi+there%7E+%26+%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82%2F"
    )


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: "[" not in k and "]" not in k), st.text(), max_size=5))
def test_build_then_parse_round_trips(data: dict[str, str]) -> None:
    # PHP mangles '.', ' ' and leading spaces in top-level names; compare with that applied.
    expected = {}
    for key, value in data.items():
        name = key.lstrip(" ").replace(".", "_").replace(" ", "_")
        if name:
            expected[name] = value
    assert parse_str(http_build_query(data)) == expected


def test_php_json_escapes() -> None:
    assert php_json({"a": "<b>&'\"/ é 😀", "n": None, "l": [], "t": True}) == (
        b'{"a":"\\u003Cb\\u003E\\u0026\\u0027\\u0022\\/ \\u00e9 \\ud83d\\ude00","n":null,"l":[],"t":true}'
    )
    assert php_json({"back": "a\\", "q": 'x\\"'}) == b'{"back":"a\\\\","q":"x\\\\\\u0022"}'


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_php_json_decodes_to_the_same_value(value: object) -> None:
    assert json.loads(php_json(value)) == value


@pytest.mark.parametrize("value", [None, False, 0, 0.0, "", "0", [], {}])
def test_php_empty(value: object) -> None:
    assert php_empty(value)


@pytest.mark.parametrize("value", ["a", "00", " ", "0.0", 1, [0], {"a": 1}, True])
def test_php_not_empty(value: object) -> None:
    assert not php_empty(value)


def test_php_string() -> None:
    assert php_string(12) == "12" and php_string(True) == "1" and php_string(1.5) == "1.5" and php_string(2.0) == "2"
    assert php_string([1]) is None
