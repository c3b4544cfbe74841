"""The kube source: every kind the mesh reads, listed and watched from the Kubernetes API by informers.

At start the source asks discovery which version of each kind the cluster serves (Istio's CRDs may be
v1, v1beta1 or v1alpha3) and runs one SharedInformer per kind present. A kind whose CRD is not installed
is empty, logged once, and picked up by the periodic re-discovery when it appears; when a CRD goes away
its objects are reported deleted. Changes from all informers that land in the same turn of the event
loop reach subscribers as one batch.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controller.informer.clock import REAL_CLOCK, Clock
from controller.informer.informer import SharedInformer
from controller.informer.kubeclient import KubeClient
from controller.informer.policy import Backoff
from controller.informer.queue import Delta, DeltaType
from controller.informer.reflector import ReflectorOptions
from controller.informer.resource import DEFAULT_READ_TIMEOUT, ResourceClient, ResourceType
from mizzen import logs

from .base import KINDS, Change, ChangeHandler, ChangeType, Obj
from .discovery import discover
from .fanout import ChangeFanout
from .kinds import indexers_for, info_for

log = logs.get("kube-source")


@dataclass(frozen=True)
class KubeSourceOptions:
    """How the source lists and watches. The defaults serve the mesh: every Pod (the controller needs
    their labels, IPs and service accounts to configure proxies); a selector can narrow that down, e.g.
    ``pod_field_selector="status.phase!=Succeeded,status.phase!=Failed"`` to skip finished Jobs."""

    pod_label_selector: str = ""
    pod_field_selector: str = ""
    rediscovery_interval: float = 60.0
    read_timeout: float = DEFAULT_READ_TIMEOUT
    reflector: ReflectorOptions = field(default_factory=ReflectorOptions)


class KubeSource:
    """A ``Source`` (and ``IndexedSource``) over the Kubernetes API."""

    def __init__(
        self,
        client: KubeClient,
        options: KubeSourceOptions | None = None,
        *,
        clock: Clock = REAL_CLOCK,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self.options = options or KubeSourceOptions()
        self._clock = clock
        self._owns_client = owns_client
        self._informers: dict[str, SharedInformer] = {}
        self.served: dict[str, ResourceType | None] = {}  # the last discovery's answer, per kind
        self._fanout = ChangeFanout()
        self._pending: list[Change] = []
        self._flush_scheduled = False
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, **options: object
    ) -> KubeSource:
        """A source on the cluster of ``kubeconfig``/``context``, or in-cluster when running in a pod with
        no kubeconfig given (see ``KubeClient.connect``). ``options`` are ``KubeSourceOptions`` fields."""
        client = await KubeClient.connect(kubeconfig, context)
        return cls(client, KubeSourceOptions(**options), owns_client=True)  # type: ignore[arg-type]

    # The Source contract.

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kube source")

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def has_synced(self) -> bool:
        """True once discovery answered and every kind present then had its first list processed."""
        return self._synced.is_set()

    def list(self, kind: str) -> builtins.list[Obj]:
        informer = self._informer(kind)
        return informer.store.list() if informer is not None else []

    def get(self, kind: str, key: str) -> Obj | None:
        informer = self._informer(kind)
        return informer.store.get(key) if informer is not None else None

    def subscribe(self, handler: ChangeHandler) -> None:
        """``handler`` gets every later batch; subscribe before ``start`` to see the initial state too."""
        self._fanout.subscribe(handler)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for informer in self._informers.values():
            await informer.stop()
        self._informers.clear()
        if self._owns_client:
            await self._client.close()

    # IndexedSource.

    def by_index(self, kind: str, index: str, value: str) -> builtins.list[Obj]:
        informer = self._informer(kind)
        return informer.store.by_index(index, value) if informer is not None else []

    def select(
        self, kind: str, selector: Mapping[str, str], namespace: str | None = None
    ) -> builtins.list[Obj]:
        informer = self._informer(kind)
        return informer.store.select(selector, namespace) if informer is not None else []

    # Internals.

    def _informer(self, kind: str) -> SharedInformer | None:
        info_for(kind)  # an unknown kind is a caller's bug: say so
        return self._informers.get(kind)

    async def _run(self) -> None:
        backoff = Backoff(self._clock)
        while True:
            try:
                await self.rediscover()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("API discovery failed; retrying", error=str(exc) or type(exc).__name__)
                await backoff.wait()
        await asyncio.gather(*(informer.wait_synced() for informer in self._informers.values()))
        self._synced.set()
        log.info("synced", kinds={kind: str(len(i.store)) for kind, i in self._informers.items()})
        while True:
            await self._clock.sleep(self.options.rediscovery_interval)
            try:
                await self.rediscover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "API re-discovery failed; keeping what runs", error=str(exc) or type(exc).__name__
                )

    async def rediscover(self) -> None:
        """Asks discovery again now (it also runs every ``rediscovery_interval``): starts watching kinds
        whose CRD appeared, reports the objects of a kind whose CRD went away as deleted."""
        served = await discover(self._client)
        for kind in KINDS:
            resource = served.get(kind)
            if kind in self.served and resource == self.served[kind]:
                continue
            if resource is None:
                log.warning(
                    "the cluster does not serve this kind (CRD not installed?); it stays empty until it does",
                    kind=kind,
                    group=info_for(kind).group,
                )
            elif self.served.get(kind) is None:
                log.info("watching", kind=kind, api_version=resource.api_version)
            else:
                log.info("served version changed", kind=kind, api_version=resource.api_version)
            await self._replace_informer(kind, resource)
        self.served = served

    async def _replace_informer(self, kind: str, resource: ResourceType | None) -> None:
        old = self._informers.pop(kind, None)
        if old is not None:
            await old.stop()
        if resource is None:
            if old is not None and len(old.store):
                # The CRD was deleted, and its objects with it.
                self._on_deltas(
                    kind, [Delta(DeltaType.DELETED, k, o, None, True) for k, o in old.store.items()]
                )
            return
        informer = self._new_informer(kind, resource)
        if old is not None:
            # Another version of the same objects: seeded with what we know, the new informer's first
            # list reports only real differences.
            for key, obj in old.store.items():
                informer.store.upsert(key, obj)
        informer.add_handler(functools.partial(self._on_deltas, kind))
        self._informers[kind] = informer
        await informer.start()

    def _new_informer(self, kind: str, resource: ResourceType) -> SharedInformer:
        options = self.options
        pods = kind == "Pod"
        lister_watcher = ResourceClient(
            self._client,
            resource,
            label_selector=options.pod_label_selector if pods else "",
            field_selector=options.pod_field_selector if pods else "",
            read_timeout=options.read_timeout,
        )
        return SharedInformer(
            kind, lister_watcher, indexers=indexers_for(kind), clock=self._clock, options=options.reflector
        )

    def _on_deltas(self, kind: str, deltas: Sequence[Delta]) -> None:
        for delta in deltas:
            if delta.type is DeltaType.DELETED:
                assert delta.old is not None
                self._pending.append(Change(kind, delta.key, "DELETED", delta.old))
            else:
                assert delta.new is not None
                change_type: ChangeType = "ADDED" if delta.type is DeltaType.ADDED else "MODIFIED"
                self._pending.append(Change(kind, delta.key, change_type, delta.new))
        if not self._flush_scheduled:
            # Everything that arrives in this turn of the loop (several kinds after a re-list) is one batch.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._flush_scheduled = False
        self._fanout.publish(batch)
