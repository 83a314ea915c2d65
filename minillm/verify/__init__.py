"""Verify another implementation against minillm: dump activations, compare them hook by hook.

    from minillm import verify
    verify.dump(model, "It was a dark and stormy", "ref.safetensors", dtype="float64")
    report = verify.compare("ref.safetensors", "theirs.safetensors")
    print(report.summary())      # "first divergence at blocks.3.attn.hook_pattern, head 5, ..."

Modules: `names` (hook order, shapes, selection), `dumps` (write / read a run's
activations), `name_maps` (Hugging Face and TransformerLens outputs under our
names), `comparison` (hook-by-hook errors, tolerances, layout hints, the first
divergence), `report` (its result: table, JSON, plot), `contract` (the JSON hook
contract), `diagnostics` (the first NaN/Inf), `llamacpp` (llama.cpp's names and
dumps), `broken` (deliberately wrong models that the comparison must catch).
"""

from minillm.verify.comparison import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    DEFAULT_TOLERANCES,
    check_token_ids,
    compare,
    compare_arrays,
    tolerance_for,
)
from minillm.verify.diagnostics import NonFinite, first_nonfinite, first_nonfinite_in_cache
from minillm.verify.dumps import (
    DEFAULT_MAX_BYTES,
    FORMAT,
    FORMAT_VERSION,
    RESERVED,
    Dump,
    dump,
    estimate_bytes,
    final_norm_out,
    load_dump,
    run_dump,
    save_dump,
)
from minillm.verify.name_maps import from_hf_hidden_states, from_transformer_lens
from minillm.verify.names import (
    BLOCK_HOOKS,
    FINAL_OUT,
    POST_HOOKS,
    PRE_HOOKS,
    depth,
    forward_key,
    hook_shape,
    is_known,
    select_hooks,
)
from minillm.verify.report import HookResult, Report, describe_index

__all__ = [
    "BLOCK_HOOKS", "DEFAULT_ATOL", "DEFAULT_MAX_BYTES", "DEFAULT_RTOL", "DEFAULT_TOLERANCES",
    "FINAL_OUT", "FORMAT", "FORMAT_VERSION", "POST_HOOKS", "PRE_HOOKS", "RESERVED", "Dump",
    "HookResult", "NonFinite", "Report", "check_token_ids", "compare", "compare_arrays", "depth",
    "describe_index", "dump", "estimate_bytes", "final_norm_out", "first_nonfinite",
    "first_nonfinite_in_cache", "forward_key", "from_hf_hidden_states", "from_transformer_lens",
    "hook_shape", "is_known", "load_dump", "run_dump", "save_dump", "select_hooks", "tolerance_for",
]
