"""The admin config_dump prints every resource whole, whatever types are packed inside it.

Run in a fresh interpreter: whether an Envoy type's generated module is already imported depends on
what ran before in the same process, and the dump must not depend on it."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
from google.protobuf import any_pb2
from envoy.config.listener.v3 import listener_pb2
from mizzen.configdump import resource_dict

lst = listener_pb2.Listener(name="virtualInbound")
# A listener filter the proxy reads by name, without unpacking: its module is not imported here.
f = lst.listener_filters.add(name="envoy.filters.listener.http_inspector")
f.typed_config.type_url = (
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
)
# A type no module of ours defines.
g = lst.listener_filters.add(name="acme.thing")
g.typed_config.CopyFrom(any_pb2.Any(type_url="type.googleapis.com/acme.v1.Thing", value=b"\x08\x01"))
assert "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2" not in sys.modules
print(json.dumps(resource_dict(lst)))
"""


def test_config_dump_prints_types_not_imported_and_names_unknown_ones() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    dump = json.loads(out.stdout)
    inspector, thing = dump["listener_filters"]
    assert inspector["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
    }
    assert thing["name"] == "acme.thing"
    assert thing["typed_config"] == {
        "@type": "type.googleapis.com/google.protobuf.Struct",
        "value": {"unknown_type": "type.googleapis.com/acme.v1.Thing", "bytes": 2},
    }
