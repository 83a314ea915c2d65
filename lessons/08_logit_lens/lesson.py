# %% [markdown]
# # Lesson 08: Logit lens and the residual stream
#
# The residual stream is a running sum: the embedding, plus what every attention layer and
# every MLP adds. The model only ever reads it through the final norm and the unembedding,
# at the very end. Two questions follow.
#
# 1. **When** does the answer appear? Decode the stream after every block as if it were
#    the last (the *logit lens*) and watch the target's rank fall to 1.
# 2. **Who** wrote it? The final logit difference is (almost exactly) a sum over the writes,
#    so each head and MLP gets its share (*direct logit attribution*, DLA) — and we can read
#    what each one writes in tokens.
#
# Another model: `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os

import numpy as np

import minillm
from minillm.course import show, student_version
from minillm.interp import readout
from minillm.interp.dla import direct_logit_attribution
from minillm.interp.lens import final_norm, logit_lens

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
cfg = model.cfg
L = cfg.n_layers
W_U = model.unembed.W_U  # [d, V]
EIFFEL = "The Eiffel Tower is located in the city of"


def _reference_lens(resid, ln_w, eps, W_U):  # [..., d] -> [..., V]
    return final_norm(model, resid) @ W_U


def _reference_dla(write, final_scale, ln_w, W_U, correct, incorrect):  # [..., d] -> [...]
    return (write / final_scale) @ (ln_w * (W_U[:, correct] - W_U[:, incorrect]))


def _reference_components(cache, n_layers, pos):  # -> [2L + 1, d]: embed, then attn_out, mlp_out per block
    return cache.decompose_resid(pos_slice=pos)[:, 0]


# Your exercises 1-3 once implemented (until then, the references above). They are written
# for RMSNorm without a bias; on a LayerNorm model (GPT-2) the script keeps minillm's own.
RMS = not cfg.layer_norm and cfg.norm_offset == 0.0
if RMS:
    lens_logits = student_version(8, "lens_logits", _reference_lens)
    component_dla = student_version(8, "component_dla", _reference_dla)
    residual_components = student_version(8, "residual_components", _reference_components)
else:
    print(f"{MODEL} uses LayerNorm: exercises 1-3 (written for RMSNorm) are not used on it")
    lens_logits, component_dla, residual_components = _reference_lens, _reference_dla, _reference_components

# %% [markdown]
# ## 1. The stream grows; the norm hides it
#
# The size of the stream at the last position, before each block: it grows by more than an
# order of magnitude. Every reader (ln1, ln2 of each block, ln_final) divides by the
# stream's rms first, so what matters to a reader is the stream's *direction*.

# %%
logits, cache = model.run_with_cache(EIFFEL)
stack, labels = cache.accumulated_resid(return_labels=True)  # [L + 1, b, p, d]
norms = np.linalg.norm(stack[:, 0, -1], axis=-1)
print("‖resid‖ at the last position:",
      ", ".join(f"{lab} {n:.0f}" for lab, n in list(zip(labels, norms))[:-1:max(1, L // 6)]),
      f", final {norms[-1]:.0f}")

# %% [markdown]
# ## 2. The logit lens
#
# `lens_l = ln_final(resid_l) @ W_U`, with the norm's scale recomputed from resid_l itself
# (exactly what the model does to its final stream, so the last row *is* the output).
# `logit_lens` decodes every layer at every position and follows a few target tokens.

# %%
targets = [" Paris", " London", " France"]
lens = logit_lens(model, EIFFEL, targets=targets, k=3)
print(lens.table())
decided = lens.first_layer_top1(" Paris")
print(f"\n' Paris' is the top-1 prediction from row {decided} on = row index "
      f"{lens.row_labels.index(decided) if decided else None} (rows: index 0 = 'embed', then index l + 1 = "
      f"'L{{l}}' = after block l; the model has {L} blocks)")
show(lens.plot(), "lens_grid.png")  # layer × position, top-1 token and its probability
show(lens.plot_targets(), "lens_targets.png")  # probability and rank of each target per layer

# %% [markdown]
# By hand, for one row: `final_norm` + `W_U` (exercise 1). The last row equals the model's
# logits exactly. The embeddings row predicts the *input* token itself (' of' → ' of'):
# with a tied unembedding (W_U = W_Eᵀ), W_E[t] · W_E[t] is the largest dot product of most
# rows — the lens of layer 0 is a copy, not a prediction.

# %%
last_lens = lens_logits(cache[f"blocks.{L - 1}.hook_resid_post"], model.ln_final.w, cfg.eps, W_U)  # yours
print("lens of the final stream == model logits:", np.array_equal(last_lens, logits),
      f"(max |difference| {np.abs(last_lens - logits).max():.1e})")
row12 = lens_logits(cache["blocks.12.hook_resid_pre"][0, -1], model.ln_final.w, cfg.eps, W_U)  # [V]
print("row 12 top-3 by hand:", [model.to_string([int(i)]) for i in np.argsort(-row12)[:3]],
      "| logit_lens:", lens.tokens_at(12))

# %% [markdown]
# **Own scale or frozen scale?** `cache.accumulated_resid(apply_ln=True)` normalises every
# layer's stream with its *own* rms (the lens above; TransformerLens 3 does the same).
# `cache.apply_ln_to_stack(stack)` instead divides every layer by the *final* stream's rms
# (frozen, as for attribution; older TransformerLens releases did this in the lens too). For
# RMSNorm the two differ by a positive number per position, so the ranking of tokens — and
# every rank below — is the same; only the temperature of the softmax (the probabilities)
# changes.

# %%
own = cache.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0] @ W_U  # [L + 1, V]
frozen = cache.apply_ln_to_stack(stack[:, :, -1], pos_slice=-1)[:, 0] @ W_U  # [L + 1, V]
same = [bool((np.argsort(-a)[:10] == np.argsort(-b)[:10]).all()) for a, b in zip(own, frozen)]
print(f"top-10 identical with own vs frozen scale in {sum(same)}/{len(same)} rows "
      "(GPT-2's LayerNorm adds a bias, so there the two can differ)")

# %% [markdown]
# ## 3. Rank per layer for a few facts
#
# The same lens, only at the last position, for four factual prompts in one padded batch.
# A rank that falls late and steeply is the signature of a fact recalled in the last third
# of the network.

# %%
facts = [(EIFFEL, " Paris"), ("The capital of Japan is the city of", " Tokyo"),
         ("The Colosseum is located in the city of", " Rome"),
         ("The currency of the United States is the", " dollar")]
tokens, mask = model.to_tokens_and_mask([p for p, _ in facts])
_, fcache = model.run_with_cache(tokens, attention_mask=mask,
                                 names_filter=lambda n: n.endswith(("resid_pre", "resid_post")))
fstack = fcache.accumulated_resid(pos_slice=-1)  # [L + 1, n, d]: the last (real) token of each prompt
def _reference_rank(logits, target):  # [..., V] -> [...]: 1 + the number of strictly larger logits
    return (logits > logits[..., target:target + 1]).sum(-1) + 1


def _reference_first_top1(ranks):  # the first row from which the target stays top-1, or None
    return next((r for r in range(len(ranks)) if (ranks[r:] == 1).all()), None)


# Your exercises 4 and 5 once implemented (until then, the references above).
target_rank = student_version(8, "target_rank", _reference_rank)
first_top1_layer = student_version(8, "first_top1_layer", _reference_first_top1)
ranks = {}
for j, (_, target) in enumerate(facts):
    row_logits = lens_logits(fstack[:, j], model.ln_final.w, cfg.eps, W_U)  # [L + 1, V]: exercise 1
    t = model.to_single_token(target)
    ranks[target] = np.asarray(target_rank(row_logits, t))  # exercise 4
    first = first_top1_layer(ranks[target])  # exercise 5
    top = model.to_string([int(np.argmax(row_logits[-1]))])
    label = None if first is None else ("embed" if first == 0 else f"L{first - 1}")
    print(f"{target!r:10} rank per row: {ranks[target].tolist()}\n{'':11}-> top-1 from row index {first} "
          f"(= row {label}) on (the model's own top-1: {top!r})")

from minillm.views.figures import subplots  # noqa: E402

fig, ax = subplots(figsize=(8, 4))
for target, r in ranks.items():
    ax.plot(range(L + 1), r, marker=".", label=repr(target))
ax.set_yscale("log")
ax.invert_yaxis()
ax.set_xticks(range(0, L + 1, 2), (["embed"] + [f"L{l}" for l in range(L)])[::2], rotation=90, fontsize=7)
ax.set_ylabel("rank of the answer (1 = top)")
ax.set_title("logit lens: rank of the answer at the last position, per layer", fontsize=10)
ax.legend(fontsize=8)
show(fig, "fact_ranks.png")

# %% [markdown]
# ## 4. Direct logit attribution of the IOI logit difference
#
# "When Mary and John went to the store, John gave a drink to" → " Mary". The metric is
# `logit(' Mary') − logit(' John')` at the last position. With ln_final's scale s frozen at
# its value on this run, the logit difference is linear in the final stream, and the stream
# is a sum of writes, so
#
#     logit_diff = Σ_c  c · s · (w ⊙ (W_U[:, Mary] − W_U[:, John]))      (+ a bias term for GPT-2)
#
# over c = embed, each head's `z @ W_O`, each MLP output (and the attention output biases,
# for models that have them).

# %%
CLEAN = "When Mary and John went to the store, John gave a drink to"
dla = direct_logit_attribution(model, CLEAN, " Mary", " John")
print(f"logit difference {dla.total:+.4f}; sum of the {dla.parts.shape[0]} parts "
      f"{dla.parts.values.sum():+.4f}")
print("largest parts:", ", ".join(f"{lab[0]} {v:+.2f}" for lab, v in dla.parts.top(10)))
show(dla.plot(), "dla_ioi.png")

# %% [markdown]
# By hand with the cache helpers: `decompose_resid` gives embed + every attention and MLP
# output (exercise 3); `apply_ln_to_stack` divides each by the frozen scale and multiplies it
# by the norm's gain `w`; a dot product with `W_U[:, Mary] − W_U[:, John]` is the attribution
# (exercise 2; `icache.logit_attrs(comps, " Mary", " John", pos_slice=-1)` in one call). Normalising each
# component by its *own* rms instead breaks the sum: that is why the scale is frozen.

# %%
logits_ioi, icache = model.run_with_cache(CLEAN)
mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
direction = W_U[:, mary] - W_U[:, john]  # [d] (apply_ln_to_stack has applied the gain w)
comps, comp_labels = icache.decompose_resid(pos_slice=-1, return_labels=True)  # [2L + 1 (+1), 1, d]
if RMS:  # your exercises 3 (the writes) and 2 (their attribution)
    comps = np.asarray(residual_components(icache, L, -1))[:, None]  # [2L + 1, 1, d]
    s_final = icache["ln_final.hook_scale"][0, -1]  # [1]: the rms ln_final divided by
    parts = np.asarray(component_dla(comps[:, 0], s_final, model.ln_final.w, W_U, mary, john))  # [c]
else:
    parts = icache.apply_ln_to_stack(comps, pos_slice=-1)[:, 0] @ direction  # [c]
bias = float(model.ln_final.b @ (W_U[:, mary] - W_U[:, john])) if model.ln_final.b is not None else 0.0
own_scale = np.stack([final_norm(model, c) for c in comps[:, 0]]) @ direction
print(f"by hand: Σ parts {parts.sum() + bias:+.4f} (model {dla.total:+.4f}); with each component "
      f"normalised by its own rms the 'parts' sum to {own_scale.sum():+.1f} — meaningless")
print("by sublayer: embed {:+.2f}, attention {:+.2f}, MLPs {:+.2f}".format(
    parts[0], sum(p for p, lab in zip(parts, comp_labels) if "attn" in lab),
    sum(p for p, lab in zip(parts, comp_labels) if "mlp" in lab)))
heads = icache.stack_head_results(pos_slice=-1, apply_ln=True)[:, 0] @ direction  # [L·h]
print("per-head DLA by hand == dla.heads:", np.allclose(heads.reshape(L, -1), dla.heads.values, atol=1e-4))

# %% [markdown]
# ## 5. What each head and MLP writes
#
# A number per component says *how much*; reading the write itself through the unembedding
# says *what*. For the largest heads: where the last position attends, and which tokens its
# write promotes and suppresses (frozen scale: these are logit changes). Splitting the
# difference into Δlogit(Mary) and Δlogit(John) separates heads that push Mary up from heads
# that push John down.

# %%
s = icache["ln_final.hook_scale"][0, -1]  # [1]
toks = model.to_str_tokens(CLEAN)
top_heads = [(int(i) // cfg.n_heads, int(i) % cfg.n_heads) for i in np.argsort(-np.abs(heads))[:5]]
rows = []
for l, h in top_heads:
    pattern = icache[f"blocks.{l}.attn.hook_pattern"][0, h, -1]  # [p] attention of the last position
    src = int(np.argmax(pattern))
    write = icache[f"blocks.{l}.attn.hook_z"][0, -1, h] @ model.blocks[l].attn.W_O[h]  # [d]
    lg = readout.unembed_direction(model, write) / s  # [V] its direct effect on every logit
    rows.append((f"L{l}H{h}", lg[mary], lg[john]))
    print(f"L{l}H{h}: DLA {lg[mary] - lg[john]:+.2f}; attends to {toks[src]!r} "
          f"(pos {src}, {pattern[src]:.2f})")
    print(f"   promotes   {[t for t, _ in readout.top_tokens(model, lg, 5)]}")
    print(f"   suppresses {[t for t, _ in readout.top_tokens(model, lg, 5, largest=False)]}")
for l in range(L - 4, L):
    lg = readout.unembed_direction(model, icache[f"blocks.{l}.hook_mlp_out"][0, -1]) / s
    rows.append((f"MLP{l}", lg[mary], lg[john]))
    print(f"MLP{l}: DLA {lg[mary] - lg[john]:+.2f}; "
          f"promotes {[t for t, _ in readout.top_tokens(model, lg, 5)]}")

# %% [markdown]
# The late MLPs' top tokens look like junk (word fragments): many of them push a whole family
# of rare tokens up or down together, which moves no *difference* between two names. Reading
# a write for a specific question means reading differences. Split by neuron, the MLPs'
# contribution gets a meaning: the neurons with the largest DLA write along a gender
# direction ("woman/women/daughter"). A neuron's write is activation × W_out[i], so a
# neuron that fires *negatively* writes minus its readout: read the sign of both.

# %%
nd = direct_logit_attribution(model, CLEAN, " Mary", " John", neurons=True)
neurons = [(lab[0], v) for lab, v in nd.parts.top(40) if "N" in lab[0]][:3]
for lab, v in neurons:
    l, i = (int(x) for x in lab[1:].split("N"))
    r = readout.neuron_readout(model, l, i, k=5)
    act = float(icache[f"blocks.{l}.mlp.hook_post"][0, -1, i])
    print(f"{lab}: DLA {v:+.2f}, activation {act:+.2f}; W_out promotes {[t for t, _ in r.promoted]}")

fig, ax = subplots(figsize=(8, 3.8))
x = np.arange(len(rows))
ax.bar(x - 0.2, [r[1] for r in rows], 0.4, label="Δ logit(' Mary')")
ax.bar(x + 0.2, [r[2] for r in rows], 0.4, label="Δ logit(' John')")
ax.axhline(0, color="k", lw=0.5)
ax.set_xticks(x, [r[0] for r in rows])
ax.set_ylabel("direct effect (frozen final scale)")
ax.set_title("what the top heads and the last MLPs write into the two names' logits", fontsize=10)
ax.legend(fontsize=8)
show(fig, "head_writes.png")
