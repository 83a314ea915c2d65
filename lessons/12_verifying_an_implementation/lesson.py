# %% [markdown]
# # Lesson 12: Verifying an implementation
#
# A colleague wrote `port.py`, a NumPy port of SmolLM2 from the paper. It runs, its shapes
# are right, and what it predicts reads like English. Is it correct? "The output looks
# plausible" is not a test. We compare it with minillm **hook by hook, in forward order**
# with `minillm.verify`, and let the first hook that disagrees tell us where to look.
#
# First, though, we need to know what "agree" means: floating point never agrees exactly.
# So we measure minillm against itself, float32 against float64, and set tolerances from that.
#
# Another model: `MINILLM_LESSON_MODEL=tinyllama-1.1b python lesson.py` (the port is written
# for the Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU).

# %%
import os

import numpy as np

import minillm
from minillm import verify
from minillm.course import get_lesson, import_file, show, student_version
from minillm.verify import broken

MODEL = os.environ.get("MINILLM_LESSON_MODEL", "smollm2-135m")
model = minillm.load(MODEL)  # float32: what the port and most implementations run in
model64 = minillm.load(MODEL, dtype=np.float64)  # the reference mode
port = import_file(get_lesson(12).path / "port.py")  # the folder of this lesson
PROMPT = "When Mary and John went to the store, John gave a drink to"
tokens = model.to_tokens(PROMPT)
str_tokens = model.to_str_tokens(tokens[0])
ref = verify.run_dump(model64, PROMPT)  # every hook, in memory; verify.dump(...) writes a file
print(f"{MODEL}: {len(ref.acts)} activations in the float64 reference, {tokens.shape[1]} tokens")


def _reference_max_errors(ref, cand, floor=1e-3):  # (max |a − b|, max |a − b| / max(|a|, floor·RMS(a)))
    a, b = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    diff = np.abs(a - b)
    return float(diff.max()), float((diff / np.maximum(np.abs(a), floor * np.sqrt(np.mean(a * a)))).max())


def _reference_first_failure(ref, cand, atol=1e-3, rtol=1e-3):  # minillm.verify's answer
    first = verify.compare(verify.Dump(ref), verify.Dump(cand), atol=atol, rtol=rtol).first_failure
    return None if first is None else first.name


def _reference_worst(ref, cand):  # (position, head) of the largest |a − b| in [b, p, h, e]
    diff = np.abs(np.asarray(ref, np.float64) - np.asarray(cand, np.float64))
    return tuple(int(i) for i in np.unravel_index(np.argmax(diff), diff.shape)[1:3])


# Your exercises once implemented (until then, the references above). Exercise 5, the fix,
# has no stand-in: the script shows what YOUR fix does, in section 5.
max_errors = student_version(12, "max_errors", _reference_max_errors)
first_failure = student_version(12, "first_failure", _reference_first_failure)
worst_position_head = student_version(12, "worst_position_head", _reference_worst)
error_per_head = student_version(12, "error_per_head",  # [b, p, h, e] -> [h]
                                 lambda a, b: np.abs(np.asarray(a, np.float64) - b).max(axis=(0, 1, 3)))
port_fixes = student_version(12, "port_fixes", None)

# %% [markdown]
# ## 1. How far apart are two correct implementations?
#
# minillm in float32 against minillm in float64: the same arithmetic, rounded differently.
# Every difference here is rounding, so this is the noise floor any float32 implementation
# must be judged against. The default tolerances of `compare` (|a − b| ≤ 1e-3 + 1e-3·|a|,
# and 1e-5 relative for the norms' `hook_scale`) were set from exactly this profile.

# %%
f32 = verify.run_dump(model, PROMPT)
rep32 = verify.compare(ref, f32)
print(rep32.summary())
print(f"largest use of the tolerance: {max(r.usage for r in rep32.rows):.2f} (1 = failing)")
show(rep32.plot(), "float32_vs_float64.png")

L = model.cfg.n_layers
resid = [rep32[f"blocks.{l}.hook_resid_post"] for l in range(L)]
scale = [rep32[f"blocks.{l}.ln1.hook_scale"] for l in range(L)]
stream = [float(np.abs(ref.acts[f"blocks.{l}.hook_resid_post"]).max()) for l in range(L)]
for l in (0, 1, 2, 10, 11, 20, 28, 29):
    name = f"blocks.{l}.hook_resid_post"
    max_abs, max_rel = max_errors(ref.acts[name], f32.acts[name])  # your exercise 1
    print(f"layer {l:2d}: resid_post max abs {max_abs:.1e} (worst at {resid[l].where}), "
          f"max rel {max_rel:.1e}; max |resid| {stream[l]:.0f}")
print(f"logits: max abs {rep32['hook_logits'].max_abs:.1e}")
print(f"ln1.hook_scale, every layer: max rel from {min(r.max_rel for r in scale):.1e} "
      f"to {max(r.max_rel for r in scale):.1e}")

from minillm.views.figures import subplots  # noqa: E402

fig, ax = subplots(figsize=(8, 4))
ax.semilogy([r.max_abs for r in resid], marker=".", label="resid_post: max |a − b|")
ax.semilogy([r.max_rel for r in resid], marker=".", label="resid_post: max rel (floor 1e-3·RMS)")
ax.semilogy([r.max_rel for r in scale], marker=".", label="ln1.hook_scale: max rel")
ax.semilogy(np.array(stream) * np.finfo(np.float32).eps, "k:", label="max |resid| × float32 eps")
ax.set_xlabel("layer")
ax.set_ylabel("error, float32 vs float64")
ax.set_title(f"{MODEL}: float32 rounding error grows with depth (and with the stream)", fontsize=9)
ax.legend(fontsize=7)
show(fig, "error_growth.png")

# %% [markdown]
# ## 2. The port against the reference
#
# Its predictions first — the kind of test that convinced the colleague — then the
# hook-by-hook comparison.

# %%
logits, acts = port.forward(model, tokens)
for name, lg in (("port", logits[0, -1]), ("minillm", ref.acts["hook_logits"][0, -1])):
    print(f"{name:8} top-5 after {PROMPT!r}:", [model.to_string([int(i)]) for i in np.argsort(-lg)[:5]])
candidate = verify.Dump(acts, input_ids=tokens, meta={"source": "port.py"})  # names the candidate
report = verify.compare(ref, candidate)  # also checks that both ran on the same token ids
print(report.table())  # one row per layer with its worst hook, then the first divergence
show(report.plot(), "port_vs_minillm.png")

# %% [markdown]
# ## 3. Localise: which step, which position, which head?
#
# Everything before the first failing hook agrees to rounding, so the bug sits in the
# computation between the last passing hook and the first failing one. Per head, the
# error there says more: are all heads wrong, or some? A map of error by head and query
# position is the picture to stare at before reading code.

# %%
first = report[first_failure(ref.acts, acts)]  # your exercise 2 names the hook
print("first failing hook:", first.name, "—", first.where)
before = report.rows[report.rows.index(first) - 1]
print(f"the hook just before it: {before.name}, max abs {before.max_abs:.1e} (passes)")
layer = first.name.split(".")[1]
scores_ref = ref.acts[f"blocks.{layer}.attn.hook_attn_scores"][0]  # [h, q, k]
scores_port = acts[f"blocks.{layer}.attn.hook_attn_scores"][0]
with np.errstate(invalid="ignore"):
    err = np.nan_to_num(np.abs(scores_ref - scores_port), nan=0.0).max(axis=-1)  # [h, q]: -inf − -inf → 0
z_name = f"blocks.{layer}.attn.hook_z"
z_err = np.asarray(error_per_head(ref.acts[z_name], acts[z_name]))  # [h]: your exercise 4
worst_pos, worst_head = worst_position_head(ref.acts[z_name], acts[z_name])  # your exercise 3
print(f"largest error of {z_name}: position {worst_pos} ({str_tokens[worst_pos]!r}), head {worst_head}")
for h in range(model.cfg.n_heads):
    print(f"head {h}: max |error| in scores {err[h].max():.1e}, in z {z_err[h]:.1e}")
print("kv-heads:", model.cfg.n_kv_heads, "query heads:", model.cfg.n_heads,
      "— which kv-head should each query head read?")

fig, axes = subplots(1, 2, figsize=(12, 3.8))
im = axes[0].imshow(np.log10(err + 1e-9), aspect="auto", cmap="magma")
axes[0].set_xticks(range(len(str_tokens)), str_tokens, rotation=60, fontsize=7)
axes[0].set_ylabel("head")
axes[0].set_title(f"log10 max |error| of blocks.{layer}.attn.hook_attn_scores, by head and query", fontsize=9)
fig.colorbar(im, ax=axes[0])
axes[1].bar(range(model.cfg.n_heads), z_err + 1e-9)
axes[1].set_yscale("log")
axes[1].set_xlabel("head")
axes[1].set_ylabel("max |error| of hook_z")
axes[1].set_title("per head: some agree to rounding, some are wrong", fontsize=9)
show(fig, "port_heads.png")

# %% [markdown]
# ## 4. Bugs below the noise floor
#
# Not every bug is loud. `minillm.verify.broken` can inject a subtle one: RMSNorm's ε added
# outside the square root, √mean(x²) + ε instead of √(mean(x²) + ε). With ε = 1e-5
# and rms of order 0.01–1 this changes the scale by up to 0.1%: below the 1e-3 tolerance of
# most hooks. The tight tolerance on `hook_scale` (one rounding from exact, so 1e-5 relative
# is generous) catches it where it happens. With one uniform tolerance for every hook it is
# caught a step late, in the attention scores, and points at the wrong code.

# %%
bug = broken.BUGS["rmsnorm_eps_outside"]
subtle = verify.run_dump(model, PROMPT, fwd_hooks=bug.hooks(model))
print("default tolerances:   ", verify.compare(ref, subtle).summary())
uniform = verify.compare(ref, subtle, atol=1e-3, rtol=1e-3)
print("uniform 1e-3 for all: ", uniform.summary())
print("its effect on the logits: max abs", f"{uniform['hook_logits'].max_abs:.1e}",
      "vs float32 rounding", f"{rep32['hook_logits'].max_abs:.1e}")


# %% [markdown]
# ## 5. Your fix
#
# Exercise 5 returns `{name of the broken function in port.py: your corrected version}`.
# Here your replacement goes into a fresh copy of the port, which runs again and is
# compared with the reference hook by hook. Until you have written it, the port stays broken.

# %%
if port_fixes is None:
    print("port_fixes is not implemented yet: the port is still the broken one")
else:
    fixed = import_file(get_lesson(12).path / "port.py", name="_lesson12_fixed_port")  # a fresh copy
    fixes = port_fixes()
    for name, fn in fixes.items():
        setattr(fixed, name, fn)
    fixed_logits, fixed_acts = fixed.forward(model, tokens)
    fixed_report = verify.compare(ref, verify.Dump(fixed_acts, input_ids=tokens, meta={"source": "your fix"}))
    print(f"port.py with your {', '.join(sorted(fixes))}:", fixed_report.summary())
    print("top-5 now:", [model.to_string([int(i)]) for i in np.argsort(-fixed_logits[0, -1])[:5]])
