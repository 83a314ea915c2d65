# %% [markdown]
# # Lesson 04: Editing embeddings
#
# We edit one row of the embedding matrix — REDUCE `E·(1−α)`, BOOST `E·(1+α)`, ZERO — and
# measure what happens: how the change of the residual stream evolves through the 30
# blocks of SmolLM2, how the next-token probabilities move, why the first block's
# normalised input does not see a pure rescaling, what the tied unembedding adds, and
# whether "deeper models resist embedding edits" (and "the effect diminishes
# exponentially") holds as a measured curve. Read README.md first: it is the lecture.
#
# Runs headless on the offline SmolLM2 in well under a minute. Another model:
# `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`); the prompt's
# tokens must then be single tokens of that vocabulary (they are for GPT-2 and TinyLlama).

# %%
import os

import numpy as np

import minillm
from minillm import edits
from minillm.course import show, student_version
from minillm.interp import interventions as iv
from minillm.interp.lens import final_norm

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
L, eps = model.cfg.n_layers, model.cfg.eps
print(model)

PROMPT = "I am so sorry for your loss. My cat died in Paris last week, and I"
ids = model.to_tokens(PROMPT)  # [1, p]
toks = model.to_str_tokens(ids[0])
print(len(toks), "tokens:", toks)


def position(text: str) -> int:
    """The (first) position of a single-token text in the prompt."""
    return toks.index(model.to_string([model.to_single_token(text)]))


SORRY = model.to_single_token(" sorry")
pos = {t: position(t) for t in (" sorry", " cat", " Paris")}
print("' sorry' is token", SORRY, "at position", pos[" sorry"], "; 'sorry' without the space is",
      model.to_str_tokens("sorry"), "(two tokens: we edit ' sorry')")

# %% [markdown]
# ## 1. All the edits in one batch
#
# An edit of row `t` of `W_E` changes the model in exactly two places: the input vector of
# every position holding token `t` (`hook_embed` there is multiplied by the factor) and —
# because SmolLM2 ties `W_U = W_E.T` — column `t` of the unembedding (the logit of `t` is
# multiplied by the factor at every position). So the *input side* of an edit is an
# activation intervention on `hook_embed`, and we can run many edits as rows of one batch.
# Section 2 checks this against a real weight edit (`minillm.edits`).

# %%
VARIANTS = [  # (label, token, factor)
    ("clean", None, 1.0),
    ("sorry REDUCE α=0.3", " sorry", 0.7),
    ("sorry BOOST α=0.3", " sorry", 1.3),
    ("sorry ZERO", " sorry", 0.0),
    ("cat REDUCE α=0.3", " cat", 0.7),
    ("cat ZERO", " cat", 0.0),
    ("Paris REDUCE α=0.3", " Paris", 0.7),
    ("Paris ZERO", " Paris", 0.0),
]
RESID = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
EXTRA = ["blocks.0.ln1.hook_normalized", "blocks.0.hook_resid_mid", "blocks.0.ln2.hook_normalized"]

hooks = []
for row, (_, text, factor) in enumerate(VARIANTS):
    if text is not None:
        hooks += iv.to_hooks(model, [iv.scale("embed", factor, pos=pos[text], batch=row)])
batch = np.repeat(ids, len(VARIANTS), axis=0)  # [N, p]
logits_in, cache = model.run_with_cache(batch, names_filter=RESID + EXTRA, fwd_hooks=hooks)
resid = np.stack([cache[n] for n in RESID], axis=1).astype(np.float64)  # [N, L+1, p, d]

# the tied model: the edited token's logit is also multiplied by the factor (all positions)
logits_tied = logits_in.copy()
for row, (_, text, factor) in enumerate(VARIANTS):
    if text is not None:
        t = model.to_single_token(text)
        logits_tied[row, :, t] *= model.dtype.type(factor)

# %% [markdown]
# ## 2. The real weight edit agrees
#
# `edits.reduce_embedding(" sorry", 0.3)` writes `E[sorry]·0.7` into `W_E` (and so into
# `W_U`, which is the same memory); `model.edited(...)` reverts it from the journal when the
# block ends. Its residual stream is the batch row above up to float32 rounding (the batch
# runs GEMMs of other shapes, which may sum in another order on your CPU), and so are its
# logits.

# %%
op = edits.reduce_embedding(" sorry", 0.3)
with model.edited(op) as handles:
    print(handles[0])
    logits_w, cache_w = model.run_with_cache(ids, names_filter=RESID)
resid_w = np.stack([cache_w[n][0] for n in RESID]).astype(np.float64)
print("weight edit vs hook_embed batch row: max |Δresid| =", np.abs(resid_w - resid[1]).max(),
      " max |Δlogit| =", float(np.abs(logits_w[0] - logits_tied[1]).max()))
print("model pristine again:", model.journal.pristine)

# The same edit with untie=True: W_U first gets its own copy of W_E.T, so only the input
# side changes — exactly the hook_embed batch row without the logit-column scaling.
with model.edited(edits.reduce_embedding(" sorry", 0.3, untie=True)) as handles:
    print(handles[0])
    logits_u = model(ids)
print("untie=True weight edit vs hook_embed batch row: max |Δlogit| =",
      float(np.abs(logits_u[0] - logits_in[1]).max()), "| tied again:", model.unembed.tied)


def _reference_edit(W_E, token, op, alpha=0.3):  # a copy of W_E with one row edited
    out = W_E.copy()
    out[token] *= W_E.dtype.type({"reduce": 1 - alpha, "boost": 1 + alpha, "zero": 0.0}[op])
    return out


# Your exercise 1 (once implemented): your edited matrix as the input embedding of the prompt.
edit_embedding_row = student_version(4, "edit_embedding_row", _reference_edit)
W_yours = edit_embedding_row(model.embed.W_E, SORRY, "reduce", 0.3)  # [V, d]
rows_changed = int((W_yours != model.embed.W_E).any(-1).sum())
embedded = W_yours[ids]  # [1, p, d]: the prompt's input vectors under your edit
del W_yours
_, cache_y = model.run_with_cache(ids, names_filter=RESID,
                                  fwd_hooks=[("hook_embed", lambda act, hook: embedded)])
resid_y = np.stack([cache_y[n][0] for n in RESID]).astype(np.float64)
print("your edit_embedding_row as the embedding vs hook_embed batch row: max |Δresid| =",
      np.abs(resid_y - resid[1]).max(), "| rows changed:", rows_changed)

# %% [markdown]
# ## 3. RMSNorm does not see a pure rescaling
#
# Block 0 reads `ln1(h0) = h0 / sqrt(mean(h0²) + ε) · w`. Scaling `h0` by `c` leaves this
# unchanged except through ε. The predicted relative change is
# `|c·sqrt(ms+ε)/sqrt(c²·ms+ε) − 1| ≈ ε/(2·ms)·|1 − 1/c²|` with `ms = mean(E[t]²)`.
# What *does* see the edit is the residual path: `resid_mid = c·E[t] + attn_out`, and
# `ln2` normalises that sum, which is no longer a rescaling of the clean one. The
# "predicted" column is your `rms_norm_change` (exercise 2) on the row itself.

# %%
p0 = pos[" sorry"]
ms = float((model.embed.W_E[SORRY].astype(np.float64) ** 2).mean())


def _reference_norm_change(x, c, eps):  # ‖n(c·x) − n(x)‖ / ‖n(x)‖, n = RMSNorm without gain
    x = np.asarray(x, np.float64)
    n = lambda v: v / np.sqrt((v * v).mean() + eps)  # noqa: E731
    return float(np.linalg.norm(n(c * x) - n(x)) / np.linalg.norm(n(x)))


rms_norm_change = student_version(4, "rms_norm_change", _reference_norm_change)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


norm_rows = []
for row in (1, 2, 3):
    label, _, c = VARIANTS[row]
    got = rel(cache["blocks.0.ln1.hook_normalized"][row, p0].astype(np.float64),
              cache["blocks.0.ln1.hook_normalized"][0, p0].astype(np.float64))
    pred = rms_norm_change(model.embed.W_E[SORRY], c, eps)
    mid = rel(cache["blocks.0.hook_resid_mid"][row, p0].astype(np.float64),
              cache["blocks.0.hook_resid_mid"][0, p0].astype(np.float64))
    ln2 = rel(cache["blocks.0.ln2.hook_normalized"][row, p0].astype(np.float64),
              cache["blocks.0.ln2.hook_normalized"][0, p0].astype(np.float64))
    d_in = np.linalg.norm(resid[row, 0, p0] - resid[0, 0, p0])
    d_out = np.linalg.norm(resid[row, 1, p0] - resid[0, 1, p0])
    norm_rows.append((label, got, pred, mid, ln2, d_out / d_in))
print(f"mean(E[' sorry']²) = {ms:.4g}, ε = {eps:g}, ‖E[' sorry']‖ = {np.sqrt(ms * model.cfg.d_model):.3f}")
print(f"{'edit':<20} {'Δln1(h0) measured':>18} {'predicted':>10} {'Δresid_mid':>11} {'Δln2 in':>8} "
      f"{'‖Δ‖ gain block 0':>17}")
for label, got, pred, mid, ln2, gain in norm_rows:
    print(f"{label:<20} {got:>18.3e} {pred:>10.3e} {mid:>11.3f} {ln2:>8.3f} {gain:>17.1f}")

# %% [markdown]
# ## 4. The decay curve
#
# Relative change of the residual stream, `‖h_l' − h_l‖ / ‖h_l‖`, after each block, at the
# edited position and (max) at the positions after it. Is it exponential? A straight line
# in a log plot would say so: we fit `log(rel) = a + b·l` over blocks 1..L and report the
# per-block factor `exp(b)` and the R² of the fit. We also print the *absolute* change.
# The curve at the edited position is your `relative_change_per_layer` (exercise 3), the
# fit your `fit_exponential` (exercise 4).

# %%
d_abs = np.linalg.norm(resid - resid[:1], axis=-1)  # [N, L+1, p]
d_rel = d_abs / np.linalg.norm(resid[:1], axis=-1)


def _reference_fit(y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit log y = a + b·x (x = 0, 1, ...): (per-step factor exp(b), R²)."""
    x, ly = np.arange(len(y)), np.log(y)
    b, a = np.polyfit(x, ly, 1)
    r2 = 1 - ((ly - (a + b * x)) ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
    return float(np.exp(b)), float(r2)


fit_exponential = student_version(4, "fit_exponential", _reference_fit)  # your exercise 4, once implemented
relative_change_per_layer = student_version(
    4, "relative_change_per_layer", lambda clean, edited, pos: np.linalg.norm(
        (edited[:, pos] - clean[:, pos]).astype(np.float64), axis=-1) / np.linalg.norm(
        clean[:, pos].astype(np.float64), axis=-1))
for row, (_, text, _) in enumerate(VARIANTS[1:], start=1):  # [L+1] at the edited position: yours
    d_rel[row, :, pos[text]] = relative_change_per_layer(resid[0], resid[row], pos[text])


print(f"{'edit':<20} {'rel@emb':>8} {'rel@1':>7} {'rel@L/2':>8} {'rel@L':>7} {'|Δ|@emb':>8} {'|Δ|@L':>7} "
      f"{'later@L':>8} {'factor/blk':>10} {'R²':>6}")
fits = {}
for row, (label, text, _) in enumerate(VARIANTS[1:], start=1):
    p_ = pos[text]
    curve = d_rel[row, :, p_]
    fits[label] = fit_exponential(curve[1:])
    later = d_rel[row, :, p_ + 1:].max(axis=-1)
    print(f"{label:<20} {curve[0]:>8.3f} {curve[1]:>7.3f} {curve[L // 2]:>8.3f} {curve[L]:>7.3f} "
          f"{d_abs[row, 0, p_]:>8.2f} {d_abs[row, L, p_]:>7.1f} {later[L]:>8.3f} "
          f"{fits[label][0]:>10.3f} {fits[label][1]:>6.2f}")

from minillm.views.figures import subplots  # noqa: E402

fig, axes = subplots(1, 2, figsize=(12, 4.2))
layers = np.arange(L + 1)
for row, (label, text, _) in enumerate(VARIANTS[1:4], start=1):
    p_ = pos[text]
    line, = axes[0].plot(layers, d_rel[row, :, p_], marker="o", ms=3, label=f"{label} (at ' sorry')")
    axes[0].plot(layers, d_rel[row, :, p_ + 1:].max(-1), ls="--", color=line.get_color(),
                 label=f"{label} (max, later positions)")
    axes[1].plot(layers, d_abs[row, :, p_], marker="o", ms=3, color=line.get_color(), label=label)
axes[1].plot(layers, np.linalg.norm(resid[0, :, p0], axis=-1), color="k", lw=1, label="‖clean h_l‖")
for row in (4, 6):
    label, text, _ = VARIANTS[row]
    axes[0].plot(layers, d_rel[row, :, pos[text]], lw=1, alpha=0.6, label=f"{label} (at the token)")
axes[0].set_yscale("log")
axes[0].set_xlabel("layer (0 = embedding, l = after block l-1)")
axes[0].set_ylabel("‖Δh‖ / ‖h‖")
axes[0].set_title("relative change: no straight line, so no exponential decay")
axes[0].legend(fontsize=7)
axes[1].set_yscale("log")
axes[1].set_xlabel("layer")
axes[1].set_ylabel("‖Δh‖ at the edited position")
axes[1].set_title("absolute change grows; the stream grows faster")
axes[1].legend(fontsize=7)
show(fig, "embedding_edit_decay.png")

# %% [markdown]
# ## 5. Next-token probabilities, and what the tie adds
#
# Position 2 (`"I am so"`) predicts `" sorry"` before the token is ever read: only the
# *output* side of the edit can act there. In the tied model its logit is multiplied by the
# factor; in an untied model (`untie=True`, or TinyLlama) nothing changes at all. At the
# last position both sides act.

# %%


def log_softmax(x):
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl(logits, row, p_):
    """KL(clean || edited row) of the next-token distributions at position p_, in nats."""
    lp, lq = log_softmax(logits[0, p_]), log_softmax(logits[row, p_])
    return float((np.exp(lp) * (lp - lq)).sum())


pred_pos, last = p0 - 1, len(toks) - 1
lp_in, lp_tied = log_softmax(logits_in[:, pred_pos]), log_softmax(logits_tied[:, pred_pos])  # [N, V]
print(f"next token after {''.join(toks[:pred_pos + 1])!r}: p(' sorry') clean "
      f"{np.exp(lp_tied[0, SORRY]):.3f}, top-3",
      [model.to_string([int(i)]) for i in np.argsort(-lp_tied[0])[:3]])
print(f"{'edit':<20} {'p(sorry)|tied':>13} {'untied':>7} {'sorry logit tied':>17} "
      f"{'KL last tied':>12} {'KL last untied':>14} {'KL after tok':>12}")
for row, (label, text, _) in enumerate(VARIANTS[1:], start=1):
    p_ = pos[text]
    print(f"{label:<20} {np.exp(lp_tied[row, SORRY]):>13.3f} "
          f"{np.exp(lp_in[row, SORRY]):>7.3f} {logits_tied[row, pred_pos, SORRY]:>17.2f} "
          f"{kl(logits_tied, row, last):>12.4f} {kl(logits_in, row, last):>14.4f} "
          f"{kl(logits_in, row, p_ + 1):>12.4f}")
print("top-5 at the last position, clean:       ",
      [model.to_string([int(i)]) for i in np.argsort(-logits_tied[0, last])[:5]])
print("top-5 at the last position, sorry ZERO:  ",
      [model.to_string([int(i)]) for i in np.argsort(-logits_tied[3, last])[:5]])
clean_sorry_logits = logits_in[0, :, SORRY]
print(f"tied REDUCE multiplies the ' sorry' logit by 0.7 at every position: it falls where it is positive "
      f"({(clean_sorry_logits > 0).sum()} of {len(toks)} positions here) and RISES where it is negative "
      f"({(clean_sorry_logits < 0).sum()}).")

# %% [markdown]
# ## 6. Do deeper models resist? The same edit read at every depth
#
# We have one trained model, so we read it at every depth `k` with the logit lens
# (`ln_final` and `W_U` applied to the stream after block k-1) and ask how far the edited
# next-token distribution is from the clean one (KL, input side only). If depth erased the
# edit, the curve would fall with k. Caveat: a truncated model read through the lens is not
# a trained shallow model — early lens distributions are poor predictions.

# %%
lens_pos = [last, p0 + 1]  # the last position, and the position right after ' sorry'
depths = np.unique(np.r_[1:5, np.linspace(6, L, 9).round().astype(int)])  # 13 depths, L included
k6 = int(np.argmin(np.abs(depths - 6)))
x = resid[:4][:, depths][:, :, lens_pos].astype(model.dtype)  # [4, D, 2, d]: clean + the three sorry edits
lens_lp = log_softmax(final_norm(model, x) @ model.unembed.W_U)  # [4, D, 2, V]
depth_kl = (np.exp(lens_lp[:1]) * (lens_lp[:1] - lens_lp)).sum(-1)  # [4, D, 2]
print(f"{'edit':<20} {'KL@' + str(depths[k6]) + ' last':>10} {'KL@' + str(L) + ' last':>11} "
      f"{'KL@' + str(depths[k6]) + ' next':>10} {'KL@' + str(L) + ' next':>11}   (next = after ' sorry')")
for row in (1, 2, 3):
    print(f"{VARIANTS[row][0]:<20} {depth_kl[row, k6, 0]:>10.4f} {depth_kl[row, -1, 0]:>11.4f} "
          f"{depth_kl[row, k6, 1]:>10.4f} {depth_kl[row, -1, 1]:>11.4f}")

fig, ax = subplots(figsize=(7, 4))
for row in (1, 2, 3):
    line, = ax.plot(depths, depth_kl[row, :, 0], marker="o", ms=3, label=f"{VARIANTS[row][0]}, last position")
    ax.plot(depths, depth_kl[row, :, 1], ls="--", lw=1, color=line.get_color(),
            label=f"{VARIANTS[row][0]}, after ' sorry'")
ax.set_yscale("log")
ax.set_xlabel("depth k (blocks run before the logit lens)")
ax.set_ylabel("KL(clean ‖ edited), nats")
ax.set_title("effect of an embedding edit at the output of a k-block model")
ax.legend(fontsize=7)
show(fig, "embedding_edit_depth.png")

# %% [markdown]
# ## What to take away
#
# * The relative change is 1−c at the embedding, drops at block 0 (the stream's norm jumps
#   from ~3 to ~50 there) and then stays roughly flat: no straight line in the log plot,
#   an R² far from 1. The absolute change *grows* through the blocks.
# * `ln1` of block 0 sees the pure rescaling only through ε (a few 1e-4); the residual path
#   carries the edit, and block 0's MLP amplifies it about tenfold.
# * The tie decides whether the edit touches the token's *output* logit: multiplied by
#   the factor at every position (down where positive, up where negative).
# * See README.md, "Where the claim holds and where it does not", for the verdict.
