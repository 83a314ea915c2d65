"""Deliberately wrong implementations, for the worked example of `minillm compare`.

Each bug is a small perturbation of minillm's own forward pass made with
hooks, so that everything else stays bit-identical and the comparison has
exactly one thing to find. Each recomputes one step the way a buggy port
would (from activations captured at earlier hooks) and replaces the
activation at the hook where the mistake first shows:

    rope_adjacent        RoPE on adjacent pairs (x0,x1),(x2,x3)... instead of
                         rotate-half (x_i, x_{i+e/2})       -> blocks.0.attn.hook_rot_q
    no_attn_scale        q·k not divided by sqrt(d_head)    -> blocks.0.attn.hook_attn_scores
    causal_off_by_one    each query also sees the next key  -> blocks.0.attn.hook_attn_scores
    gelu_exact           erf GELU instead of GPT-2's tanh   -> blocks.0.mlp.hook_post (gpt2)
    rmsnorm_eps_outside  sqrt(mean x²) + eps instead of
                         sqrt(mean x² + eps)                -> blocks.0.ln1.hook_scale (llama)

    with model.hooks(broken.BUGS["rope_adjacent"].hooks(model)):
        compare.dump(model, prompt, "broken.safetensors")

The bugs assume a plain run (no KV cache, no padding mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minillm import ops
from minillm.errors import MinillmError


@dataclass(frozen=True)
class Bug:
    name: str
    description: str
    families: tuple[str, ...]
    first_hook: str  # where compare must localise it
    make_hooks: Callable  # model -> [(name or predicate, fn)]

    def hooks(self, model) -> list:
        """The hooks that turn `model` into the broken implementation."""
        if model.cfg.family not in self.families:
            raise MinillmError(
                f"the {self.name} bug needs a {' or '.join(self.families)} model; "
                f"this one is {model.cfg.family}"
            )
        return self.make_hooks(model)


def _ends(suffix: str):
    return lambda name: name.endswith(suffix)


def _rope_adjacent_hooks(model) -> list:
    """q and k rotated as adjacent pairs (the GGUF / Meta layout) on HF-layout weights."""
    seen: dict[str, np.ndarray] = {}
    inv_freq = model.rope_inv_freq  # [e/2]

    def keep(act, hook):
        seen[hook.name.rsplit(".", 1)[-1]] = act

    def rotate_adjacent(x, hook):  # [b, p, heads, e]
        x = seen["hook_q" if hook.name.endswith("rot_q") else "hook_k"]
        positions = hook.pos_offset + np.arange(x.shape[1], dtype=np.float64)
        angles = positions[:, None] * inv_freq  # [p, e/2]
        cos = np.cos(angles).astype(x.dtype)[None, :, None, :]  # [1, p, 1, e/2]
        sin = np.sin(angles).astype(x.dtype)[None, :, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]  # the wrong pairs: (x0, x1), (x2, x3), ...
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = odd * cos + even * sin
        return out

    return [(_ends("attn.hook_q"), keep), (_ends("attn.hook_k"), keep),
            (_ends("attn.hook_rot_q"), rotate_adjacent), (_ends("attn.hook_rot_k"), rotate_adjacent)]


def _no_attn_scale_hooks(model) -> list:
    e = model.cfg.d_head

    def unscale(scores, hook):  # [b, h, p, P]; -inf stays -inf
        return scores * np.sqrt(e).astype(scores.dtype)

    return [(_ends("attn.hook_attn_scores"), unscale)]


def _causal_off_by_one_hooks(model) -> list:
    """The causal mask built with k <= q + 1: every query also sees the next token."""
    seen: dict[str, np.ndarray] = {}
    rope = model.cfg.rotary
    q_hook, k_hook = ("attn.hook_rot_q", "attn.hook_rot_k") if rope else ("attn.hook_q", "attn.hook_k")

    def keep(act, hook):
        seen["q" if hook.name.endswith(q_hook) else "k"] = act

    def leaky(scores, hook):  # [b, h, p, P]
        q, k = seen["q"], seen["k"]  # [b, p, h, e], [b, p, kv, e]
        if scores.shape[-1] != q.shape[1]:
            raise MinillmError("the causal_off_by_one bug only works without a KV cache")
        full = ops.attention_scores(q, k.transpose(0, 2, 1, 3))  # [b, h, p, p]
        p = q.shape[1]
        allowed = np.arange(p)[None, :] <= np.arange(p)[:, None] + 1  # [p, P]: one too many
        return np.where(allowed, full, -np.inf).astype(scores.dtype)

    return [(_ends(q_hook), keep), (_ends(k_hook), keep), (_ends("attn.hook_attn_scores"), leaky)]


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x·Φ(x) = 0.5 x (1 + erf(x/√2)) (GPT-2 uses the tanh approximation)."""
    return (0.5 * x * (1.0 + ops.erf(x / np.sqrt(2.0)).astype(np.float64))).astype(x.dtype)


def _gelu_exact_hooks(model) -> list:
    seen: dict[str, np.ndarray] = {}

    def keep(pre, hook):
        seen["pre"] = pre

    def exact(post, hook):
        return gelu_exact(seen["pre"])

    return [(_ends("mlp.hook_pre"), keep), (_ends("mlp.hook_post"), exact)]


def _rmsnorm_eps_outside_hooks(model) -> list:
    """RMSNorm's divisor computed as sqrt(mean x²) + eps."""
    seen: dict[str, np.ndarray] = {}
    eps = model.cfg.eps

    def keep(x, hook):  # the residual stream that the next norm reads
        seen["x"] = x

    def outside(scale, hook):  # [b, p, 1]
        x = seen["x"][:, -scale.shape[1]:]
        rms = np.sqrt((x * x).mean(axis=-1, keepdims=True))
        return (rms + eps).astype(scale.dtype)

    resid = lambda n: n.endswith(("hook_resid_pre", "hook_resid_mid", "hook_resid_post"))  # noqa: E731
    return [(resid, keep), (_ends("hook_scale"), outside)]


BUGS: dict[str, Bug] = {
    b.name: b
    for b in (
        Bug("rope_adjacent", "RoPE rotates adjacent pairs instead of rotate-half", ("llama",),
            "blocks.0.attn.hook_rot_q", _rope_adjacent_hooks),
        Bug("no_attn_scale", "attention scores not divided by sqrt(d_head)", ("gpt2", "llama"),
            "blocks.0.attn.hook_attn_scores", _no_attn_scale_hooks),
        Bug("causal_off_by_one", "causal mask lets each query see the next key", ("gpt2", "llama"),
            "blocks.0.attn.hook_attn_scores", _causal_off_by_one_hooks),
        Bug("gelu_exact", "exact (erf) GELU instead of GPT-2's tanh approximation", ("gpt2",),
            "blocks.0.mlp.hook_post", _gelu_exact_hooks),
        Bug("rmsnorm_eps_outside", "RMSNorm epsilon added outside the square root", ("llama",),
            "blocks.0.ln1.hook_scale", _rmsnorm_eps_outside_hooks),
    )
}
