"""The course in `lessons/`: list lessons, grade exercises, run lessons headless, open them as notebooks.

`grader` holds the machinery; lessons' own scripts use `shared_model` and
`show` (a figure inline in a notebook, saved under `output_dir()` in a script)
from here.
"""

from minillm.course.grader import (
    CheckResult,
    Lesson,
    check_lesson,
    execute_notebook,
    get_lesson,
    grading_target,
    handout,
    import_file,
    in_notebook,
    lesson_notebook,
    lessons_dir,
    list_lessons,
    notebooks_dir,
    output_dir,
    reference,
    relative_error,
    run_lesson,
    shared_model,
    show,
    student_version,
    verdict,
    write_notebook,
)

__all__ = [
    "CheckResult", "Lesson", "check_lesson", "execute_notebook", "get_lesson", "grading_target", "handout",
    "import_file", "in_notebook", "lesson_notebook", "lessons_dir", "list_lessons", "notebooks_dir",
    "output_dir", "reference", "relative_error", "run_lesson", "shared_model", "show", "student_version",
    "verdict", "write_notebook",
]
