"""A1111 and ComfyUI clients against loopback servers that follow the documented APIs (tiny pipeline behind)."""

import json
import pathlib
import threading
import time

import pytest

from tests.fake_servers import FakeA1111, FakeComfyUI, pixels, shared_tiny, tiny_request
from workbench.generate import (
    A1111Backend,
    BackendUnavailableError,
    ComfyUIBackend,
    GenerationError,
    JobCancelledError,
    JobControl,
    LoraNotFoundError,
    LoraSpec,
    build_graph,
    parse_infotext,
    read_infotext,
)

SHARED_API = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "api"


@pytest.fixture(scope="module")
def a1111():
    backend, lora_dir = shared_tiny()
    server = FakeA1111(backend, lora_dir)
    yield server
    server.close()


@pytest.fixture(scope="module")
def comfy():
    backend, lora_dir = shared_tiny()
    server = FakeComfyUI(backend, lora_dir)
    yield server
    server.close()


def cancel_when(step):
    def hook(control):
        if control.step >= step:
            control.cancel()

    return hook


# ------------------------------------------------------------------ A1111
def test_a1111_round_trip_deterministic_and_weight_sensitive(a1111):
    client = A1111Backend(a1111.url, poll_interval=0.05)
    req = tiny_request(loras=[LoraSpec("tiny_watercolor", 0.9)])
    r1, r2 = client.submit(req), client.submit(req)
    assert r1.png == r2.png and r1.seed == 7
    assert set(r1.lora_hashes) == {"tiny_watercolor"}
    other = client.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.2)]))
    assert abs(pixels(other.png) - pixels(r1.png)).mean() > 1.0
    sent = a1111.requests[-1]
    assert sent["prompt"] == "a lighthouse at dusk <lora:tiny_watercolor:0.2>" and sent["sampler_name"] == "DDIM"
    assert "Lora hashes" in parse_infotext(r1.infotext)["params"]


def test_a1111_lists_loras_with_metadata_and_health(a1111):
    client = A1111Backend(a1111.url)
    loras = {x.name: x for x in client.list_loras()}
    assert loras["tiny_watercolor"].metadata["ss_base_model_version"] == "tiny_sd1"
    assert client.health()["ok"]
    assert not A1111Backend("http://127.0.0.1:9", connect_timeout=1).health()["ok"]


def test_a1111_unknown_lora_is_refused_before_submitting(a1111):
    before = len(a1111.requests)
    with pytest.raises(LoraNotFoundError, match="nope"):
        A1111Backend(a1111.url).submit(tiny_request(loras=[LoraSpec("nope")]))
    assert len(a1111.requests) == before


def test_a1111_lora_missing_from_lora_hashes_is_an_error(a1111, monkeypatch):
    # the server lists the LoRA but silently does not apply it (as A1111 does for a file it fails to load)
    client = A1111Backend(a1111.url)
    monkeypatch.setattr(client, "resolve_loras", lambda loras: loras)
    with pytest.raises(GenerationError, match="did not apply LoRA.*ghost"):
        client.submit(tiny_request(loras=[LoraSpec("ghost")]))


def test_a1111_progress_polled_and_cancel_interrupts(a1111):
    client = A1111Backend(a1111.url, poll_interval=0.02)
    seen = []
    control = JobControl(on_progress=lambda c: seen.append(c.step))

    def canceller():
        while not seen:
            time.sleep(0.01)
        control.cancel()

    threading.Thread(target=canceller, daemon=True).start()
    with pytest.raises(JobCancelledError):
        client.submit(tiny_request(steps=200), control)
    assert seen and max(seen) < 200
    deadline = time.monotonic() + 10  # the server clears its job just after sending the response
    while a1111.control is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a1111.control is None  # the server finished the job (interrupted) rather than running on


def test_a1111_http_500_is_retryable_error(a1111):
    a1111.fail_next = 500
    with pytest.raises(BackendUnavailableError, match="HTTP 500") as info:
        A1111Backend(a1111.url).submit(tiny_request())
    assert info.value.retryable


def test_a1111_timeout(a1111):
    a1111.hang_next = True
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="did not answer in time"):
        A1111Backend(a1111.url, timeout=1.0).submit(tiny_request())
    assert time.monotonic() - t0 < 10


def test_a1111_server_dying_mid_job_fails_with_reason(tmp_path):
    backend, lora_dir = shared_tiny()
    server = FakeA1111(backend, lora_dir)
    try:
        server.die_at_step = 2
        with pytest.raises(BackendUnavailableError, match="dropped the connection|refused"):
            A1111Backend(server.url, poll_interval=0.05, timeout=30).submit(tiny_request(steps=30))
    finally:
        server.close()


def test_a1111_recorded_response_shape_parses():
    data = json.loads((SHARED_API / "a1111" / "txt2img_response_a1111_v1.4.0.json").read_text())
    info = json.loads(data["info"])
    assert info["index_of_first_image"] == 0 and "Lora hashes" not in info["extra_generation_params"]
    parsed = parse_infotext(info["infotexts"][0])
    assert parsed["prompt"] == "1 girl" and parsed["params"]["Seed"] == "3580849116"
    assert parsed["params"]["Model"] == "realisticVisionV20_v20"


# ------------------------------------------------------------------ ComfyUI
def test_comfy_graph_is_a_lora_loader_chain():
    req = tiny_request(loras=[LoraSpec("a", 0.8, te=0.5), LoraSpec("b", 1.2)])
    g = build_graph(req, "ckpt.safetensors", ["x/a.safetensors", "b.safetensors"])
    first, second = g["100"], g["101"]
    assert first["inputs"]["model"] == ["1", 0] and first["inputs"]["clip"] == ["1", 1]
    assert (first["inputs"]["strength_model"], first["inputs"]["strength_clip"]) == (0.8, 0.5)
    assert second["inputs"]["model"] == ["100", 0] and second["inputs"]["clip"] == ["100", 1]
    assert g["5"]["inputs"]["model"] == ["101", 0] and g["2"]["inputs"]["clip"] == ["101", 1]
    assert g["5"]["inputs"]["sampler_name"] == "ddim"


def test_comfy_recorded_workflow_shape_matches_our_graph_conventions():
    wf = json.loads((SHARED_API / "comfyui" / "sdxl_lighting_4steps_api_workflow.json").read_text())
    lora = next(n for n in wf.values() if n["class_type"].startswith("LoraLoader"))
    ours = build_graph(tiny_request(loras=[LoraSpec("a")]), "c", ["a.safetensors"])["100"]
    assert set(lora["inputs"]) <= set(ours["inputs"])
    ks = next(n for n in wf.values() if n["class_type"] == "KSampler")
    assert set(ks["inputs"]) == set(build_graph(tiny_request(), "c", [])["5"]["inputs"])


def test_comfy_round_trip_progress_and_determinism(comfy):
    client = ComfyUIBackend(comfy.url)
    seen = []
    req = tiny_request(loras=[LoraSpec("tiny_pixelart", 0.9, te=0.4)])
    r1 = client.submit(req, JobControl(on_progress=lambda c: seen.append(c.step)))
    r2 = client.submit(req)
    assert seen == [1, 2, 3, 4]
    assert r1.png == r2.png and (r1.width, r1.height) == (64, 64)
    other = client.submit(tiny_request(loras=[LoraSpec("tiny_pixelart", 0.1)]))
    assert abs(pixels(other.png) - pixels(r1.png)).mean() > 1.0
    graph = comfy.requests[-1]["prompt"]
    assert graph["100"]["inputs"]["lora_name"] == "tiny_pixelart.safetensors"
    assert read_infotext(r1.png) == r1.infotext


def test_comfy_unknown_lora_rejected_by_server_node_errors(comfy, monkeypatch):
    client = ComfyUIBackend(comfy.url)
    monkeypatch.setattr(client, "resolve_loras", lambda names: [n + ".safetensors" for n in names])
    with pytest.raises(LoraNotFoundError, match="node 100 \\(LoraLoader\\).*Value not in list.*ghost"):
        client.submit(tiny_request(loras=[LoraSpec("ghost")]))
    with pytest.raises(LoraNotFoundError, match="does not know"):
        ComfyUIBackend(comfy.url).submit(tiny_request(loras=[LoraSpec("ghost")]))


def test_comfy_cancel_interrupts_the_prompt(comfy):
    client = ComfyUIBackend(comfy.url)
    control = JobControl(on_progress=cancel_when(2))
    with pytest.raises(JobCancelledError):
        client.submit(tiny_request(steps=200), control)
    assert control.step < 200


def test_comfy_http_500_and_timeout(comfy):
    comfy.fail_next = 500
    with pytest.raises(BackendUnavailableError, match="HTTP 500"):
        ComfyUIBackend(comfy.url).submit(tiny_request())
    comfy.hang_next = True
    with pytest.raises(BackendUnavailableError, match="did not answer in time"):
        c = ComfyUIBackend(comfy.url, timeout=1.0)
        c._client = lambda timeout=30.0, _c=c._client: _c(1.0)
        c.submit(tiny_request())


def test_comfy_server_dying_mid_job_fails_with_reason():
    backend, lora_dir = shared_tiny()
    server = FakeComfyUI(backend, lora_dir)
    try:
        server.die_at_step = 2
        with pytest.raises(BackendUnavailableError, match="closed the websocket mid-job"):
            ComfyUIBackend(server.url, timeout=30).submit(tiny_request(steps=30))
    finally:
        server.close()


def test_comfy_lists_loras_and_health(comfy):
    client = ComfyUIBackend(comfy.url)
    assert {"tiny_watercolor", "tiny_pixelart"} <= {x.name for x in client.list_loras()}
    assert client.health()["ok"]
