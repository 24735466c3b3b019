"""Serve ``notebooks/dashboard.ipynb`` with Voilà, configured for publishing.

The Voilà server gets the workbench home and library roots through the environment
(``WORKBENCH_HOME``, ``WORKBENCH_LIBRARY``), which the notebook reads. Settings for a
dashboard that may face visitors:

* only the dashboard notebook is served (no tree, no contents API), with its sources
  stripped and no tracebacks; ``/voila/files/`` serves nothing (thumbnails travel over the
  widget channel, from library roots and the home only);
* no ``?template=`` / ``?theme=`` overrides;
* bound to 127.0.0.1 unless told otherwise, and on exactly the port asked for;
* a token (``--token`` or ``$WORKBENCH_TOKEN``; generated and printed when the host is not
  loopback) keeps strangers on Voilà's login page, where no kernel starts and no catalog data
  is sent; ``?token=`` once, then a cookie keeps the browser in;
* ``--read-only`` makes every visitor a viewer: the role travels to the kernels in their
  environment (``WORKBENCH_ROLE``), which a page cannot touch, and the views refuse edits there;
* ``pool_size`` kernels preheated so visitors do not wait for the notebook to run; a departed
  visitor's kernel ends ``departed_after_s`` seconds after its page went away
  (``workbench.dashboard._server.VisitorKernelManager``).
* the ``workbench`` template (``notebooks/voila/templates/workbench``): Voilà's lab template
  without its Font Awesome CDN links, so the page makes no request outside this server;
* the light or dark theme JupyterLab is set to (``--theme`` overrides it).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from workbench._home import bundled_file

HOME_ENV = "WORKBENCH_HOME"
LIBRARY_ENV = "WORKBENCH_LIBRARY"
TOKEN_ENV = "WORKBENCH_TOKEN"
ROLE_ENV = "WORKBENCH_ROLE"
EDITOR, VIEWER = "editor", "viewer"
REDIS_ENV = "WORKBENCH_REDIS"  # the shared worker's Redis (workbench.dashboard._service), read by kernels
DEFAULT_PORT = 8866
DEFAULT_HOST = "127.0.0.1"
THEMES = ("auto", "light", "dark")
TEMPLATE = "workbench"
DEFAULT_POOL_SIZE = 1
#: seconds between a visitor taking the preheated kernel and the next one starting. Voilà's 1 s made the
#: new kernel import pandas/DuckDB and load the catalog while the visitor's page was still opening, on
#: the same cores; a page shows its first cards in ~3 s, so the refill waits until then
DEFAULT_POOL_FILL_DELAY_S = 5.0
#: a visitor's kernel ends this long after its page went away (plus up to one cull interval)
DEFAULT_DEPARTED_AFTER_S = 20.0
CULL_INTERVAL_S = 5


def dashboard_read_only() -> bool:
    """True in a viewer's kernel (``workbench dashboard --read-only``); any unknown role counts as viewer."""
    return os.environ.get(ROLE_ENV, EDITOR).strip().lower() != EDITOR


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(token: str | None, host: str) -> tuple[str | None, bool]:
    """The dashboard's token: the one given, else ``$WORKBENCH_TOKEN``, else a new one when ``host`` is
    reachable from other machines, else None (no token on loopback). Returns (token, generated)."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and token.strip():
        return token.strip(), False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


def dashboard_notebook() -> Path:
    """Path of ``dashboard.ipynb`` (the checkout's, else the installed package's)."""
    return bundled_file("notebooks", "dashboard.ipynb")


def jupyterlab_theme(settings_dir: str | os.PathLike | None = None) -> str:
    """``dark`` when JupyterLab's theme setting is a dark theme, else ``light`` (also when unset or unreadable).

    Reads ``@jupyterlab/apputils-extension/themes.jupyterlab-settings`` under ``$JUPYTERLAB_SETTINGS_DIR``
    (default ``~/.jupyter/lab/user-settings``); the file is JSON with ``//`` comments.
    """
    import json
    import re

    base = Path(
        settings_dir or os.environ.get("JUPYTERLAB_SETTINGS_DIR") or Path.home() / ".jupyter" / "lab" / "user-settings"
    )
    path = base / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    try:
        text = re.sub(r"^\s*//.*$", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
        theme = json.loads(text).get("theme", "")
    except (OSError, ValueError, AttributeError):
        return "light"
    return "dark" if isinstance(theme, str) and "dark" in theme.lower() else "light"


def template_dir() -> Path:
    """The Jupyter data folder holding ``voila/templates/workbench`` (beside the dashboard notebook)."""
    return dashboard_notebook().parent


def library_roots_from_env(value: str | None = None) -> list[Path]:
    """Library roots from ``WORKBENCH_LIBRARY`` (``os.pathsep``-separated)."""
    value = os.environ.get(LIBRARY_ENV, "") if value is None else value
    return [Path(part) for part in value.split(os.pathsep) if part.strip()]


def scan_if_needed(wb: Any, roots: Sequence[str | os.PathLike]) -> Any:
    """Scan ``roots`` into ``wb``'s catalog when it is empty or a root is new to it.

    Returns the scan report, or None when nothing needed scanning. ``workbench dashboard``
    calls this before Voilà starts, so visitors' kernels find the catalog ready and never
    scan the same folder at the same time.
    """
    wanted = [Path(r).expanduser().resolve() for r in roots]
    known = {Path(r).resolve() for r in wb.roots}
    new = [r for r in wanted if r not in known]
    if new or (wanted and _catalog_empty(wb)):
        return wb.scan(new or wanted, progress=False)
    return None


def _catalog_empty(wb: Any) -> bool:
    """One count in the file: the server process never needs the catalog's in-memory snapshot."""
    with wb.db.read() as con:
        return int(con.execute("SELECT count(*) FROM lora_view").fetchall()[0][0]) == 0


def dashboard_env(
    home: str | os.PathLike | None,
    library_roots: Iterable[str | os.PathLike] = (),
    token: str | None = None,
    read_only: bool = False,
    redis_url: str | None = None,
) -> dict[str, str]:
    """Environment for the Voilà server and its kernels (the server removes the token before kernels start;
    ``redis_url``: the shared worker's Redis, which kernels send heavy work to)."""
    env = os.environ.copy()
    env.pop(TOKEN_ENV, None)
    if token:
        env[TOKEN_ENV] = token
    env[ROLE_ENV] = VIEWER if read_only else EDITOR
    if redis_url:
        env[REDIS_ENV] = redis_url
    if home is not None:
        env[HOME_ENV] = str(Path(home).expanduser().resolve())
    roots = [str(Path(r).expanduser().resolve()) for r in library_roots]
    if roots:
        env[LIBRARY_ENV] = os.pathsep.join(roots)
    # kernels must import this very package, installed or not
    package_parent = str(Path(__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_parent not in paths:
        env["PYTHONPATH"] = os.pathsep.join([package_parent, *paths])
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # glibc gives each thread that allocates its own arena and rarely hands their pages back: a kernel's
    # DuckDB threads then kept up to ~100 MB after loading the catalog snapshot, in some kernels and not
    # others (50,000 LoRAs: 104-108 MB USS, one in five 211 MB); two arenas keep every kernel near 105 MB
    env.setdefault("MALLOC_ARENA_MAX", "2")
    data_paths = [p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_PATH"] = os.pathsep.join([str(template_dir()), *data_paths])  # finds the workbench template
    return env


def voila_command(
    notebook: str | os.PathLike,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    open_browser: bool = False,
    pool_size: int = DEFAULT_POOL_SIZE,
    departed_after_s: float = DEFAULT_DEPARTED_AFTER_S,
    base_url: str = "/",
    theme: str = "auto",
    pool_fill_delay_s: float = DEFAULT_POOL_FILL_DELAY_S,
) -> list[str]:
    """The ``voila`` command line that serves ``notebook`` for publishing (the token travels in the environment)."""
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}")
    if theme == "auto":
        theme = jupyterlab_theme()
    command = [
        sys.executable,
        "-m",
        "workbench.dashboard._server",  # Voilà behind the URL guard, with visitor-kernel lifetimes and the token
        str(notebook),
        f"--port={int(port)}",
        f"--Voila.ip={host}",
        "--Voila.port_retries=0",
        "--Voila.open_browser=" + ("True" if open_browser else "False"),
        "--strip_sources=True",
        "--show_tracebacks=False",
        f"--template={TEMPLATE}",
        f"--theme={theme}",
        "--VoilaConfiguration.allow_template_override=NO",
        "--VoilaConfiguration.allow_theme_override=NO",
        "--VoilaConfiguration.file_denylist=.*",
        "--VoilaExecutor.timeout=600",
        "--VoilaConfiguration.multi_kernel_manager_class=workbench.dashboard._server.VisitorKernelManager",
        f"--VisitorKernelManager.departed_after_s={float(departed_after_s)}",
        # the culler only runs when a timeout is set; VisitorKernelManager decides by connections
        f"--MappingKernelManager.cull_idle_timeout={max(1, int(departed_after_s))}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
    ]
    if base_url.strip("/"):  # behind a proxy prefix, e.g. JupyterHub's /services/NAME/
        command.append(f"--Voila.base_url=/{base_url.strip('/')}/")
    if not open_browser:
        command.append("--no-browser")
    if pool_size > 0:
        command += ["--preheat_kernel=True", f"--pool_size={int(pool_size)}"]
        command.append(f"--VoilaKernelManager.fill_delay={max(0.0, float(pool_fill_delay_s))}")
    return command


def start_dashboard(
    home: str | os.PathLike | None = None,
    library_roots: Sequence[str | os.PathLike] = (),
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    open_browser: bool = False,
    pool_size: int = DEFAULT_POOL_SIZE,
    notebook: str | os.PathLike | None = None,
    token: str | None = None,
    read_only: bool = False,
    departed_after_s: float = DEFAULT_DEPARTED_AFTER_S,
    base_url: str = "/",
    theme: str = "auto",
    redis_url: str | None = None,
    **popen_kwargs: object,
) -> subprocess.Popen:
    """Start the Voilà server in the background and return its process (stop it with ``terminate``).

    ``token`` is used as given (None or "": no token); :func:`resolve_token` picks one for the CLI.
    """
    if port_in_use(host, port):
        raise OSError(f"port {port} on {host} is already in use; choose another with --port")
    notebook = Path(notebook) if notebook else dashboard_notebook()
    if library_roots:
        import workbench

        scan_if_needed(workbench.open(home), library_roots)
    command = voila_command(
        notebook,
        port=port,
        host=host,
        open_browser=open_browser,
        pool_size=pool_size,
        departed_after_s=departed_after_s,
        base_url=base_url,
        theme=theme,
    )
    env = dashboard_env(home, library_roots, token=token, read_only=read_only, redis_url=redis_url)
    return subprocess.Popen(command, env=env, cwd=notebook.parent, **popen_kwargs)  # type: ignore[call-overload]


def serve_dashboard(
    home: str | os.PathLike | None = None,
    library_roots: Sequence[str | os.PathLike] = (),
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    open_browser: bool = True,
    pool_size: int = DEFAULT_POOL_SIZE,
    token: str | None = None,
    read_only: bool = False,
    base_url: str = "/",
    theme: str = "auto",
    redis_url: str | None = None,
    shared_worker: bool = True,
) -> int:
    """Serve the dashboard until interrupted; returns Voilà's exit status.

    ``token``: as given, else ``$WORKBENCH_TOKEN``, else generated (and printed) when ``host`` is not loopback.
    With ``shared_worker`` (the default) one worker owning the pipeline and the heavy jobs runs beside
    Voilà, on the Redis at ``redis_url`` or on a private one started here (see workbench.dashboard._service).
    """
    from workbench.dashboard._service import _die_with_parent

    token, generated = resolve_token(token, host)
    worker = shared_worker_for(home, library_roots, redis_url) if shared_worker else None
    try:
        process = start_dashboard(
            home,
            library_roots,
            port=port,
            host=host,
            open_browser=open_browser,
            pool_size=pool_size,
            token=token,
            read_only=read_only,
            base_url=base_url,
            theme=theme,
            redis_url=worker.start_redis() if worker else redis_url,
            preexec_fn=_die_with_parent,  # a killed launcher (SIGTERM, SIGKILL) takes Voilà and its kernels along
        )
        if worker is not None:  # after Voilà: the first page does not wait for torch and the pipeline
            print("starting the shared worker (it loads the generation pipeline once for every visitor)...", flush=True)
            try:
                worker.start()
            except BaseException:  # no dashboard left holding the port without its worker
                stop_dashboard(process, timeout=15)
                raise
        prefix = f"/{base_url.strip('/')}/" if base_url.strip("/") else "/"
        url = f"http://{host}:{port}{prefix}" + (f"?token={token}" if token else "")
        role = "read-only (viewers)" if read_only else "editors"
        print(f"LoRA Workbench dashboard for {role}: {url}  (Ctrl+C to stop)", flush=True)
        if generated:
            print(f"Generated a token since {host} is reachable from other machines: {token}", flush=True)
        try:
            return process.wait()
        except KeyboardInterrupt:
            return stop_dashboard(process, timeout=15)
    finally:
        if worker is not None:
            worker.stop()


def shared_worker_for(
    home: str | os.PathLike | None, library_roots: Sequence[str | os.PathLike] = (), redis_url: str | None = None
) -> Any:
    """The dashboard's shared worker, not started yet (``start_redis()``, then ``start()``; ``stop()``)."""
    import workbench
    from workbench.dashboard._service import SharedWorker
    from workbench.generate import configured_backends

    resolved_home = workbench.open(home).home
    # preload the model the dashboard generates with, so the first visitor's first image does not wait for it
    models = [str(c.options.get("model", "tiny")) for c in configured_backends(resolved_home) if c.kind == "diffusers"]
    return SharedWorker(resolved_home, library_roots, redis_url=redis_url, model=(models or ["tiny"])[0])


def stop_dashboard(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stop a server from :func:`start_dashboard`: SIGTERM, then SIGKILL after ``timeout``; its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def wait_for_port(host: str, port: int, timeout: float = 120.0, process: subprocess.Popen | None = None) -> float:
    """Wait until ``host:port`` accepts a TCP connection (never GET /: that starts a kernel).

    Returns the seconds waited; raises TimeoutError, or RuntimeError if ``process`` exits first.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the dashboard server exited with status {process.returncode}")
        if port_in_use(host, port):
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on {host}:{port} after {timeout:.0f} s")


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: Names whose modules import Voilà, jupyter_server or RQ: loaded on first use, so a visitor kernel that
#: only asks :func:`dashboard_read_only` stays light.
_LAZY = {
    "SharedWorker": "workbench.dashboard._service",
    "VisitorKernelManager": "workbench.dashboard._server",
    "rejected_status": "workbench.dashboard._guard",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.dashboard' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SharedWorker",
    "VisitorKernelManager",
    "dashboard_env",
    "dashboard_notebook",
    "dashboard_read_only",
    "free_port",
    "is_loopback",
    "jupyterlab_theme",
    "library_roots_from_env",
    "rejected_status",
    "resolve_token",
    "scan_if_needed",
    "serve_dashboard",
    "shared_worker_for",
    "start_dashboard",
    "stop_dashboard",
    "voila_command",
    "wait_for_port",
]
