"""Fuzzing every reader of downloaded files: broken and hostile inputs end in a clear error.

Each test starts from a valid file (a tiny random checkpoint written by
`save_pretrained`, its config.json, a tiny tokenizer.json, a tiny GGUF) and
applies structured mutations with hypothesis: truncations, flipped bytes,
header lengths and offsets outside the file, overlapping tensors, dtypes that
do not exist, shapes whose product overflows int64, NaN/Inf values, configs
with zero, negative, absurd or mistyped sizes, tokenizer.json that does not
parse, index files whose shard names try to leave the folder.

The contract checked for every example: either the file still loads, or the
reader raises a `MinillmError` whose message names the file — never another
exception type (KeyError, ValueError, a Rust panic...), never a hang (a
per-example deadline), never an allocation the file does not justify.

Example counts: the default profile runs a few thousand examples in total
(well under a minute on 2 cores); `pytest --hypothesis-profile=fuzz` raises
every test to at least the profile's max_examples (see tests/conftest.py).
Inputs that once crashed a reader are kept in tests/regressions/ and replayed.
"""

from __future__ import annotations

import json
import math
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import minillm
from minillm.checkpoints.hf import save_pretrained
from minillm.checkpoints.safetensors_io import SafetensorsFile
from minillm.config import ModelConfig
from minillm.errors import CheckpointError, MinillmError
from minillm.tokenizer import Tokenizer
from tests.conftest import TINY_CONFIGS, random_model

REGRESSIONS = Path(__file__).parent / "regressions"


def examples(n: int) -> settings:
    """`n` examples by default; at least the active profile's max_examples (--hypothesis-profile=fuzz)."""
    return settings(
        max_examples=max(n, settings.default.max_examples),
        deadline=30_000,  # ms per example: a reader that hangs fails the test (slow machines pass)
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


def assert_clean_error(fn, path: Path):
    """Run fn(); it may succeed, or raise a MinillmError naming `path` — nothing else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NaN weights warn; mutated data may overflow
            result = fn()
    except MinillmError as e:  # the file, or (for checks across a checkpoint) its folder
        assert path.name in str(e) or str(path.parent) in str(e), f"error names neither {path}: {e}"
        _outcome(f"clear error ({type(e).__name__})")
        return e
    _outcome("still loads")
    return result
    # any other exception propagates and fails the test with its traceback


class Base(tuple):
    """A tuple of fixture values whose repr stays short (hypothesis prints it on failure)."""

    def __repr__(self) -> str:
        return f"<base checkpoint at {self[0]}>"


class Blob(bytes):
    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


def _outcome(label: str) -> None:
    """Count outcomes in hypothesis's statistics (pytest --hypothesis-show-statistics)."""
    try:
        event(label)
    except InvalidArgument:  # called outside a hypothesis test
        pass


def rewrite(path: Path, data: bytes) -> None:
    """Replace a file by a new inode (an earlier memory map of the old one stays valid)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


# --------------------------------------------------------------------------- base files


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid tiny llama checkpoint: (folder, safetensors bytes, header dict, data bytes)."""
    folder = tmp_path_factory.mktemp("fuzz") / "ckpt"
    save_pretrained(random_model("llama", seed=1), folder)
    raw = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return Base((folder, Blob(raw), json.loads(raw[8 : 8 + n]), Blob(raw[8 + n :])))


def safetensors_bytes(header: dict, data: bytes, header_len: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if header_len is None else header_len) + text + data


def load_folder(folder: Path):
    return minillm.load(folder)


# --------------------------------------------------------------------------- safetensors


@examples(300)
@given(data=st.data())
def test_truncated_or_flipped_safetensors(base, data):
    folder, raw, _, _ = base
    kind = data.draw(st.sampled_from(["truncate", "flip", "flip_header"]))
    buf = bytearray(raw)
    if kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        n_header = 8 + int.from_bytes(raw[:8], "little")
        hi = n_header - 1 if kind == "flip_header" else len(raw) - 1
        for i in data.draw(st.lists(st.integers(0, hi), min_size=1, max_size=8)):
            buf[i] = data.draw(st.integers(0, 255))
    path = folder / "model.safetensors"
    rewrite(path, bytes(buf))
    assert_clean_error(lambda: load_folder(folder), path)


@examples(150)
@given(header_len=st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 4096),
                            st.sampled_from([0, 1, 7, 2**63, 2**64 - 1, 100 * 2**20 + 1])))
def test_header_length_anywhere(base, header_len):
    folder, raw, header, data = base
    path = folder / "model.safetensors"
    rewrite(path, safetensors_bytes(header, data, header_len))
    assert_clean_error(lambda: load_folder(folder), path)


# values a hostile header may hold where a number, a list or a string is expected
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
huge_dims = st.lists(st.sampled_from([0, 1, 2**31, 2**32, 2**40, 2**63 - 1, 2**64, 10**12]),
                     min_size=1, max_size=4)
shapes = st.one_of(huge_dims, st.lists(st.integers(-3, 70), max_size=4),
                   st.lists(st.just(1), min_size=30, max_size=80), junk)
dtypes = st.one_of(st.sampled_from(["F64", "F32", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8_E4M3",
                                    "I128", "Q4_0", "f32", "", "__proto__"]), junk)


@examples(500)
@given(data=st.data())
def test_structured_header_mutations(base, data):
    """Offsets outside the file or overlapping, unknown dtypes, overflowing shapes, junk entries."""
    folder, _, header, payload = base
    header = json.loads(json.dumps(header))
    names = [k for k in header if k != "__metadata__"]
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(names))
        what = data.draw(st.sampled_from(["offsets", "overlap", "dtype", "shape", "entry", "drop",
                                          "rename", "metadata", "extra"]))
        entry = header.get(name)
        if what == "offsets" and isinstance(entry, dict):
            big = st.integers(-(2**65), 2**65)
            near = st.integers(-16, len(payload) + 16)
            entry["data_offsets"] = data.draw(st.one_of(st.lists(st.one_of(near, big), max_size=3), junk))
        elif what == "overlap" and isinstance(entry, dict):
            other = header.get(data.draw(st.sampled_from(names)))
            if isinstance(other, dict):  # (other may itself be a mutated entry)
                for key in ("data_offsets", "shape", "dtype"):
                    entry[key] = other.get(key)
        elif what == "dtype" and isinstance(entry, dict):
            entry["dtype"] = data.draw(dtypes)
        elif what == "shape" and isinstance(entry, dict):
            entry["shape"] = data.draw(shapes)
        elif what == "entry":
            header[name] = data.draw(junk)
        elif what == "drop":
            header.pop(name, None)
        elif what == "rename":
            header[data.draw(st.text(max_size=12))] = header.pop(name, None)
        elif what == "metadata":
            header["__metadata__"] = data.draw(st.one_of(junk, st.dictionaries(st.text(max_size=3), junk)))
        else:
            header[data.draw(st.text(max_size=12))] = {
                "dtype": data.draw(dtypes), "shape": data.draw(shapes),
                "data_offsets": data.draw(st.lists(st.integers(0, len(payload) + 8), max_size=2)),
            }
    path = folder / "model.safetensors"
    rewrite(path, safetensors_bytes(header, payload))
    # the reader alone (every tensor read), then the whole load
    assert_clean_error(lambda: [SafetensorsFile(path).get(n) for n in SafetensorsFile(path).names()], path)
    assert_clean_error(lambda: load_folder(folder), path)


@examples(100)
@given(data=st.data())
def test_nan_and_inf_weights_load_with_a_warning_naming_them(base, data):
    folder, _, header, payload = base
    names = sorted(k for k in header if k != "__metadata__")
    poisoned = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=3))
    buf = bytearray(payload)
    for name in poisoned:
        begin, end = header[name]["data_offsets"]
        i = data.draw(st.integers(0, (end - begin) // 4 - 1))
        value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        buf[begin + 4 * i : begin + 4 * i + 4] = np.float32(value).tobytes()
    path = folder / "model.safetensors"
    rewrite(path, safetensors_bytes(header, bytes(buf)))
    with pytest.warns(UserWarning, match="non-finite") as record:
        minillm.load(folder)
    message = str(record[0].message)
    assert all(name in message for name in poisoned), message


def test_a_declared_10_to_the_12_element_tensor_fails_before_allocating(base, tmp_path):
    """A header may claim a huge tensor; nothing near its size is ever allocated."""
    folder, _, header, payload = base
    name = "model.embed_tokens.weight"
    for declared in ([10**6, 10**6], [10**12], [2**40, 2**40]):
        bad = json.loads(json.dumps(header))
        n = math.prod(declared)
        bad[name] = {"dtype": "F32", "shape": declared, "data_offsets": [0, 4 * n]}
        path = folder / "model.safetensors"
        rewrite(path, safetensors_bytes(bad, payload))
        tracemalloc.start()
        try:
            err = assert_clean_error(lambda: load_folder(folder), path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(err, MinillmError) and name in str(err)
        assert peak < 20 * 2**20, f"peak allocation {peak / 2**20:.1f} MiB for a {len(payload)} byte file"


# --------------------------------------------------------------------------- config.json

sizes_keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim", "rms_norm_eps",
              "rope_theta", "tie_word_embeddings", "eos_token_id", "bos_token_id", "rope_scaling",
              "rope_parameters", "model_type", "hidden_act", "sliding_window", "attention_bias",
              "use_sliding_window", "mlp_bias"]
config_values = st.one_of(
    junk, st.sampled_from([0, -1, -(2**31), 2**24 + 1, 2**31, 2**63, 10**400, 10**6, 3, 7, 1e308, -0.0]),
    st.floats(), st.dictionaries(st.sampled_from(["rope_type", "type", "factor", "low_freq_factor",
                                                  "high_freq_factor", "original_max_position_embeddings",
                                                  "rope_theta"]),
                                 st.one_of(junk, st.sampled_from(["llama3", "linear", "default"])),
                                 max_size=6),
)


@examples(600)
@given(data=st.data())
def test_config_with_bad_sizes_and_types(base, data):
    folder, _, _, _ = base
    cfg = dict(TINY_CONFIGS[data.draw(st.sampled_from(["llama", "gpt2"]))])
    keys = sizes_keys + ["n_embd", "n_layer", "n_head", "n_positions", "n_inner", "layer_norm_epsilon",
                         "activation_function"]
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.booleans()):
            cfg[key] = data.draw(config_values)
        else:
            cfg.pop(key, None)
    path = folder.parent / "config.json"
    text = json.dumps(cfg, allow_nan=True) if data.draw(st.booleans()) else json.dumps(cfg)[
        : data.draw(st.integers(0, 200))]
    path.write_text(text)
    result = assert_clean_error(lambda: ModelConfig.from_json(path), path)
    if isinstance(result, ModelConfig):  # valid: every size in range, checked before allocating
        assert 0 < result.n_layers <= 2**24 and 0 < result.eps < 1


@examples(200)
@given(data=st.data())
def test_load_with_a_mismatched_config_never_allocates_what_the_files_cannot_fill(base, data):
    """A config.json asking for a huge model next to tiny weights fails before allocating it."""
    folder, raw, _, _ = base
    rewrite(folder / "model.safetensors", raw)
    cfg = dict(TINY_CONFIGS["llama"])
    for key in data.draw(st.sets(st.sampled_from(["hidden_size", "num_hidden_layers", "intermediate_size",
                                                  "vocab_size", "max_position_embeddings"]), min_size=1)):
        cfg[key] = data.draw(st.sampled_from([0, -3, 1, 2**12, 2**20, 2**24, 2**30]))
    path = folder / "config.json"
    original = path.read_text()
    path.write_text(json.dumps(cfg))
    tracemalloc.start()
    try:
        assert_clean_error(lambda: load_folder(folder), folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        path.write_text(original)
    assert peak < 64 * 2**20, f"peak allocation {peak / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- tokenizer.json


def tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(sorted(alphabet) + ["he", "ll", "hell"])}
    tok = HFTokenizer(models.BPE(vocab, [("h", "e"), ("l", "l"), ("he", "ll")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


@examples(300)
@given(data=st.data())
def test_tokenizer_json_broken_or_hostile(tmp_path_factory, data):
    text = tiny_tokenizer_json()
    doc = json.loads(text)
    kind = data.draw(st.sampled_from(["truncate", "flip", "structure"]))
    if kind == "truncate":
        text = text[: data.draw(st.integers(0, len(text) - 1))]
    elif kind == "flip":
        chars = list(text)
        for i in data.draw(st.lists(st.integers(0, len(chars) - 1), min_size=1, max_size=6)):
            chars[i] = data.draw(st.sampled_from(list('{}[]":,0a\\ ')))
        text = "".join(chars)
    else:
        model = doc["model"]
        what = data.draw(st.sampled_from(["merges", "vocab", "type", "model", "pre", "added"]))
        if what == "merges":
            model["merges"] = data.draw(st.lists(st.one_of(st.text(max_size=5), junk,
                                                           st.lists(st.text(max_size=3), max_size=3)),
                                                 max_size=4))
        elif what == "vocab":
            model["vocab"] = data.draw(st.one_of(junk, st.dictionaries(st.text(max_size=3), junk,
                                                                       max_size=4)))
        elif what == "type":
            model["type"] = data.draw(st.one_of(st.sampled_from(["BPE", "WordPiece", "Unigram", "WordLevel",
                                                                 "Pickle"]), junk))
        elif what == "model":
            doc["model"] = data.draw(junk)
        elif what == "pre":
            doc["pre_tokenizer"] = data.draw(st.one_of(junk, st.fixed_dictionaries(
                {"type": st.sampled_from(["ByteLevel", "Split", "Sequence", "Metaspace"])})))
        else:
            doc["added_tokens"] = data.draw(st.lists(st.fixed_dictionaries(
                {"id": st.one_of(st.integers(-2, 2**33), junk),
                 "content": st.one_of(st.text(max_size=3), junk), "special": st.booleans()}), max_size=3))
        text = json.dumps(doc)
    folder = tmp_path_factory.mktemp("tok")
    path = folder / "tokenizer.json"
    path.write_text(text)

    def use():
        tok = Tokenizer(path)
        return tok.decode(tok.encode("hello hell"))

    assert_clean_error(use, path)


# --------------------------------------------------------------------------- sharded index


shard_names = st.one_of(
    st.sampled_from(["../model.safetensors", "/etc/passwd", "..", ".", "", "a/b.safetensors",
                     "sub/../model.safetensors", "\x00", "model.safetensors", "missing.safetensors",
                     "link.safetensors", "..\\evil.safetensors", "~/x"]),
    st.text(max_size=12), junk,
)


@examples(250)
@given(data=st.data())
def test_index_weight_map_cannot_escape_the_folder(tmp_path_factory, base, data):
    _, raw, header, _ = base
    folder = tmp_path_factory.mktemp("sharded")
    (folder / "config.json").write_text(json.dumps(TINY_CONFIGS["llama"] | {"tie_word_embeddings": False}))
    (folder / "model-00001-of-00001.safetensors").write_bytes(raw)
    outside = folder.parent / f"{folder.name}-outside.safetensors"
    outside.write_bytes(raw)
    (folder / "link.safetensors").symlink_to(outside)
    names = sorted(k for k in header if k != "__metadata__")
    weight_map = {n: "model-00001-of-00001.safetensors" for n in names}
    for _ in range(data.draw(st.integers(1, 3))):
        weight_map[data.draw(st.sampled_from(names + ["extra"]))] = data.draw(shard_names)
    doc = data.draw(st.sampled_from(["good", "junk"]))
    index = {"weight_map": weight_map} if doc == "good" else data.draw(st.one_of(junk, st.just({})))
    path = folder / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    opened: list[str] = []
    real_init = SafetensorsFile.__init__

    def spy(self, p):
        opened.append(str(p))
        real_init(self, p)

    SafetensorsFile.__init__ = spy
    try:
        assert_clean_error(lambda: load_folder(folder), path)
    finally:
        SafetensorsFile.__init__ = real_init
    for p in opened:  # only plain names inside the folder were ever opened
        assert Path(p).parent == folder, p


# --------------------------------------------------------------------------- GGUF


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> bytes:
    from tests.test_gguf_convert import tiny_weights, write_tiny_gguf

    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_weights(False))
    return Blob(path.read_bytes())


@examples(150)
@given(data=st.data())
def test_truncated_or_flipped_gguf(tmp_path_factory, tiny_gguf, data):
    from minillm.checkpoints.gguf import convert_gguf_to_hf

    buf = bytearray(tiny_gguf)
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:  # flip bytes, mostly in the metadata (the first few KB), where structure lives
        for i in data.draw(st.lists(st.integers(0, min(len(buf), 8192) - 1), min_size=1, max_size=6)):
            buf[i] = data.draw(st.integers(0, 255))
    folder = tmp_path_factory.mktemp("gguf")
    path = folder / "bad.gguf"
    path.write_bytes(bytes(buf))
    out = folder / "hf"
    result = assert_clean_error(lambda: convert_gguf_to_hf(path, out), path)
    if isinstance(result, MinillmError):  # nothing half-written
        assert sorted(p.name for p in folder.iterdir()) == ["bad.gguf"]


# --------------------------------------------------------------------------- regressions


def replay(path: Path):
    """Read a regression input with the reader its name says."""
    name = path.name
    if name.endswith(".safetensors"):
        f = SafetensorsFile(path)
        return [f.get(n) for n in f.names()]
    if name.startswith("tokenizer_"):
        tok = Tokenizer(path)
        return tok.decode(tok.encode("hello"))
    if name.startswith("config_"):
        return ModelConfig.from_json(path)
    raise AssertionError(f"no reader for regression input {name}")


@pytest.mark.parametrize("path", sorted(p for p in REGRESSIONS.iterdir() if p.name != "README.md"),
                         ids=lambda p: p.name)
def test_regression_inputs_give_clear_errors(path):
    with pytest.raises(MinillmError) as info:
        replay(path)
    assert path.name in str(info.value)


def test_corrupt_block_count_fails_fast(tmp_path, tiny_gguf):
    """Found by the fuzzer: two flipped bytes made block_count 1638401, and building the
    expected-tensor table for 1.6 M layers took 46 s. Now it is refused before that."""
    from minillm.checkpoints.gguf import convert_gguf_to_hf

    buf = bytearray(tiny_gguf)
    buf[100], buf[3228] = 25, 10
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(buf))
    with pytest.raises(CheckpointError, match="block_count 1638401 cannot be right"):
        convert_gguf_to_hf(path, tmp_path / "hf")
