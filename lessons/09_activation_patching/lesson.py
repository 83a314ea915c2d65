# %% [markdown]
# # Lesson 09: Activation patching
#
# Two prompts that differ in one token and in their answer:
#
#     clean:     "When Mary and John went to the store, John gave a drink to"  → " Mary"
#     corrupted: "When Mary and John went to the store, Mary gave a drink to"  → " John"
#
# Run one, and copy ONE activation from the other run. If the answer flips, that
# activation carries (enough of) the information that decides it. Sweep that over the
# residual stream, the attention and MLP outputs and every head, in both directions, and
# the computation appears as a map. Then path patching asks which *connections* matter.
# Read README.md first.
#
# Runs headless on the offline SmolLM2 in 10–30 s (depending on the machine load). Another model:
# `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os
import time

import numpy as np

import minillm
from minillm.course import show, student_version
from minillm.interp import interventions as iv
from minillm.interp import metrics as M
from minillm.interp import patching as P

T0 = time.perf_counter()
MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
L, H = model.cfg.n_layers, model.cfg.n_heads
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
SWAPPED = "When John and Mary went to the store, John gave a drink to"  # a bad corruption, see §1
clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
toks = model.to_str_tokens(clean[0])
S2 = int(np.flatnonzero(clean[0] != corrupted[0])[0])  # the position where the prompts differ
END = clean.shape[1] - 1
print(f"{MODEL}: {L} layers x {H} heads; positions: {list(enumerate(toks))}")
print(f"the prompts differ only at position {S2} ({toks[S2]!r} vs "
      f"{model.to_str_tokens(corrupted[0])[S2]!r}); the prediction is read at position {END} ({toks[END]!r})")

# %% [markdown]
# ## 1. The metric: logit difference, and the normalised version
#
# m = logit(" Mary") − logit(" John") at the last position (= log p(Mary) − log p(John)):
# your `logit_difference` (exercise 1). The normalised metric maps the corrupted run to 0 and
# the clean run to 1: your `normalised` (exercise 2), used in section 2.

# %%


def _reference_normalised(value, clean, corrupted):
    if clean == corrupted:
        raise ValueError("clean == corrupted: the corruption changed nothing")
    return (np.asarray(value, np.float64) - corrupted) / (clean - corrupted)


logit_difference = student_version(9, "logit_difference", lambda logits, correct, wrong: (
    logits[:, -1, correct].astype(np.float64) - logits[:, -1, wrong]))
normalised = student_version(9, "normalised", _reference_normalised)
MARY, JOHN = model.to_single_token(" Mary"), model.to_single_token(" John")
ld = M.logit_diff(model, " Mary", " John")  # the package's metric, for the sweeps below
m_clean, m_corrupt, m_swap = (float(logit_difference(model(model.to_tokens(s)), MARY, JOHN)[0])
                              for s in (CLEAN, CORRUPTED, SWAPPED))
print(f"logit diff: clean {m_clean:+.2f}, corrupted {m_corrupt:+.2f} (spread {m_clean - m_corrupt:.2f})")
top = model(model.to_tokens(SWAPPED))[0, -1].argmax()
print(f"swapping the first two names instead: {m_swap:+.2f}, still predicts {model.to_string([int(top)])!r}; "
      f"spread only {m_clean - m_swap:.2f}, and {int((model.to_tokens(SWAPPED)[0] != clean[0]).sum())} "
      "positions differ")

# %% [markdown]
# ## 2. The residual stream, position by position (denoising)
#
# Run the corrupted prompt; at layer L, position q, put in the clean `resid_pre`. One run
# per cell, batched; positions before S2 are identical in both prompts and are filled in
# without a run (value 0). `patching_sweep` returns a LabelledArray [layer, pos].

# %%
resid = P.patching_sweep(model, CLEAN, CORRUPTED, ld, "resid_pre", "denoising", progress=False)
show(resid.plot(), "resid_pre_denoising.png")
print(f"resid_pre: {resid.meta['runs']} runs in {resid.meta['seconds']:.1f} s")

# %% [markdown]
# One cell of that sweep by hand, with your functions: your `patch_resid_pre_hook`
# (exercise 3) puts the clean `resid_pre` of one layer and position into the corrupted run,
# your `logit_difference` measures it, your `normalised` puts it on the 0–1 scale. It must
# agree with the sweep's value for the same cell.

# %%


def _reference_patch_hook(source, pos):
    def fn(act, hook):  # [b, p, d] -> a copy with position pos taken from the other run
        out = act.copy()
        out[:, pos] = source[0, pos]
        return out
    return fn


patch_resid_pre_hook = student_version(9, "patch_resid_pre_hook", _reference_patch_hook)
_, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
for l, q in ((0, S2), (L // 2, S2), (L - 3, END)):
    name = f"blocks.{l}.hook_resid_pre"
    patched = model.run_with_hooks(corrupted, [(name, patch_resid_pre_hook(clean_cache[name], q))])
    by_hand = float(np.asarray(normalised(logit_difference(patched, MARY, JOHN), m_clean, m_corrupt))[0])
    print(f"layer {l:2d}, position {q:2d}: by hand with your functions {by_hand:+.2f}, "
          f"the sweep {resid.values[l, q]:+.2f}")
def _reference_shares(values, groups, base=0.0):  # {name: [rows]}: share of |value - base| per group
    effect = np.abs(np.nan_to_num(np.asarray(values, np.float64) - base))  # [rows, pos]
    total = np.where(effect.sum(1) == 0, 1.0, effect.sum(1))
    return {name: effect[:, list(pos)].sum(1) / total for name, pos in groups.items()}


# Your exercise 4 once implemented (until then, the reference above).
effect_shares = student_version(9, "effect_shares", _reference_shares)
shares = effect_shares(resid.values, {"S2": [S2], "END": [END]}, 0.0)  # denoising: unpatched = 0
for l in range(0, L, 3):
    print(f"layer {l:2d}: value at S2 {resid.values[l, S2]:+.2f}, at END {resid.values[l, END]:+.2f}; "
          f"share of the effect at S2 {shares['S2'][l]:.2f}, at END {shares['END'][l]:.2f}")
moved = int(np.argmax(shares["END"] > 0.5))
print(f"the information moves from S2 to END between layers {moved - 4} and {moved}: "
      f"first layer with more than half the effect at END = {moved}")

from minillm.views.figures import subplots  # noqa: E402

fig, ax = subplots(figsize=(6, 3.5))
ax.plot(shares["S2"], "o-", label=f"S2 (pos {S2}, {toks[S2]!r})")
ax.plot(shares["END"], "s-", label=f"END (pos {END}, {toks[END]!r})")
ax.set_xlabel("layer")
ax.set_ylabel("share of the patching effect")
ax.legend(fontsize=8)
ax.set_title("where the answer-deciding information sits", fontsize=9)
show(fig, "effect_shares.png")

# %% [markdown]
# ## 3. Which sublayers write it: attention and MLP outputs, both directions
#
# `per_position=False` patches a sublayer's output at all positions at once: one run per
# layer. Denoising (corrupted run, clean output in) asks "is this enough to restore the
# answer?"; noising (clean run, corrupted output in) asks "is this needed?".

# %%
sub = {}
for comp in ("attn_out", "mlp_out"):
    for direction in ("denoising", "noising"):
        sub[comp, direction] = P.patching_sweep(model, CLEAN, CORRUPTED, ld, comp, direction,
                                                per_position=False, progress=False).values[:, 0]
for (comp, direction), v in sub.items():
    base = 0.0 if direction == "denoising" else 1.0
    idx = np.argsort(-np.abs(v - base))[:4]
    print(f"{comp:8s} {direction:9s}: " + ", ".join(f"L{i} {v[i]:+.2f}" for i in idx))

fig, axes = subplots(1, 2, figsize=(11, 3.5), sharey=True)
for ax, direction in zip(axes, ("denoising", "noising")):
    for comp in ("attn_out", "mlp_out"):
        ax.plot(sub[comp, direction], "o-", label=comp, ms=3)
    ax.axhline(0 if direction == "denoising" else 1, color="k", lw=0.5)
    ax.set_title(f"{direction}: normalised metric (unpatched = {0 if direction == 'denoising' else 1})")
    ax.set_xlabel("layer")
    ax.legend(fontsize=8)
show(fig, "attn_mlp_by_layer.png")

# %% [markdown]
# ## 4. Heads
#
# Patch one head's output `hook_z` (all positions). To stay within the time budget we sweep
# the second half of the network, where section 3 found the attention effects, and then
# noise only the strongest heads.

# %%
FIRST = L // 2 + 1  # SmolLM2: layers 16..29; in layers 0..16 no head moves the metric by more than 0.025
heads = P.patching_sweep(model, CLEAN, CORRUPTED, ld, "heads", "denoising", layers=range(FIRST, L),
                         progress=False)
show(heads.plot(), "heads_denoising.png")
print(f"heads (layers {FIRST}..{L - 1}): {heads.meta['runs']} runs in {heads.meta['seconds']:.1f} s")
strongest = [(int(a), int(b)) for (a, b), _ in heads.top(6)]
_, corrupt_cache = model.run_with_cache(corrupted, names_filter=lambda n: n.endswith("attn.hook_z"))
_, clean_pat = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_pattern"))
noised = {}
for l, h in strongest:
    noised[l, h] = M.value(model, ld, clean, fwd_hooks=iv.to_hooks(
        model, [iv.patch("z", corrupt_cache, layer=l, head=h)]))
for l, h in strongest:
    pat = clean_pat[f"blocks.{l}.attn.hook_pattern"][0, h]  # [q, k]
    e, s = int(np.argmax(pat[END])), int(np.argmax(pat[S2]))
    print(f"head {l}.{h}: denoising {heads.values[l - FIRST, h]:+.2f}, noising "
          f"{(noised[l, h] - m_corrupt) / (m_clean - m_corrupt):+.2f}; attends from END to "
          f"{e}:{toks[e]!r} ({pat[END, e]:.2f}), from S2 to {s}:{toks[s]!r} ({pat[S2, s]:.2f})")

# %% [markdown]
# What do these heads write? Direct logit attribution (lesson 08) reads each head's output
# at END through the unembedding: its direct push on logit(" Mary") and logit(" John").

# %%
from minillm.interp.dla import direct_logit_attribution  # noqa: E402

dla_mary = direct_logit_attribution(model, CLEAN, " Mary").heads.values  # [layer, head]
dla_john = direct_logit_attribution(model, CLEAN, " John").heads.values
for l, h in strongest:
    print(f"head {l}.{h} writes directly: logit(' Mary') {dla_mary[l, h]:+.2f}, logit(' John') "
          f"{dla_john[l, h]:+.2f}")

# %% [markdown]
# ## 5. Path patching: which connections?
#
# Head 23.3 matters, but does it act on the logits directly, or through later heads?
# Path patching corrupts one sender while freezing every other head at its clean value
# (the MLPs recompute, as in Wang et al.'s definition; `freeze_mlps=True` freezes them too
# and keeps only direct edges), and lets the change reach only the chosen receivers. Values: −1 = this
# path alone turns the clean answer into the corrupted one.

# %%
senders = [f"{l}.{h}" for l, h in strongest]
receivers = ["logits"] + [s for s in senders if int(s.split(".")[0]) >= int(0.8 * L)][:2]
paths = P.path_patching(model, CLEAN, CORRUPTED, ld, senders=senders, receivers=receivers, progress=False)
# our own heatmap: the cells where a receiver comes before its sender are NaN, and
# LabelledArray.plot's colour limits do not skip NaN
lim = float(np.nanmax(np.abs(paths.values)))
fig, ax = subplots(figsize=(5, 4))
im = ax.imshow(paths.values, cmap="RdBu", vmin=-lim, vmax=lim)
for (i, j), v in np.ndenumerate(paths.values):
    ax.text(j, i, "—" if np.isnan(v) else f"{v:+.2f}", ha="center", va="center", fontsize=8)
ax.set_xticks(range(len(receivers)), receivers)
ax.set_yticks(range(len(senders)), senders)
ax.set_xlabel("receiver")
ax.set_ylabel("sender")
ax.set_title("path patching (−1 = this path alone corrupts)", fontsize=9)
fig.colorbar(im, ax=ax)
show(fig, "path_patching.png")
print(f"path patching: {paths.meta['runs']} runs in {paths.meta['seconds']:.1f} s")
for i, s in enumerate(senders):
    print(f"  {s:>5} → " + ", ".join(f"{r}: {paths.values[i, j]:+.3f}" for j, r in enumerate(receivers)))

# %% [markdown]
# ## What to take away
#
# * The answer is decided by what sits at S2 (' John' vs ' Mary') until about layer 20; heads
#   in layers 20–23 copy it to the last position, from layer 24 on it is all there.
# * A few heads carry the effect: 23.3 (attends to S2 from END) the most; 24.4 and 29.0
#   push the other way.
# * Denoising and noising differ: "sufficient to restore" and "necessary" are not the same.
# * 23.3 → logits is a direct path (about half the effect alone); other heads' effects are
#   not direct, which path patching shows as ≈ 0 on the logits.

# %%
print(f"lesson 09 finished in {time.perf_counter() - T0:.0f} s")
