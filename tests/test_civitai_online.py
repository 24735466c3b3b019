"""Civitai online against the loopback Civitai (tests/fake_civitai.py) built from real items:
fetch by hash, cache, user fields, previews/examples, links, updates, downloads, sidecars, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_civitai import FakeCivitai, real_items
from lora_factory import write_kohya_lora

import workbench
from workbench.catalog import CivitaiClient, CivitaiError, parse_civitai_ref, safe_destination
from workbench.cli import main as cli_main


@pytest.fixture(scope="module")
def items() -> list[dict[str, Any]]:
    return real_items(300)


@pytest.fixture
def site(items: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch):
    fake = FakeCivitai(items)
    monkeypatch.setenv("CIVITAI_BASE_URL", fake.url)
    monkeypatch.delenv("CIVITAI_API_KEY", raising=False)
    yield fake
    fake.close()


def _multi_version(items: list[dict[str, Any]], skip: set[int] = frozenset()) -> dict[str, Any]:
    return next(i for i in items if len(i.get("modelVersions") or []) >= 2 and i["id"] not in skip)


def _library(tmp_path: Path, site: FakeCivitai, items: list[dict[str, Any]], count: int = 3) -> tuple[Path, dict]:
    """Local files with made-up names; each given to a real item (the first on an older version)."""
    lib = tmp_path / "lib"
    multi = _multi_version(items)
    singles = [i for i in items if i["id"] != multi["id"]][: count - 1]
    chosen = {}
    for n, item in enumerate([multi, *singles]):
        path = write_kohya_lora(lib / f"renamed_{n}.safetensors", seed=n)
        version = site.assign(path.read_bytes(), item["id"], version_index=1 if n == 0 else 0)
        chosen[path.name] = (item, version)
    write_kohya_lora(lib / "unknown.safetensors", seed=99)  # not on Civitai
    return lib, chosen


def _open(tmp_path: Path, lib: Path) -> workbench.Workbench:
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib], workers=1, progress=False)
    return wb


def _row(wb: workbench.Workbench, file_name: str) -> dict[str, Any]:
    frame = wb.catalog.query()
    return frame[frame["file_name"] == file_name].iloc[0].to_dict()


def test_fetch_identifies_by_hash_and_stores_what_civitai_says(tmp_path, site, items) -> None:
    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    report = wb.civitai.fetch(progress=False)
    assert (report.files, report.found, report.not_found, report.errors) == (4, 3, 1, [])
    for name, (item, version) in chosen.items():
        row = _row(wb, name)
        assert row["civitai_model_id"] == item["id"] and row["civitai_version_id"] == version["id"]
        assert row["name"] == item["name"].strip() and row["creator"] == item["creator"]
        assert list(row["tags"]) == item["tags"]
        words = {w.strip() for v in item["modelVersions"] for w in v["trainedWords"] if w.strip()}
        assert set(row["trigger_words"]) == words
        assert row["base_model"] == "SD1"
        full = wb.catalog.get(int(row["id"]))
        civ = full["metadata"]["civitai"]
        assert [v["id"] for v in civ["versions"]] == [v["id"] for v in item["modelVersions"]]
        assert full["stats"] == item["stats"] and full["description"] == item["description"]
        # cover preview and example images with their generation parameters, under the home
        assert row["preview_path"].startswith(str(wb.home / "civitai" / str(version["id"])))
        assert Path(row["preview_path"]).read_bytes()[:4] == b"\x89PNG" and wb.is_servable(row["preview_path"])
        examples = wb.civitai.examples(int(row["id"]))
        assert list(examples["position"]) == [0, 1, 2] and examples["error"].isna().all()
        assert all(Path(p).is_file() for p in examples["path"])
        assert examples["prompt"].str.len().min() > 0 and list(examples["seed"]) == [1000, 1001, 1002]
        assert list(examples["nsfw_level"]) == [1, 1, 4]
    unknown = _row(wb, "unknown.safetensors")
    assert unknown["civitai_model_id"] is None or unknown["civitai_model_id"] != unknown["civitai_model_id"]


def test_second_fetch_asks_nothing_refresh_asks_again(tmp_path, site, items) -> None:
    lib, _ = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    first = wb.civitai.fetch(progress=False)
    asked = len(site.api_requests())
    assert first.requests == asked == 4 + 3  # 4 by-hash (one 404) + 3 models
    before, stamp = len(site.requests), wb.db.stamp()
    again = wb.civitai.fetch(progress=False)
    assert len(site.requests) == before and again.requests == 0
    assert (again.cached, again.found, again.not_found) == (4, 3, 1)
    assert wb.db.stamp() == stamp  # nothing new: nothing written, no view has to reload
    # a cover lost (a rescan rewrote the row) comes back from what is stored, without asking
    with wb.db.write() as con:
        con.execute("UPDATE loras SET preview_path = NULL")
    wb.civitai.fetch(progress=False)
    assert len(site.requests) == before and wb.catalog.query()["has_preview"].sum() == 3
    fresh = wb.civitai.fetch(refresh=True, progress=False)
    assert len(site.api_requests("/api/v1/model-versions/by-hash/")) == 8 and fresh.found == 3


def test_user_fields_win_over_fetched(tmp_path, site, items) -> None:
    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    name = next(iter(chosen))
    lora_id = int(_row(wb, name)["id"])
    wb.catalog.update(lora_id, trigger_words=["mine"], tags=["my tag"], base_model_override="Pony", notes="keep")
    wb.civitai.fetch(progress=False)
    row = _row(wb, name)
    assert list(row["trigger_words"]) == ["mine"] and list(row["tags"]) == ["my tag"]
    assert row["base_model"] == "Pony" and row["notes"] == "keep"
    assert row["civitai_model_id"] == chosen[name][0]["id"]


def test_api_key_only_to_the_api_host_and_never_stored(tmp_path, site, items, monkeypatch) -> None:
    secret = "sk-test-abcdef0123456789"
    monkeypatch.setenv("CIVITAI_API_KEY", secret)
    lib, _ = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    api = [r for r in site.requests if r["host"] == "api"]
    cdn = [r for r in site.requests if r["host"] == "cdn"]
    assert api and all(r["auth"] == f"Bearer {secret}" for r in api)
    assert cdn and all(r["auth"] is None for r in cdn)
    assert secret not in repr(wb.civitai.client())
    archive = wb.export(tmp_path / "backup.zip")
    for path in [*wb.home.rglob("*"), archive]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_rate_limit_retry_after_is_honoured(tmp_path, site, items) -> None:
    site.rate = 5
    lib = tmp_path / "lib"
    for n, item in enumerate(items[:8]):
        site.assign(write_kohya_lora(lib / f"f{n}.safetensors", seed=n).read_bytes(), item["id"])
    wb = _open(tmp_path, lib)
    # one request in flight at a time, so every request after a 429 was sent after the client saw it
    with CivitaiClient(concurrency=1) as client:
        report = wb.civitai.fetch(progress=False, max_images=0, client=client)
    assert report.found == 8 and not report.errors
    api = [r for r in site.requests if r["host"] == "api"]
    limited = [r for r in api if r["status"] == 429]
    assert limited, "the test must have hit the limit"
    for hit in limited:  # nothing was sent to the API host before the Retry-After (1 s) expired
        later = [r for r in api if r["time"] > hit["time"]]
        assert not later or later[0]["time"] >= hit["time"] + 1.0 - 0.01
    # with the pool: answers still all arrive, and the pace learned after a 429 keeps further 429s rare
    site.requests.clear()
    report = wb.civitai.fetch(refresh=True, progress=False, max_images=0)
    assert report.found == 8 and not report.errors


def test_failures_are_per_item_and_lose_nothing(tmp_path, site, items) -> None:
    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    names = list(chosen)
    shas = {n: _row(wb, n)["sha256"].upper() for n in names}
    site.fail_hashes[shas[names[0]]] = 500
    site.hang_hashes.add(shas[names[1]])
    site.hang_seconds = 2.0
    client = CivitaiClient(timeout=0.5, retries=1)
    report = wb.civitai.fetch(refresh=True, progress=False, client=client)
    client.close()
    assert len(report.errors) == 2
    assert any("server error 500" in e for e in report.errors) and any("no answer in time" in e for e in report.errors)
    assert report.found == 3  # the two failed lookups keep what the first fetch learned
    for name, (item, _) in chosen.items():
        assert _row(wb, name)["civitai_model_id"] == item["id"]


def test_429_storm_fails_items_fast_and_keeps_everything(tmp_path, site, items) -> None:
    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    site.storm_retry_after = "3600"
    sent_before = len(site.api_requests())
    report = wb.civitai.fetch(refresh=True, progress=False)
    assert len(report.errors) == 4 + 3 and all("rate limited, retry after" in e for e in report.errors)
    assert len(site.api_requests()) - sent_before <= 4  # only what was in flight when the first 429 came back
    assert report.found == 3 and report.not_found == 1
    assert _row(wb, next(iter(chosen)))["preview_path"]


def test_malformed_and_hostile_answers(tmp_path, site, items) -> None:
    lib = tmp_path / "lib"
    item = items[5]
    version = site.assign(write_kohya_lora(lib / "a.safetensors").read_bytes(), item["id"])
    other = items[6]
    site.assign(write_kohya_lora(lib / "b.safetensors", seed=1).read_bytes(), other["id"])
    answer = site.version_answer(int(version["id"]))
    cdn = site.cdn_url
    answer.update(
        {
            "trainedWords": "not a list",
            "description": '<img src=x onerror="alert(1)"><script>alert(2)</script>',
            "files": [{"name": "a.safetensors", "hashes": ["wrong", "type"], "sizeKB": "big"}],
            "images": [
                {"url": "javascript:alert(1)"},
                {"url": "file:///etc/passwd"},
                {"url": f"{cdn}/hostile/huge-declared"},
                {"url": f"{cdn}/hostile/huge-streamed"},
                {"url": f"{cdn}/hostile/elsewhere"},
                {"url": f"{cdn}/hostile/html"},
                {"url": f"{cdn}/hostile/to-file"},
                {"url": 12345},
                "not an object",
            ],
        }
    )
    site.hostile_versions[int(version["id"])] = answer
    bad_sha = write_kohya_lora(lib / "c.safetensors", seed=2)
    site.by_hash[__import__("hashlib").sha256(bad_sha.read_bytes()).hexdigest().upper()] = 424242
    site.hostile_versions[424242] = {"id": "x", "modelId": None}
    wb = _open(tmp_path, lib)
    wb.civitai.max_image_bytes = 1024 * 1024
    report = wb.civitai.fetch(progress=False, max_images=9)
    assert report.found == 2 and any("malformed" in e for e in report.errors)
    row = _row(wb, "a.safetensors")
    assert row["civitai_model_id"] == item["id"]  # the model answer still identifies it
    examples = wb.civitai.examples(int(row["id"]))
    assert len(examples) == 8 and examples["path"].isna().all()
    reasons = " | ".join(examples["error"])
    for expected in ("only http/https", "over the", "more than", "another host", "not an image", "non-http(s)"):
        assert expected in reasons, expected
    assert not isinstance(row["preview_path"], str)
    leftovers = [p for p in (wb.home / "civitai").rglob("*") if p.is_file() and p.parent.name == str(version["id"])]
    assert leftovers == []
    assert _row(wb, "b.safetensors")["preview_path"]  # the other file was not hurt


def test_link_by_hand_and_it_sticks(tmp_path, site, items) -> None:
    lib, _ = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    unknown = int(_row(wb, "unknown.safetensors")["id"])
    item = items[10]
    vid = item["modelVersions"][0]["id"]
    url = f"https://civitai.com/models/{item['id']}/some-slug?modelVersionId={vid}"
    assert cli_main(["civitai", "link", str(unknown), "--url", url, "--home", str(wb.home)]) == 0
    row = _row(wb, "unknown.safetensors")
    assert row["civitai_model_id"] == item["id"] and row["civitai_version_id"] == vid and row["preview_path"]
    before = len(site.api_requests("/api/v1/model-versions/by-hash/"))
    report = wb.civitai.fetch(refresh=True, progress=False)
    assert report.linked == 1 and len(site.api_requests("/api/v1/model-versions/by-hash/")) == before + 3
    assert _row(wb, "unknown.safetensors")["civitai_version_id"] == vid
    with pytest.raises(ValueError, match="belongs to model"):
        wb.civitai.link(unknown, f"https://civitai.com/models/{items[11]['id']}?modelVersionId={vid}")
    assert cli_main(["civitai", "link", str(unknown), "--url", "https://example.com/x", "--home", str(wb.home)]) == 2


def test_updates_table_jsonl_and_refresh(tmp_path, site, items, capsys) -> None:
    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    frame = wb.civitai.updates(progress=False)
    name = next(iter(chosen))
    item, version = chosen[name]
    assert list(frame["id"]) == [int(_row(wb, name)["id"])]
    assert frame.iloc[0]["current_version_id"] == version["id"]
    assert frame.iloc[0]["latest_version_id"] == item["modelVersions"][0]["id"]
    assert wb.civitai.update_ids() == {int(_row(wb, name)["id"])}
    assert cli_main(["civitai", "updates", "--home", str(wb.home), "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["latest_version"] == item["modelVersions"][0]["name"]
    # Civitai drops the newer version: a refresh sees no update any more
    site.items[item["id"]]["modelVersions"] = site.items[item["id"]]["modelVersions"][1:]
    assert wb.civitai.updates(refresh=True, progress=False).empty


def test_download_redirect_resume_verify_link(tmp_path, site, items) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib], progress=False)
    item = items[20]
    data = write_kohya_lora(tmp_path / "src.safetensors", seed=7).read_bytes()
    version = site.assign(data, item["id"])
    name = next(f for f in version["files"] if f.get("primary") or True)["name"]
    part = lib / f".{name}.{version['id']}.part"
    part.write_bytes(data[: len(data) // 2])  # an interrupted earlier download
    result = wb.civitai.download(
        f"https://civitai.com/models/{item['id']}?modelVersionId={version['id']}", lib, progress=False
    )
    assert result.resumed and result.path == (lib / name).resolve() and result.path.read_bytes() == data
    assert not part.exists()
    storage = [r for r in site.requests if r["path"].startswith("/storage/")]
    assert storage[-1]["range"] == f"bytes={len(data) // 2}-" and storage[-1]["auth"] is None
    row = _row(wb, name)
    assert row["id"] == result.lora_id and row["civitai_version_id"] == version["id"] and row["preview_path"]
    with pytest.raises(CivitaiError, match="already exists"):
        wb.civitai.download(version["id"], lib, progress=False)
    assert result.path.read_bytes() == data


def test_download_refuses_bad_bytes_and_escaping_names(tmp_path, site, items) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    wb = workbench.open(tmp_path / "home")
    item = items[21]
    data = write_kohya_lora(tmp_path / "src.safetensors", seed=8).read_bytes()
    version = site.assign(data, item["id"])
    site.download_bytes[version["id"]] = data[:-10] + b"0123456789"
    with pytest.raises(CivitaiError, match="SHA256") as err:
        wb.civitai.download(version["id"], lib, progress=False)
    assert err.value.kind == "hash_mismatch"
    assert list(lib.iterdir()) == []
    primary = next(f for f in site.items[item["id"]]["modelVersions"][0]["files"] if f.get("primary"))
    primary["name"] = "../escaped.safetensors"
    del site.download_bytes[version["id"]]
    with pytest.raises(ValueError, match="refused file name"):
        wb.civitai.download(version["id"], lib, progress=False)
    assert not (tmp_path / "escaped.safetensors").exists()
    for bad in ("..", ".hidden", "a/b", "a\\b", "", None):
        with pytest.raises(ValueError):
            safe_destination(lib, bad)
    assert cli_main(["civitai", "download", "999999999", "--to", str(lib), "--home", str(wb.home), "--quiet"]) == 1


def test_cli_fetch_summary_and_sidecars(tmp_path, site, items, capsys) -> None:
    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    name = next(iter(chosen))
    base = lib / name.removesuffix(".safetensors")
    Path(f"{base}.metadata.json").write_text(json.dumps({"notes": "my notes", "custom_field": 7}))
    other = lib / list(chosen)[1].removesuffix(".safetensors")
    Path(f"{other}.civitai.info").write_text(json.dumps({"id": 1, "mine": True}))
    assert cli_main(["civitai", "fetch", "--home", str(wb.home), "--quiet", "--sidecars"]) == 0
    out = capsys.readouterr().out
    assert "3 found on Civitai, 1 not on Civitai" in out
    info = json.loads(Path(f"{base}.civitai.info").read_text())
    assert info["id"] == chosen[name][1]["id"] and info["modelId"] == chosen[name][0]["id"]
    lm = json.loads(Path(f"{base}.metadata.json").read_text())
    assert lm["notes"] == "my notes" and lm["custom_field"] == 7 and lm["civitai"]["id"] == info["id"]
    assert json.loads(Path(f"{other}.civitai.info").read_text()) == {"id": 1, "mine": True}
    assert json.loads((lib / "unknown.civitai.info").read_text()) == {}


def test_offline_unless_asked(tmp_path, site, items) -> None:
    lib, _ = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.hash(progress=False)
    assert wb.civitai.updates(progress=False).empty and wb.civitai.examples(1).empty
    assert site.requests == []


def test_parse_civitai_ref() -> None:
    assert parse_civitai_ref(123) == (None, 123)
    assert parse_civitai_ref("456") == (None, 456)
    assert parse_civitai_ref("https://civitai.com/models/12/name-here?modelVersionId=34") == (12, 34)
    assert parse_civitai_ref("civitai.com/models/12") == (12, None)
    assert parse_civitai_ref("https://civitai.com/api/download/models/34") == (None, 34)
    for bad in ("https://civitai.com/images/5", "javascript:alert(1)", "https://civitai.com/models/1?modelVersionId=x"):
        with pytest.raises(ValueError):
            parse_civitai_ref(bad)


def test_gallery_update_badge_and_filter(tmp_path, site, items) -> None:
    from workbench.views.gallery import GalleryWidget

    lib, chosen = _library(tmp_path, site, items)
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    gallery = GalleryWidget(wb)
    older = int(_row(wb, next(iter(chosen)))["id"])
    marked = {r["id"]: r["update"] for r in gallery.first_rows}
    latest = chosen[next(iter(chosen))][0]["modelVersions"][0]["name"]
    assert marked[older] == f"newer on Civitai: {latest}" and sum(1 for v in marked.values() if v) == 1
    gallery.set_filters(updates=True)
    assert gallery.total == 1 and [r["id"] for r in gallery.first_rows] == [older]
    gallery.set_filters(updates=False)
    assert gallery.total == 3 and older not in [r["id"] for r in gallery.first_rows]
    assert all(r["has_preview"] for r in gallery.first_rows if r["id"] != int(_row(wb, "unknown.safetensors")["id"]))


def test_examples_view_escapes_and_blurs(tmp_path, site, items) -> None:
    from workbench.views.examples import examples_html

    lib, chosen = _library(tmp_path, site, items)
    name = next(iter(chosen))
    vid = chosen[name][1]["id"]
    answer = site.version_answer(vid)
    answer["images"][0]["meta"]["prompt"] = "<script>alert(1)</script> a castle"
    site.hostile_versions[vid] = answer
    wb = _open(tmp_path, lib)
    wb.civitai.fetch(progress=False)
    page = examples_html(wb, int(_row(wb, name)["id"]), max_nsfw=2)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; a castle" in page
    assert page.count("<img ") == 3 and page.count("blur(16px)") == 1  # levels 1, 1, 4
    assert "No Civitai example images" in examples_html(wb, int(_row(wb, "unknown.safetensors")["id"]))
    # the library view shows them under the detail panel of the opened card
    from workbench.views.library import LibraryView

    library = LibraryView(wb)
    library.gallery.active_id = int(_row(wb, name)["id"])
    assert library.examples.value.count("<img ") == 3 and "&lt;script&gt;" in library.examples.value


def test_client_settings_and_retry_after_forms(monkeypatch) -> None:
    from email.utils import formatdate

    from workbench.catalog import parse_retry_after

    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert 50 < parse_retry_after(formatdate(__import__("time").time() + 60, usegmt=True)) <= 60
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    monkeypatch.setenv("CIVITAI_BASE_URL", "file:///etc")
    with pytest.raises(ValueError, match="CIVITAI_BASE_URL"):
        CivitaiClient()
    monkeypatch.setenv("CIVITAI_BASE_URL", "https://mirror.example/")
    monkeypatch.setenv("CIVITAI_API_KEY", "  ")
    client = CivitaiClient()
    assert client.base_url == "https://mirror.example" and "unset" in repr(client)
    with pytest.raises(ValueError):
        client.version_by_hash("not-a-hash")
    client.close()


def test_the_maintenance_tab_downloads_from_civitai(tmp_path, site, items) -> None:
    """The dashboard's Download action: a version into a library folder, verified and catalogued; errors shown."""
    from workbench.views.maintenance import MaintenanceView

    lib = tmp_path / "lib"
    lib.mkdir()
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib], progress=False)
    item = items[22]
    data = write_kohya_lora(tmp_path / "src.safetensors", seed=9).read_bytes()
    version = site.assign(data, item["id"])
    view = MaintenanceView(wb, interval=0)
    try:
        assert view.civitai_folder.options == (str(lib.resolve()),)
        view.civitai_ref.value = f"https://civitai.com/models/{item['id']}?modelVersionId={version['id']}"
        view.download_from_civitai(wait=True)
        assert "Downloaded" in view.civitai_status.value and not view.civitai_button.disabled
        row = wb.catalog.query(text=None).iloc[0]
        assert int(row["civitai_version_id"]) == version["id"]
        view.download_from_civitai(wait=True)  # the same version again: refused, the file kept
        assert "already exists" in view.civitai_status.value
        view.civitai_ref.value = "<script>alert(1)</script>"
        view.download_from_civitai(wait=True)
        assert "<script>" not in view.civitai_status.value
    finally:
        view.close()
