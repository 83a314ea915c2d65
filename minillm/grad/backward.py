"""The backward pass through the whole model, written by hand, op by op.

    from minillm.grad import backward
    from minillm.interp import metrics as M
    res = backward.backward(model, tokens, M.logit_diff(model, " Mary", " John"))
    res.value                                  # the metric, a float
    res.grad("blocks.3.hook_resid_pre")        # ∂metric/∂activation, [b, p, d]
    res.grad("blocks.3.attn.W_Q")              # ∂metric/∂parameter, [h, d, e]
    res.hf_grads()                             # {Hugging Face parameter name: gradient}

How it works. The forward pass is the model's own (`run_with_cache`), so the
backward sees exactly the numbers model.py computed; the cache *stores*
every activation the backward needs (hook_resid_pre/mid, hook_scale,
hook_normalized, q/k/v and their rotated versions, hook_pattern, hook_z,
hook_pre/hook_pre_linear/hook_post). Storing rather than recomputing: the
stored arrays are, by construction, identical to what the forward produced
(no second implementation of the forward to drift from model.py), and at
the prompt lengths of interpretability work (tens to hundreds of tokens) they
are small: SmolLM2 on 64 tokens stores ~40 MB. What grows fastest is the
attention pattern, h·p² per layer; at thousands of tokens a recompute-per-
block scheme (keep only hook_resid_pre, rerun one block before its backward)
would be the right trade. Cheap derived values (a norm's output
normalized·w + b, the RoPE cos/sin tables) are recomputed.

The backward then walks the blocks in reverse, mirroring `block_forward`:
    d resid_post ─┬─> mlp backward ─> ln2 backward ─┐
                  └──────────────── + ──────────────┴─> d resid_mid
    d resid_mid  ─┬─> attn backward ─> ln1 backward ─┐
                  └──────────────── + ───────────────┴─> d resid_pre
Each op's backward is in ops_backward.py. Hooks are treated as the identity:
the gradient "at" a hook point is ∂metric/∂(the activation at that point),
holding the forward's computation of everything upstream fixed. Hooks that
were active during the forward (fwd_hooks) change the recorded activations
but the backward still differentiates the unhooked graph through them.

Gradients of parameters are reported under minillm's documented names
(docs/hooks.md, "Parameters"): `blocks.l.attn.W_Q` [h, d, e], `blocks.l.mlp.W_in` [d, m], ...
With tied embeddings, `embed.W_E`'s gradient is the sum of its two uses: the
input lookup and the unembedding W_U = W_Eᵀ (and `unembed.W_U`'s gradient is
that same array, transposed).

Backward hooks: functions registered with `model.hooks(bwd_hooks=[(name, fn)])`
(or `model.run_with_hooks(tokens, bwd_hooks=..., metric=...)`) are called as
fn(grad, hook) with each of these activation gradients once the pass is done,
last hook first, as TransformerLens calls its backward hooks.

Works for both families and for float32 and float64 (the dtype of the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from minillm import ops
from minillm.errors import MinillmError
from minillm.grad import ops_backward as B
from minillm.hooked_model import HookedModel

if TYPE_CHECKING:
    from minillm.interp.metrics import Metric

# --- the result --------------------------------------------------------------------------------


@dataclass
class Gradients:
    """What `backward` returns.

    value: the metric.  logits: [b, p, V] from the forward.
    cache: the forward's activations {hook name: array}.
    act_grads: {hook name: ∂metric/∂activation}, same shapes as the cache.
    params: a parameter tree shaped like the model's, holding gradients
        (None if `params=False`); read it by name with `grad(...)`.
    """

    value: float
    logits: np.ndarray
    cache: dict[str, np.ndarray]
    act_grads: dict[str, np.ndarray]
    params: HookedModel | None = field(default=None, repr=False)

    def grad(self, name: str) -> np.ndarray:
        """The gradient of a hook point or a parameter, by its minillm name."""
        if name in self.act_grads:
            return self.act_grads[name]
        if self.params is not None:
            try:
                return self.params.get_parameter(name)
            except MinillmError:
                pass
        hint = "" if self.params is not None else (
            "; parameter gradients were not computed: call backward(..., params=True)")
        raise MinillmError(
            f"no gradient named {name!r}: it is neither a recorded hook point "
            f"(e.g. 'blocks.0.hook_resid_pre') nor a parameter (e.g. 'blocks.0.attn.W_Q'){hint}"
        )

    def named_grads(self) -> dict[str, np.ndarray]:
        """{documented parameter name: gradient}, like model.named_parameters()."""
        if self.params is None:
            raise MinillmError("parameter gradients were not computed; call backward(..., params=True)")
        return dict(self.params.named_parameters())

    def hf_grads(self) -> dict[str, np.ndarray]:
        """{Hugging Face parameter name: gradient}, in HF's layout (as torch's p.grad).

        A tied embedding appears once, under the embedding's name, holding the
        sum of both uses (as torch reports it).
        """
        from minillm.checkpoints.hf import model_entries, to_hf

        g = self.params
        if g is None:
            raise MinillmError("parameter gradients were not computed; call backward(..., params=True)")
        return {key: to_hf(get(), layout) for key, _, get, layout in model_entries(g)}


# --- the backward pass -------------------------------------------------------------------------


def record_forward(model: HookedModel, tokens, attention_mask=None, fwd_hooks=()):
    """The forward pass, storing what the backward needs.   -> (logits [b, p, V], cache)

    This is `model.run_with_cache` itself (so the numbers are exactly the
    forward's), skipping `hook_attn_scores` (the pattern is enough for the
    softmax's backward) and the large optional `hook_result`.
    """
    names = [n for n in model.hook_names() if not n.endswith(("hook_result", "hook_attn_scores"))]
    logits, cache = model.run_with_cache(tokens, names_filter=names,
                                         attention_mask=attention_mask, fwd_hooks=fwd_hooks)
    return logits, dict(cache)


def backward(
    model: HookedModel,
    tokens,
    metric: Metric,  # minillm.interp.metrics.Metric: .value(logits) and .grad(logits)
    attention_mask=None,
    params: bool = True,
    fwd_hooks=(),
) -> Gradients:
    """Forward, then gradients of `metric` w.r.t. every hook activation (and every parameter).

    tokens: ids [b, p] or text. metric: a `minillm.interp.metrics.Metric`
    (`logit_diff`, `log_prob`, `logit`, `kl_to`, `cross_entropy`, ...): its
    `value(logits)` is reported and its `grad(logits)` seeds the backward pass.
    params=False skips the weight gradients (about half the work and all of
    their memory): enough for attribution patching and gradient importance.
    """
    tokens = model.as_tokens(tokens)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    if attention_mask is None:  # a left-padded batch: the mask the forward pass infers
        attention_mask = model.infer_attention_mask(tokens)
    logits, cache = record_forward(model, tokens, attention_mask, fwd_hooks)
    if not (hasattr(metric, "value") and hasattr(metric, "grad")):
        raise MinillmError(f"backward needs a metric from minillm.interp.metrics (with .value and "
                           f".grad), got {type(metric).__name__}")
    value, dlogits = metric.value(logits), np.asarray(metric.grad(logits))
    if dlogits.shape != logits.shape:
        raise MinillmError(f"the metric returned a gradient of shape {dlogits.shape}; it must "
                           f"match the logits {logits.shape}")
    run = _Backward(model, tokens, cache, attention_mask, params)
    run.all(dlogits.astype(model.dtype, copy=False))
    if model.hooks.has_backward_hooks:
        model.hooks.fire_backward(run.grads)  # bwd_hooks: fn(grad, hook), last hook first
    return Gradients(value, logits, cache, run.grads, run.pgrads)


class _Backward:
    """One backward pass: walks the model in reverse, filling `grads` and `pgrads`."""

    def __init__(self, model, tokens, cache, attention_mask, params: bool):
        self.model, self.cfg, self.cache, self.tokens = model, model.cfg, cache, tokens
        self.need_dW = params
        self.grads: dict[str, np.ndarray] = {}
        # Parameter gradients live in a parameter tree like the model's own, so the
        # documented names (W_Q, W_in, ...) are views into them, exactly as for weights.
        self.pgrads = HookedModel(model.cfg, model.dtype, name="grads") if params else None
        mask = model.full_mask(attention_mask, tokens.shape, None)  # [b, p] or None
        self.positions = model.position_ids(mask, 0, tokens.shape)  # [b, p]
        # cos/sin per layer, recomputed: cheap, and the same function as the forward's
        self.ropes = model.rope_tables(self.positions)
        self.centre = self.cfg.layer_norm

    def all(self, dlogits: np.ndarray) -> None:
        model, c, g = self.model, self.cache, self.grads
        g["hook_logits"] = dlogits
        if self.cfg.final_softcap is not None:  # logits = c · tanh(raw / c)
            dlogits = B.softcap_backward(dlogits, c["hook_logits"], self.cfg.final_softcap)
        # logits = ln_final(x) @ W_U
        x_final = self.norm_output(model.ln_final, "ln_final")
        dx, dW_U = B.unembed_backward(dlogits, x_final, model.unembed.W_U, self.need_dW)
        d_resid = self.norm(dx, model.ln_final, "ln_final", self.pgrads and self.pgrads.ln_final,
                            c[f"blocks.{self.cfg.n_layers - 1}.hook_resid_post"])
        for l in reversed(range(self.cfg.n_layers)):
            d_resid = self.block(l, d_resid)
        # x = W_E[tokens] (· √d for Gemma) (+ W_pos[positions])
        g["hook_embed"] = d_resid
        if model.pos_embed is not None:
            g["hook_pos_embed"] = d_resid
        if self.need_dW:
            p = self.pgrads
            d_embed = d_resid if model.embed_scale is None else d_resid * model.embed_scale
            p.embed.W_E = B.embedding_backward(d_embed, self.tokens, self.cfg.d_vocab)
            if model.pos_embed is not None:
                p.pos_embed.W_pos = B.embedding_backward(d_resid, self.positions, self.cfg.n_ctx)
            if self.cfg.tie_embeddings:
                p.embed.W_E += dW_U.T  # the same matrix, used a second time as W_U = W_Eᵀ
            else:
                p.unembed.W_U = dW_U

    def norm_output(self, norm, name) -> np.ndarray:
        """Recompute a norm's output normalized · gain (+ b) from the stored hook_normalized."""
        return norm.apply(self.cache[f"{name}.hook_normalized"])

    def sublayer_input(self, norm, name, raw) -> np.ndarray:
        """What a sublayer read: its norm's output, or the raw stream where it has no norm."""
        return raw if norm is None else self.norm_output(norm, name)

    def norm(self, dout, norm, name, pnorm, x_in) -> np.ndarray:
        """Backward through a norm (the identity if `norm` is None): d output -> d input."""
        if norm is None:
            return dout
        scale = self.cache[f"{name}.hook_scale"]
        n_in = x_in - x_in.mean(axis=-1, keepdims=True) if self.centre else x_in  # [..., n]
        dx, dw, db, dy, d_scale = B.norm_backward(dout, n_in, scale, norm.gain, self.centre)
        self.grads[f"{name}.hook_normalized"] = dy
        self.grads[f"{name}.hook_scale"] = d_scale
        if pnorm is not None:
            pnorm.w[...] = dw  # d(offset + w)/dw = 1
            if pnorm.b is not None:
                pnorm.b[...] = db
        return dx

    def block(self, l: int, d_resid: np.ndarray) -> np.ndarray:
        """Backward through block l.   d resid_post [b, p, d] -> d resid_pre [b, p, d]

        resid_post = resid_mid + mlp_out, resid_mid = resid_pre + attn_out, and
        the MLP reads resid_mid (resid_pre in a parallel block).
        """
        g, c, blk, name = self.grads, self.cache, self.model.blocks[l], f"blocks.{l}"
        pblk = self.pgrads.blocks[l] if self.need_dW else None
        parallel = self.cfg.parallel_residual
        g[f"{name}.hook_resid_post"] = d_resid
        d_mlp_in = 0.0
        if blk.mlp is not None:  # (attention-only blocks: resid_post = resid_pre + attn_out)
            g[f"{name}.hook_mlp_out"] = d_resid
            mlp_in = c[f"{name}.hook_resid_pre" if parallel else f"{name}.hook_resid_mid"]
            d_ln2 = self.mlp(l, blk.mlp, pblk and pblk.mlp, d_resid, mlp_in)
            d_mlp_in = self.norm(d_ln2, blk.ln2, f"{name}.ln2", pblk and pblk.ln2, mlp_in)
            if not parallel:
                d_resid = d_resid + d_mlp_in
            g[f"{name}.hook_resid_mid"] = d_resid
        g[f"{name}.hook_attn_out"] = d_resid
        x = c[f"{name}.hook_resid_pre"]
        d_ln1 = self.attention(l, blk.attn, pblk and pblk.attn, d_resid, x)
        d_resid = d_resid + self.norm(d_ln1, blk.ln1, f"{name}.ln1", pblk and pblk.ln1, x)
        if parallel:
            d_resid = d_resid + d_mlp_in
        g[f"{name}.hook_resid_pre"] = d_resid
        return d_resid

    def mlp(self, l, mlp, pmlp, d_out, stream) -> np.ndarray:
        """Backward of the MLP (and its ln2_post).   d mlp_out [b, p, d] -> d (MLP input) [b, p, d]"""
        g, c, name = self.grads, self.cache, f"blocks.{l}.mlp"
        blk, pblk = self.model.blocks[l], self.pgrads.blocks[l] if self.need_dW else None
        x = self.sublayer_input(blk.ln2, f"blocks.{l}.ln2", stream)  # the MLP's input
        post, pre = c[f"{name}.hook_post"], c[f"{name}.hook_pre"]
        if blk.ln2_post is not None:  # mlp_out = ln2_post(raw): recompute raw as the forward did
            raw = ops.linear(post, mlp.W_out, mlp.b_out)
            d_out = self.norm(d_out, blk.ln2_post, f"blocks.{l}.ln2_post",
                              pblk and pblk.ln2_post, raw)
        dpost, dW_out, db_out = B.linear_backward(d_out, post, mlp.W_out, mlp.b_out is not None,
                                                  self.need_dW)
        g[f"{name}.hook_post"] = dpost
        if mlp.gated:  # post = act(pre) * pre_linear, [pre, pre_linear] = x @ W_gate_in
            dpre, dpre_lin = B.gated_mlp_backward(dpost, pre, c[f"{name}.hook_pre_linear"],
                                                  self.cfg.act_fn)
            g[f"{name}.hook_pre"], g[f"{name}.hook_pre_linear"] = dpre, dpre_lin
            d_gate_in = np.concatenate([dpre, dpre_lin], axis=-1)  # [b, p, 2m]
        else:  # post = act(pre), pre = x @ W_in + b_in
            d_gate_in = B.ACTIVATION_BACKWARDS[self.cfg.act_fn](dpost, pre)
            g[f"{name}.hook_pre"] = d_gate_in
        dx, dW_gate_in, db_in = B.linear_backward(d_gate_in, x, mlp.W_gate_in,
                                                  mlp.b_in is not None, self.need_dW)
        if pmlp is not None:
            pmlp.W_gate_in, pmlp.W_out = dW_gate_in, dW_out
            pmlp.b_in, pmlp.b_out = db_in, db_out
        return dx

    def attention(self, l, attn, pattn, d_out, stream) -> np.ndarray:
        """Backward of attention (and its ln1_post).   d attn_out [b, p, d] -> d (its input) [b, p, d]"""
        g, c, name = self.grads, self.cache, f"blocks.{l}.attn"
        cfg, blk = self.cfg, self.model.blocks[l]
        pblk = self.pgrads.blocks[l] if self.need_dW else None
        h, kv, e = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        z, pattern = c[f"{name}.hook_z"], c[f"{name}.hook_pattern"]  # [b, p, h, e], [b, h, p, P]
        b, p = z.shape[:2]
        if blk.ln1_post is not None:  # attn_out = ln1_post(raw): recompute raw as the forward did
            raw = ops.linear(z.reshape(b, p, h * e), attn.W_O_flat, attn.b_O)
            d_out = self.norm(d_out, blk.ln1_post, f"blocks.{l}.ln1_post",
                              pblk and pblk.ln1_post, raw)
        # attn_out = z (flattened heads) @ W_O + b_O
        dz, dW_O, db_O = B.linear_backward(d_out, z.reshape(b, p, h * e), attn.W_O_flat,
                                           attn.b_O is not None, self.need_dW)
        # attn_out = Σ_h result[:, :, h] + b_O: every head's result gets d attn_out
        g[f"{name}.hook_result"] = np.broadcast_to(d_out[:, :, None, :], (b, p, h, d_out.shape[-1]))
        dz = g[f"{name}.hook_z"] = dz.reshape(b, p, h, e)
        # z = pattern @ v; pattern = softmax(scores); scores = q·k/√e (soft-capped, masked)
        rope = self.ropes[l]
        q = c[f"{name}.hook_rot_q" if rope else f"{name}.hook_q"]  # [b, p, h, e]
        k = c[f"{name}.hook_rot_k" if rope else f"{name}.hook_k"].transpose(0, 2, 1, 3)
        v = c[f"{name}.hook_v"].transpose(0, 2, 1, 3)  # [b, kv, p, e]
        dpattern, dv = B.attention_mix_backward(dz, pattern, v)
        g[f"{name}.hook_pattern"] = dpattern
        dscores = g[f"{name}.hook_attn_scores"] = B.softmax_backward(dpattern, pattern)
        if cfg.attn_softcap is not None:  # capped = c · tanh(raw / c), raw recomputed
            capped = ops.softcap(ops.attention_scores(q, k, cfg.query_pre_attn_scalar),
                                 cfg.attn_softcap)
            dscores = B.softcap_backward(dscores, capped, cfg.attn_softcap)
        dq, dk = B.attention_scores_backward(dscores, q, k, cfg.query_pre_attn_scalar)
        dk, dv = dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)  # [b, p, kv, e]
        if rope:
            g[f"{name}.hook_rot_q"], g[f"{name}.hook_rot_k"] = dq, dk
            dq, dk = B.rope_backward(dq, *rope), B.rope_backward(dk, *rope)
        if attn.q_norm is not None:  # q/k norms: per head, or over the whole projection
            pa = pattn
            shape_q, shape_k = (b, p, h * e), (b, p, kv * e)
            if cfg.qk_norm == "head":
                shape_q, shape_k = dq.shape, dk.shape
            dq = self.norm(dq.reshape(shape_q), attn.q_norm, f"{name}.q_norm", pa and pa.q_norm,
                           c[f"{name}.hook_q"].reshape(shape_q)).reshape(b, p, h, e)
            dk = self.norm(dk.reshape(shape_k), attn.k_norm, f"{name}.k_norm", pa and pa.k_norm,
                           c[f"{name}.hook_k"].reshape(shape_k)).reshape(b, p, kv, e)
        g[f"{name}.hook_q"], g[f"{name}.hook_k"], g[f"{name}.hook_v"] = dq, dk, dv
        # [q, k, v] = x @ W_QKV + b_QKV
        dqkv = np.concatenate([dq.reshape(b, p, h * e), dk.reshape(b, p, kv * e),
                               dv.reshape(b, p, kv * e)], axis=-1)  # [b, p, (h + 2kv)·e]
        x = self.sublayer_input(blk.ln1, f"blocks.{l}.ln1", stream)  # attention's input
        dx, dW_QKV, db_QKV = B.linear_backward(dqkv, x, attn.W_QKV, attn.b_QKV is not None,
                                               self.need_dW)
        if pattn is not None:
            pattn.W_QKV, pattn.W_O_flat, pattn.b_QKV, pattn.b_O = dW_QKV, dW_O, db_QKV, db_O
        return dx
