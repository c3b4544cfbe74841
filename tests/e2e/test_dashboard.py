"""The dashboard in a real browser (Debian's headless Chromium, driven by Selenium through chromedriver),
loaded from a running local mesh: the service graph shows the services and the edges between them with
their figures, and updates as the traffic changes; the proxies view shows sync status and the push log;
the tap view streams live requests. Screenshots are kept in tests/artifacts/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.smallmesh import BIN, SmallMesh, free_port, get, small_mesh

pytestmark = pytest.mark.root

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def mesh() -> Iterator[SmallMesh]:
    with small_mesh() as m:
        m.pod("client", {"app": "client"})
        m.pod("web", {"app": "web"}, app=9080)
        m.pod("api", {"app": "api"}, app=9080)
        m.service("web", {"app": "web"}, {"http": 9080})
        m.service("api", {"app": "api"}, {"http": 9080})
        m.start()
        yield m


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mzt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))


class Traffic:
    """Requests from the client pod to a URL, over and over, on a thread, until stopped."""

    def __init__(self, mesh: SmallMesh, url: str) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(mesh, url), daemon=True)
        self.thread.start()

    def _run(self, mesh: SmallMesh, url: str) -> None:
        while not self.stopped.is_set():
            mesh.http("client", url, n=20)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)


def texts(driver: Any, selector: str) -> list[str]:
    """The text of every element matching ``selector``, read in one go (the page redraws every 2 s)."""
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);"
    return driver.execute_script(script, selector)  # type: ignore[no-any-return]


def edge_rows(driver: Any) -> dict[tuple[str, str], dict[str, str]]:
    script = """return [...document.querySelectorAll('#edges tbody tr')].map((r) =>
        [r.getAttribute('data-source'), r.getAttribute('data-target'),
         [...r.cells].map((c) => c.textContent)]);"""
    return {
        (src, dst): {"rps": cells[2], "success": cells[3], "p99": cells[4]}
        for src, dst, cells in driver.execute_script(script)
    }


def svg_edges(driver: Any) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, target) -> (label, class) of the graph's drawn edges."""
    script = """return [...document.querySelectorAll('svg#graph g.edge')].map((g) =>
        [g.getAttribute('data-source'), g.getAttribute('data-target'),
         g.textContent, g.getAttribute('class')]);"""
    return {(a, b): (text, cls) for a, b, text, cls in driver.execute_script(script)}


def svg_nodes(driver: Any) -> set[str]:
    script = (
        "return [...document.querySelectorAll('svg#graph g.node')].map((g) => g.getAttribute('data-id'));"
    )
    return set(driver.execute_script(script))


CLIENT = "workload:default/client"
WEB = "service:web.default.svc.cluster.local"
API = "service:api.default.svc.cluster.local"


def test_service_graph_loads_and_follows_the_traffic(mesh: SmallMesh, browser: Any) -> None:
    web = Traffic(mesh, "http://web:9080/hello")
    try:
        browser.get(f"http://127.0.0.1:{mesh.debug_port}/dashboard")
        rows = wait_for(
            lambda: (
                (r := edge_rows(browser)) and (CLIENT, WEB) in r and float(r[(CLIENT, WEB)]["rps"]) > 0 and r
            ),
            "the client -> web edge with a rate",
        )
        assert (WEB, "workload:default/web") in rows  # the server side reports the service -> workload edge
        assert rows[(CLIENT, WEB)]["success"] == "100.0%" and rows[(CLIENT, WEB)]["p99"].endswith("ms")
        assert {CLIENT, WEB, "workload:default/web"} <= svg_nodes(browser)
        assert "rps" in svg_edges(browser)[(CLIENT, WEB)][0]
        assert (CLIENT, API) not in rows
        shot(browser, "graph-web")
        api = Traffic(mesh, "http://api:9080/fail?status=503")
        try:
            rows = wait_for(
                lambda: (
                    (r := edge_rows(browser))
                    and (CLIENT, API) in r
                    and float(r[(CLIENT, API)]["rps"]) > 0
                    and r
                ),
                "the new client -> api edge",
            )
            assert rows[(CLIENT, API)]["success"] == "0.0%"
            assert "bad" in svg_edges(browser)[(CLIENT, API)][1]
            shot(browser, "graph-web-and-api")
        finally:
            api.stop()
    finally:
        web.stop()
    # Traffic stopped: the rates fall to zero on the page.
    wait_for(lambda: float(edge_rows(browser)[(CLIENT, WEB)]["rps"]) == 0.0, "the rate to fall to 0")


def test_proxies_view_shows_sync_status_and_pushes(mesh: SmallMesh, browser: Any) -> None:
    browser.get(f"http://127.0.0.1:{mesh.debug_port}/dashboard#proxies")
    rows = wait_for(lambda: (r := texts(browser, "#sync tbody tr")) and len(r) >= 3 and r, "three proxies")
    assert all("SYNCED" in r for r in rows), rows
    pushes = wait_for(lambda: texts(browser, "#pushes tbody tr"), "push log entries")
    assert any("LDS" in p for p in pushes)
    mesh.apply(
        "routes",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
        "spec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {host: web}\n      weight: 100\n",
    )
    wait_for(
        lambda: any("VirtualService default/web" in p for p in texts(browser, "#pushes tbody tr")),
        "the push caused by the VirtualService",
    )
    shot(browser, "proxies")


def test_tap_view_streams_live_requests(mesh: SmallMesh, browser: Any) -> None:
    browser.get(f"http://127.0.0.1:{mesh.debug_port}/dashboard#tap")
    browser.refresh()  # a fresh page, opened on the tap view
    browser.execute_script(
        """const form = document.getElementById('tap-form');
        form.elements.target.value = 'deploy/web';
        form.elements.path.value = '/seen';
        document.getElementById('tap-start').click();"""
    )
    wait_for(lambda: "tapping" in texts(browser, "#tap-info")[0], "the tap to start")
    mesh.http("client", "http://web:9080/seen/1")
    mesh.http("client", "http://web:9080/unseen")
    mesh.http("client", "http://web:9080/seen/2")
    rows = wait_for(
        lambda: (r := texts(browser, "#tap-lines tbody tr")) and len(r) >= 2 and r, "two tapped requests"
    )
    assert len(rows) == 2 and "/seen/2" in rows[0] and "/seen/1" in rows[1] and all("200" in r for r in rows)
    shot(browser, "tap")
    browser.execute_script("document.getElementById('tap-stop').click();")
    wait_for(
        lambda: json.loads(mesh.admin("web", "/server_info"))["taps"] == [], "the sidecar's session to end"
    )


def test_mizzen_dashboard_serves_the_page_locally(mesh: SmallMesh, browser: Any) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mizzen"),
            "dashboard",
            "--no-browser",
            "--port",
            str(port),
            "--controller-address",
            f"127.0.0.1:{mesh.debug_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}/dashboard" in proc.stdout.readline().decode()
        status, body = get(f"http://127.0.0.1:{port}/debug/graph")
        assert status == 200 and "nodes" in json.loads(body)
        browser.get(f"http://127.0.0.1:{port}/dashboard")
        wait_for(lambda: svg_nodes(browser), "the graph through mizzen dashboard")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
