"""`fetch` decides "ready" from the content of the weights directory, not from file names.

The offline model's folder (converted from its GGUF) counts as fetched only with a
`.complete` marker whose recorded sizes match the files (checked on every load) and whose
SHA-256s match on `fetch --verify`; nothing may be a symbolic link resolving outside the
weights directory; and the staging folders a killed fetch leaves behind are removed by the
next fetch. The converter is replaced by a fast stand-in that copies the tiny GPT-2 fixture,
so that each test converts in milliseconds; everything else is the real code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minillm
from minillm.checkpoints import catalog, download, gguf
from minillm.commands import list_models
from minillm.errors import CheckpointError
from tests.conftest import golden_folder

NAME = "smollm2-135m"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    calls = []

    def convert(gguf_path, out_dir, progress=False):  # writes what the converter writes: every OUTPUT_FILE
        calls.append(Path(out_dir))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True)
        for name in gguf.OUTPUT_FILES:
            src = golden_folder("gpt2") / name
            if src.exists():
                shutil.copyfile(src, out_dir / name)
            else:
                (out_dir / name).write_text("{}")
        return out_dir

    monkeypatch.setattr(gguf, "convert_gguf_to_hf", convert)
    monkeypatch.setattr(gguf, "find_offline_gguf", lambda: Path("/packages/SmolLM2.gguf"))
    weights = tmp_path / "home" / "weights"
    weights.mkdir(parents=True)
    return weights, calls


def test_a_truncated_model_with_the_right_file_names_is_not_ready(home, capsys):
    weights, calls = home
    folder = weights / NAME
    folder.mkdir()
    for name in gguf.OUTPUT_FILES:
        shutil.copyfile(golden_folder("gpt2") / name, folder / name) if (
            golden_folder("gpt2") / name).exists() else (folder / name).write_text("{}")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut short
    assert not catalog.is_fetched(NAME)
    assert "yes" not in list_models._local(catalog.get(NAME))
    catalog.fetch(NAME, progress=False)  # converts again, then marks it
    assert len(calls) == 1
    original = (golden_folder("gpt2") / "model.safetensors").read_bytes()
    assert (folder / "model.safetensors").read_bytes() == original
    assert catalog.is_fetched(NAME) and catalog.resolve(NAME) == folder


def test_the_marker_records_sizes_checked_always_and_hashes_checked_on_verify(home):
    weights, calls = home
    folder = catalog.fetch(NAME, progress=False)
    marker = download.read_marker(folder)
    st = (folder / "model.safetensors").stat().st_size
    assert marker["files"]["model.safetensors"]["size"] == st
    assert marker["files"]["model.safetensors"]["sha256"] == download.file_sha256(
        folder / "model.safetensors").hexdigest()
    # same size, one byte changed: sizes cannot see it, --verify can
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    assert catalog.is_fetched(NAME)
    assert catalog.located(NAME, verify=True) is None
    catalog.fetch(NAME, progress=False, verify=True)
    assert len(calls) == 2 and catalog.located(NAME, verify=True) == folder
    # cut short after the marker: not ready, by size
    (folder / "model.safetensors").write_bytes(b"x")
    assert not catalog.is_fetched(NAME)


def test_a_symlink_resolving_outside_the_weights_directory_is_refused(home, tmp_path):
    weights, calls = home
    other = tmp_path / "elsewhere" / "gpt2"
    shutil.copytree(golden_folder("gpt2"), other)
    download.write_marker(other, download.marker_for(other))
    (weights / NAME).symlink_to(other, target_is_directory=True)
    with pytest.raises(CheckpointError, match="outside the weights directory"):
        catalog.resolve(NAME)
    with pytest.raises(CheckpointError, match="outside the weights directory"):
        minillm.load(NAME)
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(CheckpointError, match="outside the weights directory"):
        catalog.fetch(NAME, progress=False)
    assert sorted(p.name for p in other.iterdir()) == before and calls == []
    assert "refused" in list_models._local(catalog.get(NAME))


def test_a_file_linked_out_of_the_weights_directory_is_refused(home, tmp_path):
    weights, _ = home
    folder = catalog.fetch(NAME, progress=False)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the weights directory"):
        catalog.resolve(NAME)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_staging_folders_of_a_killed_fetch_are_removed_by_the_next(home, capsys):
    weights, calls = home
    pid = dead_pid()
    staging = weights / f".{NAME}.converting-{pid}"
    converter_tmp = weights / f"..{NAME}.converting-{pid}.tmp-{pid}"
    for folder in (staging, converter_tmp):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 100_000)
    running = weights / f".{NAME}.converting-1"  # pid 1 is alive: not ours to delete
    running.mkdir()
    catalog.fetch(NAME, progress=True)
    assert not staging.exists() and not converter_tmp.exists() and running.exists()
    assert f"removed {staging}" in capsys.readouterr().out
    # also when the model is already there: the next fetch still cleans up
    staging.mkdir()
    catalog.fetch(NAME, progress=False)
    assert not staging.exists() and len(calls) == 1
