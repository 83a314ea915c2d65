"""Getting model files: the Hugging Face hub through `huggingface_hub`, and our completion rules.

Transport is `huggingface_hub`'s: its shared cache (`$HF_HUB_CACHE`, else
`$HF_HOME/hub`, else ~/.cache/huggingface/hub), its retries (a dropped connection is
retried within the download with a `Range` request), its locks, the user's token
(`$HF_TOKEN` or `hf auth login`), and `$HF_ENDPOINT`. One thing huggingface_hub 2.x
does not do is resume a download whose *process* was killed: it writes each download to
`blobs/<etag>.<random>.incomplete`, a name of its own, deletes it on any exception, and
never looks at such a file again. So the weight files (`*.safetensors`, the large ones)
take a short path of ours, `resume_blob`: under huggingface_hub's own lock for the blob,
the partial file `blobs/<sha256>.incomplete` (or the longest leftover of a killed
huggingface_hub download, renamed to that) is continued with huggingface_hub's `http_get`
and a `Range: bytes=<its size>-` request, checked against the size and SHA-256 the hub
publishes, and only then renamed to the blob; `hf_hub_download` then finds the blob and
links it into the snapshot as usual. This path is plain HTTP also for files the Hub keeps
in Xet storage, which huggingface_hub would fetch through `hf_xet` (faster on a good
connection, but started over after a kill). A model read from the hub is loaded from its snapshot folder in
the cache, in place: nothing is copied, and a model the user already has in
the cache is not downloaded again. `$HF_HUB_OFFLINE=1` reads the cache only.

What is ours:

* Which files make a model: config.json, model.safetensors (or
  model.safetensors.index.json and the shards it names, each a plain file
  name), and, when the repository has them, tokenizer.json,
  tokenizer_config.json and generation_config.json. Other files (PyTorch
  pickles, ONNX, ...) are never downloaded.
* Checks after download: a catalogued file's size and SHA-256 against the
  catalog; any other weight file's SHA-256 against the hash the hub publishes
  for it (its LFS object id, which names its blob in the cache). Sizes are
  checked on every load; `minillm fetch --verify` hashes again.
* Folders in minillm's own weights directory (the offline model converted from
  its GGUF, or folders written by older versions) count as fetched only from
  their content: the marker `.complete` (written last) records every file's
  size and SHA-256; sizes are checked every time, hashes with `verify=True`;
  and nothing may be a symbolic link that resolves outside the weights
  directory.

Every failure is a `MinillmError` with one sentence that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from minillm.errors import CheckpointError, MinillmError, NetworkError, suggest

MARKER = ".complete"  # written last: the folder is complete
CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
INDEX = "model.safetensors.index.json"
OPTIONAL_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


@dataclass(frozen=True)
class FileSpec:
    """One file of a model folder, with what we know of it in advance.

    `size` (bytes) and `sha256` (lowercase hex) are None when unknown; an
    `optional` file is skipped when the repository does not have it (HTTP 404).
    """

    name: str
    size: int | None = None
    sha256: str | None = None
    optional: bool = False


# ---------------------------------------------------------------------------
# Small helpers


def safe_filename(name: object, where: str) -> str:
    """`name` if it is a plain file name that stays inside the model folder.

    Rejects empty names, `.` and `..`, path separators, absolute paths, NUL,
    and names that would collide with our own bookkeeping (a leading dot, a
    `.part` suffix). `where` says where the name came from, for the message.
    """
    ok = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not name.startswith(".")
        and not name.endswith(".part")
        and not os.path.isabs(name)
        and len(name) <= 255
    )
    if not ok:
        raise CheckpointError(
            f"{where} names the file {name!r}, which is not a plain file name inside the "
            "model folder; refusing to download it"
        )
    return name  # type: ignore[return-value]


def read_marker(folder: Path) -> dict | None:
    """The `.complete` marker of `folder` as a dict, or None if absent or unreadable."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def write_marker(folder: Path, info: dict) -> None:
    """Write the `.complete` marker atomically (temporary file, fsync, rename)."""
    _write_json_atomic(Path(folder) / MARKER, info)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: Path, limit: int | None = None) -> hashlib._Hash:
    """A running SHA-256 of the first `limit` bytes of `path` (all of it if None)."""
    h = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                break
            h.update(block)
            if remaining is not None:
                remaining -= len(block)
    return h


# ---------------------------------------------------------------------------
# The lock


def pid_alive(pid: int) -> bool:
    """Is process `pid` running (on this machine)? What a lock's owner is checked with."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FetchLock:
    """An exclusive lock file: `with FetchLock(path, what):`.

    Created with O_CREAT | O_EXCL and holding `{"pid", "host"}`. If the file
    exists and names a process of this host that is no longer running, the
    lock is stale and is taken over; otherwise, after waiting up to `wait`
    seconds for it to be released, `MinillmError` says who holds it.
    """

    def __init__(self, path: Path, what: str, wait: float = 0.0):
        self.path = Path(path)
        self.what = what
        self.wait = wait
        self._held = False

    def __enter__(self) -> FetchLock:
        deadline = time.monotonic() + self.wait
        takeovers = 0
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_is_gone() and takeovers < 3:
                    takeovers += 1
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise MinillmError(self._busy_message()) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            self._held = True
            return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def _holder(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _holder_is_gone(self) -> bool:
        holder = self._holder()
        if holder is None:
            # Unreadable: a writer may be between open() and write(); give it a
            # moment, and only then call the lock stale.
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except FileNotFoundError:
                return True
        pid = holder.get("pid")
        if holder.get("host") not in (None, socket.gethostname()) or not isinstance(pid, int):
            return False
        return not pid_alive(pid)

    def _busy_message(self) -> str:
        holder = self._holder() or {}
        pid = holder.get("pid", "unknown")
        return (
            f"another fetch of {self.what} is already running (pid {pid}); wait for it to "
            f"finish, or delete {self.path} if no such process is running"
        )


# ---------------------------------------------------------------------------
# Completion rules for folders in the weights directory


def _outside(path: Path, root: Path) -> Path | None:
    """Where `path` really is, if that is outside `root` (symbolic links followed); else None."""
    real = Path(os.path.realpath(path))
    return None if real.is_relative_to(Path(os.path.realpath(root))) else real


def folder_problem(folder: Path, root: Path | None = None, verify: bool = False) -> str | None:
    """Why `folder` is not a finished fetch, or None when it is one.

    It must hold the `.complete` marker, and every file the marker lists with
    the recorded size (always) and SHA-256 (when `verify`). With `root` (the
    weights directory), neither the folder nor any file in it may resolve
    outside `root` through a symbolic link.
    """
    folder = Path(folder)
    if root is not None:
        where = _outside(folder, root)
        if where is not None:
            return f"{folder} is a symbolic link to {where}, outside the weights directory {root}"
    marker = read_marker(folder)
    if marker is None:
        return f"{folder} has no readable {MARKER} marker (an unfinished fetch or conversion)"
    for name, rec in marker["files"].items():
        path = folder / str(name)
        if root is not None and (where := _outside(path, root)) is not None:
            return f"{path} is a symbolic link to {where}, outside the weights directory {root}"
        if not isinstance(rec, dict):
            return f"{folder / MARKER} is malformed at {name!r}"
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if size != rec.get("size"):
            return f"{path} has {size} bytes, {rec.get('size')} were recorded when it was written"
        if verify and file_sha256(path).hexdigest() != rec.get("sha256"):
            return f"{path} does not have the SHA-256 recorded when it was written (it changed on disk)"
    return None


def is_complete(folder: Path, root: Path | None = None, verify: bool = False) -> bool:
    """True when `folder` holds a finished fetch (see `folder_problem`)."""
    return folder_problem(folder, root, verify) is None


def marker_for(folder: Path, **info) -> dict:
    """A completion marker for every regular file of `folder`: size and SHA-256, plus `info`."""
    files = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and not path.name.startswith("."):
            files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path).hexdigest()}
    return {**info, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}


# ---------------------------------------------------------------------------
# The Hugging Face hub


def hub_cache_dir() -> Path:
    """huggingface_hub's shared cache, read from the environment now (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when `$HF_HUB_OFFLINE` (or `$TRANSFORMERS_OFFLINE`) asks for the cache only."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "on", "yes", "true")


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """'owner/name' or 'owner/name@revision' -> (repo, revision or None); None if not an id."""
    repo, _, revision = text.partition("@")
    if not _REPO_RE.fullmatch(repo) or ".." in repo:
        return None
    if revision and (not _REVISION_RE.fullmatch(revision) or ".." in revision):
        return None
    return repo, revision or None


@dataclass
class Snapshot:
    """A model's files in the hub cache: the snapshot folder, its commit, and each file's path."""

    repo: str
    commit: str
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)  # fetched now, not found in the cache


class NotCached(Exception):
    """A file of a snapshot read with download=False is not in the cache."""


def _quiet_tqdm():
    from tqdm.auto import tqdm

    class Quiet(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def _hub_error(exc: BaseException, repo: str, name: str, revision: str, retry: str) -> MinillmError:
    from huggingface_hub import errors as E

    where = f"{repo} at revision {revision}"
    if isinstance(exc, E.GatedRepoError):
        return NetworkError(
            f"{repo} is gated: accept its terms on its hub page, then give a token "
            "(`hf auth login` or $HF_TOKEN) and run " + retry)
    if isinstance(exc, E.RepositoryNotFoundError):
        return NetworkError(
            f"the hub has no repository {repo!r} (or it is private: give a token with "
            "`hf auth login` or $HF_TOKEN)" + _did_you_mean(repo))
    if isinstance(exc, E.RevisionNotFoundError):
        return NetworkError(f"{repo} has no revision {revision!r} (a branch, tag or commit)")
    if isinstance(exc, E.OfflineModeIsEnabled):
        return NetworkError(f"{name} of {where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    if isinstance(exc, E.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return NetworkError(f"the hub answered HTTP {status} for {name} of {where}; try again: {retry}")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return NetworkError(f"the disk is full: could not write {name} of {where} into {hub_cache_dir()}")
    return NetworkError(
        f"could not download {name} of {where} from {hub_endpoint()} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check the network and run {retry}")


def _did_you_mean(repo: str) -> str:

    from minillm.checkpoints import catalog

    known = {e.repo: n for n, e in catalog.load_catalog().items() if e.repo}
    lowered = {r.lower(): r for r in known}
    close = [lowered[repo.lower()]] if repo.lower() in lowered else suggest(repo, known, n=2, cutoff=0.6)
    if not close:
        return ""
    return ". Did you mean " + " or ".join(f"{r} (catalog name {known[r]})" for r in close) + "?"


def hub_snapshot(
    repo: str,
    revision: str | None = None,
    files: Sequence[FileSpec] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    force: Sequence[str] = (),
    retry: str = "the same command again",
) -> Snapshot:
    """The files of a model on the hub, from the cache, downloading what is missing.

    `files`: the catalog's list (with sizes and hashes), or None for the
    standard set (see the module docstring). The first file resolves
    `revision` (default "main") to a commit, and every other file is read at
    that commit, so the snapshot is one consistent version. With
    `download=False`, or when $HF_HUB_OFFLINE is set, only the cache is read
    (`NotCached` is raised when something is missing). Files named in `force` are downloaded again.
    """
    from huggingface_hub import errors as E
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    revision = revision or "main"
    online = download and not hub_offline()
    snap = Snapshot(repo, "", Path())
    tqdm_class = None if progress else _quiet_tqdm()

    def get(name: str, optional: bool) -> Path | None:
        rev = snap.commit or revision
        kwargs = dict(revision=rev, cache_dir=hub_cache_dir(), endpoint=hub_endpoint())
        if name not in force:
            cached = try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir(), revision=rev)
            if isinstance(cached, str):
                return Path(cached)
            if cached is not None and optional:  # the cache remembers the repository lacks it
                return None
        if not online:
            if optional:  # not in the cache; the repository may not have it at all
                return None
            if download:
                raise NetworkError(
                    f"{name} of {repo} at revision {rev} is not in the Hugging Face cache "
                    f"({hub_cache_dir()}) and HF_HUB_OFFLINE is set: unset it to download, or "
                    "point HF_HOME at the cache that has the model")
            raise NotCached(name)
        try:
            if name.endswith(".safetensors") and name not in force:  # large: resumable
                resume_blob(repo, name, rev, tqdm_class)
            path = Path(hf_hub_download(repo, name, tqdm_class=tqdm_class, force_download=name in force,
                                        **kwargs))
        except MinillmError:
            raise
        except E.LocalEntryNotFoundError as exc:  # the hub could not be reached
            raise _hub_error(exc.__cause__ or exc, repo, name, rev, retry) from None
        except E.RemoteEntryNotFoundError:
            if optional:
                return None
            raise CheckpointError(
                f"{repo} at revision {rev} has no {name}"
                + (" (minillm reads safetensors weights only, never PyTorch pickles)"
                   if name.endswith(".safetensors") else "")) from None
        except Exception as exc:  # noqa: BLE001 - every transport error becomes one sentence
            raise _hub_error(exc, repo, name, rev, retry) from None
        snap.downloaded.append(name)
        return path

    def add(name: str, optional: bool = False) -> Path | None:
        safe_filename(name, f"the file list of {repo}")
        path = get(name, optional)
        if path is not None:
            snap.files[name] = path
            if not snap.commit:
                snap.commit, snap.folder = path.parent.name, path.parent
        return path

    if online:
        remove_stale_incomplete(repo)
    specs = list(files) if files is not None else [FileSpec("config.json")]
    config = next((s for s in specs if s.name == "config.json"), None)
    add("config.json", config.optional if config else False)
    if files is None:
        _check_supported(snap.files["config.json"])
        if add(INDEX, optional=True) is None:  # a sharded model has an index; else one file
            add("model.safetensors")
        specs += [FileSpec(n, optional=True) for n in OPTIONAL_FILES]
    for spec in specs:
        if spec.name != "config.json" and spec.name not in snap.files:
            add(spec.name, spec.optional)
    if INDEX in snap.files:
        for shard in shard_names(snap.files[INDEX]):
            if shard not in snap.files:
                add(shard)
    check_snapshot(snap, files, verify=bool(snap.downloaded), only=snap.downloaded)
    return snap


def remove_stale_incomplete(repo: str) -> list[Path]:
    """Tidy the partial files killed downloads of `repo` left in the hub cache; return what was
    removed.

    huggingface_hub writes each download to `blobs/<etag>.<random>.incomplete` while holding
    `.locks/<repo folder>/<etag>.lock`; `resume_blob` writes `blobs/<sha256>.incomplete`.
    A leftover whose lock we can take at once belongs to no running download. For an LFS
    file (its etag is its SHA-256) the longest such leftover is kept as
    `<sha256>.incomplete`, for `resume_blob` to continue; every other one is removed (a
    small file is simply downloaded again).
    """
    from filelock import FileLock, Timeout

    folder = f"models--{repo.replace('/', '--')}"
    blobs = hub_cache_dir() / folder / "blobs"
    removed: list[Path] = []
    try:
        leftovers = sorted(blobs.glob("*.incomplete"))
    except OSError:
        return removed
    by_etag: dict[str, list[Path]] = {}
    for path in leftovers:
        by_etag.setdefault(path.name.split(".", 1)[0], []).append(path)
    for etag, paths in by_etag.items():
        lock = hub_cache_dir() / ".locks" / folder / f"{etag}.lock"
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock), timeout=0):
                keep = None
                if _SHA256_RE.fullmatch(etag) and not (blobs / etag).exists():
                    keep = max(paths, key=lambda p: (p.stat().st_size, p.name))
                    os.replace(keep, blobs / f"{etag}.incomplete")
                for path in paths:
                    if path != keep:
                        path.unlink(missing_ok=True)
                        removed.append(path)
        except (Timeout, OSError):
            continue  # a download in progress holds it, or we may not touch it
    return removed


def resume_blob(repo: str, name: str, revision: str, tqdm_class=None) -> int | None:
    """Download the LFS file `name` of `repo` into its blob in the hub cache, continuing the
    partial file a killed download left; return the number of bytes resumed from (0 for a
    fresh download), or None when this path does not apply and `hf_hub_download` should
    do everything (the blob is there, the file is not an LFS file, or its metadata cannot
    be had: then hf_hub_download reports the problem in its own words).

    Raises CheckpointError if the finished file does not have the SHA-256 the hub publishes
    (the partial file is deleted, so the next attempt starts from zero).
    """
    from filelock import FileLock
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, name, revision=revision, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(url)
    except Exception:  # noqa: BLE001 - hf_hub_download will say it properly
        return None
    etag, size = meta.etag, meta.size
    if not etag or not _SHA256_RE.fullmatch(etag) or size is None:
        return None
    folder = f"models--{repo.replace('/', '--')}"
    blob = hub_cache_dir() / folder / "blobs" / etag
    partial = blob.with_name(f"{etag}.incomplete")
    lock = hub_cache_dir() / ".locks" / folder / f"{etag}.lock"
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # huggingface_hub's lock for this blob: one writer at a time
        if blob.exists():
            return None
        headers = build_hf_headers()
        if urlparse(meta.location).netloc != urlparse(url).netloc:
            headers.pop("authorization", None)  # a redirect to a CDN: no token there
        # unbuffered: every chunk huggingface_hub hands over is on disk, even after a kill
        with open(partial, "r+b" if partial.exists() else "w+b", buffering=0) as f:
            start = f.seek(0, os.SEEK_END)
            if start > size:  # not a prefix of this file
                start = f.seek(0)
                f.truncate()
            http_get(meta.location, f, resume_size=start, headers=headers, expected_size=size,
                     displayed_filename=name, tqdm_class=tqdm_class)
            f.flush()
            os.fsync(f.fileno())
        if file_sha256(partial).hexdigest() != etag:
            partial.unlink(missing_ok=True)
            raise CheckpointError(
                f"{name} of {repo} at revision {revision} does not have the SHA-256 the hub "
                f"publishes ({etag}) after downloading (resumed from byte {start}); the partial "
                "file was deleted: run the command again to download it from the start")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # as huggingface_hub leaves its blobs
        os.replace(partial, blob)
        _fsync_dir(blob.parent)
    return start


def _check_supported(config: Path) -> None:
    """Refuse an unsupported architecture from config.json, before any weights are fetched."""
    from minillm.config import ModelConfig

    ModelConfig.from_json(config)


def shard_names(index: Path) -> list[str]:
    """The shard files a model.safetensors.index.json names, each checked to be a plain file name."""
    try:
        data = json.loads(Path(index).read_text(encoding="utf-8"))
        names = sorted(set(data["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
    return [safe_filename(n, str(index)) for n in names]


def lfs_sha256(path: Path) -> str | None:
    """The SHA-256 the hub published for a cached file: its blob's name, when it is one."""
    name = Path(os.path.realpath(path)).name
    return name if _SHA256_RE.fullmatch(name) else None


def check_snapshot(snap: Snapshot, files: Sequence[FileSpec] | None, verify: bool,
                   only: Sequence[str] | None = None) -> None:
    """Sizes (always) and SHA-256 (when `verify`; of `only` those files if given) of a snapshot's
    files, against the catalog's values, else the hub's published LFS hash."""
    known = {s.name: s for s in files or ()}
    for name, path in snap.files.items():
        spec = known.get(name)
        size = path.stat().st_size
        if spec is not None and spec.size is not None and size != spec.size:
            raise CheckpointError(
                f"{name} of {snap.repo} in the Hugging Face cache ({path}) has {size} bytes, the "
                f"catalog says {spec.size}: run `minillm fetch --verify` to download it again")
        if not verify or (only is not None and name not in only):
            continue
        expected = spec.sha256 if spec is not None and spec.sha256 else lfs_sha256(path)
        if expected is not None and file_sha256(path).hexdigest() != expected:
            raise CheckpointError(
                f"{name} of {snap.repo} at {snap.commit} ({path}) does not have the SHA-256 "
                f"{'the catalog records' if spec is not None and spec.sha256 else 'the hub publishes'}"
                f" ({expected}); it is corrupted: run `minillm fetch --verify` to download it again")


def verify_snapshot(snap: Snapshot, files: Sequence[FileSpec] | None) -> list[str]:
    """The names of the snapshot's files whose SHA-256 is wrong (hashes every file)."""
    bad = []
    for name in snap.files:
        try:
            check_snapshot(Snapshot(snap.repo, snap.commit, snap.folder, {name: snap.files[name]}),
                           files, verify=True)
        except CheckpointError:
            bad.append(name)
    return bad
