"""The plugin's start-up JSON must behave exactly like the stdlib's."""

from __future__ import annotations

import json

import pytest

from cni import fastjson

DOCS = [
    '{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}], "dns": {}}',
    ' \n [1, -2, 3.5e10, true, false, null, "x\\u00e9\\n\\"q\\""] \t',
    '"\\ud83d\\ude00"',
    '{"nested": {"a": [[], {}]}, "unicode": "\u00fc\u4e2d"}',
    "0",
]


@pytest.mark.parametrize("doc", DOCS)
def test_loads_and_dumps_match_json(doc: str) -> None:
    assert fastjson.loads(doc) == json.loads(doc)
    assert fastjson.loads(doc.encode()) == json.loads(doc)
    assert fastjson.dumps(json.loads(doc)) == json.dumps(json.loads(doc))


@pytest.mark.parametrize("doc", ["", "   ", "{", "[1,]", "{} x", '{"a" 1}', "\ufeff{}", "nul"])
def test_errors_match_json(doc: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        fastjson.loads(doc)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(doc)
    assert ours.value.pos == theirs.value.pos


def test_errors_inside_a_document_without_json_imported() -> None:
    # _json finds JSONDecodeError through sys.modules; a fresh process has no json module loaded.
    import subprocess
    import sys

    code = (
        "from cni import fastjson\n"
        "try:\n    fastjson.loads('{not json')\n"
        "except ValueError as e:\n    print(type(e).__name__)"
    )
    from pathlib import Path

    root = str(Path(fastjson.__file__).parent.parent)
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = [{root!r}]\n{code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "JSONDecodeError"


def test_invalid_utf8_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        fastjson.loads(b'{"a": "\xff"}')


def test_dumps_rejects_what_json_rejects() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        fastjson.dumps({"a": {1}})
