"""Hugging Face ids through huggingface_hub, against a fake hub on 127.0.0.1 (never the network).

The fake hub imitates the Hub's file layout: `/{repo}/resolve/{revision}/{file}` for HEAD
and GET, a branch or tag resolved to a commit in `X-Repo-Commit`, the LFS hash of weight
files in `X-Linked-Etag` / `X-Linked-Size`, `Range` requests, and the Hub's
`X-Error-Code` answers (EntryNotFound, RepoNotFound, RevisionNotFound, GatedRepo). It
serves the tiny GPT-2 fixture of tests/fixtures, so a model really loads from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minillm
from minillm.checkpoints import catalog, download
from minillm.errors import CheckpointError, ConfigError, MinillmError, NetworkError
from tests.conftest import golden_folder

REPO = "acme/tiny-gpt2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_V1 = "89abcdef0123456789abcdef0123456789abcdef"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo -> {"refs": {name: commit}, "files": {commit: {name: bytes}}}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.drop_once: dict[str, int] = {}  # file name -> bytes to send before dropping the connection
        self.corrupt: set[str] = set()  # file names served with one byte flipped
        self.gated_token: str | None = None
        self.stall: dict[str, int] = {}  # file name -> bytes to send before stalling (until released)
        self.released = threading.Event()

    def add_repo(self, repo: str, files: dict[str, bytes], commit: str = COMMIT, refs=("main",)):
        entry = self.repos.setdefault(repo, {"refs": {}, "files": {}})
        entry["files"][commit] = dict(files)
        for ref in refs:
            entry["refs"][ref] = commit

    def gets(self, name: str = "") -> list[tuple[str, dict]]:
        return [(p, h) for m, p, h in self.requests if m == "GET" and p.endswith("/" + name)]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self.answer(body=True)

    def fail(self, status: int, code: str, commit: str | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        if commit:  # as the Hub does: lets huggingface_hub remember the absence in its cache
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self, body: bool) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        hub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
        if not m or m.group(1) not in hub.repos:
            return self.fail(401, "RepoNotFound")
        repo, rev, name = m.group(1), m.group(2), m.group(3)
        if hub.gated_token and self.headers.get("Authorization") != f"Bearer {hub.gated_token}":
            return self.fail(401, "GatedRepo")
        entry = hub.repos[repo]
        commit = entry["refs"].get(rev, rev)
        if commit not in entry["files"]:
            return self.fail(404, "RevisionNotFound")
        if name not in entry["files"][commit]:
            return self.fail(404, "EntryNotFound", commit)
        data = entry["files"][commit][name]
        sent = bytes([data[0] ^ 0xFF]) + data[1:] if name in hub.corrupt else data
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if rng and body:
            start = int(rng.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        if name.endswith(".safetensors"):  # an LFS file: the hub publishes its SHA-256
            self.send_header("X-Linked-Etag", f'"{sha256(data)}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        if name in hub.stall:  # a download that hangs mid-file, until its client is killed
            self.wfile.write(sent[start : start + hub.stall.pop(name)])
            self.wfile.flush()
            hub.released.wait(60)
            self.close_connection = True
            return
        if name in hub.drop_once:
            cut = hub.drop_once.pop(name)
            self.wfile.write(sent[start : start + cut])
            self.wfile.flush()
            self.close_connection = True  # the socket closes before Content-Length bytes arrived
            return
        self.wfile.write(sent[start:])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.hub = FakeHub()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_TOKEN", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: another test may have imported it
    # with the variable set
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield server.hub  # type: ignore[attr-defined]
    server.hub.released.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join(5)


def tiny_files(folder: str = "gpt2", tokenizer: bool = False) -> dict[str, bytes]:
    src = golden_folder(folder)
    names = ("config.json", "model.safetensors", "generation_config.json")
    files = {n: (src / n).read_bytes() for n in names}
    return {**files, "tokenizer.json": tiny_tokenizer()} if tokenizer else files


def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}"


def test_a_hub_id_downloads_into_the_shared_cache_and_loads_in_place(hub, tmp_path, monkeypatch):
    hub.add_repo(REPO, tiny_files())
    model = minillm.load(REPO)
    snapshot = cache_root(tmp_path) / "snapshots" / COMMIT
    assert model.path == snapshot  # read in place, nothing copied into the weights directory
    assert (snapshot / "model.safetensors").is_symlink()  # huggingface_hub's blob layout
    assert not (tmp_path / "home").exists()
    reference = minillm.load(golden_folder("gpt2"))
    ids = np.array([[1, 2, 3, 4, 5]])
    assert np.array_equal(model(ids), reference(ids))
    # tokenizer.json is optional: asked for once, 404 remembered by the cache
    assert [p for m, p, _ in hub.requests if p.endswith("/tokenizer.json")]
    # the second load reads the cache it already has: no request at all
    n = len(hub.requests)
    again = minillm.load(REPO)
    assert again.path == snapshot and len(hub.requests) == n
    # and so does HF_HUB_OFFLINE=1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert minillm.load(REPO).path == snapshot and len(hub.requests) == n


def test_at_revision_reads_that_commit(hub, tmp_path):
    hub.add_repo(REPO, tiny_files("gpt2"))
    hub.add_repo(REPO, tiny_files("llama_tied"), commit=COMMIT_V1, refs=("v1",))
    main, v1 = minillm.load(REPO), minillm.load(f"{REPO}@v1")
    assert main.cfg.family == "gpt2" and v1.cfg.family == "llama"
    assert v1.path == cache_root(tmp_path) / "snapshots" / COMMIT_V1
    assert minillm.load(f"{REPO}@{COMMIT_V1}").path == v1.path
    with pytest.raises(NetworkError, match="has no revision 'v2'"):
        minillm.load(f"{REPO}@v2")


def test_offline_mode_never_asks_the_network_and_says_what_to_do(hub, monkeypatch):
    hub.add_repo(REPO, tiny_files())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NetworkError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        minillm.load(REPO)
    assert hub.requests == []


def ranges(hub: FakeHub, name: str) -> list[str | None]:
    """The Range header of every GET of `name` (None: the whole file)."""
    return [headers.get("range") for _, headers in hub.gets(name)]


def test_the_partial_file_of_a_killed_huggingface_hub_download_is_resumed(hub, tmp_path):
    """huggingface_hub 2.x downloads into `blobs/<etag>.<random>.incomplete` and never reuses
    that file once its process died; the next fetch continues it with a Range request."""
    files = tiny_files()
    hub.add_repo(REPO, files)
    data = files["model.safetensors"]
    blobs = cache_root(tmp_path) / "blobs"
    blobs.mkdir(parents=True)
    leftover = blobs / f"{sha256(data)}.1a2b3c4d.incomplete"
    leftover.write_bytes(data[:100_000])
    (blobs / f"{sha256(data)}.5e6f7a8b.incomplete").write_bytes(data[:10])  # a shorter one
    minillm.load(REPO)
    assert ranges(hub, "model.safetensors") == ["bytes=100000-"]
    assert (blobs / sha256(data)).read_bytes() == data
    assert sorted(p.name for p in blobs.iterdir() if p.name.endswith(".incomplete")) == []


def test_a_killed_fetch_resumes_where_it_stopped(hub, tmp_path):
    """`minillm fetch` in a subprocess stalls mid-file (the server stops sending) and is
    killed with SIGKILL; the next load asks only for the rest (Range from the partial size)
    and the blob has the published SHA-256. The subprocess reads the stream in 4 kB chunks
    instead of huggingface_hub's 10 MB (how much of the stream a kill loses), so that this
    small file is written in pieces. About 3 s."""
    files = tiny_files()
    hub.add_repo(REPO, files)
    data = files["model.safetensors"]
    hub.stall["model.safetensors"] = 100_000
    partial = cache_root(tmp_path) / "blobs" / f"{sha256(data)}.incomplete"
    code = ("import sys; from huggingface_hub import constants; constants.DOWNLOAD_CHUNK_SIZE = 4096; "
            f"from minillm.cli import main; sys.exit(main(['fetch', {REPO!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        written = 100_000 // 4096 * 4096  # the whole chunks received before the stall
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size == written):
            assert proc.poll() is None, "the fetch ended before it was killed"
            assert time.monotonic() < deadline, "the partial file never reached the stall point"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert not (cache_root(tmp_path) / "blobs" / sha256(data)).exists()  # nothing reported ready
    minillm.load(REPO)
    assert ranges(hub, "model.safetensors") == [None, f"bytes={written}-"]
    assert download.file_sha256(cache_root(tmp_path) / "blobs" / sha256(data)).hexdigest() == sha256(data)
    assert not partial.exists()


def test_a_partial_file_that_is_not_a_prefix_fails_the_hash_and_is_dropped(hub, tmp_path):
    """A corrupt partial file must not be resumed forever: the finished file fails the
    published SHA-256, the partial is deleted, and the next attempt downloads it whole."""
    files = tiny_files()
    hub.add_repo(REPO, files)
    data = files["model.safetensors"]
    partial = cache_root(tmp_path) / "blobs" / f"{sha256(data)}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 1000)
    with pytest.raises(CheckpointError, match="model.safetensors .*SHA-256 the hub publishes.*byte 1000"):
        minillm.load(REPO)
    assert not partial.exists() and not (partial.parent / sha256(data)).exists()
    minillm.load(REPO)
    assert ranges(hub, "model.safetensors") == ["bytes=1000-", None]
    assert (partial.parent / sha256(data)).read_bytes() == data


def test_a_dropped_connection_is_retried_and_the_file_is_whole(hub, tmp_path):
    files = tiny_files()
    hub.add_repo(REPO, files)
    hub.drop_once["model.safetensors"] = 100_000
    minillm.load(REPO)
    assert len(hub.gets("model.safetensors")) == 2
    blob = cache_root(tmp_path) / "blobs" / sha256(files["model.safetensors"])
    assert blob.read_bytes() == files["model.safetensors"]


def test_the_token_is_sent_and_a_gated_repo_says_how_to_get_access(hub, monkeypatch):
    hub.add_repo(REPO, tiny_files())
    hub.gated_token = "hf_secret"
    with pytest.raises(NetworkError, match="is gated.*HF_TOKEN"):
        minillm.load(REPO)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert minillm.load(REPO).cfg.family == "gpt2"


def test_a_corrupted_download_fails_the_published_sha256(hub):
    hub.add_repo(REPO, tiny_files())
    hub.corrupt.add("model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors .*SHA-256 the hub publishes"):
        minillm.load(REPO)


def test_an_unsupported_architecture_is_refused_before_the_weights(hub):
    files = tiny_files()
    files["config.json"] = json.dumps({"model_type": "bert", "hidden_size": 8}).encode()
    hub.add_repo(REPO, files)
    with pytest.raises(ConfigError, match="bert"):
        minillm.load(REPO)
    assert hub.gets("model.safetensors") == []


def test_a_sharded_checkpoint_fetches_the_shards_its_index_names(hub, tmp_path):
    tensors = load_file(str(golden_folder("gpt2") / "model.safetensors"))
    names = sorted(tensors)
    files = {"config.json": tiny_files()["config.json"]}
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(tmp_path / shard), metadata={"format": "pt"})
        files[shard] = (tmp_path / shard).read_bytes()
        weight_map.update({k: shard for k in part})
    files[download.INDEX] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    hub.add_repo(REPO, files)
    model = minillm.load(REPO)
    ids = np.array([[7, 8, 9]])
    assert np.array_equal(model(ids), minillm.load(golden_folder("gpt2"))(ids))
    assert hub.gets("model.safetensors") == []  # the index says where the weights are


def test_an_unknown_repository_suggests_the_catalog_id(hub):
    hub.add_repo(REPO, tiny_files())
    with pytest.raises(NetworkError, match=r"Did you mean openai-community/gpt2 \(catalog name gpt2\)"):
        minillm.load("openai-communty/gpt2")


def test_an_unreachable_hub_is_one_sentence(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import, see `hub`

    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)  # its 5 retries wait 23 s in all
    with pytest.raises(NetworkError, match=r"could not download config.json of acme/x at revision main.*"
                       r"check the network"):
        minillm.load("acme/x")


def tiny_tokenizer() -> bytes:
    """A real tokenizer.json for the tiny fixture's 256 ids (one token per byte value)."""
    from tokenizers import Tokenizer, models

    vocab = {f"<{i}>": i for i in range(256)}
    return Tokenizer(models.WordLevel(vocab, unk_token="<0>")).to_str().encode()


def catalog_with(monkeypatch, files: dict[str, bytes], sha: dict[str, str] | None = None) -> None:
    data = {"models": {"tiny": {
        "family": "gpt2", "params": "1M", "description": "a test model", "source": "huggingface",
        "repo": REPO, "revision": COMMIT,
        "files": [{"name": n, "size": len(d), "sha256": (sha or {}).get(n, sha256(d))}
                  for n, d in files.items()],
    }}}
    entries = catalog.parse_catalog(data)
    monkeypatch.setattr(catalog, "load_catalog", lambda path=None: entries)


def test_fetch_a_catalog_name_checks_its_hashes_and_resolve_finds_it_in_the_cache(hub, tmp_path, monkeypatch,
                                                                                  capsys):
    files = tiny_files(tokenizer=True)
    hub.add_repo(REPO, files)
    catalog_with(monkeypatch, files)
    with pytest.raises(MinillmError, match="run `minillm fetch tiny`"):
        catalog.resolve("tiny")
    assert catalog.status("tiny") == "absent"
    from minillm.commands import fetch as fetch_command

    assert fetch_command.run(SimpleNamespace(name="tiny", revision=None, quiet=True, verify=False)) == 0
    assert "tiny: ready in" in capsys.readouterr().out
    snapshot = cache_root(tmp_path) / "snapshots" / COMMIT
    assert catalog.resolve("tiny") == snapshot and catalog.status("tiny") == "complete"
    # the catalog's pinned id loads the same snapshot, checked against the same hashes
    assert minillm.load(REPO).path == snapshot


def test_a_catalog_hash_mismatch_is_refused(hub, monkeypatch):
    files = tiny_files(tokenizer=True)
    hub.add_repo(REPO, files)
    catalog_with(monkeypatch, files, sha={"model.safetensors": "0" * 64})
    with pytest.raises(CheckpointError, match="SHA-256 the catalog records"):
        catalog.fetch("tiny", progress=False)


def test_fetch_verify_downloads_a_file_corrupted_in_the_cache_again(hub, tmp_path, monkeypatch):
    files = tiny_files(tokenizer=True)
    hub.add_repo(REPO, files)
    catalog_with(monkeypatch, files)
    folder = catalog.fetch("tiny", progress=False)
    blob = Path(download.os.path.realpath(folder / "model.safetensors"))
    data = bytearray(blob.read_bytes())
    data[5000] ^= 0xFF  # same size: only a hash sees it
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    assert catalog.resolve("tiny") == folder  # sizes are what load checks
    with pytest.raises(CheckpointError, match="SHA-256"):
        catalog.located("tiny", verify=True)
    catalog.fetch("tiny", progress=False, verify=True)
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_fetch_command_takes_a_hub_id_with_revision(hub, tmp_path, capsys):
    hub.add_repo(REPO, tiny_files(), commit=COMMIT_V1, refs=("main", "v1"))
    from minillm.commands import fetch as fetch_command

    assert fetch_command.run(SimpleNamespace(name=f"{REPO}@v1", revision=None, quiet=True, verify=True)) == 0
    out = capsys.readouterr().out
    assert f"ready in {cache_root(tmp_path) / 'snapshots' / COMMIT_V1}" in out and "SHA-256 checked" in out


def test_hooks_command_on_a_hub_id_downloads_only_the_config(hub, capsys):
    hub.add_repo(REPO, tiny_files())
    from minillm.cli import main

    assert main(["hooks", REPO, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "gpt2"
    assert hub.gets("model.safetensors") == []
