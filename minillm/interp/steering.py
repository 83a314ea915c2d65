"""Directions that change what the model does: steering vectors, function vectors, analogies.

    from minillm.interp import steering as st
    v = st.steering_vector(model, ["I love this", ...], ["I hate this", ...], layer=10)
    st.generate_steered(model, "I think the movie was", v, layer=10, alphas=(0, 4, 8))

    fv = st.function_vector(model, st.COUNTRY_CAPITAL[:12], layer=9)      # few-shot -> a vector
    st.answer_probs(model, ["Poland:"], [" Warsaw"], [st.steer(fv.vector, 9, pos=-1)])

    st.embedding_analogy(model, " king", " man", " woman")   # king - man + woman ≈ ?

Steering vector (activation addition): v = mean_{x ∈ A} h_l(x) - mean_{x ∈ B} h_l(x),
the mean difference of `blocks.l.hook_resid_pre` (at the last position by
default) between two prompt sets; during generation α·v is added to the
stream at layer l at every position (`minillm.interp.interventions.add`).

Function vector (Todd et al. 2024): run few-shot prompts of a task
("France: Paris\\nJapan: Tokyo\\n...\\nItaly:"); for every head (l, h) take its
output at the last position, z[l, h] @ W_O[l, h] (what it adds to the
stream), and average over the prompts -> mean_out [L, h, d]. Heads are
ranked by how much putting their mean output into prompts whose
demonstrations are shuffled raises log p(answer) (the causal indirect
effect), estimated here by attribution patching: (mean_out - out_shuffled) ·
∂log p/∂attn_out, one forward and backward pass for all heads. The function
vector is the sum of the top heads' mean outputs; added to the last
position of a zero-shot prompt ("Poland:") at one layer, it should make the
model answer the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm import ops
from minillm.errors import MinillmError
from minillm.interp import interventions as iv
from minillm.interp.lens import token_ids

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel

# A small task for in-context function vectors: country -> capital (each capital one token
# for SmolLM2's tokenizer with a leading space).
COUNTRY_CAPITAL = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
    ("Spain", "Madrid"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("Canada", "Ottawa"), ("China", "Beijing"), ("Austria", "Vienna"), ("Portugal", "Lisbon"),
    ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Kenya", "Nairobi"),
    ("Sweden", "Stockholm"), ("Peru", "Lima"), ("Cuba", "Havana"), ("Hungary", "Budapest"),
]
ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("light", "dark"), ("old", "new"), ("good", "bad"), ("early", "late"), ("open", "closed"),
    ("high", "low"), ("rich", "poor"), ("hard", "soft"), ("wet", "dry"), ("long", "short"),
]


# --- steering vectors ----------------------------------------------------------------------------


def _stream(layer: int, hook: str) -> str:
    return f"blocks.{layer}.hook_{hook}"


def mean_activation(model: HookedModel, prompts: Sequence[str], layer: int, hook: str = "resid_pre",
                    pos: int | None = -1) -> np.ndarray:
    """Mean of `blocks.{layer}.hook_{hook}` over prompts, at `pos` (None = over all positions). -> [d]

    Prompts run as one left-padded batch, so pos=-1 is each prompt's last token.
    """
    name = _stream(layer, hook)
    model.hooks.check_name(name)
    tokens, mask = model.to_tokens_and_mask(list(prompts))
    _, cache = model.run_with_cache(tokens, names_filter=[name], attention_mask=mask)
    act = cache[name].astype(np.float64)  # [n, p, d]
    if pos is not None:
        return act[:, pos].mean(0)
    return (act * mask[..., None]).sum((0, 1)) / mask.sum()  # real tokens only


def steering_vector(model: HookedModel, positive: Sequence[str], negative: Sequence[str], layer: int,
                    hook: str = "resid_pre", pos: int | None = -1) -> np.ndarray:
    """mean activation over `positive` minus over `negative` at one layer.   -> [d]"""
    return mean_activation(model, positive, layer, hook, pos) - \
        mean_activation(model, negative, layer, hook, pos)


def steer(vector: np.ndarray, layer: int, alpha: float = 1.0, hook: str = "resid_pre",
          pos: int | Sequence[int] | None = None) -> iv.Add:
    """The intervention 'add α·vector to blocks.{layer}.hook_{hook}' (every position, or `pos`)."""
    return iv.add(_stream(layer, hook), alpha * np.asarray(vector), pos=pos)


def generate_steered(model: HookedModel, prompt: str, vector: np.ndarray, layer: int,
                     alphas: Sequence[float] = (0.0, 4.0, 8.0), hook: str = "resid_pre",
                     max_new_tokens: int = 20, **generate_kwargs: Any) -> dict[float, str]:
    """The greedy continuation of `prompt` with α·vector added at `layer`, for each α.

    The vector is added at every position, prompt and generated tokens alike
    (during cached decoding the hook sees each new position).
    """
    out = {}
    for a in alphas:
        with model.intervened([steer(vector, layer, a, hook)]):
            out[float(a)] = model.generate(prompt, max_new_tokens=max_new_tokens, **generate_kwargs)
    return out


# --- function vectors ----------------------------------------------------------------------------


def fewshot_prompts(pairs: Sequence[tuple[str, str]], n_prompts: int, n_shots: int = 5,
                    template: str = "{x}:", seed: int = 0, shuffled: bool = False
                    ) -> tuple[list[str], list[str]]:
    """Few-shot prompts "x1: y1\\nx2: y2\\n...\\nxq:" and their answers " yq".

    Query i is pairs[i % len(pairs)], the shots are other pairs drawn at
    random. shuffled=True permutes the shots' answers (the demonstrations no
    longer show the task: the baseline of the causal indirect effect).
    """
    if len(pairs) <= n_shots:
        raise MinillmError(f"{len(pairs)} pairs are too few for {n_shots} shots plus a query")
    rng = np.random.default_rng(seed)
    prompts, answers = [], []
    for i in range(n_prompts):
        x, y = pairs[i % len(pairs)]
        others = [p for p in pairs if p != (x, y)]
        shots = [others[j] for j in rng.choice(len(others), n_shots, replace=False)]
        ys = [s[1] for s in shots]
        if shuffled:
            ys = [ys[j] for j in rng.permutation(n_shots)]
        prompts.append("".join(f"{template.format(x=s[0])} {y}\n" for s, y in zip(shots, ys))
                       + template.format(x=x))
        answers.append(f" {y}")
    return prompts, answers


def first_token_ids(model: HookedModel, answers: Sequence[str]) -> np.ndarray:
    """The first token of each answer (" Bangkok" -> " Bang").   -> [n]"""
    return np.array([model.to_tokens(a)[0, 0] for a in answers], np.int64)


def mean_head_outputs(model: HookedModel, prompts: Sequence[str], pos: int = -1) -> np.ndarray:
    """Each head's output z[l, h] @ W_O[l, h] at `pos`, averaged over prompts.   -> [L, h, d]"""
    tokens, mask = model.to_tokens_and_mask(list(prompts))  # left-padded: -1 = last real token
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_z"),
                                    attention_mask=mask)
    return np.stack([np.einsum("bhe,hed->hd", cache["z", l][:, pos], block.attn.W_O) / len(prompts)
                     for l, block in enumerate(model.blocks)])  # [L, h, d]


def head_indirect_effects(model: HookedModel, mean_out: np.ndarray, shuffled_prompts: Sequence[str],
                          answers: Sequence[str]) -> np.ndarray:
    """Attribution-patching estimate of each head's causal indirect effect.   -> [L, h]

    effect(l, h) ≈ mean_b (mean_out[l, h] - out_b[l, h]) · ∂ log p(answer_b) / ∂ attn_out[l]
    on the shuffled prompts b (a head's output enters the stream through
    attn_out, so that gradient is the gradient w.r.t. the head's output).
    """
    from minillm.grad import backward as B
    from minillm.interp import metrics as M

    tokens, mask = model.to_tokens_and_mask(list(shuffled_prompts))
    grads = B.backward(model, tokens, M.log_prob(model, [[int(t)] for t in first_token_ids(model, answers)]),
                       attention_mask=mask, params=False)
    effects = np.zeros(mean_out.shape[:2])
    for l, block in enumerate(model.blocks):
        out = np.einsum("bhe,hed->bhd", grads.cache[f"blocks.{l}.attn.hook_z"][:, -1], block.attn.W_O)
        g = grads.grad(f"blocks.{l}.hook_attn_out")[:, -1]  # [b, d]
        effects[l] = np.einsum("bhd,bd->h", mean_out[l][None] - out, g) / len(shuffled_prompts)
    return effects


@dataclass
class FunctionVector:
    """vector [d]: Σ of the chosen heads' mean outputs; heads [(l, h)], best first;
    effects [L, h]: the indirect-effect estimates they were chosen by; mean_out [L, h, d]."""

    vector: np.ndarray
    heads: list[tuple[int, int]]
    effects: np.ndarray
    mean_out: np.ndarray


def function_vector(model: HookedModel, pairs: Sequence[tuple[str, str]], n_prompts: int = 12,
                    n_shots: int = 5,
                    n_heads: int = 10, template: str = "{x}:", seed: int = 0) -> FunctionVector:
    """The function vector of a task given as (input, output) pairs; see the module docstring."""
    prompts, answers = fewshot_prompts(pairs, n_prompts, n_shots, template, seed)
    shuffled, _ = fewshot_prompts(pairs, n_prompts, n_shots, template, seed, shuffled=True)
    mean_out = mean_head_outputs(model, prompts)  # [L, h, d]
    effects = head_indirect_effects(model, mean_out, shuffled, answers)  # [L, h]
    order = np.argsort(-effects, axis=None)[:n_heads]
    heads = [(int(i) // effects.shape[1], int(i) % effects.shape[1]) for i in order]
    vector = sum(mean_out[l, h] for l, h in heads)  # [d]
    return FunctionVector(vector, heads, effects, mean_out)


def answer_probs(model: HookedModel, prompts: Sequence[str], answers: Sequence[str],
                 interventions: Sequence = ()) -> np.ndarray:
    """p(first token of answer) after each prompt, with interventions in place.   -> [n]"""
    tokens, mask = model.to_tokens_and_mask(list(prompts))
    logits = model.run_with_interventions(tokens, list(interventions), attention_mask=mask,
                                          last_only=True)[:, -1]  # [n, V]
    probs = ops.softmax(logits.astype(np.float64))
    return probs[np.arange(len(prompts)), first_token_ids(model, answers)]


# --- analogies -----------------------------------------------------------------------------------


def _cosine_top(vectors: np.ndarray, query: np.ndarray, k: int, exclude: Sequence[int]
                ) -> tuple[list[int], np.ndarray]:
    """The k rows most cosine-similar to query (excluding some), and all similarities [n]."""
    sims = vectors @ query / (np.linalg.norm(vectors, axis=-1) * np.linalg.norm(query) + 1e-12)
    sims[list(exclude)] = -np.inf
    return list(np.argsort(-sims, kind="stable")[:k]), sims


def embedding_analogy(model: HookedModel, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
    """a - b + c in the input embedding W_E, nearest tokens by cosine (a, b, c excluded).

    embedding_analogy(model, " king", " man", " woman"): king - man + woman ≈ ? (the order
    of the formula, as in the lessons).
    """
    ia, ib, ic = token_ids(model, [a, b, c])
    W_E = model.embed.W_E.astype(np.float64)  # [V, d]
    query = W_E[ia] - W_E[ib] + W_E[ic]  # [d]
    top, sims = _cosine_top(W_E, query, k, (ia, ib, ic))
    return [(model.to_string([int(i)]), float(sims[i])) for i in top]


def residual_analogy(model: HookedModel, a: str, b: str, c: str, candidates: Sequence[str], layer: int,
                     template: str = "{w}", hook: str = "resid_pre") -> list[tuple[str, float]]:
    """a - b + c in the residual stream at `layer` (last position of `template` filled with
    each word), ranked against the candidates' own residual vectors by cosine.

    Every word (a, b, c and the candidates) runs through the same template, so
    the vectors are comparable; a, b, c are left out of the ranking.
    """
    words = [a, b, c, *candidates]
    name = _stream(layer, hook)
    model.hooks.check_name(name)
    tokens, mask = model.to_tokens_and_mask([template.format(w=w) for w in words])
    _, cache = model.run_with_cache(tokens, names_filter=[name], attention_mask=mask)
    h = cache[name][:, -1].astype(np.float64)  # [n, d]
    query = h[0] - h[1] + h[2]
    top, sims = _cosine_top(h, query, len(words), (0, 1, 2))
    return [(words[i], float(sims[i])) for i in top if i > 2]
