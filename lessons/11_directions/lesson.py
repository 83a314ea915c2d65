# %% [markdown]
# # Lesson 11: Directions — steering vectors, function vectors, PCA, patchscopes
#
# Lessons 08–10 asked which *components* matter. This lesson asks which *directions* of the
# residual stream carry a concept, and uses them: add a direction and the model's behaviour
# moves (steering vectors, function vectors); look for the directions of largest variance
# and concepts fall out (PCA); hand a hidden state to the model itself and let it say what
# is in it (patchscopes). Every section measures its effect against a control.
#
# Another model: `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os

import numpy as np

import minillm
from minillm import ops
from minillm.course import show, student_version
from minillm.interp import interventions as iv
from minillm.interp import patchscopes as ps
from minillm.interp import steering as st
from minillm.interp.batch import run_variants
from minillm.interp.pca import PCAResult, pca

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
cfg = model.cfg
L = cfg.n_layers
rng = np.random.default_rng(0)


def last_token_acts(prompts, name):
    """The activation at `name` at each prompt's last token (one left-padded batch).   -> [n, d]"""
    tokens, mask = model.to_tokens_and_mask(list(prompts))
    _, cache = model.run_with_cache(tokens, names_filter=[name], attention_mask=mask)
    return cache[name][:, -1].astype(np.float64)


def _reference_pca(X, k):  # X [n, D] -> (components [k, D], explained-variance ratios [r])
    res = pca(X, k=k)
    return res.components, res.explained_variance_ratio


def _reference_analogy(W_E, a, b, c, k):  # the k ids most cosine-similar to a − b + c, inputs excluded
    query = W_E[a] - W_E[b] + W_E[c]
    sims = W_E @ query / (np.linalg.norm(W_E, axis=1) * np.linalg.norm(query))
    sims[[a, b, c]] = -np.inf
    return [int(i) for i in np.argsort(-sims, kind="stable")[:k]]


def _reference_hook(vector, alpha):
    return lambda act, hook: act + alpha * vector


# Your exercises once implemented (until then, the references above).
mean_difference = student_version(11, "mean_difference", lambda pos, neg: pos.mean(0) - neg.mean(0))
steering_hook = student_version(11, "steering_hook", _reference_hook)
pca_svd = student_version(11, "pca_svd", _reference_pca)
cosine_analogy = student_version(11, "cosine_analogy", _reference_analogy)


def random_like(v):
    """A random direction with the same norm as v: the control for every 'add a vector' result."""
    r = rng.standard_normal(v.shape)
    return (r / np.linalg.norm(r) * np.linalg.norm(v)).astype(np.float32)


# %% [markdown]
# ## 1. A steering vector
#
# `v = mean h_l(positive prompts) − mean h_l(negative prompts)` at `blocks.l.hook_resid_pre`,
# last token (your `mean_difference`). During generation `α·v` is added at every position
# by your `steering_hook` (in the package: `st.steer`, an `interventions.add`).

# %%
LAYER = max(1, round(L * 0.2))  # 6 of 30 for SmolLM2
POSITIVE = ["I love this", "What a wonderful day", "I am so happy", "This is great", "I adore you",
            "Best film ever", "She smiled with joy", "Everything is perfect"]
NEGATIVE = ["I hate this", "What an awful day", "I am so sad", "This is terrible", "I despise you",
            "Worst film ever", "She cried with grief", "Everything is ruined"]
acts = last_token_acts(POSITIVE + NEGATIVE, f"blocks.{LAYER}.hook_resid_pre")  # [16, d]
v = np.asarray(mean_difference(acts[: len(POSITIVE)], acts[len(POSITIVE):]), np.float32)  # [d]
stream = np.linalg.norm(acts, axis=1)
print(f"layer {LAYER}: ‖v‖ = {np.linalg.norm(v):.1f}; the stream there has ‖h‖ ≈ {stream.mean():.0f}")
late = L // 2 + 3  # the position-0 trap, measured at a later layer
v_last = st.steering_vector(model, POSITIVE, NEGATIVE, late)
v_all = st.steering_vector(model, POSITIVE, NEGATIVE, late, pos=None)
print(f"layer {late}: ‖v‖ from the last token {np.linalg.norm(v_last):.0f}, averaged over every position "
      f"{np.linalg.norm(v_all):.0f} (the first position's huge 'attention sink' activations dominate)")

PROMPT = "My week has been"


def steered(alpha: float, run):
    """run() with your steering hook (α·v) added at blocks.LAYER.hook_resid_pre; removed after."""
    model.add_hook(f"blocks.{LAYER}.hook_resid_pre", steering_hook(v, alpha))
    try:
        return run()
    finally:
        model.reset_hooks()


for alpha in (-2.0, 0.0, 2.0):
    text = steered(alpha, lambda: model.generate(PROMPT, max_new_tokens=8))
    print(f"α = {alpha:+.0f}: {PROMPT}{text!r}")

# %% [markdown]
# Generations are anecdotes; a dose–response curve is a measurement. The metric: log-odds of
# a positive vs a negative next word, `logsumexp(log p(good words)) − logsumexp(log p(bad
# words))` after the prompt, for α from −3 to 3 (with your hook), against three random
# directions of the same norm (those 21 runs in one batch with `run_variants`).

# %%
GOOD = [" great", " good", " amazing", " wonderful", " fantastic"]
BAD = [" terrible", " bad", " awful", " horrible", " boring"]
good_ids, bad_ids = [model.to_single_token(t) for t in GOOD], [model.to_single_token(t) for t in BAD]
alphas = np.linspace(-3, 3, 7)
controls = [random_like(v) for _ in range(3)]
variants = [[st.steer(vec, LAYER, a)] for vec in controls for a in alphas]
tokens = model.to_tokens(PROMPT)
yours = np.concatenate([steered(a, lambda: model(tokens, last_only=True)[:, -1]) for a in alphas])  # [7, V]
logits = np.concatenate([yours, run_variants(model, PROMPT, variants, last_only=True)[:, -1]])
logp = ops.log_softmax(logits.astype(np.float64))
sentiment = np.logaddexp.reduce(logp[:, good_ids], -1) - np.logaddexp.reduce(logp[:, bad_ids], -1)
curve, control_curves = sentiment[: len(alphas)], sentiment[len(alphas):].reshape(3, len(alphas))
print("α:             ", " ".join(f"{a:+6.0f}" for a in alphas))
print("steering:      ", " ".join(f"{s:+6.2f}" for s in curve))
print("random (min):  ", " ".join(f"{s:+6.2f}" for s in control_curves.min(0)))
print("random (max):  ", " ".join(f"{s:+6.2f}" for s in control_curves.max(0)))

from minillm.views.figures import subplots  # noqa: E402

fig, ax = subplots(figsize=(6.5, 3.8))
ax.plot(alphas, curve, marker="o", label="steering vector (love − hate)")
ax.fill_between(alphas, control_curves.min(0), control_curves.max(0), color="tab:gray", alpha=0.3,
                label="3 random directions, same norm (range)")
ax.axhline(curve[len(alphas) // 2], color="k", lw=0.5)
ax.set_xlabel(f"α (added at blocks.{LAYER}.hook_resid_pre, every position)")
ax.set_ylabel("log-odds: good words vs bad words")
ax.set_title(f"{PROMPT!r} → next word", fontsize=10)
ax.legend(fontsize=8)
show(fig, "steering_dose.png")

# %% [markdown]
# ## 2. A function vector: country → capital
#
# Few-shot prompts "France: Paris\nJapan: Tokyo\n…\nItaly:" make the model do the task in
# context. Todd et al. (2024): a few attention heads carry the task itself; the sum of their
# mean outputs at the last token (the *function vector*) added to a **zero-shot** prompt
# "Poland:" should make the model answer with the capital. `st.function_vector` ranks the
# heads by an attribution-patching estimate of their causal effect on prompts with shuffled
# answers (one backward pass over 8 few-shot prompts), built from 12 countries; we test on
# the 8 held-out ones.

# %%
TRAIN, HELD_OUT = st.COUNTRY_CAPITAL[:12], st.COUNTRY_CAPITAL[12:]
fv = st.function_vector(model, TRAIN, n_prompts=8, n_heads=5)
print("function-vector heads (layer, head):", fv.heads, f"‖fv‖ = {np.linalg.norm(fv.vector):.1f}")
FV_LAYER = L // 2  # 15 of 30
queries = [f"{country}:" for country, _ in HELD_OUT]
answers = [f" {capital}" for _, capital in HELD_OUT]
answer_ids = st.first_token_ids(model, answers)
shots = "".join(f"{c}: {a}\n" for c, a in TRAIN[:5])


def evaluate(prompts, interventions=()):
    """p(answer), rank of the answer, and the top-1 token, per prompt (answers repeat per block of 8)."""
    tokens, mask = model.to_tokens_and_mask(prompts)
    logits = model.run_with_interventions(tokens, list(interventions), attention_mask=mask,
                                          last_only=True)[:, -1]
    ids = np.resize(answer_ids, len(prompts))
    target = logits[np.arange(len(prompts)), ids]
    p = ops.softmax(logits.astype(np.float64))[np.arange(len(prompts)), ids]
    return p, (logits > target[:, None]).sum(-1) + 1, [model.to_string([int(i)]) for i in logits.argmax(-1)]


# the four zero-shot conditions in ONE batch: rows 8..15 get fv, 16..23 get 2·fv, 24..31 a random vector
n = len(queries)
added = {"zero-shot + fv": fv.vector, "zero-shot + 2·fv": 2 * fv.vector,
         "zero-shot + 2·random": 2 * random_like(fv.vector)}
batch_ivs = [iv.add(f"blocks.{FV_LAYER}.hook_resid_pre", vec, pos=-1, batch=list(range((j + 1) * n,
                                                                                       (j + 2) * n)))
             for j, vec in enumerate(added.values())]
p_all, rank_all, fv_top = evaluate(queries * 4, batch_ivs)
conditions = {"5-shot (in context)": evaluate([shots + q for q in queries])}
for j, name in enumerate(["zero-shot", *added]):
    rows = slice(j * n, (j + 1) * n)
    conditions[name] = (p_all[rows], rank_all[rows], fv_top[rows])
for name, (p, rank, top) in conditions.items():
    print(f"{name:22} mean p(capital) {p.mean():.2e}, median rank {int(np.median(rank)):6d}, "
          f"top-1 correct {int((rank == 1).sum())}/{len(rank)}; top-1 tokens {top}")

fig, axes = subplots(1, 2, figsize=(13, 3.8))
x = np.arange(len(HELD_OUT))
names = ["zero-shot", "zero-shot + 2·fv", "zero-shot + 2·random", "5-shot (in context)"]
for j, name in enumerate(names):
    axes[0].bar(x + (j - 1.5) * 0.2, np.log10(conditions[name][0]), 0.2, label=name)
axes[0].set_xticks(x, [c for c, _ in HELD_OUT], fontsize=8)
axes[0].set_ylabel("log10 p(capital)")
axes[0].set_title(f"held-out countries; vector added at layer {FV_LAYER}, last token", fontsize=9)
axes[0].legend(fontsize=7)
eff = fv.effects
im = axes[1].imshow(eff, cmap="RdBu", vmin=-np.abs(eff).max(), vmax=np.abs(eff).max(), aspect="auto")
axes[1].set_xlabel("head")
axes[1].set_ylabel("layer")
axes[1].set_title("estimated causal effect of each head's mean output", fontsize=9)
fig.colorbar(im, ax=axes[1])
show(fig, "function_vector.png")

# %% [markdown]
# ## 3. PCA of residual activations
#
# 24 prompts "The word is X", X from four categories; the residual stream at the last token
# of layer 10; PCA by the SVD of the centred data (your `pca_svd`). The first two components
# are the two directions of largest variance — nobody told them about categories.
# Measurement: the share of the PC1–PC2 variance that lies *between* the group means, and
# whether four new words land nearest their own group's centroid.

# %%
GROUPS = {"country": ["France", "Japan", "Brazil", "Kenya", "Canada", "India"],
          "animal": ["dog", "horse", "eagle", "shark", "rabbit", "tiger"],
          "number": ["seven", "twelve", "three", "forty", "nine", "hundred"],
          "emotion": ["happy", "angry", "sad", "afraid", "proud", "jealous"]}
NEW = {"Germany": "country", "wolf": "animal", "eight": "number", "lonely": "emotion"}
PCA_LAYER = min(10, L - 1)
words = [w for ws in GROUPS.values() for w in ws]
labels = np.array([g for g, ws in GROUPS.items() for _ in ws])
hook = f"blocks.{PCA_LAYER}.hook_resid_post"
X = last_token_acts([f"The word is {w}" for w in words], hook)  # [24, d]
components, ratios = pca_svd(X, 5)  # [5, d], [24]
res = PCAResult(X.mean(0), np.asarray(components)[:5], np.zeros(0), np.asarray(ratios),
                (X - X.mean(0)) @ np.asarray(components)[:5].T, hook)  # the plot and projection of yours
c2 = res.coords[:, :2]
centroids = {g: c2[labels == g].mean(0) for g in GROUPS}
between = sum(((centroids[g] - c2.mean(0)) ** 2).sum() * (labels == g).sum() for g in GROUPS)
print(f"explained variance PC1..PC5: {np.round(res.explained_variance_ratio[:5], 3).tolist()}; "
      f"{between / ((c2 - c2.mean(0)) ** 2).sum():.0%} of the PC1–2 variance lies between the groups")
new2 = res.project(last_token_acts([f"The word is {w}" for w in NEW], hook))[:, :2]
guess = [min(centroids, key=lambda g: np.linalg.norm(p - centroids[g])) for p in new2]
print("new words, nearest centroid:", {w: g for w, g in zip(NEW, guess)},
      f"({sum(g == NEW[w] for w, g in zip(NEW, guess))}/{len(NEW)} right)")
show(res.plot_scatter(labels=words, groups=list(labels)), "pca_scatter.png")

# %% [markdown]
# ### Embedding analogies
#
# The oldest direction experiment: `W_E[king] − W_E[man] + W_E[woman]` should point at
# queen. Your `cosine_analogy` ranks by cosine; next to it, the same query ranked by the raw
# dot product, which favours tokens with long embedding rows.

# %%
E = model.embed.W_E
for a, b, c in [(" king", " man", " woman"), (" Paris", " France", " Japan")]:
    ia, ib, ic = (model.to_single_token(t) for t in (a, b, c))
    by_cosine = cosine_analogy(E, ia, ib, ic, 5)
    dots = E @ (E[ia] - E[ib] + E[ic])
    dots[[ia, ib, ic]] = -np.inf
    by_dot = [int(i) for i in np.argsort(-dots)[:5]]
    print(f"{a} − {b} + {c}: by cosine {[model.to_string([i]) for i in by_cosine]}, "
          f"by dot product {[model.to_string([i]) for i in by_dot]}")

# %% [markdown]
# ## 4. A patchscope: let the model read its own hidden state
#
# The identity prompt "cat -> cat; 1135 -> 1135; hello -> hello; ? ->" makes the model
# repeat whatever sits at "?". Replace the stream at "?" by a hidden state h from another
# prompt (`ps.inject`, a `Replace` intervention) and the next token is the model's own
# reading of h. We read the last token of a few entity prompts at source layers 0, 5, …, 25
# and inject at layer 2 of the identity prompt (and, for comparison, at the same layer):
# 36 variants in one batched forward pass (`run_variants`).

# %%
IDENTITY = ps.IDENTITY_PROMPT + " ->"  # the arrow after '?' makes the next token the answer itself
slot = ps.placeholder_position(model, IDENTITY)
SOURCES = ["Diana, Princess of Wales", "The Great Wall of China", "Barack Obama"]
src_layers = list(range(0, L, max(1, L // 6)))  # 0, 5, 10, ..., 25 for SmolLM2
TARGET_LAYER = 2
MODES = ("layer 2", "same layer")
names = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
src_tokens, src_mask = model.to_tokens_and_mask(SOURCES)
_, src_cache = model.run_with_cache(src_tokens, names_filter=names, attention_mask=src_mask)
states = np.stack([src_cache[name][:, -1] for name in names], 1)  # [sources, L, d]: each last token
variants = [[ps.inject(model, states[j, s], TARGET_LAYER if mode == MODES[0] else s, slot)]
            for j in range(len(SOURCES)) for mode in MODES for s in src_layers]
logits = run_variants(model, IDENTITY, variants, last_only=True)[:, -1]  # ONE batched forward pass
top_all = np.array([model.to_string([int(i)]) for i in logits.argmax(-1)], dtype=object)
top_all = top_all.reshape(len(SOURCES), len(MODES), len(src_layers))
grid, hits = [], []
for j, source in enumerate(SOURCES):
    last = model.to_str_tokens(source)[-1]
    for m, mode in enumerate(MODES):
        top = list(top_all[j, m])
        grid.append((f"{source[:18]} ({mode})", top))
        hits.append([t.strip() == last.strip() for t in top])
        print(f"{source[:24]:24} inject at {mode:10}: {top}")
hits = np.array(hits)
print(f"the source's own last token is read back in {hits[0::2].mean():.0%} of the cells (inject at layer 2) "
      f"and {hits[1::2].mean():.0%} (same layer)")
described = ps.patchscope(model, ps.hidden_state(model, SOURCES[0], 4), TARGET_LAYER, IDENTITY,
                          pos=slot, max_new_tokens=3)
print(f"{SOURCES[0]!r}, layer 4 → injected at layer 2, generated: {described!r}")

fig, ax = subplots(figsize=(11, 3.8))
ax.imshow(hits, cmap="Greens", vmin=0, vmax=1.5, aspect="auto")
for r, (_, top) in enumerate(grid):
    for c, t in enumerate(top):
        ax.text(c, r, repr(t)[1:-1][:10], ha="center", va="center", fontsize=7)
ax.set_xticks(range(len(src_layers)), [f"L{s}" for s in src_layers])
ax.set_yticks(range(len(grid)), [g[0] for g in grid], fontsize=7)
ax.set_xlabel("source layer (the stream before this block, at the source's last token)")
ax.set_title("patchscope with the identity prompt: the model's next token (green = the source's own token)",
             fontsize=9)
show(fig, "patchscope.png")

