"""RQ workers on a real redis-server; the CLI's generate command. redis-server missing = FAIL (never skip)."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import workbench
from tests import fake_servers
from tests.fake_servers import shared_tiny, tiny_request
from workbench.generate import GenerationLimits, JobQueue, LoraSpec, RetryPolicy, read_infotext

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url():
    exe = shutil.which("redis-server")
    assert exe, "redis-server is required for the RQ tests (apt-get install -y redis-server)"
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def _start_worker(redis_url, lora_dir):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "worker",
            "--redis",
            redis_url,
            "--model",
            "tiny",
            "--cache-dir",
            str(fake_servers._SHARED["cache"]),
            "--lora-dir",
            str(lora_dir),
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module", autouse=True)
def worker(redis_url):
    """One worker process for the module, started first: its torch import overlaps the in-process CLI test."""
    _, lora_dir = shared_tiny()
    proc = _start_worker(redis_url, lora_dir)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_cli_generate_writes_png_with_infotext(tmp_path, capsys):
    """In-process through ``cli.main`` (a subprocess would only add a second torch import)."""
    from workbench import cli

    backend, lora_dir = shared_tiny()
    home = tmp_path / "home"
    workbench.open(home).scan([lora_dir], progress=False, workers=1)
    out = tmp_path / "out.png"
    code = cli.main(
        [
            "generate",
            "--home",
            str(home),
            "--backend",
            "diffusers",
            "--model",
            "tiny",
            "--prompt",
            "a lighthouse at dusk",
            "--lora",
            "tiny_watercolor:0.6",
            "--seed",
            "7",
            "--steps",
            "4",
            "--size",
            "64x64",
            "--sampler",
            "DDIM",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "RANDOM WEIGHTS" in printed.out
    # the same request in-process gives the same bytes (the CLI resolved the LoRA from the catalog)
    assert out.read_bytes() == backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.6)])).png


def test_rq_worker_returns_results_to_the_owner_and_dies_visibly(redis_url, worker, tmp_path):
    backend, lora_dir = shared_tiny()
    wb = workbench.open(tmp_path / "home")
    queue = JobQueue(wb.db, wb.home / "outputs", executor="rq", redis_url=redis_url, retry=RetryPolicy(max_attempts=1))
    queue.limits["diffusers"] = GenerationLimits(max_steps=1000)  # long jobs on purpose (cancel, kill)
    try:
        req = tiny_request(loras=[LoraSpec("tiny_watercolor", 0.6)])
        jid = queue.submit(req)
        state = queue.wait(jid, timeout=120)
        assert state["state"] == "succeeded", state
        png = pathlib.Path(queue.result(jid)["path"]).read_bytes()
        assert png == backend.submit(req).png  # same bytes as in-process
        assert "tiny_watercolor" in read_infotext(png)

        # cancel reaches the worker's backend
        jid = queue.submit(tiny_request(steps=400))
        deadline = time.monotonic() + 60
        while queue.get(jid)["step"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        queue.cancel(jid)
        state = queue.wait(jid, timeout=60)
        assert state["state"] == "cancelled" and state["step"] < 400

        # a killed worker leaves a failed job with its reason, never a hang
        jid = queue.submit(tiny_request(steps=400))
        deadline = time.monotonic() + 60
        while queue.get(jid)["step"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        state = queue.wait(jid, timeout=60, flush=True)
        assert state["state"] == "failed" and "stopped mid-job" in state["error"]
        row = wb.db.read_df("SELECT state, error FROM jobs WHERE id=?", [jid]).iloc[0]
        assert row["state"] == "failed" and "no heartbeat" in row["error"]
    finally:
        queue.close()
