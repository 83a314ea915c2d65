# %% [markdown]
# # Lesson 14: Reverse-engineer what you trained
#
# The model you trained in lesson 13 learned to continue repeated random sequences. Which
# heads do it, and how? Find the previous-token head and the induction head with attention
# patterns and scores, measure how the two compose (K-composition), then test the story
# causally: ablation, activation patching, and a weight edit that is reverted bit for bit.
# Read README.md first; it is the lecture. Your functions from `exercises.py` are used as
# soon as they are implemented.

# %%
import os

import numpy as np

import minillm
from minillm.course import circuits, get_lesson, output_dir, show, student_version
from minillm.course import training as T
from minillm.views.figures import subplots

SEED = int(os.environ.get("MINILLM_LESSON_SEED", "0"))
SEQ_LEN = 24

head_scores = student_version(14, "head_scores", circuits.head_scores)
k_composition = student_version(14, "k_composition", circuits.k_composition)
ablation_effect = student_version(14, "ablation_effect", circuits.ablation_effect)

# %% [markdown]
# ## 0. Your model
#
# Lesson 13 saved its model under its output folder. If it is not there (you skipped lesson
# 13, or ran it elsewhere), a model is trained here the same way.

# %%
lesson13_model = output_dir(get_lesson(13)) / "induction_model"
if (lesson13_model / "config.json").is_file():
    model = minillm.load(lesson13_model)
    print(f"loaded your lesson-13 model from {lesson13_model}")
else:
    print(f"no lesson-13 model at {lesson13_model}: using the one lesson 13 trains with seed {SEED} "
          "(trained now if it is not in the weights folder yet)")
    model = T.trained_model(seed=SEED)
cfg = model.cfg
H, VOCAB = cfg.n_heads, cfg.d_vocab - 1
tokens = T.repeated_tokens(np.random.default_rng(SEED + 100), 32, SEQ_LEN, VOCAB)
_, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
patterns = [cache[f"blocks.{l}.attn.hook_pattern"] for l in range(cfg.n_layers)]  # [b, h, P, P] each
base = T.per_position_loss(model(tokens), tokens)[:, SEQ_LEN + 1:].mean()
print(f"loss on the induction predictions (T+1 .. 2T-1) of this model: {base:.4f} nats (chance: {np.log(VOCAB):.3f})")

# %% [markdown]
# ## 1. Look at the patterns
#
# **Predict first.** Which layer should hold the previous-token head, and which the
# induction head? Why can't an induction head be in layer 0 of an attention-only model?

# %%
fig, axes = subplots(cfg.n_layers, H, figsize=(3 * H, 3.2 * cfg.n_layers))
for l in range(cfg.n_layers):
    for h in range(H):
        im = axes[l, h].imshow(patterns[l][0, h], cmap="Blues", vmin=0, vmax=1)
        axes[l, h].set_title(f"L{l}H{h}")
        axes[l, h].set_xlabel("key position")
        axes[l, h].set_ylabel("query position")
fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
fig.suptitle("Attention patterns on one repeated sequence")
show(fig, "patterns.png")

# %% [markdown]
# ## 2. Scores
#
# Exercise 1: `head_scores` turns each pattern into two numbers per head.

# %%
scores = [head_scores(patterns[l], SEQ_LEN) for l in range(cfg.n_layers)]
for l, (prev, ind) in enumerate(scores):
    print(f"layer {l}: previous-token {[round(float(x), 3) for x in prev]}  "
          f"induction {[round(float(x), 3) for x in ind]}")
prev_head = int(np.argmax(scores[0][0]))
ind_head = int(np.argmax(scores[1][1]))
print(f"previous-token head: L0H{prev_head} ({scores[0][0][prev_head]:.3f}); "
      f"induction head: L1H{ind_head} ({scores[1][1][ind_head]:.3f})")

# %% [markdown]
# ## 3. How the two heads compose
#
# Exercise 2: K-composition of each layer-0 head with each layer-1 head. For scale, the
# same score between random Gaussian matrices of these shapes.

# %%
b0, b1 = model.blocks[0].attn, model.blocks[1].attn
kc = k_composition(b0.W_V, b0.W_O, b1.W_Q, b1.W_K)
rng = np.random.default_rng(0)
rand = [k_composition(*(rng.normal(size=w.shape) for w in (b0.W_V, b0.W_O, b1.W_Q, b1.W_K)))
        for _ in range(20)]
baseline = float(np.mean(rand))
print("K-composition [layer-0 head, layer-1 head]:")
print(np.round(kc, 3))
print(f"L0H{prev_head} -> L1H{ind_head}: {kc[prev_head, ind_head]:.3f}; random matrices: {baseline:.3f} "
      f"± {np.std(rand):.3f}")
fig, ax = subplots(figsize=(5, 4))
im = ax.imshow(kc, cmap="viridis")
ax.set_xlabel("layer-1 head (reads keys)")
ax.set_ylabel("layer-0 head (writes)")
ax.set_xticks(range(H))
ax.set_yticks(range(H))
fig.colorbar(im, ax=ax, label="K-composition score")
ax.set_title("K-composition")
show(fig, "k_composition.png")

# %% [markdown]
# ## 4. Causal tests
#
# Exercise 3: zero one head at a time and measure the second copy's loss.

# %%
effects = np.array([[ablation_effect(model, tokens, l, h, SEQ_LEN) for h in range(H)]
                    for l in range(cfg.n_layers)])
for l in range(cfg.n_layers):
    print(f"layer {l}: Δ loss when zeroed " + " ".join(f"H{h}:{effects[l, h]:+.3f}" for h in range(H)))

# %% [markdown]
# Activation patching: corrupt the first copy (other random tokens, so the second copy is no
# longer a repeat), then restore one head's output (`hook_z`) from the clean run. Which
# heads bring the loss back?

# %%
corrupt = tokens.copy()
corrupt[:, 1:SEQ_LEN + 1] = np.random.default_rng(SEED + 200).integers(0, VOCAB, (len(tokens), SEQ_LEN))
_, clean_cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))


def second_copy_loss(logits):
    return T.per_position_loss(logits, tokens)[:, SEQ_LEN + 1:].mean()


corrupt_loss = second_copy_loss(model(corrupt))
recovered = np.zeros((cfg.n_layers, H))
for l in range(cfg.n_layers):
    for h in range(H):
        def patch(z, hook, l=l, h=h):
            z = z.copy()
            z[:, :, h] = clean_cache[f"blocks.{l}.attn.hook_z"][:, :, h]
            return z
        patched = second_copy_loss(model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{l}.attn.hook_z", patch)]))
        recovered[l, h] = (corrupt_loss - patched) / (corrupt_loss - base)
print(f"corrupted second-copy loss {corrupt_loss:.3f} vs clean {base:.4f}")
for l in range(cfg.n_layers):
    print(f"layer {l}: fraction of the loss gap restored " + " ".join(f"H{h}:{recovered[l, h]:+.2f}" for h in range(H)))

# %% [markdown]
# ## 5. Confirm by editing the weights, then revert
#
# If L0H{prev} feeds L1H{ind}'s keys, removing L0H{prev}'s output (zeroing its W_O through a
# journaled edit) should erase the induction stripe of L1H{ind}, not just raise the loss.
# Leaving the `with` block restores the weights bit for bit.

# %%
before = model(tokens)
with model.edited(minillm.edits.zero_head(layer=0, head=prev_head)):
    _, c = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_pattern")
    edited_ind = head_scores(c["blocks.1.attn.hook_pattern"], SEQ_LEN)[1][ind_head]
    edited_loss = second_copy_loss(model(tokens))
after = model(tokens)
print(f"L0H{prev_head} zeroed: L1H{ind_head}'s induction score {scores[1][1][ind_head]:.3f} -> {edited_ind:.3f}; "
      f"second-copy loss {base:.4f} -> {edited_loss:.3f}")
print(f"after the revert, logits identical to before: {np.array_equal(before, after)}")
