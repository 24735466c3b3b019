"""How the dashboard is served: its template (no CDN), its title, and the theme JupyterLab is set to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.dashboard import dashboard_env, dashboard_notebook, jupyterlab_theme, template_dir, voila_command


def _settings(folder: Path, theme: str) -> Path:
    path = folder / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    path.parent.mkdir(parents=True)
    path.write_text(f'{{\n    // JupyterLab writes comments here\n    "theme": "{theme}"\n}}\n')
    return folder


def test_theme_follows_jupyterlab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jupyterlab_theme(_settings(tmp_path / "dark", "JupyterLab Dark")) == "dark"
    assert jupyterlab_theme(_settings(tmp_path / "light", "JupyterLab Light")) == "light"
    assert jupyterlab_theme(tmp_path / "none") == "light"
    (tmp_path / "bad" / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (tmp_path / "bad" / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings").write_text("{not json")
    assert jupyterlab_theme(tmp_path / "bad") == "light"
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "dark"))
    command = voila_command("x.ipynb")
    assert "--theme=dark" in command and "--template=workbench" in command
    assert "--theme=light" in voila_command("x.ipynb", theme="light")
    with pytest.raises(ValueError, match="theme must be one of"):
        voila_command("x.ipynb", theme="neon")


def test_template_has_no_cdn_and_is_on_the_jupyter_path() -> None:
    template = template_dir() / "voila" / "templates" / "workbench"
    page = (template / "index.html.j2").read_text()
    assert "cdn.jsdelivr" not in page and "https://" not in page.replace("https://github.com", "")
    assert json.loads((template / "conf.json").read_text())["base_template"] == "lab"
    assert dashboard_env(None)["JUPYTER_PATH"].split(":")[0] == str(template_dir())


def test_dashboard_notebook_title() -> None:
    assert json.loads(dashboard_notebook().read_text())["metadata"]["title"] == "LoRA Workbench"


def test_kernels_get_two_malloc_arenas_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert dashboard_env(None)["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert dashboard_env(None)["MALLOC_ARENA_MAX"] == "4"


def test_the_pool_refills_after_the_visitors_page_opened() -> None:
    command = voila_command("x.ipynb", pool_size=2)
    assert "--pool_size=2" in command and "--VoilaKernelManager.fill_delay=5.0" in command
    assert "--VoilaKernelManager.fill_delay=0.5" in voila_command("x.ipynb", pool_fill_delay_s=0.5)
    assert not any("fill_delay" in part for part in voila_command("x.ipynb", pool_size=0))


def test_a_killed_dashboard_command_takes_voila_and_its_kernels_along(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from workbench.dashboard import DEFAULT_HOST, free_port, port_in_use, wait_for_port

    port = free_port()
    command = [sys.executable, "-m", "workbench.cli", "dashboard", "--home", str(tmp_path / "home")]
    command += ["--port", str(port), "--no-browser", "--no-worker", "--pool-size", "1"]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family: list[psutil.Process] = []
    try:
        wait_for_port(DEFAULT_HOST, port, timeout=180, process=launcher)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            "ipykernel" in " ".join(child.cmdline()) for child in psutil.Process(launcher.pid).children(recursive=True)
        ):
            time.sleep(0.5)  # the preheated kernel
        family = psutil.Process(launcher.pid).children(recursive=True)
        assert any("ipykernel" in " ".join(p.cmdline()) for p in family)
        launcher.send_signal(signal.SIGTERM)  # as a service manager or `kill` stops it: no Ctrl+C, no cleanup code
        launcher.wait(30)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert alive == [], [p.cmdline()[:4] for p in alive]
        assert not port_in_use(DEFAULT_HOST, port)
    finally:  # whatever survived (orphans included) goes
        for process in [*family, psutil.Process(launcher.pid)] if launcher.poll() is None else family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
