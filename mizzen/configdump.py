"""xDS resources as JSON for people: the sidecar's admin ``config_dump`` and the controller's debug dumps
(and ``mizzen proxy-config``) print them the same way, every embedded type readable, secrets hidden."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any

from google.protobuf import json_format, struct_pb2, symbol_database
from google.protobuf.message import Message


def redact(value: Any) -> Any:
    """Private keys given inline (a gateway's credential) are not shown, as Envoy's dump hides secrets."""
    if isinstance(value, dict):
        hidden = {"inline_string": "[redacted]"}
        return {k: hidden if k == "private_key" else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _stand_in_unknown_types(msg: Message) -> None:
    """Make every ``Any`` inside ``msg`` printable, in place: import the generated module of each Envoy
    type not loaded yet (the proxy accepts some, such as listener filters it reads by name, without
    unpacking them); one whose type stays unknown becomes a Struct naming that type and its size."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Any":
        name = msg.type_url.rpartition("/")[2]  # type: ignore[attr-defined]
        try:
            cls = symbol_database.Default().GetSymbol(name)
        except KeyError:
            cls = _import_message(name)
        if cls is None:
            stand_in = struct_pb2.Struct()
            stand_in.update({"unknown_type": msg.type_url, "bytes": len(msg.value)})  # type: ignore[attr-defined]
            msg.Pack(stand_in)  # type: ignore[attr-defined]
            return
        inner = cls()
        msg.Unpack(inner)  # type: ignore[attr-defined]
        _stand_in_unknown_types(inner)
        msg.Pack(inner)  # type: ignore[attr-defined]
        return
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for v in values:
            _stand_in_unknown_types(v)


def _import_message(full_name: str) -> Any:
    """The class of an Envoy (or xDS) message, from the generated modules of its package, or None."""
    package, _, _ = full_name.rpartition(".")
    if not package.startswith(("envoy.", "xds.", "udpa.", "validate.")):
        return None
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return None
    for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        if info.name.endswith("_pb2"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"{package}.{info.name}")
    try:
        return symbol_database.Default().GetSymbol(full_name)
    except KeyError:
        return None


def resource_dict(msg: Message) -> Any:
    """A resource for config_dump, with every embedded type printed; a type this proxy has no schema
    for shows as a Struct naming it and its size, instead of failing the whole dump."""
    try:
        return redact(json_format.MessageToDict(msg, preserving_proto_field_name=True))
    except TypeError:
        pass
    copy = type(msg)()
    copy.CopyFrom(msg)
    _stand_in_unknown_types(copy)
    return redact(json_format.MessageToDict(copy, preserving_proto_field_name=True))
