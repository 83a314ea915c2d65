"""Text generation: prefill the prompt once, then decode one token at a time with a KV cache.

    prompt ids [1, p] --forward(cache)--> logits of position p-1 --pick--> token p
    token p [1, 1]    --forward(cache)--> logits of position p   --pick--> token p+1 ...

The cache (kv_cache.py) holds every earlier position's keys and values, so
each decoding step computes one position only; its logits equal those of a
full forward pass over the whole sequence (tests/test_generate.py checks it).

Picking a token: greedy at temperature 0 (argmax), otherwise a draw from
softmax(logits / temperature), optionally restricted to the `top_k` most
likely tokens and to the smallest set whose probability reaches `top_p`. The
draws come from `np.random.default_rng(seed)`, so a fixed seed repeats the text.

Generation stops at `max_new_tokens`, at one of the model's EOS tokens, or
when the text contains one of the `stop` strings. Text is decoded
incrementally (`StreamDecoder`), so streaming prints whole characters even
when one character spans several byte-level tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minillm import ops
from minillm.errors import MinillmError
from minillm.kv_cache import KVCache

REPLACEMENT = "\ufffd"  # what a decoder prints for an incomplete UTF-8 sequence


# --- choosing the next token --------------------------------------------------------------------


# Below this, softmax(logits / temperature) of real logits (|logit| < 1e3) is greedy anyway,
# and far below it the division overflows float64.
MIN_TEMPERATURE = 1e-6


def check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise MinillmError(f"seed must be a non-negative integer (or None for a fresh draw), "
                           f"got {seed!r}")


def check_stop(stop) -> list[str]:
    """stop: None, a string, or a list of strings -> the list."""
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return []
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise MinillmError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    return list(stops)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a MinillmError naming the bad sampling setting, if any."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise MinillmError(f"temperature must be a number (0 = greedy), got {temperature!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise MinillmError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if 0 < temperature < MIN_TEMPERATURE:
        raise MinillmError(
            f"temperature {temperature:g} is too small: logits / temperature would overflow; use "
            f"temperature=0 for greedy decoding (the same tokens), or at least {MIN_TEMPERATURE:g}")
    if top_p is not None and (isinstance(top_p, bool) or
                              not isinstance(top_p, (int, float, np.integer, np.floating))):
        raise MinillmError(f"top_p must be a number in (0, 1] (or None for no limit), got {top_p!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise MinillmError(f"top_k must be a positive integer (or None for no limit), got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise MinillmError(f"top_p must be in (0, 1] (or None for no limit), got {top_p}")


def next_token_probs(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> np.ndarray:
    """The distribution a token is drawn from.   logits [V] -> probabilities [V] (float64)

    softmax(logits / temperature), with every token outside the top_k and
    outside the nucleus (the most likely tokens whose cumulative probability,
    not counting the token itself, is below top_p) set to 0 and the rest
    renormalised. temperature must be > 0 here; 0 means greedy (argmax).
    """
    logits = np.asarray(logits, np.float64) / temperature  # [V]
    if top_k is not None and top_k < logits.shape[0]:
        kth = np.partition(logits, -top_k)[-top_k]  # the k-th largest logit
        logits = np.where(logits < kth, -np.inf, logits)
    probs = ops.softmax(logits)  # [V]
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, kind="stable")  # most likely first
        before = np.cumsum(probs[order]) - probs[order]  # probability of the tokens ahead of each
        keep = np.zeros(probs.shape, bool)
        keep[order[before < top_p]] = True  # always keeps the most likely token
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return probs


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0,
                top_k: int | None = None, top_p: float | None = None) -> int:
    """Pick the next token from last-position logits [V]: argmax at temperature 0, else a draw."""
    if temperature == 0.0:
        return int(np.argmax(logits))
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return int(rng.choice(probs.shape[0], p=probs))


# --- incremental decoding -----------------------------------------------------------------------


def _without_trailing_replacement(text: str) -> int:
    """Length of text without its trailing U+FFFD characters (possibly incomplete UTF-8)."""
    end = len(text)
    while end > 0 and text[end - 1] == REPLACEMENT:
        end -= 1
    return end


class StreamDecoder:
    """Turns generated ids, one at a time, into text pieces that are safe to print.

    decode: ids -> text (the model's tokenizer). prefix_ids: the prompt, or
    its end, decoded together with the new ids so that tokenizers which drop
    a leading space at the start of a text (SentencePiece) decode the
    continuation as it reads after the prompt.

    A piece is held back while the text ends in an incomplete UTF-8 sequence
    (the decoder shows it as U+FFFD) or in what could be the start of a stop
    string. `text` is the continuation so far, cut before a stop string once
    one appears (`stopped` is then True).
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = (),
                 prefix_ids: Sequence[int] = ()):
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.prefix_ids = [int(i) for i in prefix_ids]
        self.prefix_text = decode(self.prefix_ids) if self.prefix_ids else ""
        self.ids: list[int] = []
        self.text = ""  # the continuation's text (cut at a stop string)
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False

    def _continuation(self) -> str:
        full = self.decode(self.prefix_ids + self.ids)
        if full.startswith(self.prefix_text):
            return full[len(self.prefix_text) :]
        return self.decode(self.ids)  # the prompt's text changed: decode the new ids alone

    def push(self, token: int) -> str:
        """Add one generated id; return the text that is now final (may be '')."""
        if self.stopped:
            raise MinillmError("this stream already reached a stop string")
        self.ids.append(int(token))
        self.text = self._continuation()
        return self._settle(final=False)

    def finish(self) -> str:
        """The text still held back (at the end of generation everything is final)."""
        if self.stopped:
            return self._emit(len(self.text))
        return self._settle(final=True)

    def _settle(self, final: bool) -> str:
        """Cut at the first stop string inside the final part of the text; emit what is safe.

        A trailing U+FFFD may be a character whose bytes have not all arrived,
        so a stop string is looked for only in the text before it, until the end.
        """
        complete = len(self.text) if final else _without_trailing_replacement(self.text)
        cut = self._first_stop(self.text[:complete])
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return self._emit(cut)
        return self._emit(len(self.text) if final else self._safe_end(self.text))

    def _emit(self, end: int) -> str:
        end = max(end, self.emitted)
        piece, self.emitted = self.text[self.emitted : end], end
        return piece

    def _first_stop(self, text: str) -> int | None:
        """Index of the earliest stop string in text, or None."""
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _safe_end(self, text: str) -> int:
        """How much of text can be printed: not a trailing U+FFFD, not a partial stop string."""
        end = _without_trailing_replacement(text)
        held = 0  # the longest tail of text that is the start of a stop string
        for s in self.stop:
            for n in range(min(len(s) - 1, end), held, -1):
                if text[end - n : end] == s[:n]:
                    held = n
                    break
        return end - held


# --- the generation loop ------------------------------------------------------------------------


@dataclass
class Generation:
    """Everything one call of `run_generation` produced.

    prompt_ids [1, p]; new_ids the generated ids (including the EOS token if
    one stopped it); text the continuation (without the EOS token and cut
    before a stop string); logits [n_new, V] the raw logits each new token
    was picked from (only when asked for); stop_reason "eos", "stop_string"
    or "max_new_tokens".
    """

    prompt_ids: np.ndarray
    new_ids: list[int]
    text: str | None
    logits: np.ndarray | None
    stop_reason: str

    @property
    def ids(self) -> np.ndarray:
        """Prompt and continuation.   [1, p + n_new]"""
        return np.concatenate([self.prompt_ids, np.array([self.new_ids], np.int64)], axis=1)


def eos_ids(model) -> tuple[int, ...]:
    """The model's end-of-sequence ids: config.json's, plus generation_config.json's.

    Hugging Face's `generate` stops at generation_config.json's list, which for
    chat models can name more tokens than config.json (Llama 3: <|eot_id|>).
    """
    ids = list(model.cfg.eos_token_ids)
    path = getattr(model, "path", None)
    gen_cfg = path / "generation_config.json" if path is not None else None
    if gen_cfg is not None and gen_cfg.is_file():
        try:
            eos = json.loads(gen_cfg.read_text()).get("eos_token_id")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            eos = None
        ids += eos if isinstance(eos, list) else [] if eos is None else [eos]
    return tuple(dict.fromkeys(int(i) for i in ids))


def prompt_ids(model, prompt, chat: bool = False, system: str | None = None) -> np.ndarray:
    """A prompt as ids [1, p]: ids as given, text tokenized, or (chat) through the chat template.

    With chat=True, prompt is the user's message (a str) or a whole list of
    {"role", "content"} messages; the model's own chat template renders it.
    """
    if chat:
        from minillm.chat import apply_chat_template

        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        text = apply_chat_template(model, messages, add_generation_prompt=True)
        # the template writes every special token itself (HF: add_special_tokens=False)
        return np.array([model.need_tokenizer().encode(text, add_special_tokens=False)], np.int64)
    ids = model.to_tokens(prompt) if isinstance(prompt, str) else np.asarray(prompt)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise MinillmError(f"generate takes one non-empty prompt: ids of shape [1, p], got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise MinillmError(f"prompt ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def check_length(model, p: int, max_new_tokens: int) -> None:
    """Refuse, before computing anything, a prompt of p tokens that would run past the context."""
    n_ctx = model.cfg.n_ctx
    if p + max_new_tokens > n_ctx:
        raise MinillmError(
            f"the prompt ({p} tokens) plus max_new_tokens ({max_new_tokens}) would run past the "
            f"context length of {n_ctx} tokens; shorten the prompt or ask for at most "
            f"{max(n_ctx - p, 0)} new tokens"
        )


def run_generation(
    model,
    prompt,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = 0,
    stop_at_eos: bool = True,
    eos_token_ids: Sequence[int] | None = None,
    stop: str | Sequence[str] | None = None,
    return_logits: bool = False,
    on_token: Callable[[int], None] | None = None,
    on_text: Callable[[str], None] | None = None,
    chat: bool = False,
    system: str | None = None,
) -> Generation:
    """Generate, and return a `Generation` with ids, text, stop reason and (on request) logits.

    See `generate` for the arguments. Everything is checked before any
    computation: a prompt that would run past the context length is refused.
    """
    check_sampling(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise MinillmError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    check_seed(seed)
    stops = check_stop(stop)
    ids = prompt_ids(model, prompt, chat, system)  # [1, p]
    check_length(model, ids.shape[1], max_new_tokens)
    tokenizer = getattr(model, "tokenizer", None)
    wants_text = tokenizer is not None
    if (stops or on_text is not None) and not wants_text:
        raise MinillmError("stop strings and text streaming need a tokenizer; this model has none")
    eos = set(eos_ids(model) if eos_token_ids is None else (int(i) for i in eos_token_ids))
    stream = StreamDecoder(tokenizer.decode, stops, ids[0].tolist()) if wants_text else None
    rng = np.random.default_rng(seed)

    new: list[int] = []
    step_logits: list[np.ndarray] = []
    reason = "max_new_tokens"
    if max_new_tokens > 0:
        cache = KVCache.for_model(model, batch=1)
        logits = model.forward(ids, cache=cache, last_only=True)  # prefill: [1, 1, V]
    for step in range(max_new_tokens):
        if return_logits:
            step_logits.append(logits[0, -1].copy())
        token = sample_next(logits[0, -1], rng, temperature, top_k, top_p)
        new.append(token)
        if on_token is not None:
            on_token(token)
        if stop_at_eos and token in eos:
            reason = "eos"
            break
        if stream is not None:
            piece = stream.push(token)
            if piece and on_text is not None:
                on_text(piece)
            if stream.stopped:
                reason = "stop_string"
                break
        if step + 1 < max_new_tokens:
            logits = model.forward(np.array([[token]]), cache=cache)  # one position: [1, 1, V]
    if stream is not None:
        piece = stream.finish()
        if piece and on_text is not None:
            on_text(piece)
    logits_out = None
    if return_logits:
        logits_out = np.stack(step_logits) if step_logits else np.zeros((0, model.cfg.d_vocab),
                                                                          model.dtype)
    return Generation(ids, new, stream.text if stream is not None else None, logits_out, reason)


def generate(model, prompt, max_new_tokens: int = 20, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
             stop_at_eos: bool = True, eos_token_ids: Sequence[int] | None = None,
             stop: str | Sequence[str] | None = None, return_ids: bool = False,
             return_logits: bool = False, on_token: Callable[[int], None] | None = None,
             on_text: Callable[[str], None] | None = None, chat: bool = False,
             system: str | None = None):
    """Continue `prompt` (a str, or ids [1, p]) by up to `max_new_tokens` tokens.

    temperature 0 is greedy; otherwise tokens are drawn (top_k, top_p
    restrict the draw) from a generator seeded with `seed`: the same seed
    gives the same text. Generation stops at the model's EOS ids (or
    `eos_token_ids`; `stop_at_eos=False` disables it) and when the text
    contains one of the `stop` strings.

    Returns the continuation's text for a str prompt; the full ids
    [1, p + n_new] for an ids prompt or with return_ids=True (they include
    an EOS token that stopped generation). With return_logits=True, returns
    (that, logits [n_new, V]): the raw logits each new token was picked from.

    Streaming: `on_token(id)` is called with each new id, `on_text(piece)`
    with each piece of text as soon as it is final (whole characters, never
    part of a stop string). chat=True renders the prompt (the user's
    message, or a list of messages) with the model's chat template, with an
    optional `system` message. Use `run_generation` for everything at once.
    """
    gen = run_generation(model, prompt, max_new_tokens, temperature, top_k, top_p, seed,
                         stop_at_eos, eos_token_ids, stop, return_logits, on_token, on_text,
                         chat, system)
    out = gen.ids if return_ids or not (isinstance(prompt, str) or chat) else gen.text
    return (out, gen.logits) if return_logits else out
