"""Weight edits: small, validated objects that change parameters in place.

    from minillm import edits
    handle = model.edit(edits.scale_neuron(layer=5, neuron=123, factor=0.04))
    handle.revert()                     # bit-exact: the journal writes the old bytes back

An edit is a description, not an action: building one touches nothing.
`model.edit(op)` (see journal.py) asks the op where it will write
(`op.plan(model)`, which validates every layer, index and factor and raises a
`MinillmError` before anything is written), saves the bytes found there, and
only then calls `op.write(model)`.

What each op touches (TransformerLens names; parameters and hooks with their shapes are
listed in docs/hooks.md):

| op | writes |
| --- | --- |
| scale_neuron / zero_neuron | "in": column i of W_in (+ b_in[i]); "out": row i of W_out |
| scale_head / zero_head     | W_Q[h] (+ b_Q[h]), _W_K/_W_V[kv-head] (+ biases), W_O[h] |
| reduce/boost/zero_embedding | row t of W_E (and so column t of W_U when tied) |
| scale_norm                 | the gain w of ln1, ln2 or ln_final |
| add_to_weight / set_weight | any parameter slice |

Arithmetic: a factor is rounded once to the model's dtype and each weight is
multiplied by it once (`w * dtype(f)`), so `scale(f)` then `scale(1/f)`
rounds four times (f, 1/f, and the two products); see `INVERSE_ULP_BOUND`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minillm.errors import MinillmError, check_index
from minillm.tokenizer import resolve_token

# scale(f) then scale(1/f), both in the model's dtype with unit roundoff u:
#   a = fl(f) = f(1+e1),  b = fl(1/f) = (1/f)(1+e2),  |e1|, |e2| <= u
#   w1 = fl(w·a) = w·a(1+d1),  w2 = fl(w1·b) = w·a·b(1+d1)(1+d2)
#   so w2 = w(1+e1)(1+e2)(1+d1)(1+d2): a relative error of at most (1+u)^4 - 1 ≈ 4u.
# One ulp of w is at least |w|·u (u = 2^-24 in float32, 2^-53 in float64), so
# |w2 - w| <= 4u|w| <= 4 ulps (for normal numbers; subnormal products lose more).
# Note a·b = fl(f)·fl(1/f) is itself not 1 in general: f32(0.04)·f32(25) = 0.99999998.
INVERSE_ULP_BOUND = 4


def inverse_ulp_bound(op, model) -> int:
    """The ulps an inverse revert of `op` may leave, counted in what the weights apply.

    INVERSE_ULP_BOUND for a product of scalings. Gemma's norms store w and apply
    g = 1 + w: scaling g by f < 1 stores w' = g·f - 1 ≈ -1, whose rounding (an ulp of 1)
    is an ulp of g·f, which undoing (÷ f) amplifies by 1/f: up to about 1/f ulps of g.
    That loss is real (it is in the stored w'), so the bound says it rather than hide it.
    """
    factor = getattr(op, "factor", 1.0)
    if isinstance(op, scale_norm) and model.ln_final.offset and 0 < factor < 1:
        return INVERSE_ULP_BOUND + math.ceil(1 / factor)
    return INVERSE_ULP_BOUND


# --- where an edit writes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """One slice of one parameter: `model.get_parameter(name)[index]`."""

    name: str  # documented parameter name, e.g. "blocks.5.mlp.W_out"
    index: tuple  # a numpy basic index into that parameter's live view
    label: str  # for people: "row 123"

    def view(self, model) -> np.ndarray:
        """A live view (the trailing ... keeps even a single element an array, not a copy)."""
        index = self.index if Ellipsis in self.index else self.index + (Ellipsis,)
        return model.get_parameter(self.name)[index]

    def save(self, model) -> np.ndarray:
        return np.array(self.view(model), copy=True)

    def restore(self, model, saved: np.ndarray) -> None:
        self.view(model)[...] = saved

    def describe(self) -> str:
        return f"{self.name}[{self.label}]"


@dataclass(frozen=True)
class TieState:
    """Whether W_U is W_E.T (tied) or its own array: touched by `untie=True` edits."""

    name: str = "unembed (tie state)"

    def save(self, model):
        return model.unembed.tie_state()

    def restore(self, model, saved) -> None:
        model.unembed.set_tie_state(saved)

    def describe(self) -> str:
        return "W_U untied from W_E (a copy of W_E.T)"


def untie(model) -> None:
    """Give W_U its own storage, a copy of W_E.T, so that W_E can change alone."""
    model.unembed.untie()


# --- validation helpers ------------------------------------------------------------------------


def _check_layer(model, layer) -> int:
    return check_index(layer, "layer", model.cfg.n_layers, "layers")


def _check_factor(factor, name: str = "factor") -> float:
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise MinillmError(f"{name} must be a number, got {factor!r}") from None
    if not math.isfinite(value):
        raise MinillmError(f"{name} must be finite, got {factor!r}")
    return value


def _token_label(model, t: int) -> str:
    try:
        return f"token {t} {model.to_string([t])!r}"
    except MinillmError:
        return f"token {t}"


# --- the ops -----------------------------------------------------------------------------------


class Edit:
    """Base class. Subclasses say where they write (`plan`) and what they write (`write`).

    `plan(model)` validates against the model and returns the places written,
    without writing; `write(model)` changes them; `inverse()` is the op that
    undoes this one arithmetically (for the drift lesson: not bit-exact);
    `describe(model)` is one line for people.
    """

    def plan(self, model) -> list:
        raise NotImplementedError

    def write(self, model) -> None:
        """Write new_values(...) into every planned slice."""
        for s in self.plan(model):
            if isinstance(s, Slice):
                view = s.view(model)
                view[...] = self.new_values(model, view)

    def new_values(self, model, old: np.ndarray) -> np.ndarray:
        """What `write` puts into a slice that holds `old`, computed in the model's dtype
        (ops that override `write` instead need not define it; they are not value-checked)."""
        raise NotImplementedError

    def inverse(self) -> Edit:
        raise MinillmError(
            f"{self!r} has no inverse operation (the old values are gone); revert it "
            "from the journal with handle.revert() instead"
        )

    def describe(self, model) -> str:
        return repr(self)


class _Scale(Edit):
    """Multiply every planned slice by `self.factor`, rounded once to the model's dtype."""

    def new_values(self, model, old: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # a factor beyond the dtype's range: check_result refuses
            f = model.dtype.type(self.factor)
        return old * f  # one rounding per weight


def _fmt(f: float) -> str:
    return f"×{f:g}"


@dataclass(frozen=True)
class scale_neuron(_Scale):  # noqa: N801  (lower case: reads like a function call)
    """Scale MLP neuron (layer, neuron) by `factor`.

    which="out" (default): row `neuron` of W_out, i.e. what the neuron writes to
      the residual stream is scaled (hook_post itself is unchanged).
    which="in": column `neuron` of W_in (and b_in[neuron]). Llama: W_in is the
      "up" projection, so hook_post = silu(gate)·up is scaled by `factor`
      (W_gate is left alone). GPT-2: hook_pre is scaled, hook_post = gelu(f·pre).
    which="both": both of the above.
    """

    layer: int
    neuron: int
    factor: float
    which: str = "out"

    def plan(self, model) -> list[Slice]:
        l = _check_layer(model, self.layer)
        i = check_index(self.neuron, "neuron", model.cfg.d_mlp, "MLP neurons per layer",
                       f" in layer {l}")
        _check_factor(self.factor)
        if self.which not in ("in", "out", "both"):
            raise MinillmError(f"which must be 'in', 'out' or 'both', got {self.which!r}")
        mlp, p = model.blocks[l].mlp, f"blocks.{l}.mlp"
        out = []
        if self.which in ("in", "both"):
            out.append(Slice(f"{p}.W_in", (slice(None), i), f":, {i}"))
            if mlp.b_in is not None:
                out.append(Slice(f"{p}.b_in", (i,), f"{i}"))
        if self.which in ("out", "both"):
            out.append(Slice(f"{p}.W_out", (i,), f"{i}"))
        return out

    def inverse(self) -> Edit:
        return _inverse_scale(self)

    def describe(self, model) -> str:
        return f"scale neuron {self.layer}:{self.neuron} {_fmt(self.factor)} ({self.which})"


def zero_neuron(layer: int, neuron: int, which: str = "both") -> scale_neuron:
    """Zero MLP neuron (layer, neuron): with which="both" or "in", hook_post[..., neuron] is exactly 0."""
    return scale_neuron(layer, neuron, 0.0, which)


HEAD_PARTS = "QKVO"


@dataclass(frozen=True)
class scale_head(_Scale):  # noqa: N801
    """Scale attention head (layer, head) by `factor` in the parts named by `parts`.

    parts="O" (default): W_O[head], so the head's output (its hook_z times W_O)
      is scaled; the attention pattern is unchanged.
    "Q" / "K" / "V": the head's slice of W_Q, and of the stored key/value heads
      _W_K, _W_V (its kv-head), and their biases.
    Grouped-query attention: K and V belong to a kv-head shared by
      n_heads / n_kv_heads query heads; editing them changes every head of the
      group. That requires allow_shared_kv=True, and the description names the group.
    """

    layer: int
    head: int
    factor: float
    parts: str = "O"
    allow_shared_kv: bool = False

    def plan(self, model) -> list[Slice]:
        cfg = model.cfg
        l = _check_layer(model, self.layer)
        h = check_index(self.head, "head", cfg.n_heads, "heads per layer", f" in layer {l}")
        _check_factor(self.factor)
        bad = set(self.parts) - set(HEAD_PARTS)
        if not self.parts or bad:
            raise MinillmError(f"parts must be letters from 'QKVO', got {self.parts!r}")
        g = h // (cfg.n_heads // cfg.n_kv_heads)
        group = self._group(model)
        if ("K" in self.parts or "V" in self.parts) and len(group) > 1 and not self.allow_shared_kv:
            raise MinillmError(
                f"head {h} of layer {l} shares kv-head {g} with heads {group}: editing K or V "
                "changes all of them; pass allow_shared_kv=True to do that, or edit only 'Q'/'O'"
            )
        attn, p = model.blocks[l].attn, f"blocks.{l}.attn"
        out = []
        for part in HEAD_PARTS:
            if part not in self.parts:
                continue
            idx = g if part in "KV" else h
            stored = "_" if part in "KV" else ""  # the stored kv-head, not the per-head repeat
            out.append(Slice(f"{p}.{stored}W_{part}", (idx,), f"{idx}"))
            if part != "O" and attn.b_QKV is not None:
                out.append(Slice(f"{p}.{stored}b_{part}", (idx,), f"{idx}"))
        return out

    def _group(self, model) -> list[int]:
        n = model.cfg.n_heads // model.cfg.n_kv_heads
        g = self.head // n
        return list(range(g * n, (g + 1) * n))

    def inverse(self) -> Edit:
        return _inverse_scale(self)

    def describe(self, model) -> str:
        text = f"scale head {self.layer}:{self.head} {_fmt(self.factor)} ({self.parts})"
        group = self._group(model)
        if ("K" in self.parts or "V" in self.parts) and len(group) > 1:
            text += f"; K/V shared with heads {group}"
        return text


def zero_head(layer: int, head: int, parts: str = "O", allow_shared_kv: bool = False) -> scale_head:
    """Zero attention head (layer, head): with "O", its contribution to hook_attn_out is exactly 0."""
    return scale_head(layer, head, 0.0, parts, allow_shared_kv)


@dataclass(frozen=True)
class scale_embedding(_Scale):  # noqa: N801
    """Scale the embedding row of one token (an id, or a text that is exactly one token).

    Tied models (GPT-2, SmolLM2): W_U is W_E.T, so the same numbers are the
    token's output direction too, and its logit changes. untie=True first gives
    W_U its own copy of W_E.T, so only the input side changes (revert re-ties).
    """

    token: int | str
    factor: float
    untie: bool = False
    kind: str = "scale"

    def plan(self, model) -> list:
        t = resolve_token(model, self.token)
        _check_factor(self.factor)
        row = Slice("embed.W_E", (t,), f"{t}")
        return [TieState(), row] if self.untie and model.unembed.tied else [row]

    def write(self, model) -> None:
        if self.untie:
            untie(model)
        super().write(model)

    def inverse(self) -> Edit:
        return _inverse_scale(self)

    def describe(self, model) -> str:
        t = resolve_token(model, self.token)
        text = f"{self.kind} embedding of {_token_label(model, t)} {_fmt(self.factor)}"
        if self.untie and model.cfg.tie_embeddings:
            text += " (input side only: W_U is untied from W_E first)"
        elif model.unembed.tied:
            text += f" (tied: also changes W_U[:, {t}], the token's output logit)"
        return text


def reduce_embedding(token: int | str, alpha: float, untie: bool = False) -> scale_embedding:
    """E' = E·(1−α) on the token's row."""
    return scale_embedding(token, 1.0 - _check_factor(alpha, "alpha"), untie, f"reduce (α={alpha:g})")


def boost_embedding(token: int | str, alpha: float, untie: bool = False) -> scale_embedding:
    """E' = E·(1+α) on the token's row."""
    return scale_embedding(token, 1.0 + _check_factor(alpha, "alpha"), untie, f"boost (α={alpha:g})")


def zero_embedding(token: int | str, untie: bool = False) -> scale_embedding:
    """E' = 0 on the token's row."""
    return scale_embedding(token, 0.0, untie, "zero")


NORMS = ("ln1", "ln2", "ln1_post", "ln2_post", "final")


@dataclass(frozen=True)
class scale_norm(_Scale):  # noqa: N801
    """Scale the gain of a norm: blocks.layer.ln1 / ln2 (ln1_post / ln2_post where the
    model has them: Gemma, OLMo-2), or which="final" (layer=None).

    The gain is what the normalized stream is multiplied by: w, or for Gemma,
    which stores w and multiplies by (1 + w), the whole (1 + w), so that a
    factor means the same in every family (w' = (1 + w)·factor - 1 there).
    The bias of a LayerNorm is left alone.
    """

    layer: int | None
    which: str
    factor: float

    def plan(self, model) -> list[Slice]:
        if self.which not in NORMS:
            raise MinillmError(f"which must be one of {NORMS}, got {self.which!r}")
        _check_factor(self.factor)
        if self.which == "final":
            if self.layer is not None:
                raise MinillmError("the final norm belongs to no layer: pass layer=None")
            return [Slice("ln_final.w", (slice(None),), ":")]
        l = _check_layer(model, self.layer)
        if getattr(model.blocks[l], self.which) is None:
            have = [n for n in NORMS[:4] if getattr(model.blocks[l], n) is not None]
            raise MinillmError(f"layer {l} has no {self.which} (this model's block norms: "
                               f"{', '.join(have)})")
        return [Slice(f"blocks.{l}.{self.which}.w", (slice(None),), ":")]

    def new_values(self, model, old: np.ndarray) -> np.ndarray:
        offset = model.ln_final.offset  # 1.0 for Gemma's (1 + w) norms, else 0.0
        if offset == 0 or self.factor == 1:  # factor 1: not a bit changes (no round trip)
            return super().new_values(model, old)
        with np.errstate(over="ignore"):
            f, o = model.dtype.type(self.factor), model.dtype.type(offset)
        return (o + old) * f - o  # the gain (1 + w) scaled by f

    def inverse(self) -> Edit:
        return _inverse_scale(self)

    def describe(self, model) -> str:
        where = "ln_final" if self.which == "final" else f"blocks.{self.layer}.{self.which}"
        if model.ln_final.offset:
            return f"scale {where} gain (1 + w) {_fmt(self.factor)}"
        return f"scale {where}.w {_fmt(self.factor)}"


def check_result(op: Edit, model, slices: list) -> None:
    """Refuse, before anything is written, an edit that would make a finite weight NaN or
    infinite in the model's own dtype, or whose inverse revert (`handle.revert(mode=
    "inverse")`) would. float32 holds magnitudes up to 3.4e38: `scale_neuron(3, 7, 1e39)`
    overflows, and so does the inverse of a factor of 1e-39 (×1e39)."""
    if type(op).new_values is Edit.new_values:  # an op that writes by its own rules (fold_ln, masks)
        return
    try:
        inverse = op.inverse()
    except MinillmError:  # zeroing and set_weight have none
        inverse = None
    with np.errstate(over="ignore", invalid="ignore"):
        for s in slices:
            if not isinstance(s, Slice):
                continue
            old = s.view(model)
            new = op.new_values(model, old)
            finite = np.isfinite(old)
            _refuse_nonfinite(op, model, s, old, new, finite, "")
            if inverse is not None:
                back = inverse.new_values(model, new)
                _refuse_nonfinite(op, model, s, old, back, finite, "its inverse revert ")


def _refuse_nonfinite(op, model, s, old, new, finite, what: str) -> None:
    bad = finite & ~np.isfinite(new)
    if not bad.any():
        return
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    dtype = np.dtype(model.dtype)
    raise MinillmError(
        f"{op.describe(model)}: {what}would make {s.describe()} non-finite in {dtype} "
        f"(at index {i}: {float(old[i]):.6g} becomes {float(new[i])}; {dtype} holds magnitudes up "
        f"to {float(np.finfo(dtype).max):.3g}); refused, nothing was changed"
    )


def _inverse_scale(op: _Scale) -> _Scale:
    if op.factor == 0:
        raise MinillmError(
            f"{op!r} zeroes weights: there is no inverse operation; revert it from the journal "
            "with handle.revert()"
        )
    from dataclasses import replace

    return replace(op, factor=1.0 / op.factor)


def _check_index(model, name: str, index) -> tuple[np.ndarray, tuple]:
    param = model.get_parameter(name)  # raises with a suggestion if the name is unknown
    index = index if isinstance(index, tuple) else (() if index is None else (index,))
    for i in index:
        if not (isinstance(i, (int, np.integer, slice)) or i is Ellipsis) or isinstance(i, bool):
            raise MinillmError(f"{name}: index parts must be ints, slices or ..., got {i!r}")
    try:
        target = param[index]
    except IndexError as e:
        raise MinillmError(f"{name} has shape {param.shape}: index {index!r} is out of range ({e})") from None
    return target, index


def _index_label(index: tuple) -> str:
    def one(i):
        if isinstance(i, slice):
            return f"{'' if i.start is None else i.start}:{'' if i.stop is None else i.stop}" + (
                "" if i.step is None else f":{i.step}")
        return "..." if i is Ellipsis else str(i)

    return ", ".join(one(i) for i in index) or "..."


def _tied_note(model, name: str) -> str:
    if name in ("embed.W_E", "unembed.W_U") and model.unembed.tied:
        return " (tied: W_E and W_U share these numbers)"
    return ""


def _broadcast_plan(model, op: str, name: str, index, array, what: str) -> list[Slice]:
    """Validate param[index] <op> array (finite, broadcastable) and name the one slice touched."""
    target, index = _check_index(model, name, index)
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise MinillmError(f"{op} {name}: {what} must be finite")
    try:
        np.broadcast_shapes(array.shape, target.shape)
    except ValueError:
        raise MinillmError(
            f"{op} {name}[{_index_label(index)}]: {what} of shape {array.shape} "
            f"does not fit the slice of shape {target.shape}"
        ) from None
    return [Slice(name, index, _index_label(index))]


def _amount(x) -> str:
    """A scalar as its value, an array as its shape (for an edit's description)."""
    x = np.asarray(x)
    return f"{float(x):g}" if x.ndim == 0 else f"an array of shape {x.shape}"


@dataclass(frozen=True, eq=False)
class add_to_weight(Edit):  # noqa: N801
    """param[index] += delta, for any parameter by its documented name (delta broadcasts)."""

    name: str
    index: object
    delta: object

    def plan(self, model) -> list[Slice]:
        return _broadcast_plan(model, "add_to_weight", self.name, self.index, self.delta, "delta")

    def new_values(self, model, old: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return old + np.asarray(self.delta).astype(model.dtype)

    def inverse(self) -> Edit:
        return add_to_weight(self.name, self.index, -np.asarray(self.delta))

    def describe(self, model) -> str:
        return f"add {_amount(self.delta)} to {self.plan(model)[0].describe()}{_tied_note(model, self.name)}"


@dataclass(frozen=True, eq=False)
class set_weight(Edit):  # noqa: N801
    """param[index] = value, for any parameter by its documented name (value broadcasts)."""

    name: str
    index: object
    value: object

    def plan(self, model) -> list[Slice]:
        return _broadcast_plan(model, "set_weight", self.name, self.index, self.value, "value")

    def new_values(self, model, old: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.broadcast_to(np.asarray(self.value).astype(model.dtype), old.shape)

    def describe(self, model) -> str:
        return f"set {self.plan(model)[0].describe()} to {_amount(self.value)}{_tied_note(model, self.name)}"


# TransformerLens's weight processing is an Edit too (defined on top of this module):
from minillm.edit.processing import process_weights  # noqa: E402, F401
