"""The CNI protocol as a plugin sees it: environment, stdin config, results and errors.

Spec 1.0.0 (with 1.1.0's STATUS and GC). A chained plugin reads ``prevResult``
and, having nothing to add to the result, hands it back unchanged.
"""

from __future__ import annotations

# Nothing from typing or collections at run time: the plugin starts once per pod, and on a
# small node importing typing alone costs as much as applying the rules (see bench/).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SPEC_VERSION = "1.0.0"
# A chained plugin needs prevResult, which starts with 0.3.0. STATUS and GC are 1.1.0's.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Well-known error codes (spec section "Error"); 100 and up are ours.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
INVALID_POD_ANNOTATION = 101
CAPTURE_FAILED = 102
CAPTURE_MISSING = 103
POD_METADATA_UNAVAILABLE = 104


class CniError(Exception):
    """An error the plugin reports to the runtime as a CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = SPEC_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Invocation:
    """One call of the plugin: the CNI_* environment plus the network configuration."""

    __slots__ = ("args", "command", "config", "container_id", "ifname", "netns", "path")

    def __init__(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: Mapping[str, str] | None = None,
        path: str = "",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args: Mapping[str, str] = args or {}
        self.path = path
        self.config: Mapping[str, Any] = config or {}

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", SPEC_VERSION))

    @property
    def prev_result(self) -> Mapping[str, Any] | None:
        prev = self.config.get("prevResult")
        return prev if isinstance(prev, dict) else None

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")


def parse_cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS is ``K=V;K=V``; a malformed pair is an invalid environment."""
    out: dict[str, str] = {}
    for pair in filter(None, raw.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, "invalid CNI_ARGS", f"pair {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def parse(env: Mapping[str, str], stdin: bytes) -> Invocation:
    """Build an :class:`Invocation`, raising :class:`CniError` for anything a runtime got wrong."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, "invalid CNI_COMMAND", f"{command!r} is not one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        return Invocation(command=command)

    from cni import fastjson

    try:
        config = fastjson.loads(stdin or b"")
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "network configuration on stdin is not valid JSON", str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "network configuration on stdin is not a JSON object")

    version = config.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(INVALID_CONFIG, "network configuration has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            f"cniVersion {version} is not one of {', '.join(SUPPORTED_VERSIONS)}",
        )
    for key in ("name", "type"):
        if not isinstance(config.get(key), str) or not config.get(key):
            raise CniError(INVALID_CONFIG, f"network configuration has no {key!r}")
    if command in ("STATUS", "GC") and _version_tuple(version) < (1, 1, 0):
        raise CniError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0", f"got {version}")

    required = {
        "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    }.get(command, ())
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(INVALID_ENV, "missing CNI environment variables", ", ".join(missing))

    return Invocation(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=env.get("CNI_PATH", ""),
        config=config,
    )


def version_result() -> dict[str, Any]:
    return {"cniVersion": SPEC_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
