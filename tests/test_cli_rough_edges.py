"""The command line as a newcomer meets it: wrong --home, scan errors, bad flags, unknown hashes, NaN-free tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from lora_factory import write_kohya_lora

from workbench.cli import main


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "good.safetensors")
    write_kohya_lora(lib / "twin.safetensors")  # the same bytes: a duplicate once hashed
    (lib / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return lib


@pytest.mark.parametrize(
    "command",
    [["duplicates"], ["export-catalog"], ["hash"], ["recommend", "--prompt", "x"], ["export", "out.zip"]],
)
def test_read_commands_on_a_mistyped_home_say_so_and_create_nothing(tmp_path: Path, capsys, command) -> None:
    typo = tmp_path / "hoem"
    assert main([*command, "--home", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "there is no workbench catalog in" in err and str(typo) in err
    assert not typo.exists()


def test_scan_names_the_files_with_errors(home: Path, library: Path, capsys) -> None:
    assert main(["scan", str(library), "--home", str(home), "-q"]) == 0
    captured = capsys.readouterr()
    assert "1 with errors" in captured.out
    assert f"error: {library / 'broken.safetensors'}:" in captured.err


def test_scan_with_a_bogus_flag_prints_the_scan_usage(home: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "--bogus", "--home", str(home)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: workbench scan" in err and "unrecognized arguments: --bogus" in err


def test_duplicates_say_what_is_not_known_yet(home: Path, library: Path, capsys) -> None:
    main(["scan", str(library), "--home", str(home), "-q"])
    capsys.readouterr()
    assert main(["duplicates", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "no duplicates found among the files hashed so far" in out
    assert "2 of 3 files have no hash yet" in out and f"workbench hash --home {home}" in out
    assert main(["hash", "--home", str(home), "-q"]) == 0
    capsys.readouterr()
    assert main(["duplicates", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "twin.safetensors" in out and "good.safetensors" in out
    assert "NaN" not in out and "no hash yet" not in out


def test_commands_run_without_model_loading_progress_bars(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    main(["duplicates", "--home", str(home / "nowhere")])
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
