"""Prompt sets: clean / corrupted pairs with their answers, an IOI generator, and a file format.

    pairs = ioi_prompts(200, seed=0, model=model)   # seeded: the same 200 pairs every time
    pairs[0].clean       # "When Mary and John went to the store, John gave a drink to"
    pairs[0].corrupted   # "When Mary and John went to the store, Mary gave a drink to"   (S2 -> IO)
    pairs[0].answer, pairs[0].wrong                  # " Mary", " John"
    write_prompts(pairs, "ioi.jsonl"); read_prompts("ioi.jsonl")

Indirect object identification (IOI): a sentence introduces two names, the
subject S and the indirect object IO, then repeats S ("S2") as the one who
gives something "to" ... and the model should complete with IO. The standard
corruption used for patching replaces S2 by IO, so that the corrupted
sentence points at the other name: everything else, and the token count, is
unchanged. Logit difference: logit(IO) - logit(S) at the last position.

Templates come in both orders (ABBA: "When IO and S ..., S ..."; BABA:
"When S and IO ..., S ..."), as in the IOI literature. With `model`, only
names that are one token with a leading space are used, so the clean and
corrupted prompts always have the same length.

A prompt file is JSON Lines, one object per prompt:
    {"clean": "...", "corrupted": "...", "answer": " Mary", "wrong": " John"}
for patching, or {"prompt": "...", "target": " night"} for ablation and
median replacement ("clean"/"answer" are accepted there too).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from minillm.data.corpus import jsonl_records
from minillm.errors import MinillmError

NAMES = (
    "Mary",
    "John",
    "Tom",
    "James",
    "Anna",
    "Paul",
    "Sarah",
    "David",
    "Emma",
    "Mark",
    "Laura",
    "Peter",
    "Kate",
    "Michael",
    "Alice",
    "Robert",
    "Lisa",
    "Daniel",
    "Susan",
    "Chris",
    "Jane",
    "Steve",
    "Rachel",
    "Mike",
    "Amy",
    "Jack",
    "Helen",
    "Andrew",
    "Rose",
    "Brian",
    "Lucy",
    "Kevin",
    "Julia",
    "Adam",
    "Grace",
    "Eric",
    "Claire",
    "Ben",
    "Sophie",
    "Sam",
)
PLACES = (
    "store",
    "park",
    "school",
    "office",
    "garden",
    "market",
    "station",
    "beach",
    "library",
    "restaurant",
    "hospital",
    "museum",
)
OBJECTS = (
    "drink",
    "book",
    "ring",
    "bone",
    "kiss",
    "letter",
    "basketball",
    "computer",
    "necklace",
    "snack",
    "bag",
    "present",
)
# {A} and {B} are the first two names; {S} is the repeated subject (S2), the answer is the other.
TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "After {A} and {B} went to the {place}, {S} gave a {object} to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "Then, {A} and {B} went to the {place}. {S} gave a {object} to",
    "Friends {A} and {B} found a {object} at the {place}. {S} gave it to",
    "The {place} {A} and {B} went to had a {object}. {S} gave it to",
    "After the lunch, {A} and {B} went to the {place}. {S} gave a {object} to",
)


@dataclass(frozen=True)
class PromptPair:
    """One prompt of a set: clean and corrupted text (same token count), answer and wrong token."""

    clean: str
    corrupted: str | None = None
    answer: str | None = None
    wrong: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def usable_names(model=None, names=NAMES) -> list[str]:
    """Names that are one token with a leading space (all of them without a model)."""
    if model is None:
        return list(names)
    out = []
    for n in names:
        try:
            model.to_single_token(" " + n)
        except MinillmError:
            continue
        out.append(n)
    return out


def ioi_prompts(
    n: int,
    seed: int = 0,
    model=None,
    templates=TEMPLATES,
    names=None,
    order: str = "both",
    corruption: str = "s2_io",
) -> list[PromptPair]:
    """n seeded IOI prompt pairs (see the module docstring).

    order: "ABBA", "BABA" or "both" (alternating). corruption: "s2_io" (the
    standard one: S2 replaced by IO) or "abc" (S2 replaced by a third name,
    which points at neither).
    """
    if n < 1:
        raise MinillmError(f"n must be at least 1, got {n}")
    if order not in ("ABBA", "BABA", "both"):
        raise MinillmError(f"order must be 'ABBA', 'BABA' or 'both', got {order!r}")
    if corruption not in ("s2_io", "abc"):
        raise MinillmError(f"corruption must be 's2_io' or 'abc', got {corruption!r}")
    pool = usable_names(model, names or NAMES)
    if len(pool) < 3:
        raise MinillmError(f"only {len(pool)} of the names are single tokens for this model; give names=")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        io, s, c = (pool[j] for j in rng.choice(len(pool), 3, replace=False))
        t = templates[int(rng.integers(len(templates)))]
        place = PLACES[int(rng.integers(len(PLACES)))]
        obj = OBJECTS[int(rng.integers(len(OBJECTS)))]
        abba = order == "ABBA" or (order == "both" and i % 2 == 0)
        a, b = (io, s) if abba else (s, io)
        clean = t.format(A=a, B=b, S=s, place=place, object=obj)
        corrupted = t.format(A=a, B=b, S=io if corruption == "s2_io" else c, place=place, object=obj)
        out.append(PromptPair(clean, corrupted, " " + io, " " + s))
    return out


def write_prompts(pairs, path: str | Path) -> Path:
    """Write a prompt set as JSON Lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    return path


def read_prompts(spec: str | Path, model=None, need: str = "pair") -> list[PromptPair]:
    """A prompt file (JSON Lines, see the module docstring), or "ioi:N" / "ioi:N:SEED" to generate.

    need="pair": every line needs clean, corrupted, answer, wrong.
    need="target": every line needs a prompt (or clean) and a target (or answer).
    """
    text = str(spec)
    if text.startswith("ioi:"):
        parts = text.split(":")
        try:
            n, seed = int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            raise MinillmError(f"expected ioi:N or ioi:N:SEED, got {text!r}") from None
        return ioi_prompts(n, seed, model)
    path = Path(spec)
    if not path.is_file():
        raise MinillmError(f"prompt file {path} does not exist (or give ioi:N to generate N IOI prompts)")
    out = []
    for i, rec in jsonl_records(path):
        if need == "pair":
            missing = [
                k for k in ("clean", "corrupted", "answer", "wrong") if not isinstance(rec.get(k), str)
            ]
            if missing:
                raise MinillmError(
                    f"{path}:{i}: a patching prompt needs text fields clean, corrupted, "
                    f"answer, wrong; missing {', '.join(missing)}"
                )
            out.append(PromptPair(rec["clean"], rec["corrupted"], rec["answer"], rec["wrong"]))
        else:
            prompt, target = rec.get("prompt", rec.get("clean")), rec.get("target", rec.get("answer"))
            if not isinstance(prompt, str) or not isinstance(target, str):
                raise MinillmError(
                    f"{path}:{i}: an ablation prompt needs text fields prompt (or clean) "
                    "and target (or answer)"
                )
            out.append(PromptPair(prompt, rec.get("corrupted"), target, rec.get("wrong")))
    if not out:
        raise MinillmError(f"{path}: no prompts in it")
    return out
