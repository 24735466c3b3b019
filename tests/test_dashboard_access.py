"""Access to the dashboard without a browser: tokens, the viewer role in the views, and kernel culling.

The real server and browser are in ``test_browser_shared.py``; here each rule is checked directly,
including a page that tries to escalate by setting the ``read_only`` trait itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lora_factory import write_kohya_lora

import workbench
from workbench import dashboard
from workbench.dashboard import VisitorKernelManager
from workbench.views import READ_ONLY_MESSAGE
from workbench.views.detail import DetailWidget
from workbench.views.gallery import GalleryWidget
from workbench.views.history import HistoryWidget
from workbench.views.library import dashboard_tabs
from workbench.views.queue import QueueView


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("access") / "lib"
    for i in range(6):
        write_kohya_lora(lib / f"acc_{i}.safetensors", seed=i, metadata={"ss_output_name": f"Acc {i}"})
    return lib


def snapshot(wb: workbench.Workbench) -> list[tuple]:
    frame = workbench.open(wb.home).catalog.query(sort="name")
    return [(r["id"], r["rating"], bool(r["favorite"]), tuple(r["tags"])) for r in frame.to_dict("records")]


# -- tokens and roles ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert dashboard.is_loopback(host) is loopback


def test_token_given_from_env_or_generated_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dashboard.TOKEN_ENV, raising=False)
    assert dashboard.resolve_token("abc", "0.0.0.0") == ("abc", False)
    assert dashboard.resolve_token(None, "127.0.0.1") == (None, False)
    token, generated = dashboard.resolve_token(None, "0.0.0.0")
    assert generated and token and len(token) >= 24
    assert dashboard.resolve_token(None, "0.0.0.0")[0] != token, "a new token each time"
    monkeypatch.setenv(dashboard.TOKEN_ENV, "from-env")
    assert dashboard.resolve_token(None, "0.0.0.0") == ("from-env", False)
    assert dashboard.resolve_token(None, "127.0.0.1") == ("from-env", False)


def test_token_travels_in_the_environment_never_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dashboard.TOKEN_ENV, "inherited")
    env = dashboard.dashboard_env(None, token=None)
    assert dashboard.TOKEN_ENV not in env, "an inherited token is not used unless resolved"
    env = dashboard.dashboard_env(None, token="s3cret", read_only=True)
    assert env[dashboard.TOKEN_ENV] == "s3cret" and env[dashboard.ROLE_ENV] == dashboard.VIEWER
    command = dashboard.voila_command("dash.ipynb", pool_size=3, departed_after_s=20)
    assert not any("s3cret" in part for part in command)
    assert "workbench.dashboard._server" in command and "--pool_size=3" in command
    assert "--VisitorKernelManager.departed_after_s=20.0" in command
    assert not any("preheat" in part for part in dashboard.voila_command("dash.ipynb", pool_size=0))
    assert "--Voila.base_url=/services/lora/" in dashboard.voila_command("dash.ipynb", base_url="services/lora")
    assert not any("base_url" in part for part in dashboard.voila_command("dash.ipynb", base_url="/"))


@pytest.mark.parametrize(("role", "read_only"), [("editor", False), ("viewer", True), ("admin", True), ("", True)])
def test_unknown_roles_are_viewers(monkeypatch: pytest.MonkeyPatch, role: str, read_only: bool) -> None:
    monkeypatch.setenv(dashboard.ROLE_ENV, role)
    assert dashboard.dashboard_read_only() is read_only


def test_no_role_in_the_environment_is_an_editor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dashboard.ROLE_ENV, raising=False)
    assert dashboard.dashboard_read_only() is False


# -- the viewer role in the views ---------------------------------------------------------


def test_read_only_gallery_refuses_every_edit(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, read_only=True)
    before = snapshot(wb)
    ids = [r["id"] for r in gallery.first_rows]
    gallery.handle_message({"action": "select", "ids": ids})
    gallery.handle_message({"action": "favorite", "id": ids[0], "value": True})
    assert gallery.notice["text"] == READ_ONLY_MESSAGE
    for op, value in [
        ("add_tags", ["x"]),
        ("favorite", True),
        ("rating", 5),
        ("set_base_model", "Pony"),
        ("remove", None),
    ]:
        gallery.handle_message({"action": "bulk", "op": op, "value": value})
    gallery.handle_message({"action": "undo"})
    assert snapshot(wb) == before
    gallery.handle_message({"action": "filter", "filters": {"text": "Acc 3"}})
    assert gallery.total == 1, "browsing still works"


def test_a_page_cannot_switch_read_only_off(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, read_only=True)
    detail = DetailWidget(wb, lora_id=gallery.first_rows[0]["id"], read_only=True)
    before = snapshot(wb)
    for widget in (gallery, detail):
        widget.set_state({"read_only": False})  # what a comm "update" from the page does
        assert widget.read_only is True
    gallery.handle_message({"action": "favorite", "id": gallery.first_rows[0]["id"], "value": True})
    detail.handle_message({"action": "save", "id": detail.lora_id, "fields": {"rating": 5, "tags": ["hacked"]}})
    assert detail.notice["text"] == READ_ONLY_MESSAGE
    assert snapshot(wb) == before


def test_editor_gallery_and_detail_still_edit(wb: workbench.Workbench) -> None:
    """The same messages work for an editor, so the refusals above are the role, not broken messages."""
    gallery = GalleryWidget(wb)
    detail = DetailWidget(wb, lora_id=gallery.first_rows[0]["id"])
    gallery.handle_message({"action": "favorite", "id": gallery.first_rows[1]["id"], "value": True})
    detail.handle_message({"action": "save", "id": detail.lora_id, "fields": {"rating": 5}})
    assert wb.catalog.get(gallery.first_rows[1]["id"])["favorite"] is True
    assert wb.catalog.get(detail.lora_id)["rating"] == 5


def test_read_only_history_refuses_edits_before_looking_anything_up(wb: workbench.Workbench) -> None:
    viewer, editor = HistoryWidget(wb, read_only=True), HistoryWidget(wb)
    for action, extra in [("rate", {"value": 3}), ("favorite", {"value": True}), ("delete", {}), ("reuse", {})]:
        viewer.handle_message({"action": action, "id": "abc123", **extra})
        assert viewer.notice["text"] == READ_ONLY_MESSAGE
    editor.handle_message({"action": "delete", "id": "abc123"})
    assert editor.notice["text"] != READ_ONLY_MESSAGE


def test_read_only_queue_has_no_buttons_and_refuses_clicks(wb: workbench.Workbench) -> None:
    import ipywidgets

    viewer = QueueView(wb, read_only=True)
    buttons = [c for row in viewer.rows for c in row.children if isinstance(c, ipywidgets.Button)]
    assert buttons == []
    row = viewer.rows[0]
    row.job_id = "0" * 32
    viewer._on_cancel(row)
    assert "read-only" in viewer.message.value
    viewer._on_retry(row)
    assert "read-only" in viewer.message.value


def test_viewer_dashboard_has_no_generating_tabs(wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dashboard.ROLE_ENV, dashboard.VIEWER)
    tabs = dashboard_tabs(wb)
    assert [tabs.get_title(i) for i in range(len(tabs.children))] == ["Library", "Queue", "History"]
    assert "wb-read-only" in tabs._dom_classes
    library = tabs.children[0]
    assert library.gallery.read_only and library.detail.read_only


# -- kernels end with their visitor ---------------------------------------------------------


class Task:
    """A finished pool task, as Voilà keeps them."""

    def __init__(self, kernel_id: str) -> None:
        self.kernel_id = kernel_id

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def exception(self) -> None:
        return None

    def result(self) -> dict[str, Any]:
        return {"kernel_id": self.kernel_id}


def test_kernels_end_when_nobody_is_connected_whatever_their_activity() -> None:
    manager = VisitorKernelManager(departed_after_s=0.0, unconnected_after_s=3600.0)
    shut: list[str] = []

    async def shutdown_kernel(kernel_id: str, *args: Any, **kwargs: Any) -> None:
        shut.append(kernel_id)

    manager.shutdown_kernel = shutdown_kernel  # type: ignore[method-assign]
    kernels = [("pooled", "idle"), ("visited", "idle"), ("left", "idle"), ("rendering", "busy"), ("loading", "idle")]
    for kernel_id, state in kernels:
        manager._kernels[kernel_id] = SimpleNamespace(execution_state=state)
        manager._kernel_connections[kernel_id] = 1 if kernel_id in ("visited", "left") else 0
    manager._pools = {"dashboard.ipynb": [Task("pooled")]}

    async def cull_all() -> None:
        for kernel_id in list(manager._kernels):
            await manager.cull_kernel_if_idle(kernel_id)

    asyncio.run(cull_all())
    assert shut == []
    manager._kernel_connections["left"] = 0  # its page went away (however busy its live updates keep it)
    asyncio.run(cull_all())
    assert shut == ["left"], "pooled, connected, rendering and never-yet-connected kernels stay"

    manager.departed_after_s = 3600.0
    manager._kernel_connections["visited"] = 0
    asyncio.run(cull_all())
    assert shut == ["left"], "a visitor who just left gets the grace period"

    # a page that came and went between two culler runs still counts as connected
    manager.departed_after_s = 0.0
    manager._kernels["brief"] = SimpleNamespace(execution_state="idle")
    manager._kernel_connections["brief"] = 0
    manager.notify_connect("brief")
    manager.notify_disconnect("brief")
    asyncio.run(manager.cull_kernel_if_idle("brief"))
    asyncio.run(manager.cull_kernel_if_idle("brief"))
    assert shut == ["left", "brief"], "ended after departed_after_s, not after unconnected_after_s (an hour here)"


# -- the real server: login behind a proxy prefix ------------------------------------------------


def test_behind_a_prefix_strangers_get_the_prefixed_login_page(tmp_path: Path) -> None:
    """As behind JupyterHub's proxy at /services/NAME/: every page, login included, lives under it."""
    import subprocess
    import urllib.error
    import urllib.request

    port = dashboard.free_port()
    log = open(tmp_path / "voila.log", "wb")
    process = dashboard.start_dashboard(
        tmp_path / "home",
        port=port,
        pool_size=0,
        token="prefix-token",
        base_url="/services/lora/",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        dashboard.wait_for_port(dashboard.DEFAULT_HOST, port, timeout=120, process=process)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(f"http://{dashboard.DEFAULT_HOST}:{port}/services/lora/", timeout=60)
        assert redirected.value.code == 302
        assert redirected.value.headers["Location"].startswith("/services/lora/login")
        with urllib.request.urlopen(f"http://{dashboard.DEFAULT_HOST}:{port}/services/lora/login", timeout=60) as page:
            assert page.status == 200 and b"password" in page.read().lower()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
