"""Training a small transformer from scratch in NumPy, for lessons 13 and 14.

The model is an attention-only GPT-2-family transformer (`attn_only: true` in its
config: each block is x + attn(ln1(x)), no MLP), the classic toy model in which
induction heads form. It trains on periodic random sequences

    [BOS, r_0 .. r_{P-1}, r_0 .. r_{P-1}, r_0 ..]      (period P drawn anew for each row)

whose first period cannot be predicted better than chance (loss ln V) and whose
rest can be predicted perfectly by copying: look back for the previous
occurrence of the current token and predict the token that followed it. The
period varies so that copying needs an induction head: with one fixed period,
"attend P − 1 positions back" would solve the task from positions alone, and a
single layer-0 head learns exactly that shortcut. Progress is measured on a
held-out batch of [BOS, r, r] with |r| = T (`repeated_tokens`). The gradients
come from minillm's own hand-written backward pass (`minillm.grad`), the
optimiser is Adam (Kingma & Ba, 2015), written out in `adam_step`.

    from minillm.course import training as T
    model = T.init_model(T.attn_only_config(), seed=0)
    history = T.train(model, steps=600, seed=0)         # a TrainingHistory
    save_pretrained(model, "out/induction_model")       # minillm.checkpoints.hf; minillm.load reads it
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from minillm.config import ModelConfig
from minillm.errors import MinillmError
from minillm.grad import backward as grad
from minillm.hooked_model import HookedModel
from minillm.interp.metrics import cross_entropy

# An optimiser step: (param, grad, m, v, t, lr) -> (new param, new m, new v); see adam_step.
StepFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]


def attn_only_config(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, d_vocab: int = 64,
                     seq_len: int = 24) -> ModelConfig:
    """An attention-only GPT-2-family config for sequences of 2·seq_len + 1 tokens.

    Token ids 0 .. d_vocab-1 are the random tokens; id d_vocab is BOS (so the
    embedding has d_vocab + 1 rows).
    """
    if d_model % n_heads:
        raise MinillmError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
    return ModelConfig.from_dict({
        "model_type": "gpt2", "attn_only": True, "n_layer": n_layers, "n_embd": d_model,
        "n_head": n_heads, "vocab_size": d_vocab + 1, "n_positions": 2 * seq_len + 1,
        "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "tie_word_embeddings": False,
        "bos_token_id": d_vocab, "eos_token_id": d_vocab,
    }, source="attn_only_config")


def init_model(cfg: ModelConfig, seed: int = 0, std: float = 0.02, dtype=np.float32) -> HookedModel:
    """A model with GPT-2's initialisation: weights ~ N(0, std²), norm gains 1, biases 0."""
    model = HookedModel(cfg, dtype, name="toy")
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "w":  # a norm's gain
            p[...] = 1
        elif leaf.startswith("b"):  # b, b_Q, b_K, b_V, b_O
            p[...] = 0
        else:
            p[...] = rng.normal(0.0, std, p.shape)
    return model


def repeated_tokens(rng: np.random.Generator, batch: int, seq_len: int, d_vocab: int) -> np.ndarray:
    """[BOS, r, r] for `batch` random sequences r of length seq_len.   -> int64 [batch, 2T + 1]"""
    r = rng.integers(0, d_vocab, size=(batch, seq_len))
    bos = np.full((batch, 1), d_vocab)
    return np.concatenate([bos, r, r], axis=1)


def periodic_tokens(rng: np.random.Generator, batch: int, length: int, d_vocab: int,
                    min_period: int = 4, max_period: int | None = None) -> np.ndarray:
    """[BOS, r, r, r, ...] cut to `length` tokens, a random period per row.   -> int64 [batch, length]

    The period of each row is uniform in [min_period, max_period] (default: half
    the sequence, so every row repeats at least once).
    """
    max_period = max_period or (length - 1) // 2
    out = np.empty((batch, length), np.int64)
    out[:, 0] = d_vocab  # BOS
    for row in out:
        period = int(rng.integers(min_period, max_period + 1))
        row[1:] = np.resize(rng.integers(0, d_vocab, size=period), length - 1)
    return out


def per_position_loss(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Cross-entropy of each next-token prediction.   [b, p, V], [b, p] -> [b, p-1] (nats)

    Entry i is −log softmax(logits[:, i])[tokens[:, i + 1]], computed stably in float64.
    """
    z = np.asarray(logits, np.float64)[:, :-1]  # [b, p-1, V]
    zmax = z.max(axis=-1, keepdims=True)
    log_norm = zmax[..., 0] + np.log(np.exp(z - zmax).sum(axis=-1))  # [b, p-1]
    picked = np.take_along_axis(z, np.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]  # [b, p-1]
    return log_norm - picked


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-8
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam update (Kingma & Ba 2015, Algorithm 1) for one parameter array.

    m, v: running first and second moments (zeros at t = 0); t: the step, counted from 1.
        m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
        m̂ = m / (1 − β1^t)             v̂ = v / (1 − β2^t)        (bias correction)
        param ← param − lr · m̂ / (√v̂ + ε)
    Returns (new param, new m, new v); nothing is modified in place.
    """
    m = beta1 * m + (1 - beta1) * grad  # first moment: a running mean of the gradient
    v = beta2 * v + (1 - beta2) * grad * grad  # second moment: a running mean of its square
    m_hat = m / (1 - beta1**t)  # bias correction: m and v start at 0
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def finite_difference(loss: Callable[[], float], param: np.ndarray, index: tuple[int, ...],
                      h: float = 1e-5) -> float:
    """Central difference (loss(x + h) − loss(x − h)) / 2h in one entry param[index].

    `param` is a live view into a model; the entry is restored bit for bit,
    also when loss() raises. The error is O(h²) plus rounding ~ε·|loss|/h.
    """
    original = param[index].copy()
    try:
        param[index] = original + h
        up = loss()
        param[index] = original - h
        down = loss()
    finally:
        param[index] = original  # bit for bit: the model must be left as it was
    return float((up - down) / (2 * h))


@dataclass
class TrainingHistory:
    """Losses logged during `train`, one entry per logged step (nats per prediction)."""

    seq_len: int
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # all predictions
    first_half: list[float] = field(default_factory=list)  # predicting r_0 .. r_{T-1}: chance, ln V
    second_half: list[float] = field(default_factory=list)  # r_0 .. r_{T-1} again: in-context
    seconds: float = 0.0

    def phase_change_step(self, threshold: float = 1.0) -> int | None:
        """The first logged step whose second-half loss is below `threshold` nats."""
        for s, l in zip(self.steps, self.second_half):
            if l < threshold:
                return s
        return None


def train(model: HookedModel, steps: int = 600, batch: int = 32, lr: float = 1e-3, seed: int = 0,
          step_fn: StepFn = adam_step, log_every: int = 10, progress: bool = True) -> TrainingHistory:
    """Train `model` in place on periodic random sequences with Adam; returns the loss history.

    Every parameter is trained. Each step draws a fresh batch (`periodic_tokens`),
    runs the forward pass and minillm's backward pass for the mean next-token
    cross-entropy, and applies `step_fn` (Adam) to each parameter array. Every
    `log_every` steps the loss per copy is measured on a fixed held-out batch of
    [BOS, r, r] (16 rows, |r| = T).
    """
    cfg = model.cfg
    d_vocab = cfg.d_vocab - 1  # the last id is BOS
    seq_len = (cfg.n_ctx - 1) // 2
    rng = np.random.default_rng(seed)
    params = dict(model.named_parameters())
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    history = TrainingHistory(seq_len)
    held_out = repeated_tokens(np.random.default_rng(seed + 10_000), 16, seq_len, d_vocab)
    start = time.perf_counter()
    bar = _progress(steps, progress)
    try:
        for t in range(1, steps + 1):
            tokens = periodic_tokens(rng, batch, cfg.n_ctx, d_vocab)
            result = grad.backward(model, tokens, cross_entropy(tokens))
            grads = result.named_grads()
            for n, p in params.items():
                new, m[n], v[n] = step_fn(p, grads[n], m[n], v[n], t, lr)
                p[...] = new  # the live view: the model's own storage changes
            if t % log_every == 0 or t == steps:
                per_pos = per_position_loss(model(held_out), held_out).mean(axis=0)  # [2T]
                history.steps.append(t)
                history.loss.append(float(per_pos.mean()))
                history.first_half.append(float(per_pos[:seq_len].mean()))  # r_0 .. r_{T-1}
                history.second_half.append(float(per_pos[seq_len:].mean()))  # r_0 .. r_{T-1} again
                bar.set_postfix(loss=f"{history.loss[-1]:.3f}", repeat=f"{history.second_half[-1]:.3f}")
            bar.update(1)
    finally:
        bar.close()
        history.seconds = time.perf_counter() - start
    return history


@functools.lru_cache(maxsize=4)
def trained_model(seed: int = 0, steps: int = 600) -> HookedModel:
    """The model lesson 13 trains (reference Adam, this seed), for lesson 14 and its checks.

    Trained once and kept as an ordinary checkpoint in the weights directory
    (`course/induction-seed{seed}-{steps}`), like a downloaded model; later calls
    load it. The training is deterministic for a given machine, so this is the
    model lesson 13 saves when run with the same seed and steps.
    """
    import minillm
    from minillm.checkpoints.hf import save_pretrained
    from minillm.checkpoints.paths import weights_dir

    folder = weights_dir() / "course" / f"induction-seed{seed}-{steps}"
    if (folder / "model.safetensors").is_file():
        return minillm.load(folder)
    model = init_model(attn_only_config(), seed=seed)
    train(model, steps=steps, seed=seed, progress=False)
    save_pretrained(model, folder)
    return model


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="step", disable=not enabled, leave=False)
