"""Chat prompts: the model's own chat template, rendered in a sandbox.

A chat model was trained on conversations laid out in one particular way
(SmolLM2 and Qwen use ChatML: `<|im_start|>user\\n...<|im_end|>\\n`; Llama 3,
Mistral and others use their own markers). The checkpoint says how, as a
Jinja template in `tokenizer_config.json` (`chat_template`) or, in newer
checkpoints, in `chat_template.jinja`. We render that template exactly as
Hugging Face's `apply_chat_template` does, with the same variables
(`messages`, `add_generation_prompt`, `bos_token`, `eos_token`), and never
hard-code one model's format.

A template is code that comes with a downloaded model, so it runs in Jinja's
immutable sandbox: it can read the messages but not reach Python internals
(`__class__`, `__globals__`, ...) or change the data it is given.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from minillm.errors import MinillmError

Message = Mapping[str, Any]  # {"role": "system" | "user" | "assistant", "content": str, ...}


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json writes it: a str or {"content": str, ...}."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def chat_template(tokenizer_config: Mapping[str, Any], folder: Path | None = None,
                  name: str = "default") -> str | None:
    """The model's chat template (Jinja source), or None if it has none.

    Looks at tokenizer_config.json's `chat_template` (a str, or a list of
    {"name", "template"} of which `name` is taken), then at the files newer
    checkpoints use: chat_template.jinja, chat_template.json.
    """
    template = tokenizer_config.get("chat_template")
    if template is None and folder is not None:
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        elif (folder / "chat_template.json").is_file():
            try:
                template = json.loads((folder / "chat_template.json").read_text()).get("chat_template")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                raise MinillmError(f"{folder / 'chat_template.json'}: not valid JSON") from None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        if name not in named:
            raise MinillmError(f"the model has chat templates {sorted(map(str, named))}, none named {name!r}")
        template = named[name]
    if template is not None and not isinstance(template, str):
        raise MinillmError(f"chat_template must be a string, found {type(template).__name__}")
    return template


def _raise_exception(message: str):
    """Templates call raise_exception('...') to refuse a conversation (HF provides it)."""
    raise MinillmError(f"the chat template refused these messages: {message}")


MAX_RENDERED_CHARS = 1_000_000  # a chat prompt is far smaller; a bigger one is an attack or a bug
RENDER_SECONDS = 5.0  # likewise: rendering takes milliseconds


@contextmanager
def _time_limit(seconds: float):
    """Interrupt a runaway template (nested loops) after `seconds` (main thread, Unix only)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise MinillmError(f"the chat template took more than {seconds:g} s to render; it was stopped")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _sandbox():
    """Jinja's immutable sandbox, set up like Hugging Face's template environment."""
    try:
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        raise MinillmError("chat templates need the jinja2 package: pip install jinja2") from None

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    class LimitedSandbox(ImmutableSandboxedEnvironment):
        """The sandbox forbids code execution; this also caps what `*` and `**` can build."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            from jinja2.exceptions import SecurityError

            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) \
                            and len(seq) * n > MAX_RENDERED_CHARS:
                        raise SecurityError(f"repeating a sequence {n} times exceeds the size limit")
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError(f"the power {right} is too large")
            return super().call_binop(context, operator, left, right)

    env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def check_messages(messages: Sequence[Message]) -> list[dict]:
    """Messages as a list of plain dicts, each with a str role and content."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise MinillmError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise MinillmError(f"message {i} must be a dict with str 'role' and 'content', got {m!r}")
        out.append(dict(m))
    return out


def render_chat_template(template: str, messages: Sequence[Message], add_generation_prompt: bool = True,
                         bos_token: str = "", eos_token: str = "", **extra: Any) -> str:
    """Render a chat template (Jinja source) in the sandbox; returns the prompt text.

    The variables are Hugging Face's: messages, add_generation_prompt (end
    with the header of the assistant's turn, so the model writes the reply),
    bos_token, eos_token, plus any `extra` (for example `tools`).
    """
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    messages = check_messages(messages)
    env = _sandbox()
    try:
        compiled = env.from_string(template)
        with _time_limit(RENDER_SECONDS):
            text = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=bos_token, eos_token=eos_token, **extra)
        if len(text) > MAX_RENDERED_CHARS:
            raise MinillmError(f"the chat template rendered {len(text)} characters (limit "
                               f"{MAX_RENDERED_CHARS}); refusing it")
        return text
    except SecurityError as e:
        raise MinillmError(f"the chat template tried something the sandbox forbids ({e}); "
                           "it was not run") from None
    except TemplateError as e:
        raise MinillmError(f"the chat template failed to render: {type(e).__name__}: {e}") from None


def apply_chat_template(model, messages: Sequence[Message], add_generation_prompt: bool = True,
                        **extra: Any) -> str:
    """A conversation as prompt text, laid out by the model's own chat template.

    model: a HookedModel with a tokenizer (its folder's tokenizer_config.json
    gives the template and the bos/eos token strings). Tokenize the result
    with add_special_tokens=False: the template writes the special tokens.
    """
    tokenizer = model.need_tokenizer()
    config = tokenizer.config
    folder = tokenizer.path.parent
    template = chat_template(config, folder)
    if template is None:
        raise MinillmError(
            f"{model.name or folder}: this model has no chat template (no 'chat_template' in "
            f"{folder / 'tokenizer_config.json'}, no chat_template.jinja), so it was not trained "
            "on a chat format; give it plain text instead of --chat"
        )
    return render_chat_template(template, messages, add_generation_prompt,
                                bos_token=_token_text(config.get("bos_token")),
                                eos_token=_token_text(config.get("eos_token")), **extra)
