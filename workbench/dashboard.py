"""Serve ``notebooks/dashboard.ipynb`` with Voilà, configured for publishing.

The Voilà server gets the workbench home and library roots through the environment
(``WORKBENCH_HOME``, ``WORKBENCH_LIBRARY``), which the notebook reads. Settings for a
dashboard that may face visitors:

* only the dashboard notebook is served (no tree, no contents API), with its sources
  stripped and no tracebacks; ``/voila/files/`` serves nothing (thumbnails travel over the
  widget channel, from library roots and the home only);
* no ``?template=`` / ``?theme=`` overrides;
* bound to 127.0.0.1 unless told otherwise, and on exactly the port asked for;
* one kernel preheated so the first visitor does not wait for the notebook to run;
  idle kernels are culled.
"""

from __future__ import annotations

import os
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
REDIS_ENV = "WORKBENCH_REDIS"  # the shared worker's Redis (workbench._service), read by kernels
DEFAULT_PORT = 8866
DEFAULT_HOST = "127.0.0.1"


def dashboard_notebook() -> Path:
    """Path of ``dashboard.ipynb`` (the checkout's, else the installed package's)."""
    return bundled_file("notebooks", "dashboard.ipynb")


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
    if new or (wanted and wb.catalog.count() == 0):
        return wb.scan(new or wanted, progress=False)
    return None


def dashboard_env(
    home: str | os.PathLike | None, library_roots: Iterable[str | os.PathLike] = (), redis_url: str | None = None
) -> dict[str, str]:
    """Environment for the Voilà server and its kernels (``redis_url``: the shared worker's Redis)."""
    env = os.environ.copy()
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
    return env


def voila_command(
    notebook: str | os.PathLike,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    open_browser: bool = False,
    preheat: bool = True,
) -> list[str]:
    """The ``voila`` command line that serves ``notebook`` for publishing."""
    command = [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--port={int(port)}",
        f"--Voila.ip={host}",
        "--Voila.port_retries=0",
        "--Voila.open_browser=" + ("True" if open_browser else "False"),
        "--strip_sources=True",
        "--show_tracebacks=False",
        "--template=lab",
        "--theme=light",
        "--VoilaConfiguration.allow_template_override=NO",
        "--VoilaConfiguration.allow_theme_override=NO",
        "--VoilaConfiguration.file_denylist=.*",
        "--VoilaExecutor.timeout=600",
        "--MappingKernelManager.cull_idle_timeout=3600",
        "--MappingKernelManager.cull_interval=300",
    ]
    if not open_browser:
        command.append("--no-browser")
    if preheat:
        command += ["--preheat_kernel=True", "--pool_size=1"]
    return command


def start_dashboard(
    home: str | os.PathLike | None = None,
    library_roots: Sequence[str | os.PathLike] = (),
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    open_browser: bool = False,
    preheat: bool = True,
    notebook: str | os.PathLike | None = None,
    redis_url: str | None = None,
    **popen_kwargs: object,
) -> subprocess.Popen:
    """Start the Voilà server in the background and return its process (stop it with ``terminate``)."""
    if port_in_use(host, port):
        raise OSError(f"port {port} on {host} is already in use; choose another with --port")
    notebook = Path(notebook) if notebook else dashboard_notebook()
    if library_roots:
        import workbench

        scan_if_needed(workbench.open(home), library_roots)
    command = voila_command(notebook, port=port, host=host, open_browser=open_browser, preheat=preheat)
    env = dashboard_env(home, library_roots, redis_url)
    return subprocess.Popen(command, env=env, cwd=notebook.parent, **popen_kwargs)  # type: ignore[call-overload]


def serve_dashboard(
    home: str | os.PathLike | None = None,
    library_roots: Sequence[str | os.PathLike] = (),
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    open_browser: bool = True,
    preheat: bool = True,
    redis_url: str | None = None,
    shared_worker: bool = True,
) -> int:
    """Serve the dashboard until interrupted; returns Voilà's exit status.

    With ``shared_worker`` (the default) one worker owning the pipeline and the heavy jobs runs beside
    Voilà, on the Redis at ``redis_url`` or on a private one started here (see workbench._service).
    """
    worker = start_shared_worker(home, library_roots, redis_url) if shared_worker else None
    try:
        process = start_dashboard(
            home,
            library_roots,
            port=port,
            host=host,
            open_browser=open_browser,
            preheat=preheat,
            redis_url=worker.redis_url if worker else redis_url,
        )
        print(f"LoRA Workbench dashboard: http://{host}:{port}/  (Ctrl+C to stop)", flush=True)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            try:
                return process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
    finally:
        if worker is not None:
            worker.stop()


def start_shared_worker(
    home: str | os.PathLike | None, library_roots: Sequence[str | os.PathLike] = (), redis_url: str | None = None
) -> Any:
    """Start the dashboard's shared worker (and a private Redis unless ``redis_url``); stop it with ``stop()``."""
    import workbench
    from workbench._service import SharedWorker
    from workbench.generate import configured_backends

    resolved_home = workbench.open(home).home
    # preload the model the dashboard generates with, so the first visitor's first image does not wait for it
    models = [str(c.options.get("model", "tiny")) for c in configured_backends(resolved_home) if c.kind == "diffusers"]
    print("starting the shared worker (it loads the generation pipeline once for every visitor)...", flush=True)
    return SharedWorker(resolved_home, library_roots, redis_url=redis_url, model=(models or ["tiny"])[0]).start()


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
