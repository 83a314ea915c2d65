# %% [markdown]
# # Lesson 05: Neurons: what one neuron does
#
# We look for an MLP neuron of SmolLM2 that goes with a phenomenon — "the current token is
# a digit" — over a small set of texts, then do the four things one can do with a single
# neuron: correlate it with a label, read what it writes through the unembedding, remove it
# (zero and mean ablation), and vary its activation (a scale sweep). Read README.md first.
#
# Runs headless on the offline SmolLM2 in under a minute. Another model:
# `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`; GPT-2 does not
# split numbers into digits, so fewer positions are labelled).

# %%
import os

import numpy as np

import minillm
from minillm.course import show, student_version
from minillm.interp import interventions as iv
from minillm.interp import readout
from minillm.interp.batch import run_variants

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
L, m = model.cfg.n_layers, model.cfg.d_mlp
print(model)

TEXTS = [
    "The meeting is on March 14, 2023 at 10:30 in room 215.",
    "She bought 3 apples and 12 oranges for 7 dollars.",
    "The quick brown fox jumps over the lazy dog near the river.",
    "In 1969 people walked on the moon, 384400 km away.",
    "He likes to read old books about history and art.",
    "def add(a, b):\n    return a + b  # adds 2 numbers",
]

# %% [markdown]
# ## 1. Activations and a label
#
# One batched run caches `mlp.hook_post` (the neuron activations, `[b, p, m]`) of every
# layer. The label of a position is 1 if its token is a digit. With padding, only the real
# positions (mask 1) are samples.

# %%
ids, mask = model.to_tokens_and_mask(TEXTS)  # [b, p], left-padded
names = [f"blocks.{l}.mlp.hook_post" for l in range(L)]
_, cache = model.run_with_cache(ids, names_filter=names, attention_mask=mask)
real = mask.astype(bool)
tokens = [model.to_string([int(t)]) for t in ids[real]]  # the n real positions, row by row
label = np.array([t.strip().isdigit() for t in tokens], dtype=np.float64)  # [n]
acts = np.stack([cache[n][real] for n in names]).astype(np.float64)  # [L, n, m]
print(f"{len(tokens)} positions, {int(label.sum())} of them digits")

# %% [markdown]
# ## 2. Correlation of every neuron with the label
#
# Pearson correlation over the n positions: `r = Σ(a−ā)(y−ȳ) / sqrt(Σ(a−ā)² Σ(y−ȳ)²)`
# (exercise 1). We look at the second half of the network, where neurons write most
# directly to the output, and list the five best.

# %%
def _reference_correlation(a, y):  # a [n, m], y [n] -> [m]: Pearson r, 0 for a constant neuron
    a_c, y_c = a - a.mean(axis=0), y - y.mean()
    return (a_c.T @ y_c) / np.maximum(np.sqrt((a_c**2).sum(0)) * np.sqrt((y_c**2).sum()), 1e-12)


# Your exercise 1 once implemented (until then, the reference above).
neuron_label_correlation = student_version(5, "neuron_label_correlation", _reference_correlation)
corr = np.stack([np.asarray(neuron_label_correlation(acts[layer], label), np.float64)
                 for layer in range(L)])  # [L, m]
print("best r per layer:", np.round(corr.max(axis=1), 2).tolist())
digit_ids = [model.to_single_token(str(d)) for d in range(10)]
candidates = []
for f in np.argsort(-corr[L // 2:], axis=None)[:5]:
    l, i = np.unravel_index(f, corr[L // 2:].shape)
    l, i = int(l + L // 2), int(i)
    out = readout.neuron_readout(model, l, i, k=5).logits_out  # [V]
    digit_rank = int(np.median(np.argsort(np.argsort(-out))[digit_ids]))  # 0 = most promoted token
    candidates.append((l, i, float(corr[l, i]), digit_rank))
    print(f"L{l}N{i}: r = {corr[l, i]:.3f}; median rank of the digits '0'..'9' in its output readout: "
          f"{digit_rank} of {model.cfg.d_vocab}")
DETECTOR = candidates[0][:2]  # the best correlate
WRITER = min(candidates, key=lambda c: c[3])[:2]  # the candidate that writes digits
print(f"best correlate: L{DETECTOR[0]}N{DETECTOR[1]}; the candidate that promotes digits most: "
      f"L{WRITER[0]}N{WRITER[1]}")
a = acts[WRITER[0], :, WRITER[1]]  # [n]
mean_a = float(a.mean())
top = np.argsort(-a)[:8]
print(f"L{WRITER[0]}N{WRITER[1]} top-activating positions:",
      [(tokens[j], round(float(a[j]), 2)) for j in top])

# %% [markdown]
# ## 3. When is a neuron "active"?
#
# SmolLM2's neurons are `silu(gate)·up`: they can be negative, and they are rarely exactly
# zero. "Active" should mean *above its typical value*, the mean over a reference set —
# not merely above zero.

# %%
for l, i in (DETECTOR, WRITER):
    x, mu = acts[l, :, i], float(acts[l, :, i].mean())
    for what, sel in (("digits", label == 1), ("other tokens", label == 0)):
        print(f"L{l}N{i} {what:>12}: mean {x[sel].mean():+.3f}, above 0: {(x[sel] > 0).mean():4.0%}, "
              f"above the mean ({mu:+.3f}): {(x[sel] > mu).mean():4.0%}")

# %% [markdown]
# ## 4. What the neurons write, read through the unembedding
#
# When a neuron fires with activation `a`, it adds `a·W_out[i]` to the residual stream.
# Read as logits: `(W_out[i] ⊙ w_final) @ W_U` (the final norm's gain included, its
# position-dependent scale left out: it does not change the ranking). The first line per
# neuron is your `output_readout` (exercise 3); `readout.neuron_readout` adds what the
# neuron reads (its gate and input weights through the embedding).

# %%


def _reference_readout(w_out, w_final, W_U, k=10):  # (promoted ids, suppressed ids)
    order = np.argsort((w_out * w_final) @ W_U, kind="stable")  # [V], ascending
    return [int(t) for t in order[::-1][:k]], [int(t) for t in order[:k]]


output_readout = student_version(5, "output_readout", _reference_readout)
for l, i in (DETECTOR, WRITER):
    up, down = output_readout(model.blocks[l].mlp.W_out[i], model.ln_final.w, model.unembed.W_U, 8)
    print(f"L{l}N{i} (your output_readout): promotes {[model.to_string([t]) for t in up]}, "
          f"suppresses {[model.to_string([t]) for t in down]}")
    print(readout.neuron_readout(model, l, i, k=8))
show(readout.plot_neuron_readout(readout.neuron_readout(model, *WRITER, k=10)), "neuron_readout.png")

# %% [markdown]
# ## 5. Remove it, and vary it
#
# On one prompt we run, in one batch (`run_variants`), for each of the two neurons: zero
# ablation, mean ablation (its corpus mean), and the activation multiplied by −1, 0.5, 2
# and 4 — plus the clean model. The metric: the probability mass on the ten digit tokens
# as the next token, at positions whose next token *is* a digit, and at the others
# (exercise 4). The mean-ablation runs use your `mean_ablation_hook` (exercise 2).

# %%
PROMPT = "Call 555 0199 or box 4417 by the 12th."
p_ids = model.to_tokens(PROMPT)
p_toks = model.to_str_tokens(p_ids[0])
next_is_digit = np.array([t.strip().isdigit() for t in p_toks[1:]] + [False])
print(f"prompt: {p_toks}")
FACTORS = [-1.0, 0.0, 0.5, 1.0, 2.0, 4.0]
variants, rows = [[]], {}
for l, i in (DETECTOR, WRITER):
    mean_vec = acts[l].mean(0).astype(model.dtype)  # [m]: corpus mean of every neuron of layer l
    rows[(l, i, "mean")] = len(variants)
    variants.append([])  # a placeholder: this row is run below with your hook
    for f in FACTORS:
        if f == 1.0:
            rows[(l, i, f)] = 0  # the clean run
            continue
        rows[(l, i, f)] = len(variants)
        variants.append([iv.zero("post", layer=l, neuron=i)] if f == 0 else
                        [iv.scale("post", f, layer=l, neuron=i)])
logits = run_variants(model, p_ids, variants)  # [N, p, V]


def _reference_ablation_hook(neuron, value):
    def fn(act, hook):  # [b, p, m] -> a copy with one neuron set to value
        out = act.copy()
        out[..., neuron] = value
        return out
    return fn


mean_ablation_hook = student_version(5, "mean_ablation_hook", _reference_ablation_hook)
for l, i in (DETECTOR, WRITER):
    value = float(acts[l][:, i].mean())  # its corpus mean
    logits[rows[(l, i, "mean")]] = model.run_with_hooks(
        p_ids, [(f"blocks.{l}.mlp.hook_post", mean_ablation_hook(i, value))])[0]


def log_softmax(x):
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# Your exercise 4 once implemented (until then, the same sum of softmax probabilities).
token_set_mass = student_version(5, "token_set_mass",
                                 lambda z, ids: np.exp(log_softmax(z)[..., list(ids)]).sum(-1))
mass = np.asarray(token_set_mass(logits, digit_ids))  # [N, p]
print(f"{'neuron':<10} {'variant':<8} {'digit mass (next=digit)':>24} {'(next=other)':>13}")
for l, i in (DETECTOR, WRITER):
    for key in ["mean"] + FACTORS:
        j = rows[(l, i, key)]
        name = "mean" if key == "mean" else ("zero" if key == 0 else f"×{key:g}")
        print(f"L{l}N{i:<6} {name:<8} {mass[j, next_is_digit].mean():>24.4f} "
              f"{mass[j, ~next_is_digit].mean():>13.4f}")

from minillm.views.figures import subplots  # noqa: E402

fig, axes = subplots(1, 2, figsize=(12, 4))
bins = np.linspace(a.min(), a.max(), 40)
axes[0].hist(a[label == 0], bins=bins, alpha=0.6, label="other tokens")
axes[0].hist(a[label == 1], bins=bins, alpha=0.6, label="digits")
axes[0].axvline(0, color="k", lw=1)
axes[0].axvline(mean_a, color="red", ls="--", label=f"mean {mean_a:+.2f}")
axes[0].set_yscale("log")
axes[0].set_xlabel(f"L{WRITER[0]}N{WRITER[1]} activation (hook_post)")
axes[0].set_ylabel("positions")
axes[0].set_title(f"r = {corr[WRITER]:.2f} with 'token is a digit'")
axes[0].legend(fontsize=8)
for l, i in (DETECTOR, WRITER):
    line, = axes[1].plot(FACTORS, [mass[rows[(l, i, f)], next_is_digit].mean() for f in FACTORS], marker="o",
                         label=f"L{l}N{i}, next token is a digit")
    axes[1].axhline(mass[rows[(l, i, "mean")], next_is_digit].mean(), color=line.get_color(), ls="--", lw=1,
                    label=f"L{l}N{i}, mean ablation")
axes[1].set_xlabel("activation multiplied by")
axes[1].set_ylabel("p(next token is a digit)")
axes[1].set_title("scale sweep: monotone for the writer, flat for the detector")
axes[1].legend(fontsize=8)
show(fig, "neuron_sweep.png")

# %% [markdown]
# ## What to take away
#
# * A neuron that correlates strongly with a label can be found in seconds, but correlation
#   is not function: the best correlate's output weights, read through `W_U`, do not promote
#   digits (their median rank is printed above, in the thousands). A weaker correlate is the
#   one that writes digits: detecting and writing are different jobs.
# * Removing it changes the prediction only a little: the model is redundant — other
#   neurons and heads carry the same information. Zero and mean ablation differ when the
#   neuron's mean is far from 0.
# * The scale sweep is monotone but modest even at ×4: one neuron is one small vote.
