"""Download a model folder from the Hugging Face hub, with the standard library only.

Each file comes from `{endpoint}/{repo}/resolve/{revision}/{file}`; the endpoint
is `$HF_ENDPOINT` (default https://huggingface.co) and `$HF_TOKEN`, when set,
is sent as a bearer token (never to another host after a redirect).

How a folder is written, so that an interrupted or corrupted fetch never leaves
a model that later loads:

1. A lock file next to the folder (`.NAME.lock`, created with O_EXCL, holding
   the pid) keeps two fetches of the same model apart; a lock left by a dead
   process is taken over.
2. Each file streams into `FILE.part`. A later fetch resumes it with an HTTP
   `Range` request (a server that ignores `Range` and answers 200 restarts it
   from byte 0).
3. The finished `.part` is checked: its size, and its SHA-256 against the
   catalog's value, else against the hub's published LFS hash (the
   `X-Linked-ETag` / `ETag` header, when it is 64 hex digits), else the size
   only, and we say so. A mismatch deletes the `.part`. A good file is renamed
   into place atomically.
4. Only when every file is in place is the marker `.complete` written (JSON:
   repo, revision, each file's size and SHA-256). A folder without the marker
   does not count as fetched.

Every failure is a `NetworkError` with one sentence that says what to do.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from minillm.errors import CheckpointError, MinillmError, NetworkError

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 30.0  # seconds without progress on a socket before we give up
MARKER = ".complete"  # written last: the folder is complete
STATE = ".fetch-state.json"  # files already verified by an unfinished fetch
CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


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


def endpoint() -> str:
    """The hub's base URL: `$HF_ENDPOINT`, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def file_url(repo: str, revision: str, filename: str, base: str | None = None) -> str:
    """The URL of one file of `repo` at `revision`."""
    quote = urllib.parse.quote
    return f"{base or endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def format_bytes(n: int | None) -> str:
    """A size for people: 548.1 MB, 2.2 GB; '?' when unknown."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


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


def _inside(folder: Path, path: Path, where: str) -> None:
    """Refuse `path` if it is a symlink that points outside `folder`."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(folder.resolve()):
            raise CheckpointError(
                f"{path} is a symbolic link to {target}, outside the model folder; "
                f"refusing to write {where} through it"
            )


def read_marker(folder: Path) -> dict | None:
    """The `.complete` marker of `folder` as a dict, or None if absent or unreadable."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def is_complete(folder: Path) -> bool:
    """True when `folder` holds a finished fetch: the marker, and every file it
    lists present with the recorded size (sizes only: hashing gigabytes on every
    load would be slow; the hashes were checked when the files were written)."""
    marker = read_marker(folder)
    if marker is None:
        return False
    for name, rec in marker["files"].items():
        path = Path(folder) / str(name)
        try:
            if not isinstance(rec, dict) or path.stat().st_size != rec.get("size"):
                return False
        except OSError:
            return False
    return True


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


def _pid_alive(pid: int) -> bool:
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
        return not _pid_alive(pid)

    def _busy_message(self) -> str:
        holder = self._holder() or {}
        pid = holder.get("pid", "unknown")
        return (
            f"another fetch of {self.what} is already running (pid {pid}); wait for it to "
            f"finish, or delete {self.path} if no such process is running"
        )


# ---------------------------------------------------------------------------
# HTTP


class _RedirectRecorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects, remembers each redirect's headers (the hub puts the
    LFS hash `X-Linked-ETag` on its 302 to the CDN), and drops the bearer
    token when the redirect leaves the host it was meant for."""

    def __init__(self) -> None:
        self.headers: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        self.headers.append(headers)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            old_host = urllib.parse.urlsplit(req.full_url).netloc
            if urllib.parse.urlsplit(new.full_url).netloc != old_host:
                new.remove_header("Authorization")
        return new


def _sha256_tag(value: str | None) -> str | None:
    """An ETag value as a lowercase SHA-256, if it is one (quotes and W/ removed)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _SHA256_RE.fullmatch(value) else None


def _published_sha256(hops: list) -> str | None:
    """The SHA-256 the hub publishes for a file, if any.

    `hops` are the header sets of the responses in order, the hub's own answer
    first (a 302 to the CDN for large files, else the file itself). The hub puts
    an LFS file's SHA-256 in `X-Linked-ETag` on its own answer, or serves it as
    that answer's `ETag`. A CDN's `ETag` is some other digest and is not used.
    """
    first = hops[0]
    for value in (first.get("X-Linked-ETag"), first.get("ETag")):
        if _sha256_tag(value):
            return _sha256_tag(value)
    for headers in hops[1:]:
        if _sha256_tag(headers.get("X-Linked-ETag")):
            return _sha256_tag(headers.get("X-Linked-ETag"))
    return None


def _published_size(hops: list) -> int | None:
    for headers in hops:
        value = headers.get("X-Linked-Size")
        if value and value.strip().isdigit():
            return int(value)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection early"
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    text = str(reason) or type(reason).__name__
    return text[0].lower() + text[1:]


@dataclass
class _Job:
    """What one fetch needs to name things in messages."""

    repo: str
    revision: str
    folder: Path
    host: str
    base: str
    token: str | None
    timeout: float
    progress: bool
    retry: str

    def url(self, filename: str) -> str:
        return file_url(self.repo, self.revision, filename, self.base)

    def http_error(self, exc: urllib.error.HTTPError, filename: str) -> NetworkError:
        code = exc.code
        if code == 404:
            return NetworkError(
                f"{filename} was not found in {self.repo} at revision {self.revision} "
                f"(HTTP 404 from {self.host}); check the repository name and the revision"
            )
        if code in (401, 403):
            if self.token:
                hint = (
                    "your HF_TOKEN does not grant access to it; accept the model's terms "
                    "on its page with that account"
                )
            else:
                hint = (
                    "the repository does not exist, or it is gated or private; for a gated "
                    "model, accept its terms on its page and set HF_TOKEN to an access token"
                )
            return NetworkError(f"{self.host} refused access to {self.repo} (HTTP {code}): {hint}")
        return NetworkError(
            f"{self.host} answered HTTP {code} ({exc.reason}) for {filename} of {self.repo}; "
            f"try again later with {self.retry} (it resumes the download)"
        )

    def unreachable(self, exc: BaseException) -> NetworkError:
        return NetworkError(f"could not reach {self.host}: {_reason(exc)} (are you offline?)")

    def interrupted(self, filename: str, exc: BaseException, got: int, total: int | None) -> NetworkError:
        of = f" of {format_bytes(total)}" if total else ""
        return NetworkError(
            f"the download of {filename} from {self.host} was interrupted after "
            f"{format_bytes(got)}{of} ({_reason(exc)}); run {self.retry} to resume it"
        )

    def disk_full(self, filename: str, needed: int | None) -> NetworkError:
        need = f" (it needs {format_bytes(needed)})" if needed else ""
        return NetworkError(
            f"the disk is full: could not write {filename} into {self.folder}{need}; "
            f"free some space, then run {self.retry} to resume"
        )

    def open(self, filename: str, offset: int) -> tuple[http.client.HTTPResponse, list]:
        """GET one file (from `offset` on): the response, and the headers of every
        response on the way (redirects first, in order)."""
        req = urllib.request.Request(self.url(filename))
        req.add_header("User-Agent", "minillm")
        req.add_header("Accept-Encoding", "identity")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        recorder = _RedirectRecorder()
        opener = urllib.request.build_opener(recorder)
        try:
            resp = opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as exc:
            raise self.unreachable(exc) from None
        except TimeoutError:
            raise NetworkError(
                f"could not reach {self.host}: no answer within {self.timeout:g} s (are you offline?)"
            ) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise self.unreachable(exc) from None
        return resp, [*recorder.headers, resp.headers]


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------
# One file


def _open_part(part: Path, append: bool) -> BinaryIO:
    """Open a `.part` file for writing (appending when resuming); never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    return os.fdopen(os.open(part, flags, 0o644), "wb")


def _download_one(job: _Job, spec: FileSpec) -> dict | None:
    """Fetch, verify and move one file into place; its marker record, or None
    if the file is optional and the repository does not have it."""
    folder = job.folder
    final = folder / spec.name
    part = folder / f"{spec.name}.part"
    _inside(folder, final, spec.name)
    _inside(folder, part, spec.name)
    if part.is_symlink():
        part.unlink()

    offset = part.stat().st_size if part.exists() else 0
    if spec.size is not None and offset > spec.size:
        part.unlink()
        offset = 0
    if spec.size is not None and spec.sha256 is not None and offset == spec.size:
        # Fully downloaded earlier but not yet verified and renamed.
        return _finish(job, spec, part, final, file_sha256(part), offset, spec.sha256, "catalog")

    for attempt in range(2):
        try:
            resp, hops = job.open(spec.name, offset)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset and attempt == 0:
                part.unlink(missing_ok=True)  # our .part is longer than the file
                offset = 0
                continue
            if exc.code == 404 and spec.optional:
                return None
            raise job.http_error(exc, spec.name) from None
        break
    else:  # pragma: no cover - the loop always breaks or raises
        raise AssertionError

    with resp:
        total: int | None = None
        if resp.status == 206:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                raise NetworkError(
                    f"{job.host} answered a resumed download of {spec.name} with the wrong byte "
                    f"range ({resp.headers.get('Content-Range')!r}); delete {part} and try again"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:  # 200: the whole file, whatever we asked for
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None

        expected_sha = spec.sha256 or _published_sha256(hops)
        source = "catalog" if spec.sha256 else ("server" if expected_sha else "size")
        expected_size = spec.size if spec.size is not None else _published_size(hops)
        if expected_size is None:
            expected_size = total
        if total is not None and expected_size is not None and total != expected_size:
            raise NetworkError(
                f"{job.host} serves {spec.name} of {job.repo} with {total} bytes, but "
                f"{expected_size} were expected (has it changed upstream? check the revision); "
                "nothing was downloaded"
            )

        sha = file_sha256(part, offset) if offset else hashlib.sha256()
        try:
            out_file = _open_part(part, append=bool(offset))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise job.disk_full(spec.name, expected_size) from None
            raise MinillmError(f"cannot write {part}: {exc.strerror}") from None

        got = offset
        bar = tqdm(
            total=expected_size,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=spec.name,
            disable=not job.progress,
            file=sys.stderr,
            leave=False,
        )
        try:
            with out_file as out:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (http.client.HTTPException, OSError) as exc:
                        raise job.interrupted(spec.name, exc, got, expected_size) from None
                    if not block:
                        break
                    try:
                        out.write(block)
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise job.disk_full(spec.name, expected_size) from None
                        raise MinillmError(f"cannot write {part}: {exc.strerror}") from None
                    sha.update(block)
                    got += len(block)
                    bar.update(len(block))
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise job.disk_full(spec.name, expected_size) from None
                    raise
        finally:
            bar.close()

    if expected_size is not None and got < expected_size:
        raise job.interrupted(spec.name, ConnectionError("connection closed"), got, expected_size)
    if expected_size is not None and got > expected_size:
        part.unlink(missing_ok=True)
        raise NetworkError(
            f"{spec.name} of {job.repo} is {got} bytes, but {expected_size} were expected; "
            f"the partial file was deleted; run {job.retry} to try again"
        )
    return _finish(job, spec, part, final, sha, got, expected_sha, source)


def _finish(job, spec, part, final, sha, size, expected_sha, source) -> dict:
    """Check the hash, then move `part` into place; the file's marker record."""
    digest = sha.hexdigest()
    if expected_sha is not None and digest != expected_sha:
        part.unlink(missing_ok=True)
        where = "the catalog" if source == "catalog" else job.host
        raise NetworkError(
            f"checksum mismatch for {spec.name} of {job.repo}: {where} says sha256 "
            f"{expected_sha}, the download has {digest}; the partial file was deleted, "
            f"run {job.retry} to download it again"
        )
    if expected_sha is None:
        _note(
            f"{job.repo}: {job.host} published no SHA-256 for {spec.name}, so only its size "
            f"({size} bytes) was checked"
        )
    os.replace(part, final)
    _fsync_dir(job.folder)
    return {"size": size, "sha256": digest, "verified": source}


# ---------------------------------------------------------------------------
# A whole folder


def _shards_of(index_path: Path) -> list[str]:
    """The shard file names an `*.safetensors.index.json` refers to, each checked
    to be a plain file name inside the folder."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{index_path} is not a valid safetensors index: it needs a JSON object "
            "'weight_map' from tensor names to shard file names"
        ) from None
    shards: list[str] = []
    for shard in weight_map.values():
        safe_filename(shard, f"the index {index_path.name}")
        if shard not in shards:
            shards.append(shard)
    return shards


def fetch_repo(
    repo: str,
    revision: str,
    files: Iterable[FileSpec],
    dest: Path,
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retry: str | None = None,
) -> Path:
    """Download `files` of `repo` at `revision` into the folder `dest`.

    A sharded model lists its `model.safetensors.index.json`; the shards it
    names are fetched after it. Returns `dest` once its `.complete` marker is
    written. `retry` is the command to suggest in error messages, such as
    "`minillm fetch gpt2`".
    """
    dest = Path(dest)
    specs = [
        FileSpec(safe_filename(f.name, f"the file list of {repo}"), f.size, f.sha256, f.optional)
        for f in files
    ]
    base = endpoint()
    job = _Job(
        repo=repo,
        revision=revision,
        folder=dest,
        host=urllib.parse.urlsplit(base).netloc or base,
        base=base,
        token=os.environ.get("HF_TOKEN") or None,
        timeout=timeout,
        progress=progress,
        retry=retry or "the same command",
    )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MinillmError(f"cannot create {dest.parent}: {exc.strerror}") from None

    with FetchLock(dest.parent / f".{dest.name}.lock", dest.name):
        marker = read_marker(dest)
        if (
            marker is not None
            and marker.get("repo") == repo
            and marker.get("revision") == revision
            and is_complete(dest)
        ):
            return dest
        if dest.exists() and not dest.is_dir():
            raise MinillmError(f"{dest} exists and is not a folder; move it away and try again")
        dest.mkdir(exist_ok=True)
        (dest / MARKER).unlink(missing_ok=True)  # from here on the folder is incomplete
        state = _read_state(dest, repo, revision)
        _check_space(job, specs, state)

        done: dict[str, dict] = {}
        queue = deque(specs)
        known = {s.name for s in specs}
        while queue:
            spec = queue.popleft()
            record = state.get(spec.name)
            final = dest / spec.name
            reusable = (
                isinstance(record, dict)
                and final.is_file()
                and not final.is_symlink()
                and final.stat().st_size == record.get("size")
                and (spec.sha256 is None or record.get("sha256") == spec.sha256)
            )
            if not reusable:
                record = _download_one(job, spec)
                if record is None:
                    continue
            done[spec.name] = record
            _write_json_atomic(dest / STATE, {"repo": repo, "revision": revision, "files": done})
            if spec.name.endswith(".safetensors.index.json"):
                for shard in _shards_of(final):
                    if shard not in known:
                        known.add(shard)
                        queue.append(FileSpec(shard))

        write_marker(
            dest,
            {
                "repo": repo,
                "revision": revision,
                "endpoint": base,
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": done,
            },
        )
        (dest / STATE).unlink(missing_ok=True)
    return dest


def _read_state(folder: Path, repo: str, revision: str) -> dict:
    try:
        data = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("repo") != repo or data.get("revision") != revision:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _check_space(job: _Job, specs: list[FileSpec], state: dict) -> None:
    """Fail early, before downloading anything, when the known sizes cannot fit."""
    needed = 0
    for spec in specs:
        if spec.size is None or spec.name in state:
            continue
        part = job.folder / f"{spec.name}.part"
        needed += spec.size - (part.stat().st_size if part.is_file() else 0)
    if needed <= 0:
        return
    free = shutil.disk_usage(job.folder).free
    if free < needed:
        raise NetworkError(
            f"not enough disk space for {job.repo}: {format_bytes(needed)} needed, "
            f"{format_bytes(free)} free in {job.folder}; free some space and try again"
        )
