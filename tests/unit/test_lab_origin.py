"""The lab answers only requests addressed to itself (``lab.app.SameOrigin``):
a foreign Host (DNS rebinding) or a foreign Origin (another site's form or fetch)
gets a 403 before any route runs. The lab here is a stub: no process is started."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from lab.app import SameOrigin, create_app, own_authorities
from lab.state import Lab, LabSettings

PORT = 8000
OURS = f"127.0.0.1:{PORT}"
ACTION = {"implementation": "bg", "action": "kill", "service": "bg-api"}


@dataclass
class StubTarget:
    name: str = "local"


@dataclass
class StubLab:
    """What ``create_app`` uses of a ``Lab``; it records the actions it was asked for."""

    settings: LabSettings = field(default_factory=lambda: LabSettings(poll_interval=30))
    target: StubTarget = field(default_factory=StubTarget)
    acted: list[tuple[Any, ...]] = field(default_factory=list)
    resets: int = 0
    on_change: Any = None

    def poll_once(self) -> dict[str, Any]:
        return {"now": 0.0, "implementations": {}, "events": []}

    def act(self, *args: Any) -> str:
        self.acted.append(args)
        return "event"

    def event_dict(self, event: str) -> dict[str, Any]:
        return {"status": "ok", "event": event}

    def reset(self) -> None:
        self.resets += 1


@pytest.fixture
def lab() -> StubLab:
    return StubLab()


def client_for(lab: StubLab, served_at: str = OURS) -> TestClient:
    # The URL's host and port are the connection's local address (ASGI's "server"),
    # as uvicorn reports the socket the lab listens on.
    return TestClient(create_app(cast(Lab, lab)), base_url=f"http://{served_at}")


@pytest.fixture
def client(lab: StubLab) -> Iterator[TestClient]:
    with client_for(lab) as c:
        yield c


# --- what passes --------------------------------------------------------------------------


@pytest.mark.parametrize("host", [OURS, f"localhost:{PORT}", f"[::1]:{PORT}", f"LocalHost:{PORT}"])
def test_a_request_without_origin_by_any_loopback_name_passes(
    client: TestClient, lab: StubLab, host: str
) -> None:
    # curl, or the tests' httpx: no Origin, the lab's own Host.
    r = client.post("/api/actions", json=ACTION, headers={"Host": host})
    assert r.status_code == 200, r.text
    assert lab.acted == [("bg", "kill", "bg-api", 5)]


@pytest.mark.parametrize("host", [OURS, f"localhost:{PORT}", f"[::1]:{PORT}"])
def test_the_pages_own_fetch_passes(client: TestClient, lab: StubLab, host: str) -> None:
    # A browser's fetch() POST from the lab's page sends the page's origin.
    headers = {"Host": host, "Origin": f"http://{host}"}
    assert client.post("/api/actions", json=ACTION, headers=headers).status_code == 200
    assert client.post("/api/reset", headers=headers).status_code == 200
    assert lab.resets == 1


def test_the_page_and_its_state_pass(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/static/lab.js").status_code == 200
    assert client.get("/api/state").json()["implementations"] == {}


# --- what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",  # another site's form or fetch
        f"http://evil.example:{PORT}",
        f"http://127.0.0.1:{PORT + 1}",  # another local server's page
        f"https://127.0.0.1:{PORT}",
        "null",  # a sandboxed frame, a file:// page
    ],
)
def test_an_action_from_another_origin_is_refused(
    client: TestClient, lab: StubLab, origin: str
) -> None:
    for path, body in (("/api/actions", ACTION), ("/api/reset", None)):
        r = client.post(path, json=body, headers={"Origin": origin})
        assert r.status_code == 403, (path, r.text)
        assert "Origin" in r.json()["detail"] and "this lab's page" in r.json()["detail"]
    assert lab.acted == [] and lab.resets == 0


def test_a_cross_origin_form_post_is_refused_before_the_body_is_read(
    client: TestClient, lab: StubLab
) -> None:
    # What a plain <form method=post action=http://127.0.0.1:8000/api/actions> sends.
    r = client.post(
        "/api/actions",
        content=b"implementation=bg&action=kill&service=bg-api",
        headers={
            "Origin": "http://evil.example",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.status_code == 403  # not the 422 of a body that did not parse
    assert lab.acted == []


@pytest.mark.parametrize(
    "host",
    [
        f"evil.example:{PORT}",  # DNS rebinding: a foreign name resolved to 127.0.0.1
        "evil.example",
        f"127.0.0.1:{PORT + 1}",
        "127.0.0.1",
        f"127.0.0.2:{PORT}",
        "",
    ],
)
def test_a_foreign_host_is_refused_for_reads_too(
    client: TestClient, lab: StubLab, host: str
) -> None:
    for method, path in (
        ("POST", "/api/actions"),
        ("POST", "/api/reset"),
        ("GET", "/api/state"),  # the snapshots: what a rebound page would read
        ("GET", "/api/events"),
        ("GET", "/"),
        ("GET", "/static/lab.js"),
        ("HEAD", "/"),
    ):
        body = ACTION if method == "POST" else None
        r = client.request(method, path, json=body, headers={"Host": host})
        assert r.status_code == 403, (method, path, r.text)
        if method != "HEAD":
            assert "is not this lab's address" in r.json()["detail"]
    assert lab.acted == [] and lab.resets == 0


def test_a_foreign_host_with_our_origin_is_refused(client: TestClient) -> None:
    r = client.post(
        "/api/actions", json=ACTION, headers={"Host": "evil.example", "Origin": f"http://{OURS}"}
    )
    assert r.status_code == 403


def test_bound_to_another_address_only_that_address_is_ours(lab: StubLab) -> None:
    with client_for(lab, served_at=f"192.0.2.7:{PORT}") as c:
        assert c.post("/api/actions", json=ACTION).status_code == 200
        for host in (OURS, f"localhost:{PORT}", f"evil.example:{PORT}"):
            r = c.post("/api/actions", json=ACTION, headers={"Host": host})
            assert r.status_code == 403, host
        r = c.post("/api/actions", json=ACTION, headers={"Origin": "http://localhost:8000"})
        assert r.status_code == 403
    assert len(lab.acted) == 1


# --- the rule itself ----------------------------------------------------------------------


def test_own_authorities() -> None:
    assert own_authorities("127.0.0.1", 8000) == ("127.0.0.1:8000", "localhost:8000", "[::1]:8000")
    assert own_authorities("::1", 8000) == own_authorities("127.0.0.1", 8000)
    assert own_authorities("192.0.2.7", 8000) == ("192.0.2.7:8000",)
    assert own_authorities("2001:db8::1", 8000) == ("[2001:db8::1]:8000",)
    # An IPv4 client on a dual-stack socket: the address it used is the IPv4 one.
    assert own_authorities("::ffff:192.0.2.7", 8000) == ("192.0.2.7:8000",)
    assert own_authorities("::ffff:127.0.0.1", 8000)[0] == "127.0.0.1:8000"
    # Port 80: a browser leaves it out of Host and Origin.
    assert "192.0.2.7" in own_authorities("192.0.2.7", 80)


def test_no_host_header_or_no_server_address_is_refused() -> None:
    scope: dict[str, Any] = {"type": "http", "server": ("127.0.0.1", PORT), "headers": []}
    assert SameOrigin.refusal(scope) is not None
    scope["headers"] = [(b"host", OURS.encode())]
    assert SameOrigin.refusal(scope) is None
    scope["server"] = None  # a Unix socket: no address to compare with
    assert SameOrigin.refusal(scope) is not None
