"""The course in `lessons/`: list lessons, grade exercises, run lesson scripts headless.

`grader` holds the machinery; lessons' own scripts use `shared_model` and
`output_dir` from here.
"""

from minillm.course.grader import (
    CheckResult,
    Lesson,
    check_lesson,
    get_lesson,
    grading_target,
    handout,
    import_file,
    lessons_dir,
    list_lessons,
    output_dir,
    reference,
    relative_error,
    run_lesson,
    shared_model,
    student_version,
    verdict,
)

__all__ = [
    "CheckResult", "Lesson", "check_lesson", "get_lesson", "grading_target", "handout", "import_file",
    "lessons_dir", "list_lessons", "output_dir", "reference", "relative_error", "run_lesson",
    "shared_model", "student_version", "verdict",
]
