"""TransformerLens's `utils` functions that published code calls, over NumPy arrays.

    from minillm.tl import utils
    utils.get_act_name("resid_pre", 3)      # "blocks.3.hook_resid_pre"
    utils.test_prompt("Why did the elephant cross the", "road", model)
    utils.lm_cross_entropy_loss(logits, tokens, per_token=True)   # [b, p-1]
"""

from __future__ import annotations

import re

import numpy as np

from minillm import ops
from minillm.factored_matrix import FactoredMatrix, composition_scores
from minillm.hooked_model import HookedModel

__all__ = ["composition_scores", "get_act_name", "get_corner", "lm_accuracy",
           "lm_cross_entropy_loss", "remove_batch_dim", "test_prompt", "to_numpy", "transpose"]

_ATTN = {"k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores"}
_MLP = {"pre", "post", "mid", "pre_linear"}
_NAME_ALIAS = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q",
               "value": "v", "mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
_SUBLAYER_ALIAS = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "",
                   "attention": "attn"}


def get_act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """A short activation name -> the full hook name, exactly as TransformerLens spells it.

    get_act_name("k", 6, "a") == "blocks.6.attn.hook_k"
    get_act_name("pre", 2) == "blocks.2.mlp.hook_pre"
    get_act_name("embed") == "hook_embed"
    get_act_name("normalized", 27, "ln2") == "blocks.27.ln2.hook_normalized"
    get_act_name("k6") == "blocks.6.attn.hook_k"
    get_act_name("scale4ln1") == "blocks.4.ln1.hook_scale"
    get_act_name("scale") == "ln_final.hook_scale"
    A full name ("blocks.0.hook_resid_pre", "hook_embed") is returned unchanged.
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    match = re.match(r"([a-z]+)(\d+)([a-z]?.*)", name)
    if match is not None:  # "k6" -> ("k", 6, ""), "scale4ln1" -> ("scale", 4, "ln1")
        name, layer, layer_type = match.groups()
    name = _NAME_ALIAS.get(name, name)
    if name in _ATTN:
        layer_type = "attn"
    elif name in _MLP:
        layer_type = "mlp"
    elif layer_type in _SUBLAYER_ALIAS:
        layer_type = _SUBLAYER_ALIAS[layer_type]
    full = f"blocks.{layer}." if layer is not None else ""
    full += f"{layer_type}." if layer_type else ""
    full += f"hook_{name}"
    if name in ("scale", "normalized") and layer is None:
        full = f"ln_final.{full}"
    return full


lm_cross_entropy_loss = HookedModel.loss_fn  # (logits, tokens, attention_mask=None, per_token=False)


def lm_accuracy(logits: np.ndarray, tokens: np.ndarray, per_token: bool = False):
    """Top-1 next-token accuracy: the fraction (float64), or bool [b, p-1] with per_token."""
    correct = np.asarray(logits).argmax(-1)[:, :-1] == np.asarray(tokens)[:, 1:]
    return correct if per_token else np.float64(correct.mean())


def to_numpy(x) -> np.ndarray:
    """An array as a NumPy array (minillm's arrays already are)."""
    return np.asarray(x)


def remove_batch_dim(x: np.ndarray) -> np.ndarray:
    """[1, ...] -> [...]; other arrays unchanged."""
    x = np.asarray(x)
    return x[0] if x.ndim and x.shape[0] == 1 else x


def transpose(x: np.ndarray) -> np.ndarray:
    """Swap the last two axes."""
    return np.swapaxes(x, -2, -1)


def get_corner(x, n: int = 3):
    """The first n entries along every axis (the top-left corner of a FactoredMatrix's product)."""
    if isinstance(x, FactoredMatrix):
        return x[tuple(slice(n) for _ in range(x.ndim))].AB
    return np.asarray(x)[tuple(slice(n) for _ in range(np.ndim(x)))]


def test_prompt(prompt: str, answer: str | list[str], model, prepend_space_to_answer: bool = True,
                print_details: bool = True, prepend_bos: bool | None = None, top_k: int = 10) -> None:
    """Print how the model ranks `answer` after `prompt`: rank, logit and probability of
    each answer token, and the top-k tokens at each answer position (as TransformerLens).

    A list of answers compares them as single next tokens.
    """
    answers = [answer] if isinstance(answer, str) else list(answer)
    multiple = len(answers) > 1
    if prepend_space_to_answer:
        answers = [a if a.startswith(" ") else " " + a for a in answers]
    prompt_ids = model.to_tokens(prompt, prepend_bos=prepend_bos)  # [1, p]
    answer_ids = [model.to_tokens(a, prepend_bos=False)[0] for a in answers]
    if multiple:
        answer_ids = [a[:1] for a in answer_ids]
    width = max(len(a) for a in answer_ids)
    tokens = np.stack([np.concatenate([prompt_ids[0], a, np.zeros(width - len(a), np.int64)])
                       for a in answer_ids])  # [n_answers, p + n_answer]
    prompt_str = model.to_str_tokens(prompt, prepend_bos=prepend_bos)
    answer_strs = [model.to_str_tokens(a, prepend_bos=False)[: len(ids)]
                   for a, ids in zip(answers, answer_ids)]
    p = prompt_ids.shape[1]
    if print_details:
        print("Tokenized prompt:", prompt_str)
        print("Tokenized answers:" if multiple else "Tokenized answer:",
              answer_strs if multiple else answer_strs[0])
    logits = model(tokens)  # [n_answers, p + n_answer, V]
    probs = ops.softmax(logits.astype(np.float64), axis=-1)
    ranks = []
    for index in range(p, p + (1 if multiple else len(answer_ids[0]))):
        here = []
        for i in range(len(answers)):
            target = int(tokens[i, index])
            row = probs[i, index - 1]
            rank = int((row > row[target]).sum())
            here.append((answer_strs[i][index - p], rank))
            if print_details:
                print(f"Performance on answer token{'s' if multiple else ''}:")
                print(f"Rank: {rank: <8} Logit: {logits[i, index - 1, target]:5.2f} "
                      f"Prob: {row[target]:6.2%} Token: |{answer_strs[i][index - p]}|")
        if print_details:
            order = np.argsort(-probs[0, index - 1], kind="stable")[:top_k]
            for k, t in enumerate(order):
                print(f"Top {k}th token. Logit: {logits[0, index - 1, t]:5.2f} "
                      f"Prob: {probs[0, index - 1, t]:6.2%} Token: |{model.to_string([int(t)])}|")
        ranks.append(here)
    shown = [r[0] for r in ranks] if not multiple else ranks
    print(f"Ranks of the answer tokens: {shown}")
