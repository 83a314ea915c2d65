"""Every lesson: it runs as a notebook with its figures inline, its solutions pass, its untouched
stubs fail, a student copy without solutions grades the same, and its lecture quotes only numbers
it prints.

This is what makes the checks trustworthy: a check that a stub passes cannot fail.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from minillm import cli, course
from minillm.course.numbers import missing_numbers, quoted_numbers
from minillm.errors import MinillmError

LESSONS = [lesson.number for lesson in course.list_lessons()]


@pytest.mark.parametrize("number", LESSONS)
def test_solutions_pass_and_a_handout_without_them_grades_the_same(number, tmp_path):
    # `handout` runs the checks on solutions.py (recording the reference's answers) and
    # refuses if any fails: this is also the "solutions pass every check" test.
    folder = course.handout(number, tmp_path)
    assert not (folder / "solutions.py").exists() and (folder / "expected.json").is_file()
    shutil.copy(course.get_lesson(number).path / "solutions.py", folder / "exercises.py")
    old = os.environ.get("MINILLM_LESSONS")
    os.environ["MINILLM_LESSONS"] = str(tmp_path)
    try:
        assert course.get_lesson(number).path == folder
        results = course.check_lesson(number)  # graded from the recording: no solutions.py here
    finally:
        os.environ.pop("MINILLM_LESSONS")
        if old is not None:
            os.environ["MINILLM_LESSONS"] = old
    failed = [f"{r.name}: {r.message}" for r in results if not r.passed]
    assert results and not failed, "\n".join(failed)


@pytest.mark.parametrize("number", LESSONS)
def test_untouched_exercises_fail_every_check(number):
    results = course.check_lesson(number)
    passed = [r.name for r in results if r.passed]
    assert results and not passed, f"stubs pass these checks, so they cannot fail: {passed}"
    for r in results:
        assert "not implemented yet" in r.message, f"{r.name}: the stub should raise NotImplementedError"


def _figure_calls(lesson) -> int:
    """How many places in lesson.py show a figure (each shows at least one image)."""
    lines = (lesson.path / "lesson.py").read_text().splitlines()
    return sum(line.lstrip().startswith("show(") for line in lines)


@pytest.mark.parametrize("number", LESSONS)
def test_lesson_runs_as_a_notebook_with_inline_figures(number, tmp_path):
    """lesson.py -> notebook (jupytext) -> executed headless (nbclient + ipykernel): no error
    cell, every figure inline, and nothing written into the lesson's folder or the kernel's cwd."""
    lesson = course.get_lesson(number)
    for name in ("README.md", "lesson.py", "exercises.py", "solutions.py", "check.py"):
        assert (lesson.path / name).is_file(), f"lesson {number} lacks {name}"
    before = sorted(p.name for p in lesson.path.iterdir())
    work, out = tmp_path / "work", tmp_path / "out" / lesson.path.name
    work.mkdir()
    start = time.perf_counter()
    nb = course.execute_notebook(number, work, env={"OPENBLAS_NUM_THREADS": "1",
                                                    "MINILLM_LESSON_OUT": str(out)})
    seconds = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"lesson {number}: {errors[0].ename}: {errors[0].evalue}"
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= _figure_calls(lesson) >= 1, f"lesson {number}: {images} inline images"
    assert sorted(p.name for p in lesson.path.iterdir() if p.name != "__pycache__") == \
        [n for n in before if n != "__pycache__"]
    assert list(work.iterdir()) == [], "the lesson wrote into its working directory"
    assert len(list(out.glob("*.png"))) >= _figure_calls(lesson)  # and saved them where it was told
    assert seconds < 900, f"lesson {number} took {seconds:.0f} s as a notebook"
    # Every measured number the lecture quotes is one this run printed (to the quoted
    # precision): a number that drifts from the lesson fails here.
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert printed.strip(), f"lesson {number} printed nothing"
    missing = missing_numbers((lesson.path / "README.md").read_text(), printed)
    assert not missing, f"lesson {number}: README.md quotes {missing}, which the notebook did not print"


def test_lesson_script_saves_figures_outside_cwd_and_source(tmp_path):
    """`python lessons/NN/lesson.py` saves into the checkout's git-ignored out/, never into cwd."""
    lesson = course.get_lesson(1)
    copy = tmp_path / "course" / "lessons" / lesson.path.name
    shutil.copytree(lesson.path, copy, ignore=shutil.ignore_patterns("__pycache__"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MINILLM_LESSON_OUT", "MPLBACKEND")}
    proc = subprocess.run([sys.executable, str(copy / "lesson.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    saved = sorted((tmp_path / "course" / "out" / "lessons" / lesson.path.name).glob("*.png"))
    assert len(saved) >= _figure_calls(lesson) >= 1, proc.stdout[-2000:]
    assert sorted(p.name for p in copy.iterdir() if p.name != "__pycache__") == \
        sorted(p.name for p in lesson.path.iterdir() if p.name != "__pycache__")


def test_lesson_notebook_command_writes_into_out_and_keeps_a_students_work(tmp_path, capsys):
    from minillm.cli import main

    assert main(["lesson", "notebook", "3", "--dir", str(tmp_path), "--no-open"]) == 0
    path = tmp_path / f"{course.get_lesson(3).path.name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    source = (course.get_lesson(3).path / "lesson.py").read_text()
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.strip() in source for c in code)  # the cells are lesson.py's cells
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert str(path) in capsys.readouterr().out
    nb.cells[0].source = "# my notes"
    nbformat.write(nb, path)
    assert main(["lesson", "notebook", "3", "--dir", str(tmp_path), "--no-open"]) == 0
    assert nbformat.read(path, as_version=4).cells[0].source == "# my notes"  # kept
    assert "already there" in capsys.readouterr().out


def test_quoted_numbers_skip_names_code_and_maths():
    text = ("Head `L23H3` writes −5.39 and $x = 0.5$; 30 layers, 46 % of them; ×0.04 (one digit: a "
            "setting) then 0.045 and 1.4e-1.\n```\nprint(0.123)\n```\n")
    assert quoted_numbers(text) == ["−5.39", "0.045", "1.4e-1"]
    assert missing_numbers(text, "got -5.392, 0.0451 and 0.1403") == []
    assert missing_numbers(text, "got -5.31, 0.045, 0.14") == ["−5.39"]  # drifted by more than the precision


def test_numbers_behind_a_collapsed_results_block_are_still_checked():
    # The lectures put their results in <details> blocks after a "predict" question: the
    # numbers there are quoted as much as any other, and drift as much.
    text = ("**Predict:** how large?\n\n<details>\n<summary>What the script printed (open after "
            "your run)</summary>\n\nLoss: 14.10 nats, then **1.75**.\n\n</details>\n")
    assert quoted_numbers(text) == ["14.10", "1.75"]
    assert missing_numbers(text, "loss 14.104 then 1.748") == []
    assert missing_numbers(text, "loss 14.104 then 1.71") == ["1.75"]


def test_check_grades_the_copy_it_runs_in_and_names_the_file(tmp_path, monkeypatch, capsys):
    # A teacher copies the course; `lesson check` must grade the copy, not the original.
    number = LESSONS[0]
    src = course.get_lesson(number).path
    copy = tmp_path / "course" / "lessons"
    shutil.copytree(src, copy / src.name)
    shutil.copy(src / "solutions.py", copy / src.name / "exercises.py")
    monkeypatch.delenv("MINILLM_LESSONS", raising=False)
    monkeypatch.chdir(copy / src.name)
    assert cli.main(["lesson", "check", str(number)]) == 0
    out = capsys.readouterr().out
    assert f"grading {(copy / src.name / 'exercises.py').resolve()}" in out
    assert f"score: {len(course.check_lesson(number))}" in out


def test_a_syntax_error_is_one_line_naming_file_and_line(tmp_path, monkeypatch):
    bad = tmp_path / "exercises.py"
    bad.write_text("import numpy as np\n\ndef f(x:\n    return x\n")
    with pytest.raises(MinillmError, match=rf"{bad}, line 3: .*syntax error"):
        course.import_file(bad)
    bad.write_text("import numpy as np\nfrom numpy import not_a_thing\n")
    with pytest.raises(MinillmError, match=rf"{bad}, line 2: ImportError"):
        course.import_file(bad)


def test_lesson_scripts_use_the_students_function_once_implemented(tmp_path, monkeypatch, capsys):
    src = course.get_lesson(13).path
    shutil.copytree(src, tmp_path / src.name)
    monkeypatch.setenv("MINILLM_LESSONS", str(tmp_path))
    fallback = object()
    assert course.student_version(13, "adam_step", fallback) is fallback  # the stub
    assert "using the reference" in capsys.readouterr().out
    shutil.copy(src / "solutions.py", tmp_path / src.name / "exercises.py")
    mine = course.student_version(13, "adam_step", fallback)
    assert mine is not fallback and mine.__name__ == "adam_step"
    assert "using YOUR version" in capsys.readouterr().out


# The student's code drives the lessons: each case appends deliberately wrong versions of some
# exercise functions to the solutions (so every exercise is "implemented", the others
# correctly), runs the lesson script on that copy, and requires the output to show the mistake
# (the reference output never matches these patterns) and every function the script uses to
# be the student's. About 4 minutes on 2 idle cores for the 12 lessons.
_WRONG: dict[int, tuple[str, list[str]]] = {
    1: ("""
def analogy(W_E, a, b, c, k=5):  # forgets to exclude the three inputs
    v = W_E[a] - W_E[b] + W_E[c]
    sims = W_E @ v / (np.linalg.norm(W_E, axis=1) * np.linalg.norm(v))
    return [int(i) for i in np.argsort(-sims)[:k]]


def tying(W_E, W_U):
    return "untied"
""", [r"king- man\+ woman -> \[\(' queen', [\d.]+\), \(' king',",  # ' king' itself among the answers
      r"tying\(W_E, W_U\): 'untied'"]),
    2: ("""
def rope(x, positions, theta):  # rotates the wrong way: -sin
    e = x.shape[-1]
    angles = np.asarray(positions)[:, None] * theta ** (-np.arange(0, e, 2) / e)
    cos = np.cos(np.concatenate([angles, angles], axis=-1))[:, None, :]
    sin = np.sin(np.concatenate([angles, angles], axis=-1))[:, None, :]
    x1, x2 = x[..., : e // 2], x[..., e // 2 :]
    return x * cos - np.concatenate([-x2, x1], axis=-1) * sin
""", [r"attn\.hook_rot_q .* relative error (\d\.\de-0[12]|\d\.\de\+\d\d)",  # > 1e-3 (its reference: 8e-07)
      r"final logits: max \|ours − model\| = \d\.\d\de\+\d\d"]),  # > 1 (its reference: 3e-05)
    3: ("""
def kv_head_of(head, n_heads, n_kv_heads):  # np.tile's mapping instead of np.repeat's
    return head % n_kv_heads
""", [r"g = 9 // 3 = 3: \{0: \[0, 3, 6\]",
      r"from hook_pattern (\d\.\de-0[12]|\d\.\de\+\d\d)"]),  # head 18.6 read kv-head 0's keys
    4: ("""
def edit_embedding_row(W_E, token, op, alpha=0.3):  # zeroes the row whatever the op
    out = W_E.copy()
    out[token] = 0
    return out


def rms_norm_change(x, c, eps):
    return 0.0
""", [r"your edit_embedding_row as the embedding vs hook_embed batch row: max \|Δresid\| = [1-9]",
      r"sorry REDUCE α=0\.3 +\d\.\d{3}e-04 +0\.000e\+00"]),
    5: ("""
def output_readout(w_out, w_final, W_U, k=10):  # promoted and suppressed swapped
    order = np.argsort((w_out * w_final) @ W_U)
    return [int(t) for t in order[:k]], [int(t) for t in order[::-1][:k]]
""", [r"L22N1293 \(your output_readout\): promotes \['letons'"]),
    6: ("""
def undo(W, index, saved):  # rebinds a local name: W is unchanged
    W = W.copy()
    W[index] = saved
""", [r"your undo did not restore the row bit for bit"]),
    7: ("""
def top_p_neurons(acts, rate, by="value"):  # ignores the rate: always the single most active
    return [int(np.argmax(acts))]
""", [r"layer 0, 90 % replaced \(1 neurons\)"]),
    8: ("""
def lens_logits(resid, ln_w, eps, W_U):  # forgets the gain
    return (resid / np.sqrt((resid * resid).mean(-1, keepdims=True) + eps)) @ W_U
""", [r"lens of the final stream == model logits: False"]),
    9: ("""
def patch_resid_pre_hook(source, pos):  # patches position 0 instead of pos
    def fn(act, hook):
        out = act.copy()
        out[:, 0] = source[0, 0]
        return out
    return fn
""", [r"layer  0, position  9: by hand with your functions [+-]0\.00, the sweep \+1\.00"]),
    10: ("""
def softmax_backward(dout, y):  # forgets the - sum(dout * y) term
    return y * dout


def head_attribution(z_clean, z_corrupt, grad_z):  # the wrong sign
    return ((z_clean - z_corrupt) * grad_z).sum(axis=(0, 1, 3))
""", [r"d attn\.hook_attn_scores +relative error (\d\.\de-0[12]|\d\.\de\+\d\d)",
      r"largest head attributions: L23\.H3 \+5\.\d\d"]),
    11: ("""
def mean_difference(pos_acts, neg_acts):  # negative minus positive
    return neg_acts.mean(axis=0) - pos_acts.mean(axis=0)


def pca_svd(X, k):  # forgets to centre
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    return Vt[:k], S**2 / (S**2).sum()
""", [r"steering: +\+\d\.\d\d +\+\d\.\d\d",  # love − hate reversed: α = −3 now raises the log-odds
      r"explained variance PC1\.\.PC5: \[0\.[5-9]"]),  # the uncentred PC1 is the mean (centred: 0.22)
    12: ("""
def worst_position_head(ref, cand):
    return 0, 0
""", [r"largest error of blocks\.0\.attn\.hook_z: position 0 \('When'\), head 0",
      r"port\.py with your repeat_kv: all \d+ hooks agree"]),  # the solutions' fix, run by the script
}


@pytest.mark.parametrize("number", sorted(_WRONG))
def test_a_wrong_student_function_changes_what_the_lesson_prints(number, tmp_path):
    src = course.get_lesson(number).path
    copy = tmp_path / "lessons" / src.name
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
    wrong, patterns = _WRONG[number]
    solutions = (src / "solutions.py").read_text()
    (copy / "exercises.py").write_text(solutions + "\n\n# deliberately wrong\n" + wrong)
    env = {**os.environ, "MINILLM_LESSONS": str(tmp_path / "lessons"), "OPENBLAS_NUM_THREADS": "1",
           "MINILLM_LESSON_OUT": str(tmp_path / "out")}
    proc = subprocess.run([sys.executable, str(copy / "lesson.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    stubs = ast.parse((src / "exercises.py").read_text()).body
    exercises = [f.name for f in stubs if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
    assert len(exercises) >= 3
    not_used = [name for name in exercises if f"[{name}] using YOUR version" not in out]
    assert not not_used, f"lesson {number} does not use the student's {not_used}"
    for pattern in patterns:
        assert re.search(pattern, out), f"lesson {number}: the wrong function did not show ({pattern})\n{out}"


def test_bad_lesson_arguments_are_clear(capsys):
    assert cli.main(["lesson", "run", "abc"]) != 0
    assert "a lesson number is an integer" in capsys.readouterr().err
    with pytest.raises(MinillmError, match="no lesson 99"):
        course.get_lesson(99)
