# %% [markdown]
# # Lesson 03: Attention and GQA
#
# Attention patterns with token labels, how SmolLM2's 9 query heads share 3 key/value
# heads, and two kinds of heads found by a score: previous-token heads and induction heads,
# on a repeated sequence of random tokens. Read README.md first; it is the lecture.
#
# Another model: `MINILLM_LESSON_MODEL=gpt2 python lesson.py` (after `minillm fetch gpt2`).

# %%
import os

import numpy as np

import minillm
from minillm import ops
from minillm.course import show, student_version
from minillm.interp.results import LabelledArray

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)
cfg = model.cfg
L, H, KV = cfg.n_layers, cfg.n_heads, cfg.n_kv_heads
g = H // KV
print(model)


def _reference_pattern(q, k):  # [p, e], [p, e] -> [p, p]
    scores = q @ k.T / np.sqrt(q.shape[-1])
    return ops.softmax(np.where(np.triu(np.ones(scores.shape, dtype=bool), k=1), -np.inf, scores))


# Your exercises 1 and 2 once implemented (until then, the references): the patterns shown
# below are computed by your pattern_from_qk, the kv-groups by your kv_head_of.
pattern_from_qk = student_version(3, "pattern_from_qk", _reference_pattern)
kv_head_of = student_version(3, "kv_head_of", lambda head, n_heads, n_kv: head // (n_heads // n_kv))

# %% [markdown]
# ## 1. Patterns on real text
#
# `hook_pattern` is `[batch, head, query, key]`: row q says where position q looks. The
# text repeats "Mr and Mrs Dursley", so an induction head should, at the second " Mrs",
# look at the token after the first " Mrs". The three patterns shown are recomputed from
# the rotated queries and keys by your `pattern_from_qk` (query head j reads the keys of
# kv-head `kv_head_of(j, ...)`), and compared with the model's `hook_pattern`.

# %%
from minillm.views import figures  # noqa: E402
from minillm.views.figures import subplots  # noqa: E402

text = "Mr and Mrs Dursley were proud to say that they were perfectly normal. Mr and Mrs Dursley"
tokens = model.to_tokens(text)
labels = model.to_str_tokens(tokens[0])
_, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_pattern", "hook_k", "hook_q",
                                                                            "hook_rot_k", "hook_rot_q")))
print(f"hook_q {cache['blocks.0.attn.hook_q'].shape} (9 query heads), "
      f"hook_k {cache['blocks.0.attn.hook_k'].shape} ({KV} kv-heads), "
      f"hook_pattern {cache['blocks.0.attn.hook_pattern'].shape}")

shown = [(0, 0), (16, 0), (18, 6)] if MODEL.startswith("smollm2") else [(0, 0), (L // 2, 0), (L - 1, 0)]
pats = [pattern_from_qk(cache[f"blocks.{layer}.attn.hook_rot_q"][0, :, head],  # [p, e]
                        cache[f"blocks.{layer}.attn.hook_rot_k"][0, :, kv_head_of(head, H, KV)])
        for layer, head in shown]  # each [p, p]
gap = max(float(np.abs(pat - cache[f"blocks.{layer}.attn.hook_pattern"][0, head]).max())
          for pat, (layer, head) in zip(pats, shown))
print(f"patterns of heads {shown} from q and k: max |difference| from hook_pattern {gap:.1e}")
fig = figures.attention_patterns(pats, labels, shown, kv_group=g)
show(fig, "patterns_text.png")

# %% [markdown]
# ## 2. Grouped-query attention: who shares keys with whom
#
# Query head j reads kv-head j // g. Heads of a group see the *same* keys and values and
# differ only in their queries. Are their patterns more alike than those of heads in
# different groups? Measure the mean cosine between the flattened patterns of two heads
# of the same layer, within a group and across groups.

# %%
kv_of = [kv_head_of(j, H, KV) for j in range(H)]  # your exercise 2
print(f"g = {H} // {KV} = {g}:", {kv: [j for j in range(H) if kv_of[j] == kv] for kv in range(KV)})
within, across = [], []
for layer in range(L):
    pat = cache[f"blocks.{layer}.attn.hook_pattern"][0].reshape(H, -1)  # [h, p·p]
    unit = pat / np.linalg.norm(pat, axis=1, keepdims=True)
    sim = unit @ unit.T  # [h, h]
    for i in range(H):
        for j in range(i + 1, H):
            (within if kv_of[i] == kv_of[j] else across).append(sim[i, j])
if g > 1:
    print(f"pattern cosine between heads of the same layer: within a kv-group {np.mean(within):.3f} "
          f"(n={len(within)}), across groups {np.mean(across):.3f} (n={len(across)})")

# %% [markdown]
# ## 3. Previous-token and induction heads
#
# A batch of random token sequences, each repeated twice after a start token:
# `[BOS, r_0 … r_{T-1}, r_0 … r_{T-1}]`. The first copy is unpredictable; the second is
# perfectly predictable *if* the model can copy: at r_i, find r_i earlier, and predict what
# came after it. Score every head by
# - previous-token score: mean attention from position q to q − 1;
# - induction score: mean attention, over the second copy, from q to q − T + 1.

# %%
T, B = 24, 2
# The document separator the model was pretrained with (SmolLM2 and GPT-2: <|endoftext|>),
# else the configured BOS. (SmolLM2's config names <|im_start|> as BOS: a chat marker, and a
# worse start for plain text; see README.)
bos = model.tokenizer.token_to_id("<|endoftext|>")
bos = bos if bos is not None else (cfg.bos_token_id if cfg.bos_token_id is not None else 0)
rng = np.random.default_rng(0)
rand = rng.integers(1000, min(cfg.d_vocab, 40000), size=(B, T))
seq = np.concatenate([np.full((B, 1), bos), rand, rand], axis=1)  # [B, 1 + 2T]
logits, rcache = model.run_with_cache(seq, names_filter=lambda n: n.endswith("hook_pattern"))
patterns = np.stack([rcache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(L)])  # [L, B, h, P, P]

def _reference_prev(pattern):  # [b, h, P, P] -> [h]
    q = np.arange(1, pattern.shape[-1])
    return pattern[:, :, q, q - 1].mean(axis=(0, 2))


def _reference_induction(pattern, seq_len, offset=0):  # [b, h, P, P] -> [h]
    q = np.arange(offset + seq_len, offset + 2 * seq_len)
    return pattern[:, :, q, q - seq_len + 1].mean(axis=(0, 2))


# Your exercises 3 and 4 once implemented (until then, the references above).
prev_token_score = student_version(3, "prev_token_score", _reference_prev)
induction_score = student_version(3, "induction_score", _reference_induction)
prev = np.stack([prev_token_score(patterns[layer]) for layer in range(L)])  # [L, h]
induction = np.stack([induction_score(patterns[layer], T, offset=1) for layer in range(L)])  # [L, h]

logp = ops.log_softmax(logits.astype(np.float64))[:, :-1]  # [B, P-1, V]: predicts the next token
nll = -np.take_along_axis(logp, seq[:, 1:, None], axis=-1)[..., 0]  # [B, P-1]
print(f"loss on the first copy {nll[:, :T].mean():.2f} nats, on the second copy {nll[:, T + 1:].mean():.2f} "
      f"(chance: ln V = {np.log(cfg.d_vocab):.2f})")

# %% [markdown]
# The start token is an experimental condition. The same random sequences (batch 4) with no
# start token, with the configured BOS, and with the pretraining document separator:

# %%
rand4 = np.random.default_rng(0).integers(1000, min(cfg.d_vocab, 40000), size=(4, T))
starts = {"no start token": None, f"configured BOS {model.to_string([cfg.bos_token_id])!r}": cfg.bos_token_id,
          "<|endoftext|>": model.tokenizer.token_to_id("<|endoftext|>")}
for what, start in starts.items():
    if what != "no start token" and start is None:
        continue
    toks = np.concatenate(([np.full((4, 1), start)] if start is not None else []) + [rand4, rand4], axis=1)
    off = 0 if start is None else 1
    lg, c = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_pattern"))
    lp = ops.log_softmax(lg.astype(np.float64))[:, :-1]
    second = -np.take_along_axis(lp, toks[:, 1:, None], axis=-1)[..., 0][:, off + T:].mean()
    qi = np.arange(off + T, off + 2 * T)
    best = max(c[f"blocks.{layer}.attn.hook_pattern"][:, :, qi, qi - T + 1].mean(axis=(0, 2)).max()
               for layer in range(L))
    print(f"{what:>32}: second-copy loss {second:.2f} nats, top induction score {best:.2f}")

# %%
layer_labels, head_labels = [str(i) for i in range(L)], [str(j) for j in range(H)]
for name, score in (("previous-token", prev), ("induction", induction)):
    res = LabelledArray(score, ("layer", "head"), (layer_labels, head_labels), title=f"{name} score")
    top = ", ".join(f"{lh[0]}.{lh[1]} ({v:.2f}, kv {kv_of[int(lh[1])]})" for lh, v in res.top(6))
    print(f"top {name} heads (layer.head): {top}")
    show(res.plot(), f"{name.replace('-', '_')}_scores.png")

fig, axes = subplots(1, 3, figsize=(16, 4.5))
for ax, score, title in ((axes[0], prev, "previous-token score"), (axes[1], induction, "induction score")):
    im = ax.imshow(score, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    for kv in range(1, KV):
        ax.axvline(kv * g - 0.5, color="white", lw=0.8)  # kv-group boundaries
    fig.colorbar(im, ax=ax, label="score (mean attention)")
ax = axes[2]
ax.plot(np.arange(1, seq.shape[1]), nll.mean(0))
ax.axvline(T + 0.5, color="grey", ls="--")
ax.set_xlabel("position of the predicted token")
ax.set_ylabel("loss (nats)")
ax.set_title("loss per position: the second copy is predicted")
show(fig, "induction_heatmaps.png")

best_l, best_h = np.unravel_index(np.argmax(induction), induction.shape)
fig, ax = subplots(figsize=(6, 5))
im = ax.imshow(patterns[best_l, 0, best_h], cmap="Blues", vmin=0, vmax=1)
fig.colorbar(im, ax=ax, label="attention weight")
ax.set_title(f"head {best_l}.{best_h} on a repeated random sequence:\nthe induction stripe", fontsize=10)
ax.set_xlabel("key")
ax.set_ylabel("query")
show(fig, "induction_stripe.png")
