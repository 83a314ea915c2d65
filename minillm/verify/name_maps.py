"""Name maps: Hugging Face and TransformerLens outputs as Dumps under minillm's names.

`from_hf_hidden_states` takes Hugging Face's `output_hidden_states` (whose last entry is
*after* the final norm: we call that `ln_final.out`); `from_transformer_lens` takes a
TransformerLens cache (same names and hook_scale; grouped-query k/v checked).
Neither imports torch: a tensor is read through its own `.detach().cpu().numpy()`.
"""

from __future__ import annotations

import numpy as np

from minillm.errors import MinillmError
from minillm.hooks import split_name
from minillm.verify.dumps import Dump, to_numpy
from minillm.verify.names import FINAL_OUT, forward_key, is_known


def from_hf_hidden_states(hidden_states, input_ids=None, attentions=None, logits=None,
                          meta: dict | None = None) -> Dump:
    """Hugging Face outputs (output_hidden_states=True) -> a Dump under minillm's names.

    hidden_states: the tuple of L+1 arrays [b, p, d] (or one stacked [L+1, b, p, d]):
      [0]   -> blocks.0.hook_resid_pre   (embeddings; GPT-2: token + position)
      [i]   -> blocks.{i-1}.hook_resid_post, for 1 <= i < L
      [L]   -> ln_final.out              (HF applies the final norm to the last entry)
    attentions (output_attentions=True, eager attention): [b, h, q, k] per layer
      -> blocks.{l}.attn.hook_pattern;  logits [b, p, V] -> hook_logits.
    """
    hs = [to_numpy(h) for h in hidden_states]
    if len(hs) < 2:
        raise MinillmError(f"hidden_states has {len(hs)} entries; expected n_layers + 1 >= 2")
    L = len(hs) - 1
    acts = {"blocks.0.hook_resid_pre": hs[0]}
    for i in range(1, L):
        acts[f"blocks.{i - 1}.hook_resid_post"] = hs[i]
    acts[FINAL_OUT] = hs[L]
    for l, a in enumerate(attentions or ()):
        acts[f"blocks.{l}.attn.hook_pattern"] = to_numpy(a)
    if logits is not None:
        acts["hook_logits"] = to_numpy(logits)
    ids = None if input_ids is None else to_numpy(input_ids).astype(np.int64).reshape(-1, hs[0].shape[-2])
    acts = {n: acts[n] for n in sorted(acts, key=forward_key)}
    return Dump(acts, ids, {"source": "Hugging Face output_hidden_states", **(meta or {})})


def from_transformer_lens(cache, input_ids=None, n_kv_heads: int | None = None,
                          layernorm: bool | None = None, meta: dict | None = None) -> Dump:
    """A TransformerLens ActivationCache (or its dict) -> a Dump under minillm's names.

    The names and the `hook_scale` convention (the divisor: std or rms) are
    already ours; two conventions may differ and are converted:
    * Some TransformerLens releases' LayerNorm `hook_normalized` includes the gain and bias
      (its RMSNorm's does not); for LayerNorm models (`layernorm=True`, or
      detected from a `hook_pos_embed` entry) those entries are dropped.
    * Grouped-query k/v: if `n_kv_heads` is given and hook_k / hook_v /
      hook_rot_k carry n_heads (repeated) heads, each group must be identical
      and is collapsed to one kv-head; otherwise it is an error naming the hook.
    Load the model with `HookedTransformer.from_pretrained_no_processing` (or
    fold_ln=False, center_writing_weights=False, center_unembed=False): the
    default weight processing changes the residual stream itself.
    Hooks minillm does not have (hook_attn_in, hook_mlp_in, ...) are dropped
    and listed in meta["dropped"].
    """
    items = cache.items() if hasattr(cache, "items") else dict(cache).items()
    raw = {k: to_numpy(v) for k, v in items}
    if layernorm is None:
        layernorm = "hook_pos_embed" in raw
    acts, dropped = {}, []
    for name, a in raw.items():
        _, rest = split_name(name)
        if not is_known(name) or (layernorm and rest.endswith("hook_normalized")):
            dropped.append(name)
            continue
        if n_kv_heads and rest in ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k"):
            a = _collapse_repeated_heads(name, a, n_kv_heads)
        acts[name] = a
    ids = None if input_ids is None else to_numpy(input_ids).astype(np.int64)
    acts = {n: acts[n] for n in sorted(acts, key=forward_key)}
    return Dump(acts, ids, {"source": "TransformerLens cache", "dropped": dropped, **(meta or {})})


def _collapse_repeated_heads(name: str, a: np.ndarray, kv: int) -> np.ndarray:
    """[b, p, h, e] with each kv-head repeated h/kv times (repeat_interleave) -> [b, p, kv, e]."""
    if a.ndim != 4 or a.shape[2] == kv:
        return a
    h = a.shape[2]
    if h % kv:
        raise MinillmError(f"{name}: {h} heads on axis 2 cannot be {kv} grouped kv-heads")
    grouped = a.reshape(a.shape[0], a.shape[1], kv, h // kv, a.shape[3])
    if not np.array_equal(grouped, np.repeat(grouped[:, :, :, :1], h // kv, axis=3)):
        raise MinillmError(
            f"{name} has {h} heads where the model has {kv} kv-heads, and the repeated heads "
            f"differ, so they are not a grouped-query expansion (repeat_interleave) of {kv} kv-heads"
        )
    return grouped[:, :, :, 0]
