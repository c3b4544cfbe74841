"""``mizzen demo``: Bookinfo on a local mesh, and Istio's traffic management shown on it.

It brings up the whole mesh (``mizzen local up``: the controller, the ingress gateway, and the four
Bookinfo services in their pods, each with its sidecar), then walks through Istio's own tasks, applying
the YAML from ``examples/bookinfo/networking`` and calling the product page through the ingress gateway
after each step, counting what a reader would see: which reviews version answered, whether the ratings
stars could be shown. Each step checks its outcome. The mesh is left up to explore (``--once`` takes it
down, for CI).
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mizzen.local.meshctl import Mesh, MeshError
from mizzen.local.node import LocalNode

LOOKS = {"v1": "no stars", "v2": "black stars", "v3": "red stars"}
ORIGIN = "mizzen demo"


@dataclass
class Page:
    """What one reader saw: the product page's JSON view, and how long it took."""

    status: int
    version: str | None
    ratings: bool | None  # None: this version shows no ratings
    seconds: float


def find_examples(explicit: Path | None) -> Path:
    """examples/bookinfo: as given, else under the current directory, else beside this checkout."""
    candidates = [explicit] if explicit else [Path.cwd() / "examples" / "bookinfo"]
    if not explicit:
        candidates.append(Path(__file__).resolve().parents[2] / "examples" / "bookinfo")
    for path in candidates:
        if path and (path / "platform").is_dir() and (path / "networking").is_dir():
            return path.resolve()
    raise MeshError("examples/bookinfo not found: run from the checkout, or pass --examples DIR")


class Reader:
    """A browser at the ingress gateway: one kept-alive connection, as a user's."""

    def __init__(self, host: str, port: int = 80) -> None:
        self.host, self.port = host, port
        self.conn: http.client.HTTPConnection | None = None

    def page(self, user: str | None = None) -> Page:
        headers = {"end-user": user} if user else {}
        start = time.monotonic()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("GET", "/api/v1/productpage", headers=headers)
                response = self.conn.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    return Page(0, None, None, time.monotonic() - start)
        elapsed = time.monotonic() - start
        if response.status != 200:
            return Page(response.status, None, None, elapsed)
        data: dict[str, Any] = json.loads(body)
        return Page(200, data.get("reviewsVersion"), data.get("ratingsReachable"), elapsed)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _looks(page: Page) -> str:
    if page.status != 200:
        return f"HTTP {page.status}" if page.status else "no answer"
    if page.version is None:
        return "reviews unavailable"
    return f"reviews {page.version} ({LOOKS.get(page.version, '?')})"


def _bar(count: int, total: int, width: int = 30) -> str:
    filled = round(width * count / total) if total else 0
    return "#" * filled + "." * (width - filled)


class Demo:
    def __init__(self, mesh: Mesh, examples: Path, requests: int, say: Callable[[str], None]) -> None:
        self.mesh = mesh
        self.examples = examples
        self.requests = requests
        self.say = say
        self.failed: list[str] = []
        self.reader: Reader | None = None

    def apply(self, *files: str) -> None:
        paths = [self.examples / "networking" / f for f in files]
        self.say(
            "      $ mizzen local apply "
            + " ".join(f"-f {p.relative_to(self.examples.parent.parent)}" for p in paths)
        )
        for line in self.mesh.apply(paths):
            self.say(f"        {line}")

    def tally(self, user: str | None) -> tuple[Counter[str | None], list[Page]]:
        assert self.reader is not None
        pages = [self.reader.page(user) for _ in range(self.requests)]
        versions: Counter[str | None] = Counter(p.version for p in pages)
        seen: Counter[str] = Counter(_looks(p) for p in pages)
        who = f"as {user}" if user else "as anyone"
        self.say(f"      {who}, {len(pages)} requests through the ingress gateway:")
        for label in sorted(seen):
            self.say(f"        {label:<28} {_bar(seen[label], len(pages))} {seen[label]:>3}")
        return versions, pages

    def check(self, ok: bool, what: str) -> None:
        self.say(f"      {'ok' if ok else 'NOT AS EXPECTED'}: {what}")
        if not ok:
            self.failed.append(what)

    def run(self) -> None:
        n = self.requests
        self.say("\n[1/6] No routing rules: each request goes to any reviews pod (v1, v2 or v3)")
        versions, _ = self.tally(None)
        self.check(set(versions) == {"v1", "v2", "v3"}, "all three versions answer")

        self.say(
            "\n[2/6] Route everything to v1 (subsets by the version label, then one VirtualService each)"
        )
        self.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
        versions, _ = self.tally(None)
        self.check(versions == Counter({"v1": n}), "only v1 answers")

        self.say("\n[3/6] Header routing: the user jason gets v2, everyone else stays on v1")
        self.apply("virtual-service-reviews-test-v2.yaml")
        jason, _ = self.tally("jason")
        others, _ = self.tally(None)
        self.check(jason == Counter({"v2": n}) and others == Counter({"v1": n}), "jason sees v2, others v1")

        self.say("\n[4/6] Traffic shifting: half of the requests to v3")
        self.apply("virtual-service-reviews-50-v3.yaml")
        versions, _ = self.tally(None)
        self.check(set(versions) == {"v1", "v3"}, "v1 and v3 share the traffic, nothing else answers")

        self.say("\n[5/6] Fault injection: for jason, ratings fails with HTTP 500 (jason is back on v2)")
        self.apply("virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-abort.yaml")
        _, pages = self.tally("jason")
        unreachable = sum(1 for p in pages if p.version == "v2" and p.ratings is False)
        self.say(
            f"      jason's page says 'Ratings service is currently unavailable' {unreachable}/{n} times"
        )
        others, _ = self.tally(None)
        self.check(unreachable == n and others == Counter({"v1": n}), "only jason loses the ratings")

        self.say("\n[6/6] Fault injection: for jason, ratings answers 7 s late; reviews waits 2.5 s for it")
        self.apply("virtual-service-ratings-test-delay.yaml")
        assert self.reader is not None
        pages = [self.reader.page("jason") for _ in range(2)]
        for page in pages:
            self.say(
                f"      as jason: reviews {page.version}, ratings "
                f"{'shown' if page.ratings else 'unavailable'}, the page took {page.seconds:.1f} s"
            )
        self.check(
            all(p.version == "v2" and p.ratings is False and p.seconds >= 2.4 for p in pages),
            "the delay shows: the page waits for reviews' own timeout, then renders without stars",
        )


def run(node: LocalNode, *, once: bool = False, requests: int = 30, examples: Path | None = None) -> int:
    """The demo on ``node``; 0 when every step showed what it should."""
    say: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    folder = find_examples(examples)
    mesh = Mesh(node, say)
    say("mizzen demo: Bookinfo on a local mesh, and Istio's traffic management on it\n")
    if mesh.is_up:
        if mesh.origin != ORIGIN:
            raise MeshError(
                "a local mesh is already up: `mizzen local down` first (or explore it: `mizzen local status`)"
            )
        say("      (the mesh of an earlier `mizzen demo` is still up: taking it down first)")
        mesh.down()
    shown = folder.relative_to(folder.parent.parent)
    say(f"      $ mizzen local up {shown}/platform {shown}/networking/bookinfo-gateway.yaml")
    demo = Demo(mesh, folder, requests, say)
    try:
        status = mesh.up(
            [folder / "platform", folder / "networking" / "bookinfo-gateway.yaml"], origin=ORIGIN
        )
        url = (status.get("ingress") or {}).get("url")
        if not url:
            raise MeshError("the ingress gateway has no address")
        host = url.split("//", 1)[1].split(":")[0]
        say(f"\n      The product page: {url}/productpage   (JSON: {url}/api/v1/productpage)")
        demo.reader = Reader(host)
        demo.run()
    finally:
        if demo.reader is not None:
            demo.reader.close()
        if once:
            say("\nTaking the mesh down (--once).")
            mesh.down()
    say("")
    if demo.failed:
        say("Not as expected: " + "; ".join(demo.failed))
    else:
        say("Every step showed what Istio's tasks show.")
    if not once:
        gateway = (mesh.status().get("ingress") or {}).get("url")
        say(
            "\nThe mesh is still up. Explore it:\n"
            f"  curl -H 'end-user: jason' {gateway}/api/v1/productpage     (or open {gateway}/productpage)\n"
            "  mizzen local status                  pods, IPs, sidecar sync\n"
            "  mizzen proxy-status                  what the controller sent each proxy\n"
            '  mizzen local exec deploy/productpage-v1 -- python3 -c "import urllib.request as u; '
            "print(u.urlopen('http://reviews:9080/reviews/0').read().decode())\"\n"
            "  mizzen local logs deploy/reviews-v2   the app's log (-c istio-proxy: the sidecar's)\n"
            f"  mizzen local apply -f {folder}/networking/virtual-service-reviews-v3.yaml\n"
            "  mizzen local down                    remove everything"
        )
    return 1 if demo.failed else 0
