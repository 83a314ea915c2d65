"""llama.cpp's tensor names, and importers for its dumps, so a llama.cpp run can be compared
with minillm hook by hook.

llama.cpp names the nodes of its compute graph `l_out-3`, `ffn_inp-3`, `Qcur-3`, ... (the
number is the layer) and its weights `blk.3.attn_q.weight`, `token_embd.weight`, ... (the
GGUF names). Two kinds of dump are read:

* the text printed by `llama-eval-callback` (one block per graph node: its name, type,
  operation, sources and shape `{ne0, ne1, ne2, ne3}`, then its values, of which only the
  first and last 3 along each axis are printed, with 4 decimals, then their `sum`);
* full tensors under those graph names (`from_gguf_named`), in ggml's order: ggml's shape
  `{ne0, ne1, ne2, ne3}` lists the fastest axis first, so the NumPy array of a ggml tensor
  has shape (ne3, ne2, ne1, ne0).

Layouts to undo (each map below says which):
* positions and features: a ggml activation `{d_model, p}` is minillm's `[1, p, d_model]`;
* heads: `Qcur-L (reshaped)` is `{d_head, n_heads, p}`, i.e. `[p, n_heads, d_head]`;
* rotary layout: GGUF stores each head's q and k rows permuted so that RoPE rotates
  adjacent pairs (2i, 2i+1); Hugging Face and minillm rotate (i, i + d_head/2). Element j
  of a llama.cpp head is element (j % 2)·d_head/2 + j // 2 of minillm's. This holds for q
  and k both before and after RoPE;
* attention: `kq_soft_max_ext-L` is `{n_kv, p, n_heads}` with the KV cache's slots
  (padded, e.g. 32 or 256) as keys; the first p slots are minillm's `[1, h, p, p]`;
* the last block and the output run on the output rows only (llama.cpp computes logits
  for the last position of a prompt): a tensor whose position axis has length 1 in a
  run of p > 1 tokens is position p - 1.

The numbers differ from minillm's float32 run by more than float32 rounding: llama.cpp
multiplies quantized weights with activations quantized on the fly (Q8 for Q4/Q8
weights) and keeps the KV cache in float16. docs/verifying.md measures this on SmolLM2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError
from minillm.verify.dumps import Dump, final_norm_out, load_dump
from minillm.verify.names import FINAL_OUT
from minillm.verify.report import Verdict

# --- the weight names (GGUF) ----------------------------------------------------------------

GGUF_WEIGHTS = {
    "token_embd.weight": "embed.W_E",
    "position_embd.weight": "pos_embed.W_pos",
    "output_norm.weight": "ln_final.w",
    "output_norm.bias": "ln_final.b",
    "output.weight": "unembed.W_U",
}
GGUF_BLOCK_WEIGHTS = {
    "attn_norm.weight": "ln1.w",
    "attn_norm.bias": "ln1.b",
    "attn_q.weight": "attn.W_Q",
    "attn_k.weight": "attn._W_K",
    "attn_v.weight": "attn._W_V",
    "attn_q.bias": "attn.b_Q",
    "attn_k.bias": "attn.b_K",
    "attn_v.bias": "attn.b_V",
    "attn_output.weight": "attn.W_O",
    "attn_output.bias": "attn.b_O",
    "ffn_norm.weight": "ln2.w",
    "ffn_norm.bias": "ln2.b",
    "ffn_gate.weight": "mlp.W_gate",
    "ffn_up.weight": "mlp.W_in",
    "ffn_down.weight": "mlp.W_out",
}


def weight_name(gguf_name: str) -> str | None:
    """The minillm parameter a GGUF tensor holds (`blk.3.attn_q.weight` -> `blocks.3.attn.W_Q`),
    or None. Layouts differ: GGUF q/k rows are in the rotary pair order (see the module doc)."""
    if gguf_name in GGUF_WEIGHTS:
        return GGUF_WEIGHTS[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in GGUF_BLOCK_WEIGHTS:
        return f"blocks.{m.group(1)}.{GGUF_BLOCK_WEIGHTS[m.group(2)]}"
    return None


# --- the activation names (graph nodes) -----------------------------------------------------


def rotary_order(d_head: int) -> np.ndarray:
    """perm[j] = minillm's index of llama.cpp's element j within one q or k head."""
    j = np.arange(d_head)
    return (j % 2) * (d_head // 2) + j // 2


@dataclass(frozen=True)
class NodeMap:
    """How one llama.cpp graph node becomes a minillm hook.

    hook: the minillm name; to_hook(arr4, cfg, p) turns the node's array (shape
    (ne3, ne2, ne1, ne0)) into minillm's layout with batch 1; last_only: the node holds
    only the last position (its position axis has length 1 in a longer run).
    """

    llama: str
    hook: str
    to_hook: Callable
    last_only: bool = False


def _resid(a, cfg, p):  # {d, p} -> [1, p, d]
    return a[0, 0][None]


def _heads(n: str):
    def f(a, cfg, p):  # {n·e, p} or {e, n, p} -> [1, p, n, e], rotary pairs undone for q/k
        heads = cfg.n_heads if n == "q" else cfg.n_kv_heads
        x = a[0, 0].reshape(a.shape[2], heads, cfg.d_head) if a.shape[1] == 1 else a[0]
        if n in ("q", "k"):
            x = x[..., np.argsort(rotary_order(cfg.d_head))]
        return x[None]
    return f


def _pattern(a, cfg, p):  # {n_kv, p, h} -> [1, h, p, p]
    return a[0][:, :, :p][None]


def _z_from_kqv(a, cfg, p):  # {e, p, h} -> [1, p, h, e]
    return a[0].transpose(1, 0, 2)[None]


def _z_merged(a, cfg, p):  # {e, h, p} -> [1, p, h, e]
    return a[0][None]


def _z_cont(a, cfg, p):  # {h·e, p} -> [1, p, h, e]
    return a[0, 0].reshape(a.shape[2], cfg.n_heads, cfg.d_head)[None]


def node_map(name: str, op: str = "", sources: Iterable[str] = ()) -> NodeMap | None:
    """The minillm hook of a llama.cpp graph node (`l_out-3` -> `blocks.3.hook_resid_post`).

    op and sources (from an eval-callback dump) tell apart the nodes llama.cpp names
    alike: `Qcur-L` before (MUL_MAT) and after (ROPE) rotation, and the two `norm-L` of a
    block (ln1 reads the residual stream, ln2 reads `ffn_inp-L`).
    """
    sources = list(sources)
    if name == "inp_embd":
        return NodeMap(name, "hook_embed", _resid)
    if name == "norm":
        return NodeMap(name, "ln_final.hook_normalized", _resid)
    if name == "result_norm":
        return NodeMap(name, FINAL_OUT, _resid)
    if name == "result_output":
        return NodeMap(name, "hook_logits", _resid)
    m = re.fullmatch(r"(.+?)-(\d+)( \(reshaped\))?", name)
    if not m:
        return None
    base, l, reshaped = m.group(1), int(m.group(2)), bool(m.group(3))
    b = f"blocks.{l}"
    rope = op == "ROPE"
    simple = {
        "kqv_out": "hook_attn_out", "ffn_inp": "hook_resid_mid", "ffn_gate": "mlp.hook_pre",
        "ffn_up": "mlp.hook_pre_linear", "ffn_gate_par": "mlp.hook_post", "ffn_out": "hook_mlp_out",
        "l_out": "hook_resid_post",
    }
    if base in simple and not reshaped:
        return NodeMap(name, f"{b}.{simple[base]}", _resid)
    if base == "norm":
        second = any(s.startswith("ffn_inp-") for s in sources)
        return NodeMap(name, f"{b}.{'ln2' if second else 'ln1'}.hook_normalized", _resid)
    if base in ("Qcur", "Kcur"):
        which = "q" if base == "Qcur" else "k"
        hook = f"attn.hook_rot_{which}" if rope else f"attn.hook_{which}"
        return NodeMap(name, f"{b}.{hook}", _heads(which))
    if base == "Vcur" and not reshaped:
        return NodeMap(name, f"{b}.attn.hook_v", _heads("v"))
    if base == "kq_soft_max_ext":
        return NodeMap(name, f"{b}.attn.hook_pattern", _pattern)
    if base == "kqv":
        return NodeMap(name, f"{b}.attn.hook_z", _z_from_kqv)
    if base == "kqv_merged":
        return NodeMap(name, f"{b}.attn.hook_z", _z_merged)
    if base == "kqv_merged_cont":
        return NodeMap(name, f"{b}.attn.hook_z", _z_cont)
    return None


def from_gguf_named(arrays: Mapping[str, np.ndarray], cfg, p: int | None = None) -> dict[str, np.ndarray]:
    """Full tensors keyed by llama.cpp graph names -> {minillm hook name: array [1, ...]}.

    Each array is in ggml's order (NumPy shape (ne3, ne2, ne1, ne0), fewer leading axes
    allowed). Nodes llama.cpp names alike cannot be told apart by name alone: give
    `Qcur-L`/`Kcur-L` after RoPE as `Qcur-L (rope)`, and a block's second `norm-L` (of
    `ffn_inp-L`) as `norm-L (ffn)`. Output-row nodes (position axis of length 1 in a run
    of p > 1) keep length 1: they are position p - 1. `p` defaults to `inp_embd`'s length.
    """
    if p is None:
        p = int(np.asarray(arrays["inp_embd"]).shape[-2]) if "inp_embd" in arrays else None
    out: dict[str, np.ndarray] = {}
    for raw, value in arrays.items():
        name, op, sources = raw, "", []
        if raw.endswith(" (rope)"):
            name, op = raw[: -len(" (rope)")], "ROPE"
        elif raw.endswith(" (ffn)"):
            name, sources = raw[: -len(" (ffn)")], ["ffn_inp-"]
        m = node_map(name, op, sources)
        if m is None:
            continue
        a = np.asarray(value)
        out.setdefault(m.hook, m.to_hook(a.reshape((1,) * (4 - a.ndim) + a.shape), cfg, p))
    return out


# --- llama-eval-callback text -----------------------------------------------------------------

_HEADER = re.compile(
    r"^ggml_debug:\s+(?P<name>.+?) = \((?P<type>\w+)\)\s+(?P<op>\w+)\((?P<args>.*)\) = "
    r"\{(?P<ne>[\d, ]+)\}\s*$"
)
_SOURCE = re.compile(r"(?:^|, )([^{},][^{}]*?)\{[\d, ]+\}")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)", re.I)


@dataclass
class PrintedTensor:
    """One node of an eval-callback dump: the printed elements only.

    ne: ggml's shape {ne0, ne1, ne2, ne3}; values: {(i3, i2, i1, i0): value} for the
    printed elements (the first and last 3 along each axis); total: the printed `sum`
    (of the printed elements only).
    """

    name: str
    type: str
    op: str
    sources: list[str]
    ne: tuple[int, int, int, int]
    values: dict[tuple[int, int, int, int], float] = field(default_factory=dict)
    total: float | None = None
    line: int = 0

    @property
    def shape4(self) -> tuple[int, int, int, int]:
        """NumPy's shape of the node: (ne3, ne2, ne1, ne0)."""
        return self.ne[3], self.ne[2], self.ne[1], self.ne[0]


def _printed(n: int, k: int = 3) -> list[int]:
    """The indices eval-callback prints along an axis of length n."""
    return list(range(n)) if n <= 2 * k else list(range(k)) + list(range(n - k, n))


def read_eval_callback(path: str | Path) -> list[list[PrintedTensor]]:
    """Parse `llama-eval-callback` output into runs (one per graph evaluation), each a list of
    nodes in the order llama.cpp computed them. A run starts at each `inp_embd`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise MinillmError(f"cannot read {path}: {exc.strerror}") from None
    runs: list[list[PrintedTensor]] = []
    current: PrintedTensor | None = None
    numbers: list[float] = []

    def finish():
        if current is None:
            return
        shape4 = current.shape4
        coords = [(i3, i2, i1, i0) for i3 in range(shape4[0]) for i2 in _printed(shape4[1])
                  for i1 in _printed(shape4[2]) for i0 in _printed(shape4[3])]
        if len(numbers) != len(coords):
            raise MinillmError(
                f"{path}, line {current.line}: {current.name} prints {len(numbers)} values, its shape "
                f"{{{', '.join(map(str, current.ne))}}} means {len(coords)}: not llama-eval-callback "
                "output, or a truncated one")
        current.values = dict(zip(coords, numbers, strict=True))

    for i, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            finish()
            ne = tuple(int(x) for x in m.group("ne").split(","))
            if len(ne) != 4:
                raise MinillmError(f"{path}, line {i}: expected a 4-d ggml shape, got {ne}")
            current = PrintedTensor(m.group("name").strip(), m.group("type"), m.group("op"),
                                    [s.strip() for s in _SOURCE.findall(m.group("args"))], ne, line=i)
            numbers = []
            if current.name == "inp_embd" or not runs:
                runs.append([])
            runs[-1].append(current)
            continue
        if current is None:
            continue
        s = line.strip()
        if s.startswith("sum ="):
            current.total = float(s.split("=", 1)[1])
        elif s.startswith("["):
            numbers += [float(x) for x in _NUMBER.findall(s.replace("...", " "))]
    finish()
    if not runs:
        raise MinillmError(f"{path}: no `ggml_debug:` lines, so this is not llama-eval-callback output")
    return runs


@dataclass
class ImportedNode:
    """A printed node on minillm's side: hook name, minillm indices and values."""

    llama: str
    hook: str
    shape: tuple[int, ...]  # minillm's shape of the whole activation (batch 1)
    index: np.ndarray  # [n, ndim] minillm indices of the printed elements
    values: np.ndarray  # [n]
    last_only: bool


def import_eval_callback(path: str | Path, cfg, run: int = 0) -> tuple[int, list[ImportedNode], list[str]]:
    """The printed elements of one run of an eval-callback dump, placed at minillm indices.

    Returns (p, the mapped nodes in llama.cpp's order, the names of nodes with no minillm
    hook). Output-row nodes are at position p - 1.
    """
    runs = read_eval_callback(path)
    if not -len(runs) <= run < len(runs):
        raise MinillmError(f"{path} holds {len(runs)} run(s); run {run} does not exist")
    nodes = runs[run]
    embd = next((t for t in nodes if t.name == "inp_embd"), None)
    if embd is None:
        raise MinillmError(f"{path}: run {run} has no inp_embd node, so its length is unknown")
    p = embd.ne[1]
    mapped, unmapped = [], []
    for t in nodes:
        m = node_map(t.name, t.op, t.sources)
        if m is None or t.type not in ("f32", "f16"):
            unmapped.append(t.name)
            continue
        flat = np.arange(int(np.prod(t.shape4))).reshape(t.shape4)
        where = m.to_hook(flat, cfg, p)  # minillm layout holding ggml flat indices
        # axis 1 is the position axis (heads for the pattern): length 1 in a longer run
        # means llama.cpp computed the output row only, the last position
        last_only = p > 1 and where.ndim >= 3 and where.shape[1] == 1 and not m.hook.endswith("hook_pattern")
        pos_of = {int(f): np.array(np.unravel_index(k, where.shape)) for k, f in enumerate(where.ravel())}
        idx, vals = [], []
        for coord, v in t.values.items():
            f = int(np.ravel_multi_index(coord, t.shape4))
            if f in pos_of:
                j = pos_of[f].copy()
                if last_only:
                    j[1] = p - 1
                idx.append(j)
                vals.append(v)
        shape = list(where.shape)
        if last_only:
            shape[1] = p
        index = np.array(idx, np.int64).reshape(-1, len(shape))
        values = np.array(vals, np.float64)
        mapped.append(ImportedNode(t.name, m.hook, tuple(shape), index, values, last_only))
    return p, mapped, unmapped


@dataclass
class LlamaRow:
    llama: str
    hook: str
    n: int
    max_abs: float
    max_rel: float  # relative to the largest |minillm value| among the compared elements
    worst_index: tuple[int, ...]
    ours: float
    theirs: float
    passed: bool


@dataclass
class LlamaReport(Verdict):
    rows: list[LlamaRow]
    p: int
    unmapped: list[str]
    atol: float
    rtol: float

    def table(self) -> str:
        lines = [f"llama.cpp run of {self.p} tokens: {len(self.rows)} nodes compared on their printed "
                 f"elements (tolerance {self.atol:g} + {self.rtol:g}·max|minillm|), "
                 f"{len(self.unmapped)} without a minillm hook"]
        lines.append(f"{'llama.cpp node':<22} {'minillm hook':<34} {'n':>4} {'max abs':>9} {'rel':>8}  "
                     f"{'ok':<4} worst (minillm vs llama.cpp)")
        for r in self.rows:
            lines.append(f"{r.llama:<22} {r.hook:<34} {r.n:>4} {r.max_abs:9.2e} {r.max_rel:8.2e}  "
                         f"{'ok' if r.passed else 'FAIL':<4} {list(r.worst_index)}: {r.ours:.4f} vs "
                         f"{r.theirs:.4f}")
        first = self.first_failure
        lines.append(f"first divergence: {first.llama} ({first.hook})" if first else
                     "every mapped node agrees within tolerance")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"p": self.p, "passed": self.passed, "atol": self.atol, "rtol": self.rtol,
                "unmapped": self.unmapped,
                "first_divergence": None if self.first_failure is None else self.first_failure.hook,
                "rows": [r.__dict__ | {"worst_index": list(r.worst_index)} for r in self.rows]}


def compare_eval_callback(reference, path: str | Path, tokens=None, run: int = 0, atol: float = 5e-5,
                          rtol: float = 1e-4) -> LlamaReport:
    """Compare a llama-eval-callback dump with minillm, node by node, on the printed elements.

    reference: a minillm model (run on `tokens`: text or ids) or a minillm dump (a path or
    a Dump, whose input_ids must have the llama.cpp run's length). An element passes when
    |minillm - llama.cpp| <= atol + rtol·max|minillm| over that node's printed elements:
    atol 5e-5 is the printing's rounding (4 decimals); rtol 1e-4 allows float32 summation
    order. A quantized llama.cpp model (Q4/Q8 weights, float16 KV cache) differs by a few
    percent: pass rtol=0.1 to check its layout and wiring (docs/verifying.md measures both).
    """
    model = reference if hasattr(reference, "run_with_cache") else None
    d = None
    if model is None:
        d = reference if isinstance(reference, Dump) else load_dump(reference)
    p, nodes, unmapped = import_eval_callback(path, model.cfg if model is not None else _cfg_of(d), run)
    if model is not None:
        if tokens is None:
            raise MinillmError("comparing with a live model needs the prompt or its token ids")
        ids = np.asarray(model.to_tokens(tokens) if isinstance(tokens, str) else tokens).reshape(1, -1)
        if ids.shape[1] != p:
            raise MinillmError(f"the llama.cpp run has {p} tokens, minillm's input has {ids.shape[1]}: "
                               "tokenize the same prompt the same way (or pass ids)")
        hooks = sorted({n.hook for n in nodes if n.hook != FINAL_OUT} | {"ln_final.hook_normalized"})
        _, cache = model.run_with_cache(ids, names_filter=hooks)
        acts = {h: cache[h] for h in hooks}
        acts[FINAL_OUT] = final_norm_out(model, acts["ln_final.hook_normalized"])
    else:
        if d.input_ids is not None and np.asarray(d.input_ids).size != p:
            raise MinillmError(f"the llama.cpp run has {p} tokens, the minillm dump "
                               f"{np.asarray(d.input_ids).size}: dump the same prompt")
        acts = d.acts
    rows = []
    for n in nodes:
        if n.hook not in acts:
            unmapped.append(f"{n.llama} ({n.hook} not in the reference)")
            continue
        ours_all = np.asarray(acts[n.hook])
        if tuple(ours_all.shape) != n.shape:
            raise MinillmError(f"{n.llama} maps to {n.hook} of shape {n.shape}, minillm's is "
                               f"{tuple(ours_all.shape)}: a different model or config")
        ours = ours_all[tuple(n.index.T)].astype(np.float64)
        diff = np.abs(ours - n.values)
        scale = float(np.abs(ours).max(initial=0.0))
        k = int(np.argmax(diff)) if diff.size else 0
        max_abs = float(diff.max(initial=0.0))
        rows.append(LlamaRow(n.llama, n.hook, int(diff.size), max_abs, max_abs / max(scale, 1e-30),
                             tuple(int(i) for i in n.index[k]) if diff.size else (),
                             float(ours[k]) if diff.size else 0.0, float(n.values[k]) if diff.size else 0.0,
                             bool(max_abs <= atol + rtol * scale)))
    return LlamaReport(rows, p, unmapped, atol, rtol)


def _cfg_of(d):
    """The ModelConfig of the model a minillm dump names (its config.json, read from disk)."""
    from minillm.checkpoints import catalog
    from minillm.config import ModelConfig

    name = d.meta.get("model")
    if not isinstance(name, str) or not name:
        raise MinillmError("the minillm dump does not name its model; compare with --live MODEL instead")
    return ModelConfig.from_json(catalog.resolve(name) / "config.json")


def is_eval_callback_dump(path: str | Path) -> bool:
    """True for a text file whose first lines hold a `ggml_debug:` header."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("ggml_debug:") for _, line in zip(range(200), f, strict=False))
    except (OSError, IsADirectoryError):
        return False
