"""The downloader, against a fake Hugging Face hub on 127.0.0.1 (never the network).

The fake hub serves `/{repo}/resolve/{revision}/{file}` with Range support and
the hub's hash headers (`X-Linked-ETag` for "LFS" files), and can inject
faults: drop the connection mid-file, ignore Range, flip a byte, answer an
error status, redirect to a CDN path, or stall.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from minillm.checkpoints import catalog, download
from minillm.checkpoints.download import MARKER, FileSpec, fetch_repo
from minillm.errors import CheckpointError, MinillmError, NetworkError

REPO = "acme/tiny"
REV = "0123456789abcdef0123456789abcdef01234567"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # "/repo/resolve/rev/name" -> bytes
        self.requests: list[tuple[str, dict]] = []
        self.drop_once: dict[str, int] = {}  # path -> bytes to send before dropping
        self.corrupt: set[str] = set()
        self.status: dict[str, int] = {}
        self.redirect: set[str] = set()
        self.stall: set[str] = set()
        self.ignore_range = False
        self.redirect_base = ""  # where redirects point: "" is this host
        self.publish_sha = True
        self.release = threading.Event()
        self.port = 0

    @staticmethod
    def path(name: str, repo: str = REPO, rev: str = REV) -> str:
        return f"/{repo}/resolve/{rev}/{name}"

    def add(self, name: str, data: bytes, repo: str = REPO, rev: str = REV) -> bytes:
        self.files[self.path(name, repo, rev)] = data
        return data

    def requests_for(self, name: str) -> list[dict]:
        return [h for p, h in self.requests if p == self.path(name)]


class Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        path = self.path
        hub.requests.append((path, dict(self.headers)))
        if path.startswith("/cdn/"):
            path = "/" + path[len("/cdn/") :]
        elif path in hub.redirect:
            data = hub.files[path]
            self.send_response(302)
            self.send_header("Location", f"{hub.redirect_base}/cdn{path}")
            self.send_header("X-Linked-ETag", f'"{sha256(data)}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path in hub.status:
            self.send_error(hub.status[path])
            return
        if path not in hub.files:
            self.send_error(404)
            return
        data = hub.files[path]
        body = data
        if path in hub.corrupt:
            body = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and not hub.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        if hub.publish_sha and path.endswith(".safetensors") and "/cdn/" not in self.path:
            self.send_header("X-Linked-ETag", f'"{sha256(data)}"')
        if self.path.startswith("/cdn/"):  # a CDN's own digest, 64 hex but not the SHA-256
            self.send_header("ETag", f'"{sha256(b"cdn" + data)}"')
        else:
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')  # a git blob id
        self.end_headers()
        if path in hub.stall:
            hub.release.wait(5)
            return
        if path in hub.drop_once:
            cut = hub.drop_once.pop(path)
            self.wfile.write(body[start : start + cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    server.hub = FakeHub()  # type: ignore[attr-defined]
    server.hub.port = server.server_address[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server.hub  # type: ignore[attr-defined]
    server.hub.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def model(hub):
    """A small fake checkpoint on the hub: its bytes by file name."""
    rng = random.Random(0)
    return {
        "config.json": hub.add("config.json", b'{"model_type": "gpt2"}'),
        "model.safetensors": hub.add("model.safetensors", rng.randbytes(300_000)),
        "tokenizer.json": hub.add("tokenizer.json", rng.randbytes(5_000)),
    }


def specs(model: dict, hashes: bool = True) -> list[FileSpec]:
    return [
        FileSpec(name, len(data) if hashes else None, sha256(data) if hashes else None)
        for name, data in model.items()
    ]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_full_download_verifies_and_writes_the_marker_last(hub, model, tmp_path):
    dest = tmp_path / "w" / "tiny"
    files = [
        FileSpec("config.json", len(model["config.json"]), sha256(model["config.json"])),
        FileSpec("model.safetensors"),  # hash from the server's X-Linked-ETag
        FileSpec("tokenizer.json"),  # the server publishes no SHA-256: size only
    ]
    assert fetch_repo(REPO, REV, files, dest, progress=False) == dest
    for name, data in model.items():
        assert (dest / name).read_bytes() == data
    marker = json.loads((dest / MARKER).read_text())
    assert marker["repo"] == REPO and marker["revision"] == REV
    assert {n: r["sha256"] for n, r in marker["files"].items()} == {n: sha256(d) for n, d in model.items()}
    assert marker["files"]["config.json"]["verified"] == "catalog"
    assert marker["files"]["model.safetensors"]["verified"] == "server"
    assert marker["files"]["tokenizer.json"]["verified"] == "size"
    assert leftovers(dest) == sorted([MARKER, *model])
    assert download.is_complete(dest)
    assert not (dest.parent / ".tiny.lock").exists()

    before = len(hub.requests)
    fetch_repo(REPO, REV, files, dest, progress=False)  # already complete: no request
    assert len(hub.requests) == before


def test_resume_after_a_dropped_connection_uses_range(hub, model, tmp_path):
    dest = tmp_path / "tiny"
    hub.drop_once[hub.path("model.safetensors")] = 100_000
    with pytest.raises(NetworkError, match="interrupted.*to resume"):
        fetch_repo(REPO, REV, specs(model), dest, progress=False)
    assert (dest / "model.safetensors.part").stat().st_size == 100_000
    assert not (dest / "model.safetensors").exists()
    assert not (dest / MARKER).exists()
    assert not download.is_complete(dest)

    fetch_repo(REPO, REV, specs(model), dest, progress=False)
    second = hub.requests_for("model.safetensors")[-1]
    assert second["Range"] == "bytes=100000-"
    assert (dest / "model.safetensors").read_bytes() == model["model.safetensors"]
    assert len(hub.requests_for("config.json")) == 1  # finished files are not fetched again
    assert download.is_complete(dest)


def test_a_server_that_ignores_range_restarts_from_zero(hub, model, tmp_path):
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "model.safetensors.part").write_bytes(b"\x00" * 1234)  # stale, wrong bytes
    hub.ignore_range = True
    fetch_repo(REPO, REV, specs(model), dest, progress=False)
    assert hub.requests_for("model.safetensors")[0]["Range"] == "bytes=1234-"
    assert (dest / "model.safetensors").read_bytes() == model["model.safetensors"]


@pytest.mark.parametrize("from_catalog", [True, False], ids=["catalog-hash", "server-hash"])
def test_a_corrupted_byte_is_a_checksum_error_and_nothing_is_kept(hub, model, tmp_path, from_catalog):
    dest = tmp_path / "tiny"
    hub.corrupt.add(hub.path("model.safetensors"))
    files = specs(model, hashes=from_catalog)
    with pytest.raises(NetworkError, match="checksum mismatch for model.safetensors"):
        fetch_repo(REPO, REV, files, dest, progress=False)
    assert not (dest / "model.safetensors").exists()
    assert not (dest / "model.safetensors.part").exists()
    assert not (dest / MARKER).exists()


def test_missing_file_404_names_repo_file_and_revision(hub, model, tmp_path):
    files = [*specs(model), FileSpec("vocab.json")]
    with pytest.raises(NetworkError) as info:
        fetch_repo(REPO, REV, files, tmp_path / "tiny", progress=False)
    message = str(info.value)
    assert "vocab.json" in message and REPO in message and REV in message and "404" in message
    assert not (tmp_path / "tiny" / MARKER).exists()


def test_missing_optional_file_is_skipped(hub, model, tmp_path):
    files = [*specs(model), FileSpec("generation_config.json", optional=True)]
    dest = fetch_repo(REPO, REV, files, tmp_path / "tiny", progress=False)
    assert download.is_complete(dest)
    assert "generation_config.json" not in json.loads((dest / MARKER).read_text())["files"]


def test_gated_repo_asks_for_a_token_and_the_token_is_sent(hub, model, tmp_path, monkeypatch):
    hub.status[hub.path("config.json")] = 401
    with pytest.raises(NetworkError, match="HTTP 401.*HF_TOKEN"):
        fetch_repo(REPO, REV, specs(model), tmp_path / "a", progress=False)
    del hub.status[hub.path("config.json")]
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    fetch_repo(REPO, REV, specs(model), tmp_path / "b", progress=False)
    assert hub.requests_for("config.json")[-1]["Authorization"] == "Bearer hf_secret"


def test_refused_connection_is_one_clear_sentence(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(NetworkError) as info:
        fetch_repo(REPO, REV, [FileSpec("config.json")], tmp_path / "tiny", progress=False)
    assert str(info.value) == (f"could not reach 127.0.0.1:{port}: connection refused (are you offline?)")


def test_a_stalled_server_times_out(hub, model, tmp_path):
    hub.stall.add(hub.path("model.safetensors"))
    start = time.monotonic()
    with pytest.raises(NetworkError, match="interrupted.*timed out"):
        fetch_repo(REPO, REV, specs(model), tmp_path / "tiny", progress=False, timeout=0.3)
    assert time.monotonic() - start < 3


def test_redirect_carries_the_linked_etag(hub, model, tmp_path):
    hub.redirect.add(hub.path("model.safetensors"))
    dest = fetch_repo(REPO, REV, specs(model, hashes=False), tmp_path / "tiny", progress=False)
    record = json.loads((dest / MARKER).read_text())["files"]["model.safetensors"]
    assert record["verified"] == "server"
    assert (dest / "model.safetensors").read_bytes() == model["model.safetensors"]
    assert any(p.startswith("/cdn/") for p, _ in hub.requests)


def test_the_token_is_not_sent_to_another_host_after_a_redirect(hub, model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub.redirect.add(hub.path("model.safetensors"))
    hub.redirect_base = f"http://localhost:{hub.port}"  # same server, another host name
    fetch_repo(REPO, REV, specs(model), tmp_path / "tiny", progress=False)
    first, second = [h for p, h in hub.requests if p.endswith("model.safetensors")]
    assert first["Authorization"] == "Bearer hf_secret"
    assert "Authorization" not in second


def test_a_live_lock_refuses_a_second_fetch(hub, model, tmp_path):
    dest = tmp_path / "tiny"
    lock = tmp_path / ".tiny.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(MinillmError, match=f"already running \\(pid {os.getpid()}\\)"):
        fetch_repo(REPO, REV, specs(model), dest, progress=False)
    assert hub.requests == []
    assert lock.exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over(hub, model, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(proc.stdout)
    lock = tmp_path / ".tiny.lock"
    lock.write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname()}))
    dest = fetch_repo(REPO, REV, specs(model), tmp_path / "tiny", progress=False)
    assert download.is_complete(dest)
    assert not lock.exists()


def test_a_lock_can_be_waited_for(tmp_path):
    lock = tmp_path / ".x.lock"
    with download.FetchLock(lock, "x"):
        timer = threading.Timer(0.3, lock.unlink)  # as if its holder finished
        timer.start()
        with pytest.raises(MinillmError, match="already running"):
            download.FetchLock(lock, "x").__enter__()
        with download.FetchLock(lock, "x", wait=3):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        timer.join()


def test_sharded_model_fetches_the_shards_named_by_the_index(hub, tmp_path):
    shard1 = hub.add("model-00001-of-00002.safetensors", b"a" * 1000)
    shard2 = hub.add("model-00002-of-00002.safetensors", b"b" * 2000)
    index = {
        "weight_map": {
            "x": "model-00001-of-00002.safetensors",
            "y": "model-00002-of-00002.safetensors",
            "z": "model-00001-of-00002.safetensors",
        }
    }
    hub.add("config.json", b"{}")
    hub.add("model.safetensors.index.json", json.dumps(index).encode())
    files = [FileSpec("config.json"), FileSpec("model.safetensors.index.json")]
    dest = fetch_repo(REPO, REV, files, tmp_path / "tiny", progress=False)
    assert (dest / "model-00001-of-00002.safetensors").read_bytes() == shard1
    assert (dest / "model-00002-of-00002.safetensors").read_bytes() == shard2
    assert len(json.loads((dest / MARKER).read_text())["files"]) == 4


@pytest.mark.parametrize(
    "shard", ["../evil.safetensors", "/etc/passwd", "sub/dir.safetensors", "..", ".complete"]
)
def test_an_index_naming_a_path_outside_the_folder_is_rejected(hub, tmp_path, shard):
    hub.add("config.json", b"{}")
    hub.add("model.safetensors.index.json", json.dumps({"weight_map": {"x": shard}}).encode())
    files = [FileSpec("config.json"), FileSpec("model.safetensors.index.json")]
    with pytest.raises(CheckpointError, match="not a plain file name"):
        fetch_repo(REPO, REV, files, tmp_path / "w" / "tiny", progress=False)
    assert not (tmp_path / "w" / "evil.safetensors").exists()
    assert not (tmp_path / "w" / "tiny" / MARKER).exists()
    assert len(hub.requests) == 2  # nothing requested beyond the index


def test_a_symlink_pointing_outside_is_not_written_through(hub, model, tmp_path):
    dest = tmp_path / "tiny"
    dest.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (dest / "config.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        fetch_repo(REPO, REV, specs(model), dest, progress=False)
    assert outside.read_text() == "keep me"


def test_not_enough_disk_space_fails_before_downloading(hub, model, tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: SimpleNamespace(free=10))
    with pytest.raises(NetworkError, match="not enough disk space"):
        fetch_repo(REPO, REV, specs(model), tmp_path / "tiny", progress=False)
    assert hub.requests == []


def test_disk_full_while_writing_is_one_sentence(hub, model, tmp_path, monkeypatch):
    class FullDisk:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "_open_part", lambda part, append: FullDisk())
    with pytest.raises(NetworkError, match="the disk is full: could not write config.json"):
        fetch_repo(REPO, REV, specs(model), tmp_path / "tiny", progress=False)
    assert not (tmp_path / "tiny" / MARKER).exists()


def test_fetch_command_downloads_a_catalog_entry_and_resolve_finds_it(hub, model, monkeypatch, capsys):
    data = {
        "models": {
            "tiny": {
                "family": "gpt2",
                "params": "1M",
                "description": "a test model",
                "source": "huggingface",
                "repo": REPO,
                "revision": REV,
                "files": [{"name": n, "size": len(d), "sha256": sha256(d)} for n, d in model.items()],
            }
        }
    }
    entries = catalog.parse_catalog(data)
    monkeypatch.setattr(catalog, "load_catalog", lambda path=None: entries)
    with pytest.raises(MinillmError, match="run `minillm fetch tiny`"):
        catalog.resolve("tiny")

    from minillm.commands import fetch as fetch_command

    args = SimpleNamespace(name="tiny", revision=None, quiet=True)
    assert fetch_command.run(args) == 0
    assert "tiny: ready in" in capsys.readouterr().out
    folder = catalog.resolve("tiny")
    assert folder == catalog.model_dir("tiny")
    assert (folder / "model.safetensors").read_bytes() == model["model.safetensors"]
