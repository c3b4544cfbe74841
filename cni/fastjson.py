"""JSON for the plugin's start-up path: the C half of the stdlib's json, without json itself.

``import json`` costs ~12 ms on a small node, most of it json.decoder and json.encoder
compiling regular expressions (which pulls in re and enum) -- a quarter of the plugin's
whole ADD budget. The plugin reads and writes a few small documents; ``_json``, the
accelerator module the stdlib json package is built on, does both in C with none of that.
Behaviour matches ``json.loads``/``json.dumps`` for UTF-8 input (the tests compare them);
without ``_json`` (another interpreter) it is plain json.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_json: Any
try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

_WS = " \t\n\r"


class _DecoderSettings:
    """The attributes ``_json.make_scanner`` reads from a json.JSONDecoder, with its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads accepts them


def _error(msg: str, doc: str, pos: int) -> ValueError:
    from json import JSONDecodeError  # only on the error path

    return JSONDecodeError(msg, doc, pos)


def loads(data: bytes | str) -> Any:
    """Parse one JSON document; raises ValueError (json.JSONDecodeError) like json.loads."""
    if _json is None:
        import json

        return json.loads(data)
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    if text.startswith("\ufeff"):
        raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    start = len(text) - len(text.lstrip(_WS))
    scan = _json.make_scanner(_DecoderSettings)  # reads only the settings' attributes
    try:
        obj, end = scan(text, start)
    except StopIteration as stop:
        raise _error("Expecting value", text, stop.value) from None
    except SystemError:
        # _json reports errors inside a document through json.decoder, which it looks up
        # without importing; with it absent the scanner fails without an error. Let the
        # stdlib parse the bad document and raise its usual JSONDecodeError.
        import json

        return json.loads(text)
    end += len(text[end:]) - len(text[end:].lstrip(_WS))
    if end != len(text):
        raise _error("Extra data", text, end)
    return obj


def _default(obj: object) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """Serialise like ``json.dumps(obj)`` with its default settings."""
    if _json is None:
        import json

        return json.dumps(obj)
    encode = _json.make_encoder(
        {}, _default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return "".join(encode(obj, 0))
