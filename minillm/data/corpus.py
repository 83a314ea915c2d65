"""A corpus read as a stream: documents -> token windows -> batches, in bounded memory.

    corpus = Corpus.from_files(["book.txt"])                 # a document = a paragraph (default)
    corpus = Corpus.from_jsonl(["shard0.jsonl"], field="text")  # a document = one record's field
    corpus = Corpus.from_texts(["first text", "second text"])   # a document = one string
    for batch in corpus.batches(model, window=128, batch_size=8):
        batch.tokens        # [b, p] int64, right-padded
        batch.mask          # [b, p] 1 = real token
        batch.doc, batch.start, batch.length, batch.last   # [b] where each row came from

Documents are numbered 0, 1, 2, ... in reading order; that number is how
work is split into shards (`documents(start, stop)`) and how results point
back into the corpus (document, token offset). Each document is tokenized on
its own and cut into windows of at most `window` tokens; a window never
spans two documents, so the last window of a document may be shorter, and
"the last real position of each text" is the last token of its last window.
A window after the first of its document starts mid-text (no BOS of its own).

Memory: the reader holds one document's tokens and one batch of windows at a
time, whatever the corpus size; nothing is cached between batches. Text
files are read line by line; `split="file"` makes a whole file one document
(then one file is held in memory).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError

SPLITS = ("paragraph", "line", "file")


@dataclass(frozen=True)
class Window:
    """Up to `window` consecutive tokens of one document."""

    doc: int  # document number in the corpus
    start: int  # offset of tokens[0] in the document's tokens
    tokens: np.ndarray  # [n] int64
    last: bool  # the document's final window (its last token ends the text)


@dataclass
class Batch:
    """Windows stacked into one forward pass, right-padded."""

    tokens: np.ndarray  # [b, p] int64 (padding = 0)
    mask: np.ndarray  # [b, p] int64, 1 = real token
    doc: np.ndarray  # [b] document numbers
    start: np.ndarray  # [b] token offset of column 0 in its document
    length: np.ndarray  # [b] real tokens per row
    last: np.ndarray  # [b] bool: the row ends its document

    @property
    def n_tokens(self) -> int:
        return int(self.length.sum())

    @property
    def attention_mask(self) -> np.ndarray | None:
        """The mask to pass to the model (None when no row is padded)."""
        return None if bool(self.mask.all()) else self.mask


@dataclass(frozen=True)
class Corpus:
    """Where documents come from: text files, JSONL files (one field), or a list of strings.

    Picklable and small (it holds paths, or the strings themselves), so it
    can be sent to a worker process that reads its own shard of documents
    (`part`: a list of strings sends only that shard's strings).
    """

    kind: str  # "texts" | "text" | "jsonl"
    paths: tuple[str, ...] = ()
    texts: tuple[str, ...] = field(default=(), repr=False)
    field: str | None = None
    split: str = "paragraph"
    first: int = 0  # "texts": the number of texts[0] (a part of a larger list keeps its numbers)

    # --- constructors ---------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Corpus:
        texts = tuple(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise MinillmError(f"corpus text {i} is a {type(t).__name__}, not a str")
        return cls("texts", texts=texts)

    @classmethod
    def from_files(cls, paths: str | Path | Sequence[str | Path], split: str = "paragraph") -> Corpus:
        """Plain-text files; a document is a paragraph (blank-line separated), a line, or a file."""
        if split not in SPLITS:
            raise MinillmError(f"split must be one of {SPLITS}, got {split!r}")
        return cls("text", paths=_check_paths(paths), split=split)

    @classmethod
    def from_jsonl(cls, paths: str | Path | Sequence[str | Path], field: str = "text") -> Corpus:
        """JSON Lines files; a document is the string `field` of one record (blank lines skipped)."""
        if not field:
            raise MinillmError("a JSONL corpus needs the name of the text field (field=...)")
        return cls("jsonl", paths=_check_paths(paths), field=field)

    @classmethod
    def open(
        cls, paths: str | Path | Sequence[str | Path], field: str | None = None, split: str = "paragraph"
    ) -> Corpus:
        """Files by extension: *.jsonl / *.ndjson (or any file when `field` is given) -> JSONL, else text."""
        paths = _check_paths(paths)
        is_jsonl = [p.endswith((".jsonl", ".ndjson")) for p in paths]
        if any(is_jsonl) and not all(is_jsonl):
            raise MinillmError("mix of JSONL and text files: give one kind at a time")
        if all(is_jsonl) or field is not None:
            return cls.from_jsonl(paths, field or "text")
        return cls.from_files(paths, split)

    # --- reading ---------------------------------------------------------------------------

    def describe(self) -> dict:
        """What this corpus is, for metadata (texts are counted, not copied)."""
        if self.kind == "texts":
            return dict(kind="texts", n_texts=len(self.texts))
        out = dict(kind=self.kind, paths=list(self.paths))
        out |= dict(field=self.field) if self.kind == "jsonl" else dict(split=self.split)
        return out

    def part(self, start: int, stop: int) -> Corpus:
        """What a shard of documents start..stop-1 needs: files are read by the worker, so the same
        paths; a list of strings only its own strings (numbered as in the whole list)."""
        if self.kind != "texts":
            return self
        a, b = max(start - self.first, 0), max(stop - self.first, 0)
        return Corpus("texts", texts=self.texts[a:b], first=self.first + a)

    def documents(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, str]]:
        """(number, text) of documents start <= number < stop, in order, read lazily."""
        if self.kind == "texts":
            end = self.first + len(self.texts)
            stop = end if stop is None else min(stop, end)
            for i in range(max(start, self.first), stop):
                yield i, self.texts[i - self.first]
            return
        for i, text in enumerate(self._all_documents()):
            if stop is not None and i >= stop:
                return
            if i >= start:
                yield i, text

    def count(self) -> int:
        """Number of documents (a scan of the files without tokenizing; len() of a list)."""
        if self.kind == "texts":
            return len(self.texts)
        return sum(1 for _ in self._all_documents())

    def _all_documents(self) -> Iterator[str]:
        for path in self.paths:
            if self.kind == "jsonl":
                yield from _jsonl_documents(path, self.field)
            elif self.split == "file":
                yield _read_text(path)
            else:
                yield from _text_documents(path, self.split)

    def windows(self, model, window: int = 128, start: int = 0, stop: int | None = None) -> Iterator[Window]:
        """Token windows of documents start..stop-1, in order (empty documents give none)."""
        if window < 1:
            raise MinillmError(f"window must be at least 1 token, got {window}")
        if window > model.cfg.n_ctx:
            raise MinillmError(f"window {window} is longer than the model's context of {model.cfg.n_ctx}")
        tok = model.need_tokenizer()
        for doc, text in self.documents(start, stop):
            ids = np.asarray(tok.encode(text), np.int64)  # [n]
            for s in range(0, len(ids), window):
                yield Window(doc, s, ids[s : s + window], s + window >= len(ids))

    def batches(
        self,
        model,
        window: int = 128,
        batch_size: int = 8,
        start: int = 0,
        stop: int | None = None,
        progress: bool = True,
        desc: str = "corpus",
    ) -> Iterator[Batch]:
        """Windows grouped `batch_size` at a time, with a tqdm bar in tokens (rate in tok/s)."""
        if batch_size < 1:
            raise MinillmError(f"batch_size must be at least 1, got {batch_size}")
        from tqdm.auto import tqdm

        bar = tqdm(desc=desc, unit="tok", unit_scale=True, disable=not progress, leave=False)
        try:
            chunk: list[Window] = []
            for w in self.windows(model, window, start, stop):
                chunk.append(w)
                if len(chunk) == batch_size:
                    batch = stack(chunk)
                    yield batch
                    bar.update(batch.n_tokens)
                    chunk = []
            if chunk:
                batch = stack(chunk)
                yield batch
                bar.update(batch.n_tokens)
        finally:
            bar.close()


def stack(windows: Sequence[Window]) -> Batch:
    """Windows -> one right-padded batch."""
    p = max(len(w.tokens) for w in windows)
    tokens = np.zeros((len(windows), p), np.int64)
    mask = np.zeros((len(windows), p), np.int64)
    for r, w in enumerate(windows):
        tokens[r, : len(w.tokens)] = w.tokens
        mask[r, : len(w.tokens)] = 1
    return Batch(
        tokens,
        mask,
        np.array([w.doc for w in windows], np.int64),
        np.array([w.start for w in windows], np.int64),
        np.array([len(w.tokens) for w in windows], np.int64),
        np.array([w.last for w in windows], bool),
    )


def _check_paths(paths) -> tuple[str, ...]:
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise MinillmError("a corpus needs at least one file")
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise MinillmError(f"corpus file {p} does not exist (or is not a file)")
        out.append(str(p))
    return tuple(out)


def _open(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise MinillmError(f"{path}: cannot read ({e.strerror})") from None


def _read_text(path: str) -> str:
    with _open(path) as f:
        try:
            return f.read()
        except UnicodeDecodeError as e:
            raise MinillmError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _text_documents(path: str, split: str) -> Iterator[str]:
    with _open(path) as f:
        para: list[str] = []
        try:
            for line in f:
                if split == "line":
                    if line.strip():
                        yield line.rstrip("\n")
                elif line.strip():
                    para.append(line.rstrip("\n"))
                elif para:
                    yield "\n".join(para)
                    para = []
        except UnicodeDecodeError as e:
            raise MinillmError(f"{path}: not UTF-8 text ({e.reason})") from None
        if para:
            yield "\n".join(para)


def jsonl_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each line of a JSON Lines file, blank lines skipped; a line that is
    not a JSON object is a MinillmError naming the file and the line."""
    with _open(str(path)) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise MinillmError(f"{path}:{n}: not a JSON record ({e})") from None
            if not isinstance(record, dict):
                raise MinillmError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
            yield n, record


def _jsonl_documents(path: str, key: str) -> Iterator[str]:
    for n, record in jsonl_records(path):
        if key not in record:
            fields = ", ".join(map(str, record))
            raise MinillmError(f"{path}:{n}: the record has no field {key!r} (fields: {fields})")
        if not isinstance(record[key], str):
            raise MinillmError(f"{path}:{n}: field {key!r} is a {type(record[key]).__name__}, not text")
        yield record[key]
