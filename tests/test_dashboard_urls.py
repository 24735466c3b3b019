"""Odd URLs against the real Voilà server of ``workbench dashboard`` answer 4xx, never HTTP 500."""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.dashboard import DEFAULT_HOST, free_port, rejected_status, start_dashboard, stop_dashboard, wait_for_port

#: Each answered HTTP 500 (an uncaught exception in Voilà or jupyter_server) before the guard.
FORMERLY_500 = {
    "/%00": 400,
    "/voila/templates/lab/static/a%00b": 400,
    "/voila/templates/lab/static/../../../etc/passwd": 404,
    "/logout": 404,
}
ODD = [
    "/%ff",
    "/voila/render/%ff",
    "/voila/files/..%2f..%2fetc%2fpasswd",
    "/voila/files/a%00b",
    "/voila/static/../x",
    "/voila/render/%2e%2e/x",
    "/api/kernels/%ff",
    "/api/kernels/00000000-0000-0000-0000-000000000000",
    "/voila/query/%ff",
    "/kernelspecs/%ff/logo",
    "/static/a%0ab",
    "/voila/static/a%5c..%5cx",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    home = tmp_path_factory.mktemp("urls-home")
    log_path = home / "voila.log"
    port = free_port()
    with open(log_path, "wb") as log:
        process = start_dashboard(home, [], port=port, pool_size=0, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(DEFAULT_HOST, port, timeout=120, process=process)
            yield port, log_path
        finally:
            stop_dashboard(process)


def _status(port: int, path: str, method: str = "GET") -> int:
    connection = http.client.HTTPConnection(DEFAULT_HOST, port, timeout=60)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize("path", list(FORMERLY_500), ids=list(FORMERLY_500))
def test_urls_that_answered_500_now_answer_4xx(server, path):
    port, log_path = server
    assert _status(port, path) == FORMERLY_500[path]
    assert f"Uncaught exception GET {path}" not in log_path.read_text(errors="replace")


@pytest.mark.parametrize("path", ODD, ids=ODD)
def test_odd_urls_answer_4xx(server, path):
    port, _ = server
    for method in ("GET", "POST"):
        status = _status(port, path, method)
        assert 400 <= status < 500, f"{method} {path}: {status}"


def test_the_guard_lets_real_routes_through(server):
    port, _ = server
    assert _status(port, "/voila/static/voila.js") == 200
    assert _status(port, "/api/kernels/x/restart") != 400  # routed as before (a redirect or 404, not the guard)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", None),
        ("/voila/static/voila.js", None),
        ("/voila/files/caf%C3%A9.png", None),
        ("/a%00b", 400),
        ("/a%7fb", 400),
        ("/a%ffb", 400),
        ("/x/../y", 404),
        ("/x/%2e%2e/y", 404),
        ("/x/./y", 404),
        ("/x%5cy", 404),
        ("/logout", 404),
    ],
)
def test_rejected_status(path, status):
    assert rejected_status(path) == status
