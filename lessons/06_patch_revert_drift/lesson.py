# %% [markdown]
# # Lesson 06: Patch, revert, drift
#
# The claim: after scaling a neuron to 0.04 and "reverting" it to 1.0, the model does not
# come back exactly, because neurons are entangled. We take the residue apart into four
# kinds: (a) zero by construction (the journal writes the saved bytes back), (b) rounding
# (the inverse operation ×25), (c) state computed under the patch and kept (a KV cache),
# (d) genuine interference while the patch is active (other neurons move — downstream
# only). Read README.md first.
#
# Runs headless on the offline SmolLM2 in well under a minute. Another model:
# `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os

import numpy as np

import minillm
from minillm import edits
from minillm.course import show, student_version
from minillm.edit import drift

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
L = model.cfg.n_layers
print(model)

PROMPT = "The Eiffel Tower is located in the city of"
ids = model.to_tokens(PROMPT)
print(model.to_str_tokens(ids[0]))

# %% [markdown]
# ## 1. Pick a neuron that matters
#
# In the middle layer, the neuron that writes the most into the stream at the last
# position: the largest `|a_i| · ‖W_out[i]‖`.

# %%
LAYER = L // 2 - 3 if L >= 12 else L // 2
post_name = f"blocks.{LAYER}.mlp.hook_post"
_, cache = model.run_with_cache(ids, names_filter=[post_name])
a_last = cache[post_name][0, -1]  # [m]
write = np.abs(a_last) * np.linalg.norm(model.blocks[LAYER].mlp.W_out, axis=1)
NEURON = int(np.argmax(write))
print(f"neuron L{LAYER}N{NEURON}: activation {a_last[NEURON]:+.3f} at the last position, "
      f"writes ‖a·W_out[i]‖ = {write[NEURON]:.2f}")
op = edits.scale_neuron(LAYER, NEURON, 0.04)  # which="out": row NEURON of W_out

# %% [markdown]
# ## 2. Two ways to revert, at the level of the weights
#
# `model.edit(op)` saves the bytes of `W_out[NEURON]` before writing. `handle.revert()`
# writes them back: bit-exact. `handle.revert(mode="inverse")` instead multiplies by
# `fl(1/0.04) = 25`: each weight is rounded twice more, so a few end up one ulp (unit in
# the last place) away from where they started.

# %%
W_row = model.blocks[LAYER].mlp.W_out[NEURON]
clean_row = W_row.copy()
ulp_distance = student_version(6, "ulp_distance", drift.ulp_distance)  # your exercise 1, once implemented

handle = model.edit(op)
print(model.journal.describe())
handle.revert()  # journal revert
print("journal revert:  max ulps from clean =", int(ulp_distance(W_row, clean_row).max()),
      "| pristine:", model.journal.pristine)

handle = model.edit(op)
handle.revert(mode="inverse")  # ×25 as a new record
ulps = ulp_distance(W_row, clean_row)
print(f"inverse revert:  {np.count_nonzero(ulps)} of {ulps.size} weights moved, max {ulps.max()} ulp "
      f"(bound {edits.INVERSE_ULP_BOUND}); pristine: {model.journal.pristine}")
f32 = model.dtype.type
print(f"why: fl(0.04) = {float(f32(0.04))!r}, fl(25) = {float(f32(25))!r}; their exact product is "
      f"{float(f32(0.04)) * float(f32(25))!r}, not 1 — and each of the two multiplications rounds again")
model.revert_all()  # back to the saved bytes
print("after revert_all: max ulps =", int(ulp_distance(W_row, clean_row).max()),
      "| pristine:", model.journal.pristine)

# %% [markdown]
# The same journal by hand: your `scale_with_undo` (exercise 2) scales the row of the real
# `W_out` in place and keeps a copy of its bytes, your `undo` (exercise 3) writes them
# back. Then the logits must be bit-identical to the clean ones. (If yours are not, the
# script restores the row itself, so the rest of the lesson runs on the clean model.)

# %%


def _reference_scale_with_undo(W, index, factor):
    saved = W[index].copy()
    W[index] = W[index] * W.dtype.type(factor)
    return saved


def _reference_undo(W, index, saved):
    W[index] = saved


scale_with_undo = student_version(6, "scale_with_undo", _reference_scale_with_undo)
undo = student_version(6, "undo", _reference_undo)
W_out = model.blocks[LAYER].mlp.W_out  # [m, d], edited in place below
clean_logits = model(ids)
saved = scale_with_undo(W_out, NEURON, 0.04)
scaled_logits = model(ids)
undo(W_out, NEURON, saved)
undone_logits = model(ids)
print(f"your scale_with_undo: the saved copy is the clean row: {np.array_equal(saved, clean_row)}; "
      f"max |Δlogit| while scaled {np.abs(scaled_logits - clean_logits).max():.3f}")
print(f"after your undo: max ulps from clean {int(ulp_distance(W_row, clean_row).max())}, "
      f"logits identical to clean: {np.array_equal(undone_logits, clean_logits)}")
if not np.array_equal(W_out[NEURON], clean_row):
    W_out[NEURON] = clean_row  # keep the rest of the lesson on the clean model
    print("(your undo did not restore the row bit for bit; the script restored it)")

# %% [markdown]
# ## 3. The four-way table
#
# `drift.measure_drift` runs the prompt clean, edited, journal-reverted, inverse-reverted,
# and twice through a KV cache: the prefix cached *while the edit was active* and then the
# last token run after the weights were restored (stale), or the cache recomputed after
# the revert. Each run is compared with the clean run: relative residual drift, logit
# change, KL of the next-token distribution, top-1 and top-5.

# %%
report = drift.measure_drift(model, ids, [op], k=5, n_new=1)
print(report.table())
for name in ("edited", "inverse-reverted", "stale-kv-cache"):
    prof = report.layer_profile(name)
    first = int(np.flatnonzero(prof)[0]) if prof.any() else None
    print(f"{name:<17} first layer row that differs: {first}; drift there {prof[first] if first else 0:.3g}, "
          f"after the last block {prof[-1]:.3g}")
show(report.plot(), "drift_per_layer.png")

# %% [markdown]
# Rounding (b) enters at the edited layer as a relative change of ~1e-8 and leaves the
# last block ~100× larger: the blocks after it, and their norms, amplify it — but it stays
# at float32 rounding level. The stale cache (c) is a different kind: the weights are
# bit-exact, the *state* is not; recompute it and the drift is 0 again.

# %%
def _reference_drift(clean, run):  # [L+1, p, d] twice -> [L+1]: max over p of the relative difference
    diff = np.linalg.norm((run - clean).astype(np.float64), axis=-1)
    return (diff / np.linalg.norm(clean.astype(np.float64), axis=-1)).max(axis=-1)


per_layer_relative_drift = student_version(6, "per_layer_relative_drift", _reference_drift)
RESID = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(L)]


def stream() -> np.ndarray:  # [L+1, p, d]: the residual stream of the prompt, every layer row
    _, c = model.run_with_cache(ids, names_filter=RESID)
    return np.stack([c[n][0] for n in RESID])


clean_stream = stream()
model.edit(op).revert(mode="inverse")
inverse_stream = stream()
model.revert_all()
prof = np.asarray(per_layer_relative_drift(clean_stream, inverse_stream))  # your exercise 4
nz = np.flatnonzero(prof)
print(f"inverse-revert drift: {prof[nz[0]]:.2g} at row {nz[0]} -> {prof[-1]:.2g} after the last block "
      f"(×{prof[-1] / prof[nz[0]]:.0f})")
print("stale cache: max |ΔK|,|ΔV| per layer (0 up to the edited layer):",
      np.array2string(report.cache_drift, precision=3, max_line_width=120))

# %% [markdown]
# ## 4. Interference while the patch is active
#
# With the neuron at ×0.04, which *other* neurons change? `interference_map` compares
# every neuron's `hook_post` with the clean run. Causality makes the answer sharp: the
# layers before the edited one, and the other neurons of its own layer, do not move at all
# (they do not see its output); every downstream layer does. The second map edits the
# activation at one position only: then the earlier positions do not move either.

# %%
imap = drift.interference_map(model, ids, LAYER, NEURON, factor=0.04)
print(imap.table(8))
show(imap.plot(), "interference_map.png")
p_edit = ids.shape[1] - 3
imap_pos = drift.interference_map(model, ids, LAYER, NEURON, factor=0.04, position=p_edit)
print(f"activation edit at position {p_edit}: upstream {imap_pos.upstream_max:.3g}, same layer "
      f"{imap_pos.same_layer_max:.3g}, earlier positions {imap_pos.earlier_max:.3g}, downstream max "
      f"{imap_pos.per_layer().max():.3g}")
per = imap.per_layer() / np.maximum(imap.clean_rms, 1e-30)
print("largest change of another neuron per layer / that layer's rms:",
      np.array2string(per[LAYER:], precision=2, max_line_width=120))

# %% [markdown]
# ## What to take away
#
# | kind | what | size here |
# | --- | --- | --- |
# | (a) journal revert | saved bytes written back | exactly 0 |
# | (b) inverse revert | ×0.04 then ×25, rounding | ≤ 1 ulp in weights, ~1e-6 relative in the stream |
# | (c) stale KV cache | state computed under the patch | weights exact, logits off by ~0.06 |
# | (d) interference | other neurons, while the patch is active | downstream only; up to 2.3× layer rms |
#
# "Revert is not undo" is true for (b) and (c), and (d) is real but is not a residue at
# all — it is the patch doing its work, and it vanishes with the patch.
