"""The persisted queue on a real catalog with the real tiny pipeline; failures through the loopback fakes."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import workbench
from tests.fake_servers import FakeA1111, shared_tiny, tiny_request
from workbench.generate import GenerationLimits, LoraSpec, RetryPolicy, read_infotext


@pytest.fixture()
def wb(tmp_path):
    backend, lora_dir = shared_tiny()
    w = workbench.open(tmp_path / "home")
    w.scan([lora_dir], progress=False, workers=1)
    w.queue.set_backend("diffusers", backend)
    w.queue.retry = RetryPolicy(max_attempts=3, base_delay=0.05)
    yield w
    w.queue.close()


def test_job_runs_records_result_png_and_usage(wb):
    jid = wb.queue.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.8)]))
    state = wb.queue.wait(jid, timeout=60, flush=True)
    assert state["state"] == "succeeded" and state["progress"] == 1.0
    row = wb.db.read_df("SELECT state, attempts, started_at, finished_at, error FROM jobs WHERE id=?", [jid]).iloc[0]
    assert row["state"] == "succeeded" and row["attempts"] == 1 and row["finished_at"] >= row["started_at"]
    res = wb.queue.result(jid)
    png = pathlib.Path(res["path"]).read_bytes()
    assert pathlib.Path(res["path"]).is_relative_to(wb.home / "outputs")
    assert 'Lora hashes: "tiny_watercolor: ' in read_infotext(png)
    usage = wb.history.usage()
    assert list(usage["name"]) == ["tiny_watercolor"] and usage["uses"][0] == 1
    assert int(wb.catalog.query(text="tiny_watercolor")["usage_count"].max()) == 1


def test_same_seed_and_stack_identical_bytes_through_the_queue(wb):
    req = tiny_request(loras=[LoraSpec("tiny_pixelart", 0.5)])
    a, b = wb.queue.submit(req), wb.queue.submit(req)
    c = wb.queue.submit(tiny_request(loras=[LoraSpec("tiny_pixelart", 1.5)]))
    for j in (a, b, c):
        wb.queue.wait(j, timeout=60)
    pa, pb, pc = (pathlib.Path(wb.queue.result(j)["path"]).read_bytes() for j in (a, b, c))
    assert pa == pb and pa != pc


def test_cancel_running_job_stops_backend(wb):
    wb.queue.limits["diffusers"] = GenerationLimits(max_steps=1000)  # a long job on purpose
    jid = wb.queue.submit(tiny_request(steps=400))
    deadline = time.monotonic() + 30
    while wb.queue.get(jid)["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    wb.queue.cancel(jid)
    state = wb.queue.wait(jid, timeout=30, flush=True)
    assert state["state"] == "cancelled" and state["step"] < 400
    assert wb.db.read_df("SELECT state FROM jobs WHERE id=?", [jid])["state"][0] == "cancelled"
    assert wb.queue.result(jid) is None


def test_cancel_queued_job_and_retry_it(wb):
    first = wb.queue.submit(tiny_request(steps=60))
    second = wb.queue.submit(tiny_request())
    wb.queue.cancel(second)
    assert wb.queue.wait(second, 5)["state"] == "cancelled"
    wb.queue.wait(first, 60)
    wb.queue.retry_job(second)
    assert wb.queue.wait(second, 60)["state"] == "succeeded"


def test_permanent_error_fails_at_once_with_reason(wb):
    jid = wb.queue.submit(tiny_request(loras=[LoraSpec("tiny_loha_lycoris")]))
    state = wb.queue.wait(jid, 60, flush=True)
    assert state["state"] == "failed" and state["attempts"] == 1 and "LoHa" in state["error"]
    assert "a1111" in wb.db.read_df("SELECT error FROM jobs WHERE id=?", [jid])["error"][0]


def test_retry_with_backoff_on_http_500_then_success(wb):
    backend, lora_dir = shared_tiny()
    server = FakeA1111(backend, lora_dir)
    try:
        server.fail_next = 500
        jid = wb.queue.submit(
            tiny_request(), backend="a1111", backend_options={"url": server.url, "poll_interval": 0.05}
        )
        state = wb.queue.wait(jid, 60)
        assert state["state"] == "succeeded" and state["attempts"] == 2
        # a server that is gone: retried max_attempts times, then failed with the reason
        server.close()
        jid = wb.queue.submit(
            tiny_request(), backend="a1111", backend_options={"url": server.url, "connect_timeout": 1}
        )
        state = wb.queue.wait(jid, 60)
        assert state["state"] == "failed" and state["attempts"] == 3 and "refused the connection" in state["error"]
    finally:
        server.close() if not server.dead else None


def test_backend_dying_mid_job_leaves_a_failed_job_never_a_hang(wb):
    backend, lora_dir = shared_tiny()
    server = FakeA1111(backend, lora_dir)
    try:
        server.die_at_step = 2
        jid = wb.queue.submit(
            tiny_request(steps=40),
            backend="a1111",
            max_attempts=1,
            backend_options={"url": server.url, "poll_interval": 0.05, "timeout": 30},
        )
        state = wb.queue.wait(jid, 60)
        assert state["state"] == "failed" and "dropped the connection" in state["error"]
    finally:
        server.close()


def test_history_rate_favorite_reuse_delete_export(wb):
    a = wb.queue.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.7)], seed=11))
    b = wb.queue.submit(tiny_request(prompt="a red fox", seed=12))
    wb.queue.wait(a, 60), wb.queue.wait(b, 60)
    wb.queue.flush()
    h = wb.history
    assert len(h.list()) == 2
    h.rate(a, 4)
    h.favorite(a)
    assert list(h.list(favorites=True)["id"]) == [a]
    assert list(h.list(min_rating=3)["id"]) == [a]
    assert list(h.list(lora="tiny_watercolor")["id"]) == [a]
    assert list(h.list(text="red fox")["id"]) == [b]
    again = h.reuse(a)
    assert again.seed == 11 and again.loras[0].name == "tiny_watercolor" and again.loras[0].unet == 0.7
    jid = wb.queue.submit(again)
    wb.queue.wait(jid, 60)
    assert h.png(jid) == h.png(a)
    import io
    import json
    import zipfile

    z = zipfile.ZipFile(io.BytesIO(h.export_zip()))
    manifest = json.loads(z.read("manifest.json"))
    assert len(manifest) == 3 and all(m["file"] in z.namelist() for m in manifest)
    path = pathlib.Path(h.get(b)["path"])
    h.delete(b)
    assert not path.exists() and b not in set(h.list()["id"])


# The "kernel" that dies: it needs a job that is really running when it is killed, not a picture, so its
# backend blocks in a step until cancelled (no torch import: the subprocess starts in a second or two).
RESTART_SCRIPT = r"""
import sys, time
import workbench
from tests.fake_servers import tiny_request

class Blocking:
    kind = "diffusers"
    def submit(self, request, control):
        control.report(1, request.steps)
        while not control.cancelled:
            time.sleep(0.05)
        control.raise_if_cancelled()

wb = workbench.open(sys.argv[1])
wb.queue.set_backend("diffusers", Blocking())
first = wb.queue.submit(tiny_request(steps=100))
second = wb.queue.submit(tiny_request(seed=99))
deadline = time.monotonic() + 120
while wb.queue.get(first)["step"] < 1:
    if wb.queue.get(first)["state"] not in ("running", "queued") or time.monotonic() > deadline:
        print("failed", wb.queue.get(first), flush=True)
        sys.exit(1)
    time.sleep(0.05)
wb.queue.flush()
print(first, second, flush=True)
time.sleep(600)
"""


def test_kernel_restart_recovers_queued_and_interrupted_jobs(tmp_path):
    backend, lora_dir = shared_tiny()
    home = tmp_path / "home"
    _ = workbench.open(home).catalog  # create the catalog
    proc = subprocess.Popen(
        [sys.executable, "-c", RESTART_SCRIPT, str(home)],
        stdout=subprocess.PIPE,
        cwd=pathlib.Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])},
    )
    try:
        line = proc.stdout.readline().decode().split()
        assert len(line) == 2, f"the kernel process did not start its jobs: {line}"
        first, second = line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    wb = workbench.open(home)
    states = dict(wb.db.read_df("SELECT id, state FROM jobs").itertuples(index=False))
    assert states == {first: "running", second: "queued"}
    wb.queue.set_backend("diffusers", backend)
    assert sorted(wb.queue.recover()) == sorted([first, second])  # what start() does first
    assert wb.queue.get(first)["error"].startswith("interrupted") and wb.queue.get(second)["error"] is None
    wb.queue.start()
    wb.queue.cancel(first)  # a blocking job: do not wait for it
    assert wb.queue.wait(first, 60)["state"] == "cancelled"
    assert wb.queue.wait(second, 60)["state"] == "succeeded"
    wb.queue.close()


def test_short_jobs_cost_one_catalog_transaction_each_and_no_reads(wb, monkeypatch):
    """The queue's overhead guard: each catalog open costs tens of ms on a loaded machine."""
    from workbench.catalog import Database

    req = tiny_request(loras=[LoraSpec("tiny_watercolor", 0.5)])
    wb.queue.wait(wb.queue.submit(req), 60)  # warm: resolver cache, adapter loaded
    wb.queue.full_check_s = 3600  # the cancel watcher's periodic safety read stays out of this count
    opens = []
    real_open = Database._open
    monkeypatch.setattr(
        Database, "_open", lambda self, read_only: opens.append(read_only) or real_open(self, read_only)
    )
    ids = [wb.queue.submit(req.with_seed(i)) for i in range(6)]
    for jid in ids:
        assert wb.queue.wait(jid, 60)["state"] == "succeeded"
    assert opens.count(True) == 0, "no catalog reads while short jobs run"
    live = wb.queue.jobs(limit=20, flush=False)  # what the Queue tab shows: current states, no commit forced
    assert set(live[live["id"].isin(ids)]["state"]) == {"succeeded"} and len(live[live["id"].isin(ids)]) == 6
    wb.queue.flush()
    assert opens.count(False) <= len(ids) + 2, f"{opens.count(False)} write transactions for {len(ids)} jobs"
    rows = wb.db.read_df("SELECT state, attempts, started_at FROM jobs WHERE id IN (SELECT unnest(?))", [ids])
    assert (
        list(rows["state"]) == ["succeeded"] * 6 and rows["attempts"].eq(1).all() and rows["started_at"].notna().all()
    )


def test_infotext_lora_hashes_come_from_the_catalog_without_reading_the_file(wb, monkeypatch):
    wb.hash(progress=False, workers=1)
    tensor_hash = wb.catalog.query(text="tiny_neon_unet_only")["tensor_hash"].iloc[0]
    monkeypatch.setattr("workbench.generate.backends._compat._HASH_CACHE", {})

    def no_hashing(*_a):
        raise AssertionError("the LoRA file was hashed again")

    monkeypatch.setattr("workbench.generate.backends._compat.file_hashes", no_hashing)
    jid = wb.queue.submit(tiny_request(loras=[LoraSpec("tiny_neon_unet_only", 0.5)]))
    assert wb.queue.wait(jid, 60)["state"] == "succeeded"
    assert f"tiny_neon_unet_only: {tensor_hash[:12]}" in wb.queue.result(jid)["infotext"]


EXIT_SCRIPT = r"""
import io, sys
from PIL import Image
import workbench
from tests.fake_servers import tiny_request
from workbench.generate import GenerationResult

class OneColour:  # stands in for a backend: this test is about recording, not pictures
    kind = "diffusers"
    def submit(self, request, control):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, format="PNG")
        return GenerationResult(png=buf.getvalue(), seed=request.seed, width=8, height=8, infotext="x", params={})

wb = workbench.open(sys.argv[1])
wb.queue.set_backend("diffusers", OneColour())
wb.queue.commit_interval = 60  # nothing would be committed before exit without the atexit flush
ids = [wb.queue.submit(tiny_request(seed=s)) for s in (1, 2, 3)]
for i in ids:
    wb.queue.wait(i, 60)
print(" ".join(ids), flush=True)
"""


def test_recorded_results_are_committed_when_the_process_exits(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pathlib.Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids = proc.stdout.split()
    wb = workbench.open(home)
    states = dict(wb.db.read_df("SELECT id, state FROM jobs").itertuples(index=False))
    assert states == {i: "succeeded" for i in ids}
    assert sorted(wb.history.list()["id"]) == sorted(ids)
