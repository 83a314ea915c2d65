# %% [markdown]
# # Lesson 02: The forward pass by hand
#
# We recompute one block of SmolLM2 from its weights with nothing but NumPy and minillm's
# pure functions (`minillm.ops`), compare every intermediate with what the model cached
# (`run_with_cache`), then chain all 30 blocks and check that our hand-made forward pass
# predicts the same next token. The exercises ask you to write those functions yourself:
# once you have, the script runs on YOUR functions, and the errors below are yours.
#
# Another model: `MINILLM_LESSON_MODEL=tinyllama-1.1b python lesson.py` (Llama family; the
# block recomputation below is written for Llama-family models: RMSNorm, RoPE, SwiGLU).

# %%
import os

import numpy as np

import minillm
from minillm import ops
from minillm.course import show, student_version

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
cfg = model.cfg
print(model)
print(f"eps = {cfg.eps}, rope_theta = {cfg.rope_theta}, d_head = {cfg.d_head}, "
      f"{cfg.n_heads} query heads share {cfg.n_kv_heads} kv-heads")
if cfg.family != "llama":
    raise SystemExit("this lesson recomputes a Llama-family block (RMSNorm, RoPE, SwiGLU); "
                     "use smollm2-135m or tinyllama-1.1b")

prompt = "The quick brown fox jumps over the lazy dog, because the dog was"
tokens = model.to_tokens(prompt)
logits, cache = model.run_with_cache(tokens)
print(model.to_str_tokens(tokens[0]))

# %% [markdown]
# ## 1. One block, step by step
#
# `x = resid_pre`; `resid_mid = x + Attn(RMSNorm₁(x))`; `resid_post = resid_mid + MLP(RMSNorm₂(resid_mid))`.
# After each step we print the relative error against the cached activation.

# %%
L = 3
blk = model.blocks[L]
errors: dict[str, float] = {}
inv_freq = ops.rope_inv_freq(cfg.d_head, cfg.rope_theta, cfg.rope_scaling)
g = cfg.n_heads // cfg.n_kv_heads


def _reference_rms_norm(x, w, eps):  # [..., d] -> [..., d]
    _, scale = ops.rms_norm_parts(x, eps)  # sqrt(mean(x²) + eps)   [..., 1]
    return x / scale * w


def _reference_layer_norm(x, w, b, eps):  # [..., d] -> [..., d]
    centred, scale = ops.layer_norm_parts(x, eps)  # x − mean, sqrt(var + eps)
    return centred / scale * w + b


def _reference_rope(x, positions, theta):  # [b, p, heads, e], positions [p] -> same
    cos, sin = ops.rope_cos_sin(np.asarray(positions)[None], ops.rope_inv_freq(x.shape[-1], theta,
                                                                               cfg.rope_scaling), x.dtype)
    return ops.apply_rope(x, cos, sin)  # x·cos + rotate_half(x)·sin


def _reference_pattern(q, k):  # [b, p, h, e], [b, p, kv, e] -> [b, h, p, p]
    scores = np.einsum("bqhe,bkhe->bhqk", q, np.repeat(k, q.shape[2] // k.shape[2], axis=2))
    future = np.triu(np.ones(scores.shape[-2:], dtype=bool), k=1)
    return ops.softmax(np.where(future, -np.inf, scores / np.sqrt(q.shape[-1])))


def _reference_attention(x, W_Q, W_K, W_V, W_O, theta):  # [b, p, d] -> [b, p, d]
    positions = np.arange(x.shape[1])
    q = rope(np.einsum("bpd,hde->bphe", x, W_Q), positions, theta)
    k = rope(np.einsum("bpd,kde->bpke", x, W_K), positions, theta)
    v = np.repeat(np.einsum("bpd,kde->bpke", x, W_V), W_Q.shape[0] // W_K.shape[0], axis=2)
    return np.einsum("bphe,hed->bpd", np.einsum("bhqk,bkhe->bqhe", attention_pattern(q, k), v), W_O)


def _reference_mlp(x, W_gate, W_in, W_out):  # [b, p, d] -> [b, p, d]
    return (ops.silu(x @ W_gate) * (x @ W_in)) @ W_out


def _reference_block(x, blk, eps, theta):  # resid_pre -> resid_post
    a, m = blk.attn, blk.mlp
    x = x + attention(rms_norm(x, blk.ln1.w, eps), a.W_Q, a._W_K, a._W_V, a.W_O, theta)
    return x + swiglu_mlp(rms_norm(x, blk.ln2.w, eps), m.W_gate, m.W_in, m.W_out)


# Your exercises once implemented (until then, the references above; they call each other
# through these names, so your rope is used inside the reference attention, and so on).
rms_norm = student_version(2, "rms_norm", _reference_rms_norm)
layer_norm = student_version(2, "layer_norm", _reference_layer_norm)
rope = student_version(2, "rope", _reference_rope)
attention_pattern = student_version(2, "attention_pattern", _reference_pattern)
attention = student_version(2, "attention", _reference_attention)
swiglu_mlp = student_version(2, "swiglu_mlp", _reference_mlp)
block = student_version(2, "block", _reference_block)


def compare(name: str, ours: np.ndarray) -> np.ndarray:
    ref = cache[f"blocks.{L}.{name}"]
    errors[name] = float(np.abs(ours - ref).max() / np.abs(ref).max())
    print(f"{name:24} {str(ours.shape):18} relative error {errors[name]:.1e}")
    return ours


x = cache[f"blocks.{L}.hook_resid_pre"]  # [1, p, d]
ones = np.ones(cfg.d_model, x.dtype)
xn = compare("ln1.hook_normalized", rms_norm(x, ones, cfg.eps)) * blk.ln1.w  # [1, p, d]
q = compare("attn.hook_q", np.einsum("bpd,hde->bphe", xn, blk.attn.W_Q))  # [1, p, h, e]
k = compare("attn.hook_k", np.einsum("bpd,kde->bpke", xn, blk.attn._W_K))  # [1, p, kv, e]
v = compare("attn.hook_v", np.einsum("bpd,kde->bpke", xn, blk.attn._W_V))  # [1, p, kv, e]
positions = np.arange(tokens.shape[1])  # [p]
q = compare("attn.hook_rot_q", rope(q, positions, cfg.rope_theta))  # x·cos + rotate_half(x)·sin
k = compare("attn.hook_rot_k", rope(k, positions, cfg.rope_theta))
pattern = compare("attn.hook_pattern", attention_pattern(q, k))  # [1, h, p, p]
z = compare("attn.hook_z", np.einsum("bhqk,bkhe->bqhe", pattern, np.repeat(v, g, axis=2)))
a = blk.attn
attn_out = compare("hook_attn_out", attention(xn, a.W_Q, a._W_K, a._W_V, a.W_O, cfg.rope_theta))
mid = compare("hook_resid_mid", x + attn_out)
xn2 = compare("ln2.hook_normalized", rms_norm(mid, ones, cfg.eps)) * blk.ln2.w
post = compare("mlp.hook_post", ops.silu(xn2 @ blk.mlp.W_gate) * (xn2 @ blk.mlp.W_in))  # [1, p, m]
mlp_out = compare("hook_mlp_out", swiglu_mlp(xn2, blk.mlp.W_gate, blk.mlp.W_in, blk.mlp.W_out))
compare("hook_resid_post", block(x, blk, cfg.eps, cfg.rope_theta))  # the whole block at once

from minillm.views.figures import subplots  # noqa: E402

fig, ax = subplots(figsize=(8, 3.5))
ax.bar(range(len(errors)), [max(e, 1e-12) for e in errors.values()])
ax.set_yscale("log")
ax.set_xticks(range(len(errors)), list(errors), rotation=60, ha="right", fontsize=7)
ax.set_ylabel("max |ours − minillm| / max |minillm|")
ax.set_title(f"{MODEL} block {L} by hand: every step agrees to float32 rounding")
show(fig, "block_by_hand_errors.png")

# %% [markdown]
# ## 2. What RoPE does to a score
#
# Rotating q by angle t·ω and k by s·ω makes their dot product depend on t − s only. Take
# one real query vector and use it as the key as well: its score with itself at distance
# Δ = t − s falls and oscillates as Δ grows, because the 32 frequency pairs fall out of
# phase (the fast ones first).

# %%
q0 = cache[f"blocks.{L}.attn.hook_q"][0, -1, 0]  # [e]: head 0's query at the last position
deltas = np.arange(0, 2048, 4)
c, s = ops.rope_cos_sin(deltas[None], inv_freq, np.float64)  # [1, n, 1, e]
rotated = ops.apply_rope(np.broadcast_to(q0, (1, len(deltas), 1, cfg.d_head)), c, s)[0, :, 0]  # [n, e]
self_scores = rotated @ q0 / np.sqrt(cfg.d_head)  # key at position 0, query at position Δ
fig, ax = subplots(figsize=(7, 3.2))
ax.plot(deltas, self_scores)
ax.set_xlabel("relative distance Δ (query position − key position)")
ax.set_ylabel("score of q with itself")
ax.set_title(f"RoPE (θ = {cfg.rope_theta:g}): the same vectors, further apart")
show(fig, "rope_distance.png")
print(f"wavelengths of the rotary pairs, in tokens: fastest {2 * np.pi / inv_freq[0]:.1f}, "
      f"slowest {2 * np.pi / inv_freq[-1]:.0f}")

# %% [markdown]
# ### LayerNorm on the same stream
#
# GPT-2 normalises with LayerNorm, which also subtracts the mean over d. How different are
# the two norms on SmolLM2's stream? Your `layer_norm` (exercise 2) against your `rms_norm`
# on block L's input, both without gain and bias: they differ by exactly the part of each
# vector along (1, 1, …, 1), which is small unless the mean of its coordinates is large.

# %%
ln = layer_norm(x, ones, np.zeros_like(ones), cfg.eps)  # [1, p, d]
rn = rms_norm(x, ones, cfg.eps)
gap = np.abs(ln - rn).max(axis=-1) / np.abs(rn).max(axis=-1)  # [1, p]
print(f"LayerNorm vs RMSNorm of blocks.{L}.hook_resid_pre: max relative gap per position from "
      f"{gap.min():.1e} to {gap.max():.1e}")

# %% [markdown]
# ## 3. All the blocks: our forward pass against the model's
#
# Chain your `block` through every block, starting from the embedding rows, then apply
# the final RMSNorm and the unembedding, and compare the prediction with the model's.
# The right panel shows the size of the residual stream that each RMSNorm divides away.

# %%
x = model.embed.W_E[tokens]  # [1, p, d]
resid_err = []
for layer, b in enumerate(model.blocks):
    x = block(x, b, cfg.eps, cfg.rope_theta)
    ref = cache[f"blocks.{layer}.hook_resid_post"]
    resid_err.append(float(np.abs(x - ref).max() / np.abs(ref).max()))
our_logits = rms_norm(x[:, -1], model.ln_final.w, cfg.eps) @ model.unembed.W_U  # [1, V]
print(f"final logits: max |ours − model| = {np.abs(our_logits - logits[:, -1]).max():.2e}")
for name, lg in (("ours", our_logits[0]), ("model", logits[0, -1])):
    top = np.argsort(-lg)[:5]
    print(f"{name:6} top-5 next tokens:", [model.to_string([int(i)]) for i in top])
print("resid norm per layer at the last position:",
      [round(float(np.linalg.norm(cache[f'blocks.{i}.hook_resid_post'][0, -1])), 1)
       for i in range(0, cfg.n_layers, 5)])

fig, axes = subplots(1, 2, figsize=(10, 3.5))
axes[0].semilogy(resid_err, marker=".")
axes[0].set_xlabel("layer")
axes[0].set_ylabel("relative error of resid_post")
axes[0].set_title("hand-made forward vs minillm")
scales = np.stack([cache[f"blocks.{i}.ln1.hook_scale"][0, :, 0] for i in range(cfg.n_layers)])  # [L, p]
im = axes[1].imshow(np.log10(scales), aspect="auto", cmap="viridis")
axes[1].set_xlabel("position")
axes[1].set_ylabel("layer")
axes[1].set_title("log10 rms of resid_pre (ln1's hook_scale)")
fig.colorbar(im, ax=axes[1])
show(fig, "full_forward.png")
