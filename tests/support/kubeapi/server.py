"""The Kubernetes API test server: the real wire protocol over aiohttp, for any registered resource.

Discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``, ``/apis/<group>/<version>``), LIST
(``listing``), WATCH (``watch``), GET/POST/PUT/PATCH/DELETE (``objects``), label and field selectors,
``metav1.Status`` bodies on every failure, bearer-token authentication, dynamic admission (writes through
the API call the registered mutating and validating webhooks: ``admission``). Test controls: compaction,
injected failures (429 with Retry-After...), dropped, expired and hanging watches, forced bookmarks, a
request log.

Deliberate simplifications (noted where they live): legacy discovery documents only (clients that ask for
the aggregated v2 form fall back to them); merge, JSON and (simplified, see ``apply``) server-side apply
patches; immediate deletion; no subresources; no
watch-list streaming (``sendInitialEvents``); no protobuf; CRD versions differ only in ``apiVersion``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from . import apply as apply_mod
from . import objects as objects_mod
from . import status as st
from .admission import Admission, Outcome
from .listing import Lister
from .objects import Objects, Target
from .resources import CORE, VERBS, ResourceDef
from .storage import Event, Storage
from .watch import WatchHub

Obj = dict[str, Any]

_WATCH_TOO_OLD = "The resourceVersion for the provided watch is too old."


@dataclass
class Injection:
    """A failure to answer with, for the next ``count`` matching requests."""

    error: st.StatusError
    count: int
    verb: str | None  # "list", "watch", "get", "create", "discovery"... or None for any
    resource: str | None  # a plural ("pods") or None for any


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    verb: str


class KubeApiServer:
    """An API server on 127.0.0.1 with an ephemeral port. Register resources, then ``start``."""

    def __init__(
        self,
        resources: Iterable[ResourceDef] = CORE,
        *,
        token: str | None = "test-token",
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
        block_timeout: float = 3.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.storage = Storage()
        self._ssl = ssl_context
        self.token = token
        self.requests: list[RequestRecord] = []
        self._resources: dict[tuple[str, str], ResourceDef] = {}
        self._objects = Objects(self.storage, self._resources)
        # Writes through the API go past the registered admission webhooks; ``create``/``apply`` below
        # (the tests' own seeding) write straight to storage, as if into etcd.
        self.admission = Admission(self.storage)
        # block_timeout: how long a "not older than" read waits for a revision the server has not reached.
        self._lister = Lister(self.storage, block_timeout)
        self._hub = WatchHub(
            self.storage, bookmark_interval=bookmark_interval, default_timeout=default_watch_timeout
        )
        self._injections: list[Injection] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.port = 0
        self.version: Obj = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        self.storage.on_event(self._fan_out)
        # TokenReview (authentication.k8s.io/v1): the service-account tokens this "cluster" issued, each with
        # the user it stands for and its audiences. Reviews are answered, never stored, as the real one does.
        self.service_account_tokens: dict[str, tuple[Obj, list[str]]] = {}
        # Server-side apply bookkeeping: the field paths each manager applied, per object.
        self.applied_fields: dict[tuple[str, tuple[str, str], str], set[tuple[str, ...]]] = {}
        # Called after server-side applies with (resource, object): tests play the cluster's controllers.
        self.on_write: list[Any] = []
        for resource in resources:
            self.register(resource)

    # Lifecycle.

    async def start(self) -> KubeApiServer:
        app = web.Application(client_max_size=3 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        self.url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        self.resume()
        self._hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubeApiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: Path, *, context: str = "test") -> Path:
        """A kubeconfig for this server (plain HTTP, bearer token), as kubectl would read it."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": self.token or "none"}}],
            "contexts": [{"name": context, "context": {"cluster": "test", "user": "test"}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # Resources.

    def register(self, resource: ResourceDef) -> None:
        """Serves ``resource`` from now on (a CRD being created)."""
        self._resources[(resource.group, resource.plural)] = resource

    def unregister(self, group: str, plural: str) -> None:
        """Stops serving a resource and drops its objects (a CRD being deleted); its watches end."""
        resource = self._resources.pop((group, plural))
        self.storage.drop_resource(resource.group_resource)
        self._hub.close(resource)

    # Test controls.

    def inject(
        self,
        error: st.StatusError,
        *,
        count: int = 1,
        verb: str | None = None,
        resource: str | None = None,
    ) -> None:
        """Answers the next ``count`` matching requests with ``error`` (``status.too_many_requests(1)``)."""
        self._injections.append(Injection(error, count, verb, resource))

    def compact(self, revision: int | None = None) -> int:
        return self.storage.compact(revision)

    def drop_watches(self) -> int:
        """Cuts every open watch connection without ending the chunked stream (a reset); returns how many."""
        return self._hub.drop()

    def expire_watches(self) -> int:
        """Ends every open watch with an ERROR event, 410 Expired (what a compaction under an etcd watch
        sends); returns how many."""
        return self._hub.expire(_WATCH_TOO_OLD)

    def send_bookmarks(self) -> None:
        """A bookmark to every watcher that asked for them, now (instead of at the next interval)."""
        self._hub.bookmark_now()

    def hang(self) -> None:
        """From now on the server accepts connections but answers nothing, and open watches go silent."""
        self._hub.resumed.clear()

    def resume(self) -> None:
        self._hub.resumed.set()

    @property
    def open_watches(self) -> int:
        return len(self._hub.watchers)

    def requests_for(self, verb: str, plural: str | None = None) -> list[RequestRecord]:
        return [r for r in self.requests if r.verb == verb and (plural is None or f"/{plural}" in r.path)]

    # Objects, in-process (the same rules as over HTTP).

    def create(self, obj: Obj) -> Obj:
        resource, version = self._resource_of(obj)
        namespace = (obj.get("metadata") or {}).get("namespace") if resource.namespaced else None
        if resource.namespaced and not namespace:
            namespace = "default"
        return self._objects.create(Target(resource, version, namespace, None), obj)

    def apply(self, obj: Obj) -> Obj:
        """Creates, or replaces (keeping identity), like ``kubectl apply`` of a whole object."""
        resource, version = self._resource_of(obj)
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if resource.namespaced else None
        target = Target(resource, version, namespace, meta.get("name"))
        existing = self.storage.get(resource.group_resource, (namespace or "", meta.get("name", "")))
        if existing is None:
            return self._objects.create(target, obj)
        obj = {**obj, "metadata": {**meta, "resourceVersion": existing["metadata"]["resourceVersion"]}}
        return self._objects.update(target, obj)

    def remove(self, kind: str, name: str, namespace: str | None = "default") -> Obj:
        resource = next(r for r in self._resources.values() if r.kind == kind)
        target = Target(resource, resource.versions[0], namespace if resource.namespaced else None, name)
        return self._objects.delete(target)

    def get(self, kind: str, name: str, namespace: str | None = "default") -> Obj | None:
        resource = next(r for r in self._resources.values() if r.kind == kind)
        return self.storage.get(
            resource.group_resource, (namespace or "" if resource.namespaced else "", name)
        )

    # HTTP.

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._hub.resumed.wait()
            self._authenticate(request)
            return await self._dispatch(request)
        except st.StatusError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
            return web.json_response(exc.status, status=exc.code, headers=headers, dumps=_dumps)

    def _authenticate(self, request: web.Request) -> None:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            raise st.unauthorized()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        query = dict(request.query)
        if request.method == "GET" and parts == ["version"]:
            self._record(request, query, "version")
            return web.json_response(self.version, dumps=_dumps)
        if request.method == "GET":
            document = self._discovery(parts)
            if document is not None:
                self._record(request, query, "discovery")
                self._check_injections("discovery", None)
                return web.json_response(document, dumps=_dumps)
        if request.method == "POST" and parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
            self._record(request, query, "create")
            return web.json_response(self._token_review(await _body(request)), status=201, dumps=_dumps)
        target = self._target(parts)
        verb = self._verb(request.method, target, query)
        self._record(request, query, verb)
        self._check_injections(verb, target.resource)
        if verb == "watch":
            return await self._hub.serve(request, target, query)
        if verb == "list":
            return web.json_response(await self._lister.list(target, query), dumps=_dumps)
        if verb == "get":
            return web.json_response(target.view(self._objects.existing(target)), dumps=_dumps)
        outcome = Outcome()
        if verb == "create":
            created = await self._create(target, await _body(request), outcome)
            return _answer(target.view(created), outcome, status=201)
        if verb == "update":
            updated = await self._update(target, await _body(request), outcome)
            return _answer(target.view(updated), outcome)
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type == "application/apply-patch+yaml":
                return await self._server_side_apply(request, target, query, outcome)
            if content_type == "application/json-patch+json":
                ops = orjson.loads(await request.read() or b"null")
                body = apply_mod.json_patch(self._objects.existing(target), ops)
            elif content_type == "application/merge-patch+json":
                body = objects_mod.merge_patch(self._objects.existing(target), await _body(request))
            else:
                raise st.unsupported_media_type(content_type)
            patched = await self._update(target, body, outcome, patch=True)
            return _answer(target.view(patched), outcome)
        await self.admission.validate("DELETE", target, None, self._objects.existing(target), outcome)
        return _answer(target.view(self._objects.delete(target)), outcome)

    def issue_token(
        self, namespace: str, service_account: str, *, audiences: list[str], pod: str = ""
    ) -> str:
        """A projected service-account token for ``namespace``/``service_account`` (opaque here)."""
        import secrets as _secrets

        token = _secrets.token_urlsafe(24)
        user: Obj = {
            "username": f"system:serviceaccount:{namespace}:{service_account}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
        }
        if pod:
            user["extra"] = {"authentication.kubernetes.io/pod-name": [pod]}
        self.service_account_tokens[token] = (user, audiences)
        return token

    def _token_review(self, body: Obj) -> Obj:
        """The API server's answer: authenticated with the user and the audiences the token is good for,
        among those asked (an empty ask means the API server's own audience)."""
        spec = body.get("spec") or {}
        found = self.service_account_tokens.get(str(spec.get("token") or ""))
        wanted = list(spec.get("audiences") or [])
        status: Obj
        if found is None:
            status = {"authenticated": False, "error": "invalid bearer token"}
        else:
            user, audiences = found
            common = [a for a in wanted if a in audiences] if wanted else audiences
            if wanted and not common:
                status = {"authenticated": False, "error": "token audiences do not match"}
            else:
                status = {"authenticated": True, "user": user, "audiences": common}
        kind = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}
        return {**kind, "spec": spec, "status": status}

    async def _create(self, target: Target, body: Obj, outcome: Outcome) -> Obj:
        """A create as the API server runs it: mutating webhooks (which see no name yet when the body has only
        generateName), the server's own checks and defaults, validating webhooks, storage."""
        body = await self.admission.mutate("CREATE", target, body, None, outcome)
        obj = self._objects.prepare_create(target, body)
        await self.admission.validate("CREATE", target, obj, None, outcome)
        return self._objects.store(target, obj)

    async def _update(self, target: Target, body: Obj, outcome: Outcome, *, patch: bool = False) -> Obj:
        existing = self._objects.existing(target)
        obj = self._objects.prepare_update(target, body, patch=patch)
        if obj is not existing:
            mutated = await self.admission.mutate("UPDATE", target, obj, existing, outcome)
            if mutated is not obj:
                obj = self._objects.prepare_update(target, mutated, patch=True)
        if obj is existing or obj == existing:
            return existing  # a no-op write: no webhooks, no new revision, no event
        await self.admission.validate("UPDATE", target, obj, existing, outcome)
        return self._objects.store(target, obj)

    async def _server_side_apply(
        self, request: web.Request, target: Target, query: dict[str, str], outcome: Outcome
    ) -> web.Response:
        manager = query.get("fieldManager")
        if not manager:
            raise st.bad_request(
                "PATCH with application/apply-patch+yaml requires the fieldManager parameter"
            )
        applied = apply_mod.parse_apply_body(await request.read())
        owned_key = (target.resource.group_resource, target.key, manager)
        existing = self.storage.get(target.resource.group_resource, target.key)
        entry = apply_mod.managed_entry(manager, target.resource.api_version(target.version))
        if existing is None:
            obj = {**applied, "metadata": {**(applied.get("metadata") or {}), "managedFields": [entry]}}
            created = await self._create(target, obj, outcome)
            self.applied_fields[owned_key] = apply_mod.leaf_paths(applied)
            self._after_write(target, created)
            return _answer(target.view(created), outcome, status=201)
        merged, now = apply_mod.apply(existing, applied, self.applied_fields.get(owned_key, set()))
        others = [m for m in merged["metadata"].get("managedFields") or () if m.get("manager") != manager]
        merged["metadata"] = {**merged["metadata"], "managedFields": [*others, entry]}
        merged["metadata"].pop("resourceVersion", None)
        updated = await self._update(target, merged, outcome, patch=True)
        self.applied_fields[owned_key] = now
        self._after_write(target, updated)
        return _answer(target.view(updated), outcome)

    def _after_write(self, target: Target, obj: Obj) -> None:
        """What the API server's own controllers do at once for some kinds (see ``on_write``)."""
        for hook in self.on_write:
            hook(target.resource, obj)

    def _record(self, request: web.Request, query: dict[str, str], verb: str) -> None:
        self.requests.append(RequestRecord(request.method, request.path, query, verb))

    def _check_injections(self, verb: str, resource: ResourceDef | None) -> None:
        plural = resource.plural if resource is not None else None
        for injection in self._injections:
            if injection.count <= 0:
                continue
            if injection.verb not in (None, verb) or injection.resource not in (None, plural):
                continue
            injection.count -= 1
            raise injection.error

    @staticmethod
    def _verb(method: str, target: Target, query: dict[str, str]) -> str:
        if method == "GET":
            if target.name is None:
                return "watch" if query.get("watch") in ("true", "1") else "list"
            return "get"
        if method == "POST" and target.name is None:
            return "create"
        if target.name is not None:
            verbs = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
            if method in verbs:
                return verbs[method]
        raise st.StatusError(
            st.status(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        )

    # Discovery (legacy documents; the aggregated v2 form is not served, clients fall back to these).

    def _discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        if parts == ["api", "v1"]:
            return {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": self._resource_list("", "v1"),
            }
        if parts == ["apis"]:
            groups = sorted({group for group, _ in self._resources if group})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in groups]}
        if len(parts) == 2 and parts[0] == "apis":
            if not any(group == parts[1] for group, _ in self._resources):
                raise st.no_such_path()
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1])}
        if len(parts) == 3 and parts[0] == "apis":
            resources = self._resource_list(parts[1], parts[2])
            if not resources:
                raise st.no_such_path()
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{parts[1]}/{parts[2]}",
                "resources": resources,
            }
        return None

    def _group(self, group: str) -> Obj:
        versions: list[str] = []
        preferred = ""
        for resource in self._resources.values():
            if resource.group == group:
                preferred = preferred or resource.versions[0]
                versions += [v for v in resource.versions if v not in versions]
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "name": group,
            "versions": entries,
            "preferredVersion": {"groupVersion": f"{group}/{preferred}", "version": preferred},
        }

    def _resource_list(self, group: str, version: str) -> list[Obj]:
        listed = []
        for resource in self._resources.values():
            if resource.group == group and version in resource.versions:
                entry: Obj = {
                    "name": resource.plural,
                    "singularName": resource.singular,
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": list(VERBS),
                }
                if resource.short_names:
                    entry["shortNames"] = list(resource.short_names)
                listed.append(entry)
        return sorted(listed, key=lambda e: e["name"])

    # Resource paths.

    def _target(self, parts: list[str]) -> Target:
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise st.no_such_path()
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            raise st.no_such_path()  # subresources are not served
        resource = self._resources.get((group, rest[0]))
        if resource is None or version not in resource.versions:
            raise st.no_such_path()
        if namespace is not None and not resource.namespaced:
            raise st.no_such_path()
        name = rest[1] if len(rest) == 2 else None
        if name is not None and resource.namespaced and namespace is None:
            raise st.no_such_path()
        return Target(resource, version, namespace, name)

    def _resource_of(self, obj: Obj) -> tuple[ResourceDef, str]:
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        for resource in self._resources.values():
            if resource.kind == obj.get("kind") and resource.group == group and version in resource.versions:
                return resource, version
        raise st.no_such_path()

    def _fan_out(self, event: Event) -> None:
        self._lister.revision_moved()
        self._hub.offer(event)


@asynccontextmanager
async def running(resources: Iterable[ResourceDef] = CORE, **options: Any) -> AsyncIterator[KubeApiServer]:
    server = KubeApiServer(resources, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _answer(obj: Obj, outcome: Outcome, status: int = 200) -> web.Response:
    response = web.json_response(obj, status=status, dumps=_dumps)
    for warning in outcome.warnings:
        # The API server's form (RFC 7234 warn-code 299); clients print these to the user.
        response.headers.add("Warning", '299 - "' + warning.replace('"', "'") + '"')
    return response


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def _body(request: web.Request) -> Obj:
    data = await request.read()
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise st.bad_request(f"the object provided is unrecognized: {exc}") from None
    if not isinstance(obj, dict):
        raise st.bad_request("the object provided is unrecognized: expected a JSON object")
    return obj
