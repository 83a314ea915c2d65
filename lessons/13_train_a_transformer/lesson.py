# %% [markdown]
# # Lesson 13: Train a transformer yourself
#
# A two-layer, attention-only transformer, trained from scratch in NumPy with minillm's
# hand-written backward pass and the Adam optimiser you write in exercise 1, on a task
# where only an **induction head** can help: sequences of random tokens, repeated once.
# Read README.md first; it is the lecture. Where this script uses a function you write in
# `exercises.py`, it uses yours as soon as it is implemented, and says so.
#
# Shorter run: `MINILLM_LESSON_STEPS=300 python lesson.py`.

# %%
import os

import numpy as np

import minillm
from minillm.checkpoints.hf import save_pretrained
from minillm.course import output_dir, show, student_version
from minillm.course import training as T
from minillm.grad import backward as grad
from minillm.interp.metrics import cross_entropy
from minillm.views.figures import subplots

STEPS = int(os.environ.get("MINILLM_LESSON_STEPS", "600"))
SEED = int(os.environ.get("MINILLM_LESSON_SEED", "0"))
SEQ_LEN, VOCAB = 24, 64

adam_step = student_version(13, "adam_step", T.adam_step)
finite_difference = student_version(13, "finite_difference", T.finite_difference)
per_position_loss = student_version(13, "per_position_loss", T.per_position_loss)

# %% [markdown]
# ## 1. The model
#
# `attn_only: true` in the config removes each block's MLP (and its norm): a block is just
# `x + attn(ln1(x))`. Two layers of four heads, d_model 64, a vocabulary of 64 random
# tokens plus BOS, learned positions, LayerNorm: GPT-2 with the MLPs taken out.

# %%
cfg = T.attn_only_config(n_layers=2, d_model=64, n_heads=4, d_vocab=VOCAB, seq_len=SEQ_LEN)
model = T.init_model(cfg, seed=SEED)
n_params = sum(p.size for _, p in model.named_parameters())
print(model)
print(f"{n_params:,} parameters; trained on periodic sequences of {cfg.n_ctx} tokens (a random period "
      f"from 4 to {SEQ_LEN} per row); measured on [BOS, r_0..r_{SEQ_LEN - 1}, the same again]")
print(f"chance level: ln {VOCAB} = {np.log(VOCAB):.3f} nats per prediction")

# %% [markdown]
# **Predict first.** Before training, what loss do you expect on the first copy, and on the
# second? After training? At what step do you expect the second copy to become easy:
# gradually from the start, or suddenly?

# %%
history = T.train(model, steps=STEPS, batch=32, lr=1e-3, seed=SEED, step_fn=adam_step, log_every=10)
change = history.phase_change_step(threshold=1.0)
print(f"trained {STEPS} steps in {history.seconds:.0f} s")
print(f"final loss: first copy {history.first_half[-1]:.3f}, second copy {history.second_half[-1]:.3f} nats")
print(f"second-copy loss first below 1 nat at step {change}")
print("second-copy loss every 50 steps:",
      " ".join(f"{s}:{l:.2f}" for s, l in zip(history.steps, history.second_half) if s % 50 == 0))

# %%
fig, ax = subplots(figsize=(8, 4.5))
ax.plot(history.steps, history.first_half, label="first copy (random: chance)")
ax.plot(history.steps, history.second_half, label="second copy (in-context)")
ax.axhline(np.log(VOCAB), color="grey", ls=":", label=f"ln {VOCAB}")
if change is not None:
    ax.axvline(change, color="red", ls="--", lw=1, label=f"phase change (step {change})")
ax.set_xlabel("training step")
ax.set_ylabel("loss (nats per prediction)")
ax.set_title("Training an attention-only transformer on repeated random tokens")
ax.legend()
show(fig, "loss_curve.png")

# %% [markdown]
# ## 2. Loss at each position
#
# Your `per_position_loss` on a fresh batch. Prediction i reads tokens 0..i and predicts
# token i + 1. The first copy stays at chance, and so does prediction T (the first token of the
# repeat: nothing says where a period ends); from there on the model copies.

# %%
rng = np.random.default_rng(SEED + 1)
tokens = T.repeated_tokens(rng, 64, SEQ_LEN, VOCAB)
per_pos = np.asarray(per_position_loss(model(tokens), tokens)).mean(axis=0)  # [2T]
print(f"mean loss: predictions 0..{SEQ_LEN - 1} (first copy): {per_pos[:SEQ_LEN].mean():.3f}; prediction "
      f"{SEQ_LEN} (first token of the repeat): {per_pos[SEQ_LEN]:.3f}; predictions {SEQ_LEN + 1}.."
      f"{2 * SEQ_LEN - 1}: {per_pos[SEQ_LEN + 1:].mean():.4f}")
fig, ax = subplots(figsize=(8, 4))
ax.bar(np.arange(len(per_pos)), per_pos)
ax.axvline(SEQ_LEN - 0.5, color="red", ls="--", lw=1)
ax.set_xlabel("prediction index i (predicts token i + 1)")
ax.set_ylabel("loss (nats)")
ax.set_title("Loss per position after training")
show(fig, "loss_per_position.png")

# %% [markdown]
# ## 3. Are the gradients right? A check against finite differences
#
# Adam trusted minillm's backward pass. Check it: in float64 (rounding ~1e-16, so the
# central difference's O(h²) error dominates), compare a few gradient entries with your
# `finite_difference`.

# %%
folder = output_dir() / "induction_model"
save_pretrained(model, folder)
m64 = minillm.load(folder, dtype=np.float64)
check_tokens = T.repeated_tokens(np.random.default_rng(7), 4, SEQ_LEN, VOCAB)
metric = cross_entropy(check_tokens)  # mean next-token loss: a value and its gradient seed
g = grad.backward(m64, check_tokens, metric)


def loss() -> float:
    return metric.value(m64(check_tokens))


for name, index in (("blocks.0.attn.W_Q", (1, 3, 2)), ("blocks.1.attn.W_O", (2, 5, 7)),
                    ("embed.W_E", (int(check_tokens[0, 3]), 11)), ("pos_embed.W_pos", (30, 0))):
    analytic = float(g.grad(name)[index])
    numeric = finite_difference(loss, m64.get_parameter(name), index, 1e-5)
    rel = abs(analytic - numeric) / max(abs(analytic), 1e-12)
    print(f"{name}{list(index)}: backward {analytic:+.8e}, finite difference {numeric:+.8e}, "
          f"relative error {rel:.1e}")

# %% [markdown]
# ## 4. Your model is an ordinary checkpoint
#
# `save_pretrained` wrote `config.json` and `model.safetensors`; `minillm.load` reads them
# through the same code as any Hugging Face folder. Lesson 14 opens this model and takes it
# apart.

# %%
again = minillm.load(folder)
same = np.array_equal(again(tokens), model(tokens))
print(f"saved to {folder}; reloaded logits identical to the trained model's: {same}")
