# %% [markdown]
# # Lesson 01: Tokens and embeddings
#
# A model reads integers, not text. This script shows how SmolLM2's byte-level BPE
# tokenizer cuts text into tokens, what the embedding matrix `W_E` looks like (norms,
# nearest neighbours, analogies), and what it means that SmolLM2 *ties* its unembedding
# to its embedding. Read README.md first; it is the lecture.
#
# Runs headless in well under a minute on the offline SmolLM2. Another model:
# `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os

import numpy as np

import minillm
from minillm.course import show, student_version
from minillm.interp.lens import final_norm

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
print(model)
W_E = model.embed.W_E  # [V, d]


def _reference_decode(model, ids):  # one string per id
    return [model.to_string([int(i)]) for i in np.asarray(ids).reshape(-1)]


def _reference_rank(W_E, v, exclude, k):  # the k rows most cosine-similar to v, `exclude` skipped
    sims = W_E @ v / (np.linalg.norm(W_E, axis=1) * np.linalg.norm(v))  # [V]
    return [int(i) for i in np.argsort(-sims, kind="stable") if int(i) not in exclude][:k]


def _reference_tying(W_E, W_U):
    if np.shares_memory(W_E, W_U):
        return "shared"
    return "equal" if W_U.shape == W_E.T.shape and np.array_equal(W_U, W_E.T) else "untied"


# Your exercises 1-4 once implemented (until then, the references above): what the script
# prints below is what YOUR functions compute.
decode_ids = student_version(1, "decode_ids", _reference_decode)
cosine_neighbours = student_version(1, "cosine_neighbours",
                                    lambda W_E, t, k=10: _reference_rank(W_E, W_E[t], {int(t)}, k))
analogy = student_version(1, "analogy", lambda W_E, a, b, c, k=5: _reference_rank(
    W_E, W_E[a] - W_E[b] + W_E[c], {int(a), int(b), int(c)}, k))
tying = student_version(1, "tying", _reference_tying)

# %% [markdown]
# ## 1. Tokenization
#
# Each row: the text, its ids, and the text of each token. Look for: digits split one by
# one (SmolLM2, not GPT-2), the leading space inside tokens (`' year'`), chat markers as
# single tokens, a rare word split into pieces, an emoji split into undecodable byte pieces.

# %%
texts = [
    "The year 2024",
    "Hello world",
    " Hello world",
    "unbelievably",
    "naïve café 😀",
    "def f(x):\n    return x",
]
if model.tokenizer.token_to_id("<|im_start|>") is not None:  # SmolLM2's chat format (ChatML)
    texts.insert(0, "<|im_start|>user\nWhat is 12+7?<|im_end|>\n")
for text in texts:
    ids = model.to_tokens(text)[0]
    print(f"{text!r:50} {len(ids):2d} tokens  {decode_ids(model, ids)}")  # your exercise 1
print("ids of 'The year 2024':", model.to_tokens("The year 2024")[0].tolist())
print("BOS added to plain text?", model.to_tokens("Hello")[0].tolist())

# %% [markdown]
# ## 2. The embedding matrix
#
# `W_E[t]` is the vector token `t` starts as. Its rows have very different lengths; the
# histogram names the shortest and the longest.

# %%
norms = np.linalg.norm(W_E, axis=1)  # [V]
order = np.argsort(norms)
shortest = decode_ids(model, order[:6])
longest = decode_ids(model, order[-6:][::-1])
print(f"W_E {W_E.shape}: row norms from {norms.min():.2f} to {norms.max():.2f} (mean {norms.mean():.2f})")
print("shortest rows:", shortest)
print("longest rows: ", longest)

from minillm.views.figures import subplots  # noqa: E402

fig, ax = subplots(figsize=(7, 3.5))
ax.hist(norms, bins=100)
ax.set_xlabel("‖W_E[t]‖")
ax.set_ylabel("tokens")
ax.set_title(f"{MODEL}: embedding row norms")
ax.text(0.98, 0.95, "shortest: " + ", ".join(map(repr, shortest[:4])) + "\nlongest: "
        + ", ".join(map(repr, longest[:4])), transform=ax.transAxes, ha="right", va="top", fontsize=7)
show(fig, "embedding_norms.png")

# %% [markdown]
# ## 3. Nearest neighbours by cosine
#
# Divide every row by its norm once; then one matrix-vector product gives the cosine of a
# token with the whole vocabulary. The neighbours come from your `cosine_neighbours`
# (exercise 2); the cosines printed next to them are recomputed here.

# %%
unit = W_E / norms[:, None]  # [V, d], unit rows


def neighbours(text: str, k: int = 8) -> list[tuple[str, float]]:
    t = model.to_single_token(text)
    best = cosine_neighbours(W_E, t, k)  # k ids, best first, t excluded
    return [(s, round(float(unit[i] @ unit[t]), 3)) for s, i in zip(decode_ids(model, best), best)]


for text in [" king", " Paris", " dog", " sorry", " blue", " Monday", "7"]:
    print(f"{text!r:10}", neighbours(text))

# %% [markdown]
# The heatmap shows the cosine between a few groups of tokens. Blocks on the diagonal are
# the groups; the blocks off it show how unrelated groups are (near 0, rarely negative).

# %%
groups = {
    "weekdays": [" Monday", " Tuesday", " Friday", " Sunday"],
    "digits": ["3", "4", "7", "9"],
    "colours": [" red", " blue", " green", " yellow"],
    "capitals": [" Paris", " London", " Berlin", " Tokyo"],
    "royals": [" king", " queen", " prince", " princess"],
}
labels, ids = [], []
for words in groups.values():
    for w in words:
        try:
            ids.append(model.to_single_token(w))
            labels.append(w)
        except minillm.MinillmError:  # not one token in this model's vocabulary
            pass
sim = unit[ids] @ unit[ids].T  # [n, n]
fig, ax = subplots(figsize=(6.5, 5.5))
im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_xticks(range(len(labels)), [repr(x) for x in labels], rotation=90, fontsize=7)
ax.set_yticks(range(len(labels)), [repr(x) for x in labels], fontsize=7)
fig.colorbar(im, ax=ax, label="cosine")
ax.set_title(f"{MODEL}: cosine similarity of embeddings")
show(fig, "embedding_cosines.png")

# %% [markdown]
# ## 4. Analogies: a − b + c
#
# Rank all tokens by cosine with `W_E[a] − W_E[b] + W_E[c]`, excluding the three inputs
# (your `analogy`, exercise 3). We also print where `a` itself would have ranked, and its
# cosine: it is usually first or close to it.

# %%
for a, b, c in [(" king", " man", " woman"), (" Paris", " France", " Germany"),
                (" walked", " walk", " swim"), (" bigger", " big", " small")]:
    try:
        ia, ib, ic = (model.to_single_token(x) for x in (a, b, c))
    except minillm.MinillmError as e:
        print("skipped:", e)
        continue
    v = W_E[ia] - W_E[ib] + W_E[ic]
    sims = unit @ (v / np.linalg.norm(v))
    best = analogy(W_E, ia, ib, ic, 4)  # your exercise 3
    answers = [(s, round(float(sims[i]), 3)) for s, i in zip(decode_ids(model, best), best)]
    ranked = [int(i) for i in np.argsort(-sims)[:8]]
    own = ranked.index(ia) + 1 if ia in ranked else ">8"
    print(f"{a}-{b}+{c} -> {answers}   (the rank of {a!r} itself: {own}, cosine {sims[ia]:.3f})")

# %% [markdown]
# ## 5. Tied or untied unembedding
#
# In a tied model `W_U` is `W_E.T`, the same memory. Then the logit of token `t` for a
# hidden state `h` is `h · W_E[t]`. Test the consequence: put a token's own embedding
# straight through the final norm and the unembedding (no blocks at all) and ask whether
# its top logit is the token itself.

# %%
W_U = model.unembed.W_U  # [d, V]
print("tie_embeddings:", model.cfg.tie_embeddings,
      "| shares memory:", np.shares_memory(W_E, W_U),
      "| W_E parameters:", f"{W_E.size / 1e6:.1f} M of {model.n_params() / 1e6:.1f} M")
# Your exercise 4 on this model's W_U, on a separate exact copy of W_E.T (what
# minillm.edits.untie leaves), and on that copy with one weight changed:
copy = np.ascontiguousarray(W_E.T)
changed = copy.copy()
changed[0, 0] += 1.0
print("tying(W_E, W_U):", repr(tying(W_E, W_U)), "| an exact copy:", repr(tying(W_E, copy)),
      "| one weight changed:", repr(tying(W_E, changed)))
del copy, changed
rng = np.random.default_rng(0)
sample = rng.choice(W_E.shape[0], size=300, replace=False)  # random token ids
direct = final_norm(model, W_E[sample]) @ W_U  # [300, V]: embedding -> logits, no blocks
self_rank = (direct > direct[np.arange(len(sample)), sample][:, None]).sum(axis=1)  # 0 = top-1
print(f"a token's own embedding predicts itself: top-1 for {np.mean(self_rank == 0):.0%}, top-10 for "
      f"{np.mean(self_rank < 10):.0%} of 300 random tokens; median rank of itself "
      f"{np.median(self_rank):.0f} of {W_E.shape[0]} (chance: about {W_E.shape[0] // 2})")
x = W_E[sample]
no_gain = (x / np.sqrt((x * x).mean(-1, keepdims=True) + model.cfg.eps)) @ W_U  # the norm without its gain
rank_no_gain = (no_gain > no_gain[np.arange(len(sample)), sample][:, None]).sum(axis=1)
print(f"without the final norm's gain: median rank of itself {np.median(rank_no_gain):.0f}")

fig, ax = subplots(figsize=(6, 3.2))
ax.hist(np.log10(1 + self_rank), bins=30)
ax.set_xlabel("log10(1 + rank of the token itself)   (0 = top-1)")
ax.set_ylabel("tokens")
ax.set_title(f"{MODEL}: unembedding a token's own embedding "
             f"({'tied' if model.cfg.tie_embeddings else 'untied'})")
show(fig, "self_prediction.png")
