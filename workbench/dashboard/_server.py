"""The Voilà server process of ``workbench dashboard``: Voilà plus what a shared dashboard needs.

* The token comes from ``$WORKBENCH_TOKEN`` (never the command line, where ``ps`` shows it to every
  user of the machine) and is removed from the environment before any kernel starts.
* :class:`VisitorKernelManager` ends a visitor's kernel once nobody has been connected to it for
  ``departed_after_s`` seconds. The stock culler measures *idleness*, and a live page's kernel is
  never idle for long (it pushes catalog changes to its page); it would also cull the preheated
  kernels waiting in Voilà's pool, which have no visitor yet. This one leaves pooled kernels alone
  and ends the others by their connections, whatever their activity. The page's own shutdown
  request on unload (Voilà sends it as a beacon) usually comes first; this is the backstop for a
  closed laptop, a crashed browser or a lost network.
* That unload request is a form POST carrying the page's ``_xsrf`` cookie, which Voilà's page
  handler never sets: jupyter_server refused every one (403), so every reload left its kernel
  behind. :class:`DashboardPageHandler` sets the cookie with the page.
* A visitor arriving while the first preheated kernel is still starting would get a second,
  fresh kernel (Voilà uses the pool only once a kernel of it has started), so at server start two
  kernels run the notebook at once; the page handler waits for the pool's first kernel instead.
* Voilà mounts the login page at ``/login`` whatever ``base_url`` is; behind a proxy prefix
  (JupyterHub's ``/services/NAME/``) it must live under the prefix.

Run by :func:`workbench.dashboard.voila_command` as ``python -m workbench.dashboard._server``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import tornado.web
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import url_path_join
from traitlets import Float
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

TOKEN_ENV = "WORKBENCH_TOKEN"
#: how long a visitor waits for the pool's first kernel to start before Voilà starts one for them
FIRST_KERNEL_WAIT_S = 60.0


class VisitorKernelManager(AsyncMappingKernelManager):
    """Shuts a visitor's kernel down once it has had no connection for ``departed_after_s`` seconds."""

    departed_after_s = Float(
        20.0, config=True, help="Seconds a kernel whose page was connected may stay without one before it ends."
    )
    unconnected_after_s = Float(
        90.0,
        config=True,
        help="Seconds a kernel handed to a page that never connected (a load abandoned half-way) may wait for it.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._alone_since: dict[str, float] = {}
        self._was_connected: set[str] = set()

    def notify_connect(self, kernel_id: str) -> None:
        """A page connected: from now on this kernel ends ``departed_after_s`` after its last connection.

        Recorded here, when it happens: noticed only by the culler (every few seconds), a page that
        stayed less than one cull interval counted as never connected and its kernel lived 90 s.
        """
        super().notify_connect(kernel_id)
        if kernel_id in self._kernel_connections:
            self._was_connected.add(kernel_id)

    def pooled_kernel_ids(self) -> set[str]:
        """Kernels preheated in Voilà's pool, not yet handed to a visitor."""
        ids: set[str] = set()
        for pool in getattr(self, "_pools", {}).values():
            for task in pool:
                if task.done() and not task.cancelled() and task.exception() is None:
                    kernel_id = (task.result() or {}).get("kernel_id")
                    if kernel_id:
                        ids.add(kernel_id)
        return ids

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            self._alone_since.pop(kernel_id, None)
            return
        if getattr(kernel, "execution_state", None) == "dead":
            self._alone_since.pop(kernel_id, None)
            await super().cull_kernel_if_idle(kernel_id)
            return
        connected = self._kernel_connections.get(kernel_id, 0) > 0
        busy = getattr(kernel, "execution_state", None) == "busy"  # still running the notebook for its page
        if connected:
            self._was_connected.add(kernel_id)
        if connected or busy or kernel_id in self.pooled_kernel_ids():
            self._alone_since.pop(kernel_id, None)
            return
        now = time.monotonic()
        since = self._alone_since.setdefault(kernel_id, now)
        grace = self.departed_after_s if kernel_id in self._was_connected else self.unconnected_after_s
        if now - since >= grace:
            self._alone_since.pop(kernel_id, None)
            self._was_connected.discard(kernel_id)
            self.log.info("Shutting down kernel %s: its visitor left %.0f s ago", kernel_id, now - since)
            await self.shutdown_kernel(kernel_id)


class DashboardPageHandler(TornadoVoilaHandler):
    """Voilà's page handler, plus the ``_xsrf`` cookie the page's unload shutdown request sends back."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        await super().prepare(*args, **kwargs)
        self.xsrf_token  # noqa: B018  (reading it sets the cookie)

    @tornado.web.authenticated
    async def get(self, path: str | None = None) -> Any:
        manager = self.kernel_manager
        if not getattr(manager, "notebook_data", True):  # no pool kernel has started yet
            starting = [task for pool in getattr(manager, "_pools", {}).values() for task in pool if not task.done()]
            if starting:
                await asyncio.wait(starting, timeout=FIRST_KERNEL_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        return await super().get(path)


class DashboardVoila(Voila):
    """Voilà serving the dashboard page through :class:`DashboardPageHandler`."""

    def init_handlers(self) -> list:
        handlers = []
        for pattern, handler_class, *rest in super().init_handlers():
            if handler_class is TornadoVoilaHandler:
                handler_class = DashboardPageHandler
            elif pattern in ("/login", "/logout"):  # the identity provider's pages, unprefixed by Voilà
                pattern = url_path_join(self.base_url, pattern)
            handlers.append((pattern, handler_class, *rest))
        return handlers


def main(argv: list[str] | None = None) -> None:
    """Start Voilà with the token taken out of the environment (kernels never see it)."""
    from workbench.dashboard._guard import install

    install()  # malformed URLs answer 4xx instead of HTTP 500
    token = os.environ.pop(TOKEN_ENV, "")
    DashboardVoila.launch_instance(argv if argv is not None else sys.argv[1:], **({"token": token} if token else {}))


if __name__ == "__main__":
    main()
