"""Bad generation jobs: parameters refused before anything is queued (API and CLI), and jobs whose process died
are found by a live queue within seconds, counted against ``max_attempts`` and never run ahead of new jobs."""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import workbench
from workbench.cli import main
from workbench.generate import (
    GenerationLimits,
    GenerationRequest,
    GenerationResult,
    InvalidRequestError,
    LoraSpec,
    RetryPolicy,
    validate_request,
)

REPO = pathlib.Path(__file__).parents[1]


def _request(**kw) -> GenerationRequest:
    base = dict(prompt="a lighthouse", seed=7, steps=4, width=64, height=64, sampler="DDIM", cfg_scale=7.0)
    base.update(kw)
    return GenerationRequest(**base)


BAD_REQUESTS = [
    ("negative steps", dict(steps=-5), "steps must be from 1 to 150, got -5"),
    ("zero steps", dict(steps=0), "steps must be from 1 to 150, got 0"),
    ("too many steps", dict(steps=151), "steps must be from 1 to 150"),
    ("fractional steps", dict(steps=2.5), "steps must be a whole number"),
    ("steps as text", dict(steps="20"), "steps must be a whole number"),
    ("nan cfg", dict(cfg_scale=float("nan")), "cfg scale must be a finite number"),
    ("inf cfg", dict(cfg_scale=float("inf")), "cfg scale must be a finite number"),
    ("negative cfg", dict(cfg_scale=-1.0), "cfg scale must be from 0 to 30"),
    ("zero height", dict(width=64, height=0), "height must be from 8 to 4096 pixels, got 0"),
    ("negative width", dict(width=-64), "width must be from 8 to 4096"),
    ("huge size", dict(width=100_000, height=100_000), "width must be from 8 to 4096 pixels, got 100000"),
    ("not a multiple of 8", dict(width=100), "width must be a multiple of 8, got 100"),
    ("seed 2^70", dict(seed=2**70), "seed must be -1 (random) or from 0 to 4294967295"),
    ("seed -2", dict(seed=-2), "seed must be -1 (random)"),
    ("seed as float nan", dict(seed=float("nan")), "seed must be a whole number"),
    ("1 MB prompt", dict(prompt="x" * 2**20), "prompt is 1,048,576 characters long; at most 32,768"),
    ("1 MB negative prompt", dict(negative_prompt="y" * 2**20), "negative prompt is 1,048,576 characters"),
    ("prompt not text", dict(prompt=["a"]), "prompt must be text"),
    ("NUL in prompt", dict(prompt="a\x00b"), "prompt contains a NUL"),
    ("nan weight", dict(loras=[LoraSpec("x", float("nan"))]), "weight of LoRA 'x' must be a finite number"),
    ("inf weight", dict(loras=[LoraSpec("x", float("inf"))]), "weight of LoRA 'x' must be a finite number"),
    ("nan te weight", dict(loras=[LoraSpec("x", 1.0, float("nan"))]), "text-encoder weight of LoRA 'x'"),
    ("weight 1e6", dict(loras=[LoraSpec("x", 1e6)]), "weight of LoRA 'x' must be from -10 to 10"),
    ("huge int weight", dict(loras=[LoraSpec("x", 10**400)]), "out of range"),
    ("empty lora name", dict(loras=[LoraSpec("  ", 1.0)]), "empty name"),
    ("100 loras", dict(loras=[LoraSpec(f"l{i}") for i in range(100)]), "at most 64 LoRAs"),
    ("huge sampler", dict(sampler="s" * 10_000), "sampler is 10,000 characters long"),
]


@pytest.mark.parametrize(("label", "change", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_parameters_are_refused_before_queueing(tmp_path, label, change, message):
    wb = workbench.open(tmp_path / "home")
    with pytest.raises(InvalidRequestError) as info:
        wb.queue.submit(_request(**change))
    assert message in str(info.value), f"{label}: {info.value}"
    assert len(str(info.value)) < 300, "the message never echoes a huge value"
    assert wb.db.read_df("SELECT count(*) AS n FROM jobs")["n"][0] == 0, "nothing was stored"
    assert wb.queue._thread is None, "no worker was started for a refused job"


def test_limits_per_backend_and_raisable_per_queue(tmp_path):
    validate_request(_request(seed=2**40), GenerationLimits(max_seed=2**64 - 1))
    with pytest.raises(InvalidRequestError, match="cfg scale must be from 0 to 30"):
        validate_request(_request(cfg_scale=50.0))
    wb = workbench.open(tmp_path / "home")
    with pytest.raises(InvalidRequestError, match="seed"):
        wb.queue.submit(_request(seed=2**40), "a1111")
    with pytest.raises(InvalidRequestError, match="max_attempts"):
        wb.queue.submit(_request(), max_attempts=0)
    with pytest.raises(InvalidRequestError, match="size 4096x4096 is 16,777,216 pixels"):
        validate_request(_request(width=4096, height=4096), GenerationLimits(max_pixels=2048 * 2048))
    validate_request(_request(seed=-1, steps=150, width=4096, height=4096, cfg_scale=0.0))  # the edges pass


CLI_CASES = [
    (["--steps", "-5"], "steps must be from 1 to 150, got -5"),
    (["--steps", "0"], "steps must be from 1 to 150, got 0"),
    (["--cfg", "nan"], "cfg scale must be a finite number"),
    (["--size", "64x0"], "height must be from 8 to 4096 pixels, got 0"),
    (["--size", "100000x100000"], "width must be from 8 to 4096 pixels, got 100000"),
    (["--seed", str(2**70)], "seed must be -1 (random) or from 0 to 4294967295"),
    (["--lora", "tiny:nan"], "weight of LoRA 'tiny' must be a finite number"),
    (["--lora", "tiny:inf"], "weight of LoRA 'tiny' must be a finite number"),
]


@pytest.mark.parametrize(("args", "message"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_generate_refuses_bad_parameters_with_a_clear_error(tmp_path, capsys, args, message):
    home = tmp_path / "home"
    out = tmp_path / "out.png"
    code = main(["generate", "--home", str(home), "--prompt", "a cat", "--out", str(out), *args])
    printed = capsys.readouterr()
    assert code == 2 and message in printed.err and "Traceback" not in printed.err
    assert not out.exists()
    assert workbench.open(home).db.read_df("SELECT count(*) AS n FROM jobs")["n"][0] == 0


def test_cli_generate_refuses_a_one_megabyte_prompt(tmp_path, capsys):
    code = main(["generate", "--home", str(tmp_path / "h"), "--prompt", "p" * 2**20, "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and "prompt is 1,048,576 characters long" in err and len(err) < 400


class _Recording:
    """Stands in for a backend (these tests are about the queue): records the order jobs ran in."""

    kind = "diffusers"

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def submit(self, request, control):
        from PIL import Image

        self.gate.wait(60)
        self.ran.append(request.seed)
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (request.seed % 256, 0, 0)).save(buf, format="PNG")
        return GenerationResult(png=buf.getvalue(), seed=request.seed, width=8, height=8, infotext="x", params={})


# A kernel that dies mid-job: its backend blocks until killed. ``progress_interval`` is huge so the catalog
# still says 'queued' when it dies: only the running marker knows an attempt was under way.
DYING_KERNEL = r"""
import sys, time
import workbench
from tests.fake_servers import tiny_request

class Blocking:
    kind = "diffusers"
    def submit(self, request, control):
        control.report(1, request.steps)
        time.sleep(600)

wb = workbench.open(sys.argv[1])
wb.queue.set_backend("diffusers", Blocking())
wb.queue.progress_interval = 3600
jid = wb.queue.submit(tiny_request(seed=1), max_attempts=int(sys.argv[2]))
wb.queue.flush()
deadline = time.monotonic() + 60
while not (wb.queue.markers_dir / f"{jid}.json").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
print(jid, flush=True)
time.sleep(600)
"""


def _dying_kernel(home: pathlib.Path, max_attempts: int) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", DYING_KERNEL, str(home), str(max_attempts)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        job_id = proc.stdout.readline().decode().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(job_id) == 32, f"the kernel did not start its job: {job_id!r}"
    return job_id


def _wait_row(wb, job_id: str, states: tuple[str, ...], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = wb.db.read_df("SELECT * FROM jobs WHERE id=?", [job_id]).to_dict("records")
        if rows and rows[0]["state"] in states:
            return rows[0]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {rows}")


def test_a_job_whose_process_died_is_failed_within_seconds_by_a_live_queue(tmp_path):
    home = tmp_path / "home"
    wb = workbench.open(home)
    _ = wb.catalog
    wb.queue.dead_check_s = 0.5
    wb.queue.set_backend("diffusers", _Recording())
    wb.queue.start()  # an idle live kernel (the dashboard, another notebook)
    try:
        job_id = _dying_kernel(home, max_attempts=1)
        killed_at = time.monotonic()
        row = _wait_row(wb, job_id, ("failed",))
        assert time.monotonic() - killed_at < 20
        assert row["attempts"] == 1 and row["max_attempts"] == 1
        assert "died during attempt 1 of 1; no attempts left" in row["error"] and "pid" in row["error"]
        assert not (wb.queue.markers_dir / f"{job_id}.json").exists()
        assert wb.queue.backend("diffusers").ran == [], "a failed job is never run again"
    finally:
        wb.queue.close()


def test_an_interrupted_job_is_retried_within_max_attempts_and_after_newer_jobs(tmp_path):
    home = tmp_path / "home"
    wb = workbench.open(home)
    _ = wb.catalog
    backend = _Recording()
    wb.queue.set_backend("diffusers", backend)
    wb.queue.retry = RetryPolicy(max_attempts=3, base_delay=0.05)
    wb.queue.dead_check_s = 0.3
    backend.gate.clear()  # the live queue is busy with its own job while the other kernel dies
    busy = wb.queue.submit(_request(seed=100))
    try:
        job_id = _dying_kernel(home, max_attempts=2)
        _wait_row(wb, job_id, ("queued",))
        deadline = time.monotonic() + 30
        while job_id not in wb.queue._jobs and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "died during attempt 1 of 2; requeued" in wb.queue.get(job_id)["error"]
        fresh = wb.queue.submit(_request(seed=200))  # submitted after the recovery: still runs first
        backend.gate.set()
        assert wb.queue.wait(job_id, 60, flush=True)["state"] == "succeeded"
        assert wb.queue.wait(fresh, 60)["state"] == "succeeded" and wb.queue.wait(busy, 60)["state"] == "succeeded"
        assert backend.ran == [100, 200, 1]
        row = wb.db.read_df("SELECT attempts, max_attempts FROM jobs WHERE id=?", [job_id]).iloc[0]
        assert row["attempts"] == 2 and row["max_attempts"] == 2
    finally:
        wb.queue.close()


def test_a_job_that_keeps_killing_its_process_stops_at_max_attempts(tmp_path):
    home = tmp_path / "home"
    _ = workbench.open(home).catalog
    job_id = _dying_kernel(home, max_attempts=2)
    # the next kernel claims it (attempt 2 of 2) and dies as well
    wb = workbench.open(home)
    row = wb.db.read_df("SELECT params FROM jobs WHERE id=?", [job_id]).iloc[0]
    assert json.loads(row["params"])["request"]["seed"] == 1
    claimed = wb.queue.recover()
    assert claimed == [job_id] and wb.queue._jobs[job_id].attempts == 1
    wb.queue._jobs[job_id].attempts = 2  # what _run does; then the process dies with the marker written
    wb.queue._mark_running(wb.queue._jobs[job_id])
    dead_owner = f"{socket.gethostname()}:999999999:dead:1"
    marker = wb.queue.markers_dir / f"{job_id}.json"
    marker.write_text(json.dumps({"owner": dead_owner, "attempt": 2}))
    with wb.db.write() as con:
        con.execute("UPDATE jobs SET worker=? WHERE id=?", [dead_owner, job_id])
    later = workbench.open(home)
    assert later.queue.recover() == [job_id]
    row = later.db.read_df("SELECT state, attempts, error FROM jobs WHERE id=?", [job_id]).iloc[0]
    assert row["state"] == "failed" and row["attempts"] == 2
    assert "died during attempt 2 of 2; no attempts left" in row["error"]
    assert job_id not in later.queue._jobs and not marker.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"request": {"prompt": "x", "steps": -5}}, "steps must be from 1 to 150, got -5"),
        ({"request": {"prompt": "x", "width": 100000, "height": 100000}}, "width must be from 8 to 4096"),
        ({"request": {"prompt": "x", "loras": [{"name": "a", "unet": "nan"}]}}, "must be a finite number"),
        ({"request": {"prompt": "x", "bogus": 1, "seed": 2**70}}, "seed must be -1"),
        ({"nothing": 1}, "the stored job parameters are unreadable"),
        ({"request": {"prompt": "x", "loras": "abc"}}, "the stored job parameters are unreadable"),
    ],
    ids=["steps", "size", "weight", "seed", "no request", "loras not a list"],
)
def test_stored_bad_jobs_from_older_versions_are_failed_not_run(tmp_path, params, message):
    wb = workbench.open(tmp_path / "home")
    dead_owner = f"{socket.gethostname()}:999999999:dead:1"
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO jobs (id, backend, params, state, progress, attempts, max_attempts, worker, created_at, "
            "updated_at) VALUES ('old', 'diffusers', ?, 'running', 0, 7, 1, ?, now(), now())",
            [json.dumps(params), dead_owner],
        )
    assert wb.queue.recover() == ["old"]
    row = wb.db.read_df("SELECT state, error, finished_at FROM jobs WHERE id='old'").iloc[0]
    assert row["state"] == "failed" and message in row["error"] and row["error"].startswith("not run:")
    assert row["finished_at"] is not None and "old" not in wb.queue._jobs
    with pytest.raises(InvalidRequestError):  # and a retry of it is refused the same way
        wb.queue.retry_job("old")


def test_an_owner_is_dead_when_its_pid_was_reused():
    jobs = sys.modules["workbench.generate._jobs"]  # white-box: the owner check itself
    _owner_alive, _process_start = jobs._owner_alive, jobs._process_start
    host = socket.gethostname()
    parent = os.getppid()
    assert _owner_alive(f"{host}:{parent}:abcd:{_process_start(parent)}")
    assert not _owner_alive(f"{host}:{parent}:abcd:1"), "same pid, other start time: another process"
    assert not _owner_alive(f"{host}:999999999:abcd:1")
    assert _owner_alive("elsewhere:12:abcd:1"), "other hosts are assumed alive"
