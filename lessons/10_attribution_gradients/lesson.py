# %% [markdown]
# # Lesson 10: Attribution patching and gradients
#
# Activation patching (lesson 09) asks "how much does the metric move if this component
# takes its value from the corrupted run?" and answers with one forward pass per component.
# Attribution patching answers all of them at once with a first-order Taylor expansion:
#
#     metric(clean, a ← a_corrupt) − metric(clean)  ≈  (a_corrupt − a_clean) · ∂metric/∂a
#
# so it needs the gradient of the metric with respect to every activation: a backward pass.
# We first take one block's backward apart (and check it against minillm's and against
# finite differences), then put attribution next to activation patching on the IOI pair and
# measure where the linear approximation breaks.
#
# Another model: `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os

import numpy as np

import minillm
from minillm import ops
from minillm.course import show, student_version
from minillm.grad import ops_backward as B
from minillm.grad.backward import backward
from minillm.interp import attribution as ap
from minillm.interp.metrics import logit_diff

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
cfg = model.cfg
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
NAME_POS = int(np.flatnonzero(clean[0] != corrupt[0])[0])  # the second name: ' John' vs ' Mary'
metric = logit_diff(model, " Mary", " John")  # logit(' Mary') − logit(' John') at the last position
print(f"{MODEL}: the prompts differ at position {NAME_POS} ({model.to_str_tokens(clean[0])[NAME_POS]!r} vs "
      f"{model.to_str_tokens(corrupt[0])[NAME_POS]!r})")


def _reference_mlp_backward(d_resid_post, resid_mid, blk, eps):  # -> d resid_mid [b, p, d]
    s = 1.0 / np.sqrt((resid_mid * resid_mid).mean(axis=-1, keepdims=True) + eps)
    u = resid_mid * s * blk.ln2.w  # the MLP's input
    pre, pre_linear = u @ blk.mlp.W_gate, u @ blk.mlp.W_in  # [b, p, m]
    dpost = linear_backward(d_resid_post, ops.silu(pre) * pre_linear, blk.mlp.W_out)[0]
    dpre, dpre_linear = B.gated_mlp_backward(dpost, pre, pre_linear)
    du = linear_backward(dpre, u, blk.mlp.W_gate)[0] + linear_backward(dpre_linear, u, blk.mlp.W_in)[0]
    return d_resid_post + rms_norm_backward(du, resid_mid, blk.ln2.w, eps)[0]


# Your exercises once implemented (until then, minillm's own backward functions, the answer
# key): every gradient this script computes by hand below is computed by YOUR functions.
rms_norm_backward = student_version(10, "rms_norm_backward", B.rms_norm_backward)
softmax_backward = student_version(10, "softmax_backward", B.softmax_backward)
linear_backward = student_version(10, "linear_backward", lambda dout, x, W: B.linear_backward(dout, x, W)[:2])
central_difference = student_version(10, "central_difference",
                                     lambda f, x, v, h: (f(x + h * v) - f(x - h * v)) / (2 * h))
mlp_backward = student_version(10, "mlp_backward", _reference_mlp_backward)
head_attribution = student_version(10, "head_attribution",
                                   lambda z_clean, z_corrupt, grad_z: ((z_corrupt - z_clean) * grad_z).sum(
                                       axis=(0, 1, 3)))

# %% [markdown]
# ## 1. One block's backward, by hand
#
# `minillm.grad.backward.backward` runs the forward with every activation cached, then walks the
# blocks in reverse. Here we redo the second half of block L (`resid_post = resid_mid +
# MLP(RMSNorm(resid_mid))`) and the attention softmax with the functions you write in the
# exercises (`linear_backward`, `rms_norm_backward`, `softmax_backward`; the gate's own
# backward is `minillm.grad.ops_backward.gated_mlp_backward`), starting from the gradient
# minillm found at `hook_resid_post`, and compare each intermediate gradient with minillm's
# at the same hook point. Last, your `mlp_backward` does the whole half-block in one call.

# %%
res = backward(model, clean, metric, params=False)  # activation gradients only
base = res.value  # the metric on the clean prompt
print(f"logit(' Mary') − logit(' John') on the clean prompt: {base:+.2f}")
L = min(21, cfg.n_layers - 1)
blk, c = model.blocks[L], res.cache
errors: dict[str, float] = {}


def compare(name: str, ours: np.ndarray, label: str = "") -> np.ndarray:
    ref = res.grad(f"blocks.{L}.{name}")
    label = label or name
    errors[label] = float(np.abs(ours - ref).max() / np.abs(ref).max())
    print(f"d {label:24} relative error {errors[label]:.1e}")
    return ours


if blk.mlp.gated:  # Llama family: SwiGLU MLP and RMSNorm (GPT-2: gelu_tanh_backward, layer_norm_backward)
    d_post = res.grad(f"blocks.{L}.hook_resid_post")  # [1, p, d]
    dpost, _ = linear_backward(d_post, c[f"blocks.{L}.mlp.hook_post"], blk.mlp.W_out)  # through W_out
    compare("mlp.hook_post", dpost)
    dpre, dpre_linear = B.gated_mlp_backward(dpost, c[f"blocks.{L}.mlp.hook_pre"],
                                             c[f"blocks.{L}.mlp.hook_pre_linear"])  # through silu(g) ⊙ up
    compare("mlp.hook_pre", dpre)
    compare("mlp.hook_pre_linear", dpre_linear)
    du = dpre @ blk.mlp.W_gate.T + dpre_linear @ blk.mlp.W_in.T  # u feeds two projections: add
    compare("ln2.hook_normalized", du * blk.ln2.w)
    dx, _ = rms_norm_backward(du, c[f"blocks.{L}.hook_resid_mid"], blk.ln2.w, cfg.eps)
    compare("hook_resid_mid", d_post + dx)  # skip connection + MLP branch
    compare("hook_resid_mid", mlp_backward(d_post, c[f"blocks.{L}.hook_resid_mid"], blk, cfg.eps),
            "resid_mid (mlp_backward)")
else:
    print("(the hand backward of the MLP half is written for the Llama family; skipped)")
d_pattern = res.grad(f"blocks.{L}.attn.hook_pattern")
compare("attn.hook_attn_scores", softmax_backward(d_pattern, c[f"blocks.{L}.attn.hook_pattern"]))

# %% [markdown]
# ### Finite differences: is the gradient right at all?
#
# Matching minillm only shows we agree with minillm. The independent test is a finite
# difference: push `resid_mid` of block L along a random unit direction v by ±h, run the
# model, and compare (metric(+h) − metric(−h)) / 2h with the gradient's prediction ∇·v.
# In float32 the agreement is best at a middle h: large h pays for the curvature (error ∝
# h²), small h for rounding in the metric (error ∝ ε/h). Your `central_difference`
# (exercise 4) computes the estimate from `f`, the metric as a function of `resid_mid`.

# %%
rng = np.random.default_rng(0)
v = rng.standard_normal(c[f"blocks.{L}.hook_resid_mid"].shape[1:]).astype(np.float32)  # [p, d]
v /= np.linalg.norm(v)
predicted = float((res.grad(f"blocks.{L}.hook_resid_mid")[0] * v).sum())  # ∇·v
hs = np.logspace(-3, 2, 4)


def f(resid_mid: np.ndarray) -> float:
    """The metric when blocks.L.hook_resid_mid is replaced by `resid_mid` [1, p, d]."""
    logits = model.run_with_hooks(clean, [(f"blocks.{L}.hook_resid_mid", lambda act, hook: resid_mid)],
                                  last_only=True)
    return float(metric(logits)[0])


fd = np.array([central_difference(f, c[f"blocks.{L}.hook_resid_mid"], v[None], float(h)) for h in hs])
fd_err = np.abs(fd - predicted) / abs(predicted)
for h, f_, e in zip(hs, fd, fd_err):
    print(f"h = {h:8.3g}: finite difference {f_:+.5f}, gradient {predicted:+.5f}, relative gap {e:.1e}")

from minillm.views.figures import subplots  # noqa: E402

fig, axes = subplots(1, 2, figsize=(11, 3.6))
axes[0].bar(range(len(errors)), [max(e, 1e-12) for e in errors.values()])
axes[0].set_yscale("log")
axes[0].set_xticks(range(len(errors)), list(errors), rotation=40, ha="right", fontsize=7)
axes[0].set_ylabel("relative error vs minillm.grad.backward")
axes[0].set_title(f"block {L} backward by hand (float32 rounding)", fontsize=9)
axes[1].loglog(hs, fd_err, marker="o")
axes[1].set_xlabel("finite-difference step h (|v| = 1)")
axes[1].set_ylabel("|FD − ∇·v| / |∇·v|")
axes[1].set_title(f"central difference at blocks.{L}.hook_resid_mid", fontsize=9)
show(fig, "backward_by_hand.png")

# %% [markdown]
# Where does the gradient of the logit difference live? The norm of ∂metric/∂resid_pre at
# each layer and position. The two names (both occurrences) and the final position stand
# out; the whole first row is large because the stream is small there (the embedding), and
# RMSNorm's 1/rms amplifies any change to a small vector.

# %%
grad_norm = np.stack([np.linalg.norm(res.grad(f"blocks.{l}.hook_resid_pre")[0], axis=-1)
                      for l in range(cfg.n_layers)])  # [L, p]
fig, ax = subplots(figsize=(8, 4.5))
im = ax.imshow(np.log10(grad_norm + 1e-12), aspect="auto", cmap="viridis")
ax.set_xticks(range(clean.shape[1]), model.to_str_tokens(clean[0]), rotation=60, fontsize=7)
ax.set_ylabel("layer")
ax.set_title("log10 |∂ logit diff / ∂ resid_pre|", fontsize=9)
fig.colorbar(im, ax=ax)
show(fig, "gradient_norms.png")

# %% [markdown]
# ## 2. Attribution patching vs activation patching
#
# The estimate for every component needs the clean run's activations and gradients (we
# have them: `res`) and the corrupted run's activations (one forward). For a head it is
# Σ_{p,e} (z_corrupt − z_clean)·∂metric/∂z over `hook_z`; for the residual stream at a
# position, Σ_d over `hook_resid_pre`. `ap.attribution_patching(model, clean, corrupt,
# metric)` does exactly this in one call (its own backward included); we reuse `res` to
# save a backward pass. The measured answer costs a run per component, so we sweep a small
# part: the heads of the three layers with the largest attribution, and the residual
# stream at the second name every fifth layer (batched: a few dozen runs).

# %%
from minillm.interp.results import LabelledArray  # noqa: E402

names = [f"blocks.{l}.{hook}" for l in range(cfg.n_layers) for hook in ("attn.hook_z", "hook_resid_pre")]
corrupt_logits, corrupt_cache = model.run_with_cache(corrupt, names_filter=names)
corrupt_cache = dict(corrupt_cache)
print(f"logit difference: clean {base:+.2f}, corrupted {metric(corrupt_logits)[0]:+.2f}")


def attribution(hook: str, axes: tuple) -> np.ndarray:
    """(a_corrupt − a_clean)·grad summed over all but (layer, component).   -> [L, n]"""
    if hook == "attn.hook_z":  # your exercise 6, layer by layer
        return np.stack([head_attribution(c[f"blocks.{l}.{hook}"], corrupt_cache[f"blocks.{l}.{hook}"],
                                          res.grad(f"blocks.{l}.{hook}")) for l in range(cfg.n_layers)])
    return np.stack([((corrupt_cache[f"blocks.{l}.{hook}"] - c[f"blocks.{l}.{hook}"])
                      * res.grad(f"blocks.{l}.{hook}")).sum(axis=axes) for l in range(cfg.n_layers)])


layer_labels = [str(l) for l in range(cfg.n_layers)]
attr = {
    "heads": LabelledArray(attribution("attn.hook_z", (0, 1, 3)), ("layer", "head"),
                           (layer_labels, range(cfg.n_heads)), title="attribution patching: heads"),
    "resid_pre": LabelledArray(attribution("hook_resid_pre", (0, 2)), ("layer", "pos"),
                               (layer_labels, range(clean.shape[1])),
                               title="attribution patching: resid_pre"),
}
head_attr = attr["heads"].values  # [L, h]
top_layers = sorted(np.argsort(-np.abs(head_attr).sum(axis=1))[:3].tolist())
order = np.argsort(-np.abs(head_attr).ravel())[:5]
print("largest head attributions:",
      ", ".join(f"L{i // cfg.n_heads}.H{i % cfg.n_heads} {head_attr.ravel()[i]:+.2f}" for i in order))
act_heads = ap.activation_patching(model, clean, corrupt, metric, "heads", layers=top_layers, batch_size=27)
cmp_heads = ap.compare(attr["heads"], act_heads)
resid_layers = list(range(0, cfg.n_layers, 5))
act_resid = ap.activation_patching(model, clean, corrupt, metric, "resid_pre", layers=resid_layers,
                                   indices=[NAME_POS], batch_size=len(resid_layers))
cmp_resid = ap.compare(attr["resid_pre"], act_resid)
print(f"heads (layers {top_layers}): r = {cmp_heads.r:.3f}, slope {cmp_heads.slope:.2f}, n = {cmp_heads.n}")
print(f"resid_pre at the name position: r = {cmp_resid.r:.3f}, slope {cmp_resid.slope:.2f}")
print("resid_pre at the name, layer: activation vs attribution")
for l in resid_layers:
    print(f"  {l:2d}: {act_resid.values[l, NAME_POS]:+7.2f}  {attr['resid_pre'].values[l, NAME_POS]:+7.2f}")

fig, axes = subplots(1, 3, figsize=(15, 4.2))
a_sub, m_sub = head_attr[top_layers], act_heads.values[top_layers]
lim = float(np.abs(np.concatenate([a_sub, m_sub])).max())
for ax, vals, title in ((axes[0], a_sub, "attribution (linear estimate)"),
                        (axes[1], m_sub, "activation patching (measured)")):
    im = ax.imshow(vals, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(top_layers)), [f"layer {l}" for l in top_layers])
    ax.set_xlabel("head")
    ax.set_title(f"heads: {title}", fontsize=9)
    fig.colorbar(im, ax=ax)
axes[2].scatter(a_sub.ravel(), m_sub.ravel(), s=14, label="heads")
ra, rm = attr["resid_pre"].values[resid_layers, NAME_POS], act_resid.values[resid_layers, NAME_POS]
axes[2].scatter(ra, rm, s=14, marker="s", color="tab:red", label="resid_pre at the name")
lo, hi = min(a_sub.min(), m_sub.min(), ra.min(), rm.min()), max(a_sub.max(), m_sub.max(), ra.max(), rm.max())
axes[2].plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
axes[2].set_xlabel("attribution")
axes[2].set_ylabel("activation patching")
axes[2].set_title(f"heads r = {cmp_heads.r:.2f}; resid at the name r = {cmp_resid.r:.2f}", fontsize=9)
axes[2].legend(fontsize=8)
show(fig, "attribution_vs_activation.png")

# %% [markdown]
# ## 3. Where the linear approximation fails
#
# The estimate is the tangent at α = 0 of the curve α ↦ metric(clean, a ← a_clean + α·Δ),
# Δ = a_corrupt − a_clean; activation patching is the curve at α = 1. We trace the curve for
# three patches, all in one batched forward pass: the residual stream at the second name in
# layer 0, MLP0's output there, and the top attention head. A straight line means the
# attribution is right; a curve that stays flat and then drops is saturation: the model is
# confident about the name, so a small push does nothing — until the push is large enough to
# change which name it is.

# %%
top_l, top_h = int(order[0] // cfg.n_heads), int(order[0] % cfg.n_heads)
patches = [("resid_pre, layer 0, name", "blocks.0.hook_resid_pre", (NAME_POS,)),
           ("mlp_out, layer 0, name", "blocks.0.hook_mlp_out", (NAME_POS,)),
           (f"head L{top_l}.H{top_h} (all positions)", f"blocks.{top_l}.attn.hook_z", (slice(None), top_h))]
_, extra = model.run_with_cache(corrupt, names_filter=["blocks.0.hook_mlp_out"])
corrupt_cache.update(extra)
alphas = np.array([0.25, 0.5, 0.75, 1.0], np.float32)  # α = 0 is the clean run: base
n = len(alphas)


def interpolate(k: int, name: str, index: tuple):
    delta = corrupt_cache[name][(0, *index)] - res.cache[name][(0, *index)]

    def hook(act, point):
        act = act.copy()
        for j, a in enumerate(alphas):
            act[(k * n + j, *index)] += a * delta
        return act

    return name, hook


logits = model.run_with_hooks(np.repeat(clean, len(patches) * n, axis=0),
                              [interpolate(k, name, idx) for k, (_, name, idx) in enumerate(patches)],
                              last_only=True)
curves = np.array([metric(logits[r : r + 1])[0] for r in range(len(patches) * n)]).reshape(len(patches), n)
curves = np.concatenate([np.full((len(patches), 1), base), curves], axis=1)  # prepend α = 0
alphas = np.concatenate([[0.0], alphas])
tangents = [float(((corrupt_cache[name][(0, *idx)] - res.cache[name][(0, *idx)])
                   * res.grad(name)[(0, *idx)]).sum()) for _, name, idx in patches]

fig, axes = subplots(1, len(patches), figsize=(13, 3.6))
for ax, (label, _, _), curve, slope in zip(axes, patches, curves, tangents):
    ax.plot(alphas, curve - base, marker="o", label="measured")
    ax.plot(alphas, alphas * slope, "--", label="attribution (tangent)")
    ax.set_title(f"{label}\nα=1: measured {curve[-1] - base:+.2f}, estimated {slope:+.2f}", fontsize=9)
    ax.set_xlabel("α (fraction of the patch)")
    ax.legend(fontsize=7)
axes[0].set_ylabel("change of the logit difference")
show(fig, "linearity.png")
for (label, _, _), curve, slope in zip(patches, curves, tangents):
    print(f"{label:32}: measured {curve[-1] - base:+7.2f}, attribution {slope:+7.2f}, "
          f"curve {np.round(curve - base, 2).tolist()}")
