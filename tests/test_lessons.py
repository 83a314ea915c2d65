"""Every lesson: its script runs headless, its solutions pass, its untouched stubs fail.

This is what makes the checks trustworthy: a check that a stub passes cannot fail.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("number", LESSONS)
def test_lesson_script_runs_headless_and_saves_figures(number, tmp_path):
    out, seconds = course.run_lesson(number, tmp_path)
    lesson = course.get_lesson(number)
    for name in ("README.md", "lesson.py", "exercises.py", "solutions.py", "check.py"):
        assert (lesson.path / name).is_file(), f"lesson {number} lacks {name}"
    assert list(out.glob("*.png")), f"lesson {number} saved no figure"
    assert seconds < 180, f"lesson {number} took {seconds:.0f} s"
