# %% [markdown]
# # Lesson 07: Median replacement and the sparse core
#
# The study: at the last position of "It was a dark and stormy" (the model's answer is
# " night"), take ONE layer's MLP neurons, replace the top p% most active ones by the
# median activation of that layer, and record how the prediction of " night" moves. Do it
# for every layer and for coarse (10–90 %) and fine (0.2–4.5 %) rates. A report on GPT-2
# Large found: 10 % and 90 % give nearly the same curve (a small core carries what the MLP
# writes), variation appears only at fine rates, and layer 0 is catastrophic. We run the
# study on SmolLM2, measure with the log-probability (and see why the raw logit misleads),
# and find that on a gated (SwiGLU) MLP the answer depends on what "most active" means.
# Read README.md first.
#
# Runs headless on the offline SmolLM2 in about 10 s. Another model:
# `MINILLM_LESSON_MODEL=gpt2-large python lesson.py` (after `minillm fetch gpt2-large`).

# %%
import os

import numpy as np

import minillm
from minillm.course import show, student_version
from minillm.interp import ablation as A

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
L, m = model.cfg.n_layers, model.cfg.d_mlp
PROMPT, TARGET = "It was a dark and stormy", " night"
toks = model.to_tokens(PROMPT)
target = model.to_single_token(TARGET)
logits = model(toks)[0, -1].astype(np.float64)
logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
top = np.argsort(-logits)[:5]
print(f"{MODEL}: {L} layers x {m} MLP neurons; prompt {model.to_str_tokens(toks[0])}")
print("next token:", ", ".join(f"{model.to_string([int(i)])!r} {np.exp(logp[i]):.3f}" for i in top))

# %% [markdown]
# ## 1. What the activations look like
#
# The study reads `blocks.L.mlp.hook_post` at the last position: for GPT-2 that is
# GELU(x W_in + b_in), which is ≥ −0.17 and has a long positive tail; for SmolLM2 it is
# SiLU(x W_gate) ⊙ (x W_in), a product whose sign is the sign of the linear half — about
# half the neurons are negative and the median sits near 0.

# %%
_, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("mlp.hook_post"))
post = np.stack([cache[f"blocks.{l}.mlp.hook_post"][0, -1] for l in range(L)]).astype(np.float64)  # [L, m]
medians = np.median(post, axis=1)
print(f"median per layer: between {medians.min():+.4f} and {medians.max():+.4f}")
print(f"share of negative activations: {np.mean(post < 0):.2f}; largest activation "
      f"{post.max():.1f}, most negative {post.min():.1f}")

from minillm.views.figures import subplots  # noqa: E402

fig, axes = subplots(1, 2, figsize=(11, 3.5))
for ax, l in zip(axes, (0, L - 2)):
    a = post[l]
    cut = np.sort(a)[::-1][A.n_replaced(10, m) - 1]
    ax.hist(a, bins=120, color="0.6")
    ax.axvline(medians[l], color="k", lw=1, label=f"median {medians[l]:+.3f}")
    ax.axvline(cut, color="C3", lw=1, ls="--", label="top 10 % above this")
    ax.set_yscale("log")
    ax.set_title(f"layer {l}: hook_post at the last position")
    ax.legend(fontsize=7)
show(fig, "activation_histograms.png")

# %% [markdown]
# ## 2. The study, measured with log p(" night")
#
# `A.median_replacement` does one run per (layer, rate), batched, with the prompt's prefix
# cached (only the last position changes). `measure="log_prob"` records
# Δ log p(target); the ripple plot draws one line per rate across layers, the heatmap the
# whole [layer, rate] table.

# %%
mr = A.median_replacement(model, PROMPT, TARGET, measure="log_prob", progress=False)
d = mr.delta.values  # [L, rates]
rates = mr.rates
show(A.plot_ripple(mr), "ripple_log_prob.png")
show(mr.delta.plot(), "median_heatmap_log_prob.png")
print(f"{len(rates)} rates x {L} layers in {mr.seconds:.1f} s; base log p = {mr.base_logit:.4f} "
      f"(p = {np.exp(mr.base_logit):.3f})")
worst = {r: int(np.argmin(d[:, j])) for j, r in enumerate(rates)}
print("most damaging layer per rate:", ", ".join(f"{r:g}%→{w}" for r, w in worst.items()))
j10, j90 = rates.index(10), rates.index(90)
gap = np.abs(d[:, j10] - d[:, j90])
print(f"10% vs 90%: {int((gap < 0.05).sum())}/{L} layers within 0.05 nats; median gap {np.median(gap):.4f}; "
      f"largest at layer {int(np.argmax(gap))} ({gap.max():.3f})")
p0 = np.exp(mr.base_logit + d[0])
print("layer 0, p(target) by rate:", ", ".join(f"{r:g}%: {p:.2f}" for r, p in zip(rates, p0)))

# %% [markdown]
# Is layer 0 "catastrophic"? Check the rank of the target with the 90 % replacement, with
# your exercises 1-3 once they are implemented (until then, the package's equivalents):
# your `top_p_neurons` picks the set, your hook replaces it, your `deviation` measures it.

# %%
def _reference_top_p(acts, rate, by="value"):
    return A.rank_neurons(np.asarray(acts), by)[: A.n_replaced(rate, len(acts))]


def _reference_hook(neurons, median, pos=-1):
    def fn(act, hook):
        out = act.copy()
        out[:, pos, neurons] = median
        return out
    return fn


def _reference_deviation(edited_logits, base_logits, target, measure="log_prob"):
    def value(z):
        z = np.asarray(z, np.float64)[:, -1]
        if measure == "logit":
            return z[:, target]
        zmax = z.max(axis=-1, keepdims=True)
        return z[:, target] - (zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=-1)))
    return value(edited_logits) - value(base_logits)


top_p_neurons = student_version(7, "top_p_neurons", _reference_top_p)
median_replacement_hook = student_version(7, "median_replacement_hook", _reference_hook)
deviation = student_version(7, "deviation", _reference_deviation)
neurons = np.asarray(top_p_neurons(post[0], 90)).astype(np.int64)
hook = median_replacement_hook(neurons.tolist(), float(np.median(post[0])))
base_all = model(toks)
edited = model.run_with_hooks(toks, fwd_hooks=[("blocks.0.mlp.hook_post", hook)])
z = edited[0, -1]
rank = int((z > z[target]).sum()) + 1
print(f"layer 0, 90 % replaced ({len(neurons)} neurons): {TARGET!r} has rank {rank}, "
      f"top-3 {[model.to_string([int(i)]) for i in np.argsort(-z)[:3]]}; "
      f"Δ log p {float(np.ravel(deviation(edited, base_all, target, 'log_prob'))[0]):+.3f}")

# %% [markdown]
# ## 3. Where does the effect appear: fine vs coarse rates
#
# For the layers that matter at all (|Δ| ≥ 0.02 nats at some rate), how much of the 90 %
# effect is already there at 1–2 %? A ratio near 1 means the top 1–2 % carry it; a ratio
# that grows with the rate means the effect needs many neurons.

# %%
big = [l for l in range(L) if np.abs(d[l]).max() >= 0.02]
for l in big:
    row = " ".join(f"{d[l, rates.index(r)]:+.3f}" for r in (0.5, 1, 2, 4.5, 10, 50, 90))
    print(f"layer {l:2d}: Δ log p at 0.5/1/2/4.5/10/50/90 % = {row}")
share2 = np.array([d[l, rates.index(2)] / d[l, j90] if abs(d[l, j90]) > 0.02 else np.nan for l in big])
print(f"Δ(2%)/Δ(90%) over layers with |Δ(90%)| > 0.02: median {np.nanmedian(share2):.2f}, "
      f"values {np.round(share2[~np.isnan(share2)], 2).tolist()}")

# %% [markdown]
# ## 4. Logit vs log-probability
#
# The original study tracked the target's raw logit. But log p = z − logsumexp(z): a
# change that lifts every logit together moves z(" night") without changing any
# probability. Run the same sweep with `measure="logit"` and split
# Δ logit = Δ log p + Δ logsumexp.

# %%
ml = A.median_replacement(model, PROMPT, TARGET, measure="logit", progress=False)
dl = ml.delta.values
dz = dl - d  # Δ logsumexp
show(A.plot_ripple(ml), "ripple_logit.png")
l28 = int(np.argmax(dl[:, j90]))
print(f"largest logit rise at 90 %: layer {l28}, Δ logit {dl[l28, j90]:+.2f} but Δ log p {d[l28, j90]:+.3f} "
      f"(Δ logsumexp {dz[l28, j90]:+.2f})")
same_sign = np.mean(np.sign(dl) == np.sign(d))
print(f"Δ logit and Δ log p have the same sign in {same_sign:.0%} of the cells; corr "
      f"{np.corrcoef(dl.ravel(), d.ravel())[0, 1]:+.2f}; worst layer at 90 %: by logit "
      f"{int(np.argmin(dl[:, j90]))}, by log p {int(np.argmin(d[:, j90]))}")
fig, ax = subplots(figsize=(5, 4))
ax.scatter(dl.ravel(), d.ravel(), s=6, c=np.repeat(np.arange(L), len(rates)), cmap="viridis")
ax.axhline(0, color="k", lw=0.5)
ax.axvline(0, color="k", lw=0.5)
ax.set_xlabel(f"Δ logit({TARGET!r})")
ax.set_ylabel(f"Δ log p({TARGET!r})")
ax.set_title("every (layer, rate) cell; colour = layer", fontsize=9)
show(fig, "logit_vs_log_prob.png")

# %% [markdown]
# ## 5. What does "most active" mean for a gated MLP?
#
# Ranking by value leaves the most negative neurons alone — at 90 % the 10 % that stay
# are exactly the most negative ones, which for SwiGLU are as large as the positive ones.
# Ranking by distance from the median, |a − median|, replaces the neurons the
# replacement actually moves. First the share of the total |a − median| that each
# ranking moves, then the same study with the magnitude ranking (your exercise 1,
# `by="magnitude"`), which `median_replacement(..., by="magnitude")` runs for you.

# %%
dev = np.abs(post - medians[:, None])  # [L, m]
order_abs = A.rank_neurons(post, by="magnitude")  # [L, m]
for r in (1, 10, 50, 90):
    k = A.n_replaced(r, m)
    by_value = np.take_along_axis(dev, mr.order[:, :k], 1).sum(1) / dev.sum(1)
    by_mag = np.take_along_axis(dev, order_abs[:, :k], 1).sum(1) / dev.sum(1)
    print(f"top {r:>2}%: moves {by_value.mean():.0%} of Σ|a − median| ranked by value, "
          f"{by_mag.mean():.0%} ranked by magnitude")

MAG_RATES = [0.5, 1, 2, 4.5, 10, 30, 50, 90]
mm = A.median_replacement(model, PROMPT, TARGET, rates=MAG_RATES, measure="log_prob", by="magnitude",
                          progress=False)
dm = mm.delta.values  # [L, rates]
pm0 = np.exp(mr.base_logit + dm[0])
print("layer 0 by magnitude, p(target):", ", ".join(f"{r:g}%: {p:.3f}" for r, p in zip(MAG_RATES, pm0)))
rest = np.abs(dm[1:, MAG_RATES.index(90)]).max()
print(f"layers 1..{L - 1} by magnitude at 90 %: largest |Δ log p| {rest:.3f} "
      f"(layer {1 + int(np.argmax(np.abs(dm[1:, MAG_RATES.index(90)])))})")
gap_m = np.abs(dm[:, MAG_RATES.index(10)] - dm[:, MAG_RATES.index(90)])
print(f"by magnitude, 10% vs 90%: {int((gap_m < 0.05).sum())}/{L} layers within 0.05 nats")

fig, axes = subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(rates, d[0], "o-", label="by value (the study)")
axes[0].plot(MAG_RATES, dm[0], "s-", label="by |a − median|")
axes[0].set_xscale("log")
axes[0].set_xlabel("rate p (%)")
axes[0].set_ylabel(f"Δ log p({TARGET!r})")
axes[0].set_title("layer 0")
axes[0].legend(fontsize=8)
axes[1].plot(range(L), d[:, j90], "o-", label="by value, 90 %")
axes[1].plot(range(L), dm[:, MAG_RATES.index(90)], "s-", label="by |a − median|, 90 %")
axes[1].set_xlabel("layer")
axes[1].set_title("every layer, 90 %")
axes[1].legend(fontsize=8)
show(fig, "value_vs_magnitude.png")

# %% [markdown]
# ## What to take away
#
# * On SmolLM2 the signed study reproduces "10 % ≈ 90 %" (most layers within 0.05 nats)
#   and "layer 0 hurts most" (from ~3 % up), but not "catastrophic": p(" night") halves and
#   stays first. Every other layer moves log p by less than 0.1 nats.
# * Much of a layer's effect is present at 1–2 %, but not everywhere (layer 0 keeps growing).
# * The raw logit is a poor measure: it moves by ±3 where the probability barely moves.
# * On a gated MLP "most active" must count negative activations: ranked by |a − median|,
#   layer 0 IS catastrophic, and the 10 % ≈ 90 % coincidence weakens.
