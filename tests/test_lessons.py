"""Every lesson: it runs as a notebook with its figures inline, its solutions pass, its stubs fail.

This is what makes the checks trustworthy: a check that a stub passes cannot fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from minillm import course

LESSONS = [lesson.number for lesson in course.list_lessons()]


@pytest.mark.parametrize("number", LESSONS)
def test_solutions_pass_every_check(number):
    results = course.check_lesson(number, solutions=True)
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
    start = time.perf_counter()
    nb = course.execute_notebook(number, tmp_path, env={"OPENBLAS_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"lesson {number}: {errors[0].ename}: {errors[0].evalue}"
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= _figure_calls(lesson) >= 1, f"lesson {number}: {images} inline images"
    assert sorted(p.name for p in lesson.path.iterdir() if p.name != "__pycache__") == \
        [n for n in before if n != "__pycache__"]
    assert list(tmp_path.iterdir()) == [], "the lesson wrote into its working directory"
    assert seconds < 240, f"lesson {number} took {seconds:.0f} s as a notebook"


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
