"""The dashboard's shared worker on a real redis-server: generation for several visitors with one pipeline,
torch-free visitor processes, supervision after a kill, and maintenance tasks with progress.

Visitors are separate Python processes that open the same home with ``$WORKBENCH_REDIS`` set, as a
Voilà kernel does; they report what they imported. redis-server missing = FAIL (never skip).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import workbench
from tests.fake_servers import tiny_request
from workbench.dashboard import SharedWorker
from workbench.generate import GenerationLimits, LoraSpec, write_tiny_loras
from workbench.tasks import shared_worker_status

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_CACHE = pathlib.Path(tempfile.gettempdir()) / "workbench-test-tiny-cache"

VISITOR = r"""
import json, sys, time
import workbench
from workbench.generate import GenerationRequest, LoraSpec
wb = workbench.open(sys.argv[1])
req = GenerationRequest(prompt="a lighthouse at dusk", seed=int(sys.argv[2]), steps=4, width=64, height=64,
                       sampler="DDIM", cfg_scale=7.0, loras=[LoraSpec("tiny_watercolor", 0.6)])
jid = wb.queue.submit(req)
state = wb.queue.wait(jid, timeout=300, flush=True)
recs = wb.recommend.for_prompt("watercolor painting", k=3)
heavy = sorted(m for m in ("torch", "diffusers", "sentence_transformers", "transformers") if m in sys.modules)
print(json.dumps({"state": state["state"], "error": state["error"], "executor": wb.queue.executor,
                  "heavy": heavy, "recommended": [str(n) for n in recs["name"]]}))
wb.queue.close()
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("shared") / "loras"
    write_tiny_loras(root)
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, library: pathlib.Path):
    assert shutil.which("redis-server"), "redis-server is required (apt-get install -y redis-server)"
    home = tmp_path_factory.mktemp("shared-home")
    workbench.open(home).scan([library], progress=False, workers=1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the worker inherits it: no thread oversubscription on CI
    worker = SharedWorker(home, [library], cache_dir=TINY_CACHE).start()
    saved = os.environ.get("WORKBENCH_REDIS")
    os.environ["WORKBENCH_REDIS"] = str(worker.redis_url)
    try:
        yield worker
    finally:
        worker.stop()
        if saved is None:
            os.environ.pop("WORKBENCH_REDIS", None)
        else:
            os.environ["WORKBENCH_REDIS"] = saved
        assert worker.redis_process is not None and worker.redis_process.poll() is not None


def _visitor(home: pathlib.Path, redis_url: str, seed: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_REDIS": redis_url, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", VISITOR, str(home), str(seed)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wait_for_worker(redis_url: str, timeout: float = 240.0, not_pid: int | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = shared_worker_status(redis_url).get("workers") or []
        fresh = [w for w in workers if w.get("pid") != not_pid and w.get("pipelines")]
        if fresh:
            return fresh[0]
        time.sleep(0.2)
    raise AssertionError(f"no worker with a loaded pipeline after {timeout:.0f} s")


def test_visitors_generate_and_recommend_through_one_worker_without_torch(service: SharedWorker) -> None:
    first = _wait_for_worker(str(service.redis_url))
    assert first["pipeline_loads"] == 1  # preloaded before the first visitor came
    one = _visitor(service.home, str(service.redis_url), seed=1)
    two = _visitor(service.home, str(service.redis_url), seed=2)
    for visit in (one, two):
        assert visit["state"] == "succeeded", visit
        assert visit["executor"] == "rq"
        assert visit["heavy"] == [], visit  # neither the pipeline nor the embedding model came into the visitor
        assert visit["recommended"], visit  # prompt embeddings came from the worker
    after = _wait_for_worker(str(service.redis_url))
    assert after["pid"] == first["pid"] and after["pipeline_loads"] == 1  # one pipeline however many visitors
    rows = workbench.open(service.home).db.read_df("SELECT state FROM jobs")
    assert sorted(rows["state"]) == ["succeeded", "succeeded"]


def test_worker_killed_mid_job_fails_it_with_reason_and_a_new_worker_runs_the_next(service: SharedWorker) -> None:
    wb = workbench.open(service.home)
    queue = wb.queue
    assert queue.executor == "rq"
    queue.limits["diffusers"] = GenerationLimits(max_steps=1000)  # a long job on purpose (killed mid-way)
    try:
        old = _wait_for_worker(str(service.redis_url))
        jid = queue.submit(tiny_request(steps=400), max_attempts=1)
        deadline = time.monotonic() + 120
        while queue.get(jid)["step"] < 2:
            assert time.monotonic() < deadline, queue.get(jid)
            time.sleep(0.05)
        os.kill(old["pid"], signal.SIGKILL)
        state = queue.wait(jid, timeout=60, flush=True)
        assert state["state"] == "failed", state
        assert "killed by SIGKILL" in state["error"] and "mid-job" in state["error"], state["error"]
        row = wb.db.read_df("SELECT state, error FROM jobs WHERE id=?", [jid]).iloc[0]
        assert row["state"] == "failed" and "SIGKILL" in row["error"]

        nxt = queue.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.6)]))
        assert queue.wait(nxt, timeout=300)["state"] == "succeeded"
        new = _wait_for_worker(str(service.redis_url), not_pid=old["pid"])
        assert new["pid"] != old["pid"] and service.restarts == 1
        assert service.failures and service.failures[0][0] == old["pid"]
        assert [w["pid"] for w in shared_worker_status(str(service.redis_url))["workers"]] == [new["pid"]]
    finally:
        queue.close()


def test_maintenance_tasks_run_on_the_worker_with_progress(service: SharedWorker, library: pathlib.Path) -> None:
    wb = workbench.open(service.home)
    shutil.copy(
        library / sorted(p.name for p in library.glob("*.safetensors"))[0], library / "copy_for_rescan.safetensors"
    )
    before = wb.catalog.count()
    scan_id = wb.tasks.submit("scan")
    scan = wb.tasks.wait(scan_id, timeout=300)
    assert scan["state"] == "finished", scan
    assert scan["kind"] == "scan" and scan["done"] == scan["total"] == 1 and "1" in scan["summary"]
    assert workbench.open(service.home).catalog.count() == before + 1

    hash_id = wb.tasks.submit("hash")
    second = wb.tasks.submit("hash")
    assert second == hash_id or wb.tasks.get(hash_id)["state"] == "finished"  # one at a time
    hashed = wb.tasks.wait(hash_id, timeout=300)
    assert hashed["state"] == "finished" and hashed["total"] > 0 and hashed["done"] == hashed["total"], hashed
    assert wb.db.read_df("SELECT count(*) AS n FROM lora_view WHERE sha256 IS NULL AND path <> ''")["n"][0] == 0

    embed = wb.tasks.wait(wb.tasks.submit("embed"), timeout=300)
    assert embed["state"] == "finished", embed
    assert wb.db.read_df("SELECT count(*) AS n FROM embeddings")["n"][0] == wb.catalog.count()
    listed = wb.tasks.list()
    assert [t["kind"] for t in listed[:3]] == ["embed", "hash", "scan"]

    with pytest.raises(ValueError, match="unknown task"):
        wb.tasks.submit("format-disk")


def test_weights_analysis_runs_on_the_worker_and_the_views_follow_it(service: SharedWorker) -> None:
    from workbench.views.maintenance import MaintenanceView
    from workbench.views.weights import WeightsPanel, WeightsTab

    wb = workbench.open(service.home)
    assert wb.tasks.available
    frame = wb.catalog.query(limit=None)
    ids = {pathlib.Path(p).stem: int(i) for i, p in zip(frame["id"], frame["path"])}
    one = ids["tiny_watercolor"]
    # a panel's "Analyse weights": the worker reads that LoRA's tensors, the page follows the task's progress
    panel = WeightsPanel(wb, one)
    assert "Not analysed" in panel.summary.value
    thread = panel.analyse()
    assert thread is not None and panel.run.where == "worker" and panel.run.task_id
    thread.join(300)
    assert not thread.is_alive()
    task = wb.tasks.get(panel.run.task_id)
    assert task["kind"] == "weights" and task["state"] == "finished", task
    assert task["stage"] == "reading tensors" and task["done"] == task["total"] > 0, task
    assert task["summary"] == "1 file(s) analysed" and "1 file(s) analysed" in panel.status.value
    assert panel.run.bar.value == 1.0 and panel.run.bar.bar_style == "success"
    assert "nominal rank <b>4</b>" in panel.summary.value and panel.heatmap.data[0].type == "heatmap"
    assert wb.weights.table()["id"].tolist() == [one]  # only the asked-for file was read
    # the Weights tab's "Analyse new files": everything else, on the worker as well
    tab = WeightsTab(wb)
    thread = tab.analyse()
    assert thread is not None and tab.run.where == "worker"
    thread.join(300)
    assert f"{len(ids) - 1} file(s) analysed" in tab.status.value, tab.status.value
    assert set(wb.weights.table()["id"]) == set(ids.values())
    # the Maintenance tab offers it with the other tasks and lists it
    view = MaintenanceView(wb, interval=0)
    assert not view.task_buttons["weights"].disabled
    assert "Analyse weights" in " ".join(row.text.value for row in view.task_rows)
    with pytest.raises(ValueError, match="takes no ids"):
        wb.tasks.submit("scan", ids=[one])
    with pytest.raises(ValueError, match="must be integers"):
        wb.tasks.submit("weights", ids=["1; DROP"])


def test_status_reports_queues_and_workers(service: SharedWorker) -> None:
    status = shared_worker_status(str(service.redis_url))
    assert status["available"] and set(status["queues"]) == {"workbench-fast", "workbench", "workbench-maintenance"}
    (worker,) = status["workers"]
    assert worker["cuda"] is False and worker["gpus"] == [] and worker["torch"]  # CPU machine: torch, no CUDA
    assert shared_worker_status("redis://127.0.0.1:1/0")["available"] is False


def test_joining_a_redis_that_does_not_answer_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    worker = SharedWorker(tmp_path / "home", redis_url="redis://:secret@127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="does not answer") as caught:
        worker.start()
    assert "secret" not in str(caught.value)  # the password never reaches a message
    assert worker.worker is None and worker.redis_process is None


def test_tasks_without_a_shared_worker_say_how_to_get_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.tasks import NoSharedWorkerError

    monkeypatch.delenv("WORKBENCH_REDIS", raising=False)
    wb = workbench.open(tmp_path / "home")
    assert not wb.tasks.available and wb.queue.executor == "thread"
    with pytest.raises(NoSharedWorkerError, match="workbench dashboard"):
        wb.tasks.submit("scan")
