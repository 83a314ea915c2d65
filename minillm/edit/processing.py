"""TransformerLens's weight processing, as one revertible weight edit.

    model = minillm.load("gpt2", fold_ln=True, center_writing_weights=True,
                         center_unembed=True, fold_value_biases=True)   # TransformerLens's defaults
    model.edits                  # [<edit: process weights (fold_ln, ...)>]
    model.revert_all()           # the checkpoint's weights again, bit for bit

Each step rewrites the weights so that the model computes the same function
(up to float rounding; `center_unembed` shifts every logit of a position by
the same amount, which changes no probability):

    fold_ln                 a norm's gain w (and LayerNorm bias b) moves into the weights
                            that read its output: W_Q, W_K, W_V (ln1), W_in, W_gate (ln2),
                            W_U (ln_final); b goes into b_Q, b_K, b_V, b_in and a new
                            unembedding bias b_U. The norm keeps w = 1, b = 0. LayerNorm
                            models also centre each reading weight over d_model (the
                            normalized input has mean 0, so that mean reads nothing).
    center_writing_weights  (LayerNorm models) every weight writing to the residual stream
                            (W_E, W_pos, W_O, b_O, W_out, b_out) loses its mean over
                            d_model: LayerNorm removes it anyway.
    center_unembed          W_U (and b_U) lose their mean over the vocabulary.
    fold_value_biases       b_V is constant after the attention average, so Σ_h b_V[h] W_O[h]
                            moves into b_O (created if the model has none) and b_V = 0.
    refactor_factored_attn_matrices
                            (learned positions only, as in TransformerLens: with RoPE the QK
                            circuit depends on positions) each head's W_Q W_Kᵀ (biases as an
                            extra input row) is refactored by its SVD U S Vᵀ into
                            W_Q = U √S, W_K = V √S, and W_V W_O into W_V = U S, W_O = Vᵀ
                            (b_V folded into b_O first). Same products, new factors.

The arithmetic follows TransformerLens's `ProcessWeights`, step for step, in the
model's dtype, so processed weights agree with TransformerLens's to float
rounding (tests/test_tl_reference.py measures it). It is an `Edit`: the journal
saves every array it rewrites (fold_ln on SmolLM2 in float32: 280 MB of saved
attention and MLP weights, plus 113 MB for W_U's own copy, while the edit is in
force) and `revert()` restores them bit for bit, including the tie
between W_E and W_U that centring or folding into W_U has to break.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minillm.edit.edits import Edit, Slice, TieState, untie
from minillm.errors import MinillmError


@dataclass(frozen=True)
class OptionalBias:
    """A bias that processing may create (b_U, or b_O of a model without one): saved as
    None or a copy, restored by putting that back."""

    name: str  # "unembed.b_U" or "blocks.l.attn.b_O"

    def _owner(self, model):
        if self.name == "unembed.b_U":
            return model.unembed, "b_U"
        return model.blocks[int(self.name.split(".")[1])].attn, "b_O"

    def save(self, model):
        owner, attr = self._owner(model)
        value = getattr(owner, attr)
        return None if value is None else value.copy()

    def restore(self, model, saved) -> None:
        owner, attr = self._owner(model)
        object.__setattr__(owner, attr, saved)

    def describe(self) -> str:
        return self.name


def _full(name: str) -> Slice:
    return Slice(name, (Ellipsis,), "all")


@dataclass(frozen=True)
class process_weights(Edit):  # noqa: N801  (lower case: reads like a function call)
    """TransformerLens's weight processing (see the module docstring); flags as in
    `HookedTransformer.from_pretrained`, all off by default here."""

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False

    # --- where it writes ------------------------------------------------------------------

    def _steps(self, model) -> dict[str, bool]:
        if self.center_unembed and model.cfg.final_softcap is not None:
            raise MinillmError("center_unembed would change this model's probabilities: a shift "
                               "of the logits does not pass unchanged through its final soft-cap")
        layer_norm = model.ln_final.b is not None  # GPT-2; RMSNorm has no bias
        if self.refactor_factored_attn_matrices and (model.rope_inv_freq is not None
                                                      or model.blocks[0].attn.b_QKV is None):
            raise MinillmError("refactor_factored_attn_matrices needs learned positions and q/k/v "
                               "biases (GPT-2): with rotary embeddings the QK circuit depends on "
                               "the positions, as TransformerLens says")
        has_b_V = model.blocks[0].attn.b_QKV is not None
        return {"fold_ln": self.fold_ln, "center_writing_weights": self.center_writing_weights
                and layer_norm, "center_unembed": self.center_unembed,
                "fold_value_biases": self.fold_value_biases and has_b_V, "layer_norm": layer_norm,
                "refactor": self.refactor_factored_attn_matrices}

    def plan(self, model) -> list:
        s = self._steps(model)
        names: list[str] = []
        for l, blk in enumerate(model.blocks):
            p = f"blocks.{l}"
            if s["fold_ln"] and blk.ln1 is not None:  # OLMo-2 has no norm before a sublayer
                names += [f"{p}.attn.W_Q", f"{p}.attn._W_K", f"{p}.attn._W_V", f"{p}.ln1.w", f"{p}.ln2.w",
                          f"{p}.mlp.W_in"]
                names += [f"{p}.mlp.W_gate"] if blk.mlp.gated else []
                if blk.ln1.b is not None:
                    names += [f"{p}.attn.b_Q", f"{p}.attn._b_K", f"{p}.attn._b_V", f"{p}.ln1.b",
                              f"{p}.ln2.b", f"{p}.mlp.b_in"]
            if s["center_writing_weights"]:
                names += [f"{p}.attn.W_O", f"{p}.mlp.W_out"]
                names += [f"{p}.mlp.b_out"] if blk.mlp.b_out is not None else []
            if s["fold_value_biases"] or s["refactor"]:
                names += [f"{p}.attn._b_V"]
            if s["refactor"]:
                names += [f"{p}.attn.W_Q", f"{p}.attn._W_K", f"{p}.attn._W_V", f"{p}.attn.W_O",
                          f"{p}.attn.b_Q", f"{p}.attn._b_K"]
        names = list(dict.fromkeys(names))  # keep order, drop repeats
        if s["fold_ln"]:
            names += ["ln_final.w"] + (["ln_final.b"] if s["layer_norm"] else [])
        if s["center_writing_weights"]:
            names += ["embed.W_E"] + (["pos_embed.W_pos"] if model.pos_embed is not None else [])
        out: list = [_full(n) for n in names]
        # biases the processing may create, and whatever b_O / b_U it rewrites
        for l, blk in enumerate(model.blocks):
            if s["fold_value_biases"] or s["refactor"] or (s["center_writing_weights"]
                                                           and blk.attn.b_O is not None):
                out.append(OptionalBias(f"blocks.{l}.attn.b_O"))
        touches_W_U = s["fold_ln"] or s["center_unembed"]
        if touches_W_U or s["center_writing_weights"]:
            if model.unembed.tied:
                out.insert(0, TieState())  # W_U gets its own copy; the revert re-ties
            elif touches_W_U:
                out.append(_full("unembed.W_U"))
        if (s["fold_ln"] and s["layer_norm"]) or (s["center_unembed"] and model.unembed.b_U is not None):
            out.append(OptionalBias("unembed.b_U"))
        return out

    # --- what it writes (TransformerLens's ProcessWeights, in the model's dtype) -----------

    def write(self, model) -> None:
        s = self._steps(model)
        if s["fold_ln"]:
            self._fold_ln(model, s["layer_norm"])
        if s["center_writing_weights"]:
            _center_writing_weights(model)
        if s["center_unembed"]:
            _own_W_U(model)
            W_U = model.unembed.W_U
            W_U[...] = W_U - W_U.mean(-1, keepdims=True)  # [d, V]: mean over the vocabulary
            if model.unembed.b_U is not None:
                b_U = model.unembed.b_U
                b_U[...] = b_U - b_U.mean()
        if s["fold_value_biases"]:
            for blk in model.blocks:
                a = blk.attn
                b_O = np.zeros(model.cfg.d_model, model.dtype) if a.b_O is None else a.b_O
                folded = b_O + np.einsum("he,hed->d", a.b_V, a.W_O)  # Σ_h b_V[h] @ W_O[h]
                if s["center_writing_weights"]:
                    folded = folded - folded.mean()
                object.__setattr__(a, "b_O", folded.astype(model.dtype))
                a._b_V[...] = 0
        if s["refactor"]:
            for blk in model.blocks:
                _refactor_head_circuits(blk.attn, model.dtype, model.cfg.d_model)

    @staticmethod
    def _fold_ln(model, layer_norm: bool) -> None:
        # The gain folded is what the norm multiplies by: w, or 1 + w for Gemma, whose folded
        # norms then store w = 0. Norms after a sublayer (Gemma, OLMo-2) and q/k norms are
        # followed by no linear map of their own and stay as they are (as in TransformerLens).
        one = 1 - model.ln_final.offset  # the stored w of a gain of 1
        for blk in model.blocks:
            a, mlp = blk.attn, blk.mlp
            if blk.ln1 is None:  # OLMo-2: the sublayers read the raw stream
                continue
            w = blk.ln1.gain.copy()  # [d]
            reads = (a.W_Q, a._W_K, a._W_V)  # [heads, d, e] live views
            if layer_norm:  # b_X += Σ_d W_X[h, d, e] · b[d]
                for W, bias in zip(reads, (a.b_Q, a._b_K, a._b_V)):
                    bias[...] = bias + (W * blk.ln1.b[None, :, None]).sum(-2)
                blk.ln1.b[...] = 0
            for W in reads:
                W[...] = W * w[None, :, None]
            blk.ln1.w[...] = one
            if layer_norm:
                for W in reads:
                    W[...] = W - W.mean(1, keepdims=True)  # over d_model
            w = blk.ln2.gain.copy()
            if layer_norm:
                mlp.b_in[...] = mlp.b_in + (mlp.W_in * blk.ln2.b[:, None]).sum(-2)  # [m]
                blk.ln2.b[...] = 0
            mlp.W_in[...] = mlp.W_in * w[:, None]  # [d, m]
            if mlp.gated:
                mlp.W_gate[...] = mlp.W_gate * w[:, None]
            blk.ln2.w[...] = one
            if layer_norm:
                mlp.W_in[...] = mlp.W_in - mlp.W_in.mean(0, keepdims=True)
        _own_W_U(model)
        W_U, fin = model.unembed.W_U, model.ln_final  # [d, V]
        if layer_norm:
            b_U = np.zeros(model.cfg.d_vocab, model.dtype) if model.unembed.b_U is None else model.unembed.b_U
            model.unembed.b_U = (b_U + (W_U * fin.b[:, None]).sum(-2)).astype(model.dtype)
            fin.b[...] = 0
        W_U[...] = W_U * fin.gain.copy()[:, None]
        fin.w[...] = one
        if layer_norm:
            W_U[...] = W_U - W_U.mean(0, keepdims=True)

    def describe(self, model) -> str:
        on = [k for k in ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                          "refactor_factored_attn_matrices") if getattr(self, k)]
        return "process weights (" + (", ".join(on) or "nothing") + ")"


def _refactor_head_circuits(a, dtype, d_model: int) -> None:
    """TransformerLens's refactor_factored_attn_matrices for one layer (see the module docstring)."""
    from minillm.factored_matrix import FactoredMatrix

    # QK: [W_Q; b_Q] [h, d+1, e] against [W_K; b_K]: an input of d + 1 coordinates, the last one 1
    W_Q_eff = np.concatenate([a.W_Q, a.b_Q[:, None, :]], axis=1)
    W_K_eff = np.concatenate([a._W_K, a._b_K[:, None, :]], axis=1)
    A, B = FactoredMatrix(W_Q_eff, W_K_eff.swapaxes(-2, -1)).make_even().pair  # [h, d+1, e], [h, e, d+1]
    a.W_Q[...], a.b_Q[...] = A[:, :-1], A[:, -1]
    a._W_K[...], a._b_K[...] = B.swapaxes(-2, -1)[:, :-1], B.swapaxes(-2, -1)[:, -1]
    # OV: b_V moves into b_O, then W_V W_O = U S Vᵀ -> W_V = U S, W_O = Vᵀ
    b_O = np.zeros(d_model, dtype) if a.b_O is None else a.b_O
    object.__setattr__(a, "b_O", (b_O + np.einsum("he,hed->d", a._b_V, a.W_O)).astype(dtype))
    a._b_V[...] = 0
    U, S, V = FactoredMatrix(a._W_V, a.W_O).svd()  # [h, d, e], [h, e], [h, d, e]
    a._W_V[...] = U * S[:, None, :]
    a.W_O[...] = V.swapaxes(-2, -1)


def _own_W_U(model) -> None:
    """Processing rewrites W_U and W_E differently: give W_U its own storage first."""
    untie(model)


def _center_writing_weights(model) -> None:
    """Every weight writing to the residual stream loses its mean over d_model."""
    _own_W_U(model)
    for W in (model.embed.W_E, None if model.pos_embed is None else model.pos_embed.W_pos):
        if W is not None:
            W[...] = W - W.mean(-1, keepdims=True)
    for blk in model.blocks:
        a, mlp = blk.attn, blk.mlp
        a.W_O[...] = a.W_O - a.W_O.mean(-1, keepdims=True)  # [h, e, d]
        if a.b_O is not None:
            a.b_O[...] = a.b_O - a.b_O.mean()
        mlp.W_out[...] = mlp.W_out - mlp.W_out.mean(-1, keepdims=True)  # [m, d]
        if mlp.b_out is not None:
            mlp.b_out[...] = mlp.b_out - mlp.b_out.mean()
