"""Checks for lesson 08: your logit lens and direct logit attribution on real SmolLM2 activations.

Two cached runs: the Eiffel Tower prompt (the lens, ranks) and the IOI prompt (the
attribution of logit(' Mary') - logit(' John')). Each check feeds your function the same
inputs as the reference; when the answer is wrong, it also tries the usual mistakes and
names the one you made.
"""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import relative_error as _rel
from minillm.course import shared_model
from minillm.course import verdict as _verdict

EIFFEL = "The Eiffel Tower is located in the city of"
CLEAN = "When Mary and John went to the store, John gave a drink to"
TOL = 1e-4  # max |error| / max |expected|: float32 rounding of the same maths is ~1e-6


@functools.lru_cache(maxsize=1)
def _eiffel():
    return shared_model().run_with_cache(EIFFEL, names_filter=lambda n: "resid" in n or "scale" in n)


@functools.lru_cache(maxsize=1)
def _ioi():
    return shared_model().run_with_cache(CLEAN)


def _weights():
    model = shared_model()
    return model.ln_final.w, model.cfg.eps, model.unembed.W_U


def _ids(*texts):
    return [shared_model().to_single_token(t) for t in texts]


# --- the checks ----------------------------------------------------------------------------------


def check_lens_logits(student, ref) -> None:
    model = shared_model()
    logits, cache = _eiffel()
    w, eps, W_U = _weights()
    L = model.cfg.n_layers
    rows = [cache["blocks.0.hook_resid_pre"][0], cache["blocks.12.hook_resid_pre"][0],
            cache[f"blocks.{L - 1}.hook_resid_post"][0]]  # embeddings, a middle layer, the final stream
    x = np.stack(rows + [rows[1] * 1e-3])  # [4, p, d]; the last row is tiny, where eps matters
    got = student.lens_logits(x, w, eps, W_U)
    want = ref.lens_logits(x, w, eps, W_U)
    ms = (x * x).mean(-1, keepdims=True)
    mistakes = lambda: {  # noqa: E731
        "You unembedded the raw stream (x @ W_U): the model never does that. The final norm comes "
        "first, and the lens must apply it too.": x @ W_U,
        "You forgot the final norm's gain: multiply the normalised stream by ln_w before W_U.":
            (x / np.sqrt(ms + eps)) @ W_U,
        "Is your epsilon inside the sqrt? sqrt(mean(x²)) + eps is a different function; it only "
        "shows on small inputs (the last test row is 1e-3 × a real stream).":
            (x / (np.sqrt(ms) + eps) * w) @ W_U,
        "You used the sum of squares; RMSNorm uses the MEAN of x² (divide by d).":
            (x / np.sqrt((x * x).sum(-1, keepdims=True) + eps) * w) @ W_U,
        "You centred x (LayerNorm). SmolLM2's final norm is RMSNorm: no mean subtraction.":
            ((x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w) @ W_U,
    }
    _verdict("lens_logits(embeddings, layer 12, final stream, tiny stream)", got, want, mistakes,
             "lens(x) = (x / sqrt(mean(x²) + eps) · ln_w) @ W_U, the norm over the last axis.")
    if _rel(np.asarray(got)[2], logits[0]) > TOL:  # cannot happen when got ≈ want; a safety net
        raise AssertionError("the lens of the final stream must be the model's own logits")


def check_component_dla(student, ref) -> None:
    model = shared_model()
    logits, cache = _ioi()
    w, _, W_U = _weights()
    mary, john = _ids(" Mary", " John")
    L = model.cfg.n_layers
    head = np.einsum("e,ed->d", cache["blocks.23.attn.hook_z"][0, -1, 3], model.blocks[23].attn.W_O[3])
    writes = np.stack([cache["hook_embed"][0, -1], head, cache["blocks.28.hook_mlp_out"][0, -1],
                       cache["blocks.26.hook_mlp_out"][0, -1]])  # [4, d]: embed, L23H3, MLP28, MLP26
    s = float(cache["ln_final.hook_scale"][0, -1, 0])
    got = student.component_dla(writes, s, w, W_U, mary, john)
    want = ref.component_dla(writes, s, w, W_U, mary, john)
    diff = W_U[:, mary] - W_U[:, john]
    own = np.sqrt((writes * writes).mean(-1, keepdims=True) + model.cfg.eps)  # each write's own rms
    mistakes = {
        "You normalised each component with its OWN rms. The model normalises the SUM (the final "
        "stream) once; freeze that scale (final_scale) and use it for every component, or the parts "
        "will not add up to the logit difference.": ((writes / own * w) @ diff),
        "You forgot the frozen scale s: the model reads ln_final(x) = x / s · w, not x · w.":
            (writes * w) @ diff,
        "You multiplied by the rms: final_scale is the rms itself (hook_scale holds the divisor, "
        "as in TransformerLens), so divide by it.": (writes * s * w) @ diff,
        "You forgot the gain ln_w: the readout vector is ln_w ⊙ (W_U[:, correct] - W_U[:, incorrect]).":
            (writes / s) @ diff,
        "Your sign is flipped: attribute logit[correct] - logit[incorrect].": -want,
        "You attributed logit[correct] alone; subtract the incorrect token's column of W_U.":
            (writes / s * w) @ W_U[:, mary],
    }
    _verdict("component_dla([embed, head L23.H3, MLP 28, MLP 26] at the last IOI position)", got, want,
             mistakes, "DLA(c) = (c / final_scale) · (ln_w ⊙ (W_U[:, correct] − W_U[:, incorrect])), one "
             "number per write: a stack [c, d] gives [c] (do not sum over the components).")
    total = float(logits[0, -1, mary] - logits[0, -1, john])
    comps = ref.residual_components(cache, L, -1)
    parts = np.asarray(student.component_dla(comps, s, w, W_U, mary, john))
    if parts.shape != (comps.shape[0],) or abs(parts.sum() - total) > 1e-3 * max(1.0, abs(total)):
        raise AssertionError(f"component_dla on all {comps.shape[0]} components [{comps.shape[0]}, d] must "
                             f"give {comps.shape[0]} numbers summing to the model's logit difference "
                             f"{total:.4f}; yours have shape {parts.shape} and sum "
                             f"{float(parts.sum()) if parts.size else float('nan'):.4f}. Does your "
                             "function work on a stack of writes (any leading axes)?")


def check_residual_components(student, ref) -> None:
    model = shared_model()
    _, cache = _ioi()
    L = model.cfg.n_layers
    got = student.residual_components(cache, L, -1)
    want = ref.residual_components(cache, L, -1)
    final = cache[f"blocks.{L - 1}.hook_resid_post"][0, -1]
    got_arr = np.asarray(got)
    if got_arr.shape == (L + 1, want.shape[1]):
        raise AssertionError(f"residual_components: shape {got_arr.shape} looks like one row per layer: "
                             "the accumulated stream (resid_pre of each block)? We want what each "
                             f"sublayer WROTE: embed + {L} attention outputs + {L} MLP outputs "
                             f"= {2 * L + 1} rows.")
    mistakes = lambda: {  # noqa: E731
        "You put all attention outputs first, then all MLP outputs. The order is the model's: embed, "
        "attn_0, mlp_0, attn_1, mlp_1, ...": np.concatenate(
            [want[:1], want[1::2], want[2::2]]),
        "You stacked the residual stream itself (resid_mid / resid_post), which ACCUMULATES the writes. "
        "Use hook_attn_out and hook_mlp_out: what each sublayer adds.": np.stack(
            [cache["hook_embed"][0, -1]] + [cache[f"blocks.{l}.{h}"][0, -1] for l in range(L)
                                            for h in ("hook_resid_mid", "hook_resid_post")]),
        "You took position 0 instead of pos (-1, the last token, where the prediction is made).":
            ref.residual_components(cache, L, 0),
    }
    _verdict("residual_components(IOI cache, pos=-1)", got, want, mistakes,
             f"Row 0 is cache['hook_embed'][0, pos]; rows 2l+1 and 2l+2 are blocks.l.hook_attn_out and "
             f"blocks.l.hook_mlp_out at pos. They must sum to blocks.{L - 1}.hook_resid_post.")
    gap = _rel(got_arr.sum(0), final)
    if gap > 1e-4:
        raise AssertionError(f"your components sum to the final stream only up to {gap:.1e}; please report.")


def check_target_rank(student, ref) -> None:
    model = shared_model()
    _, cache = _eiffel()
    w, eps, W_U = _weights()
    L = model.cfg.n_layers
    (paris,) = _ids(" Paris")
    x = np.stack([cache[f"blocks.{l}.hook_resid_pre"][0, -1] for l in range(L)]
                 + [cache[f"blocks.{L - 1}.hook_resid_post"][0, -1]])  # [L + 1, d]
    logits = ref.lens_logits(x, w, eps, W_U)  # [L + 1, V]
    want = ref.target_rank(logits, paris)
    got = np.asarray(student.target_rank(logits, paris))
    if got.shape != want.shape:
        raise AssertionError(f"target_rank(lens logits [{L + 1}, V], ' Paris'): expected one rank per row, "
                             f"shape {want.shape}; got shape {got.shape}. Compare along the LAST axis "
                             "(logits[..., target:target + 1] keeps the axis for broadcasting).")
    V = logits.shape[-1]
    mistakes = {
        "Your ranks are 0-based (the top token got 0). Rank 1 = the most likely token: add 1.": want - 1,
        "You counted tokens with a logit >= the target's, which includes the target itself, and "
        "then added 1.": want + 1,
        "You ranked from the bottom (smallest logit = rank 1); rank 1 is the LARGEST logit.": V + 1 - want,
    }
    _verdict("target_rank(lens logits per layer, ' Paris')", got, want, mistakes,
             "rank = 1 + number of tokens whose logit is strictly larger than the target's.", tol=1e-12)
    ties = np.array([[0.0, 5.0, 5.0, 3.0], [9.0, 5.0, 5.0, 3.0]])
    got_t = np.asarray(student.target_rank(ties, 2))
    if got_t.shape != (2,) or not np.array_equal(got_t, [1, 2]):
        raise AssertionError(f"target_rank([[0, 5, 5, 3], [9, 5, 5, 3]], target=2) should be [1, 2] "
                             f"(a tie does not push a token down: only STRICTLY larger logits count), got "
                             f"{got_t.tolist()}. An argsort-based rank depends on the order of tied "
                             "entries; count (logits > logits[target]) instead.")


def check_first_top1_layer(student, ref) -> None:
    cases = [
        ([9, 5, 1, 1, 1], 2, "top-1 from row 2 on"),
        ([4, 1, 3, 2, 1, 1], 4, "top-1 at row 1, lost at row 2, top-1 for good from row 4"),
        ([1, 1, 1], 0, "top-1 everywhere"),
        ([7, 1, 1, 2], None, "top-1 in the middle but not at the last row"),
        ([5, 3, 2], None, "never top-1"),
    ]
    for ranks, want, what in cases:
        got = student.first_top1_layer(np.array(ranks))
        if got is None and want is None:
            continue
        if got is None or want is None or int(got) != want:
            hint = ""
            if want is not None and got is not None and int(got) == list(ranks).index(1):
                hint = (" You returned the FIRST row where it is top-1; the lens asks from which row on "
                        "it stays top-1 (a token can win at one layer and lose at the next).")
            elif want is None:
                hint = (" If the target is not ranked 1 at the last row, the model does not predict it: "
                        "return None.")
            elif got == want - 1 or got == want + 1:
                hint = " Off by one: return the row index itself (0 = the first row)."
            raise AssertionError(f"first_top1_layer({ranks}) ({what}): expected {want}, got {got!r}.{hint}")
    model = shared_model()
    _, cache = _eiffel()
    w, eps, W_U = _weights()
    L = model.cfg.n_layers
    x = np.stack([cache[f"blocks.{l}.hook_resid_pre"][0, -1] for l in range(L)]
                 + [cache[f"blocks.{L - 1}.hook_resid_post"][0, -1]])
    ranks = ref.target_rank(ref.lens_logits(x, w, eps, W_U), model.to_single_token(" Paris"))
    want = ref.first_top1_layer(ranks)
    got = student.first_top1_layer(ranks)
    if got != want:
        raise AssertionError(f"first_top1_layer(the ' Paris' ranks of the Eiffel lens, {ranks.tolist()}) "
                             f"should be {want}, got {got!r}.")


CHECKS = [
    ("lens_logits", check_lens_logits),
    ("component_dla", check_component_dla),
    ("residual_components", check_residual_components),
    ("target_rank", check_target_rank),
    ("first_top1_layer", check_first_top1_layer),
]
