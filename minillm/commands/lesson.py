"""`minillm lesson`: list the course, grade exercises, run a lesson, make a handout, open it in Jupyter."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from minillm import course
from minillm.errors import MinillmError

HELP = "the classroom course: list, check exercises, run a lesson, make a handout, open it in Jupyter"


def _number(text: str) -> int:
    if not text.isdigit():
        raise MinillmError(f"a lesson number is an integer such as 7, got {text!r} "
                           "(`minillm lesson list` shows them)")
    return int(text)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="list the lessons (of the lessons folder you are in)")
    check = sub.add_parser("check", help="grade a lesson's exercises.py")
    check.add_argument("number", help="lesson number, e.g. 4")
    check.add_argument("--solutions", action="store_true", help="grade solutions.py (teacher's view)")
    check.add_argument("--file", help="grade this file instead of the lesson's exercises.py")
    run = sub.add_parser("run", help="run lesson.py headless: output streamed and saved with the figures")
    run.add_argument("number")
    run.add_argument("--out", help="folder for output.txt and the figures (default out/lessons/NN_slug)")
    hand = sub.add_parser("handout", help="write a student copy without solutions (graded from recorded "
                                          "answers)")
    hand.add_argument("numbers", nargs="+", metavar="NN", help="lesson numbers, or 'all'")
    hand.add_argument("folder", help="where to write the copy (becomes a lessons folder)")
    nb = sub.add_parser("notebook", help="write the lesson as a Jupyter notebook and open it")
    nb.add_argument("number")
    nb.add_argument("--dir", help="folder for the .ipynb (default out/notebooks/ of the checkout)")
    nb.add_argument("--fresh", action="store_true", help="overwrite an existing notebook (your edits!)")
    nb.add_argument("--no-open", action="store_true", help="only write the notebook, do not start Jupyter")


def run(args) -> int:
    if args.action == "list":
        print(f"lessons in {course.lessons_dir()}")
        for lesson in course.list_lessons():
            print(f"{lesson.number:02d}  {lesson.title}")
        return 0
    if args.action == "handout":
        wanted = ([x.number for x in course.list_lessons()] if args.numbers == ["all"]
                  else [_number(n) for n in args.numbers])
        for n in wanted:
            print(f"lesson {n:02d}: recording the reference's answers ...", flush=True)
            dest = course.handout(n, args.folder)
            print(f"lesson {n:02d}: wrote {dest} (no solutions.py; graded from expected.json)")
        return 0
    number = _number(args.number)
    if args.action == "notebook":
        return _notebook(args, number)
    if args.action == "run":
        lesson = course.get_lesson(number)
        print(f"running {lesson.path / 'lesson.py'}", flush=True)
        out, seconds = course.run_lesson(number, args.out)
        figures = sorted(p.name for p in out.glob("*.png"))
        print(f"lesson {number:02d} ran in {seconds:.1f} s; output saved in {out / 'output.txt'}; "
              f"figures in {out}: " + (", ".join(figures) or "none"))
        return 0
    print(f"grading {course.grading_target(number, args.solutions, args.file)}", flush=True)
    results = course.check_lesson(number, solutions=args.solutions, file=args.file)
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        print(f"[{mark}] {r.name} ({r.seconds:.1f} s)")
        if not r.passed:
            print("       " + r.message.replace("\n", "\n       "))
    score = sum(r.passed for r in results)
    print(f"score: {score}/{len(results)}")
    return 0 if score == len(results) else 1


def _notebook(args, number: int) -> int:
    folder = Path(args.dir) if args.dir else course.notebooks_dir()
    existed = (folder / f"{course.get_lesson(number).path.name}.ipynb").exists()
    path = course.write_notebook(number, folder, overwrite=args.fresh)
    print(f"{path} " + ("(already there: your edits are kept; --fresh starts over)"
                        if existed and not args.fresh else "(written from lesson.py)"))
    if args.no_open:
        return 0
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for app in ("lab", "notebook"):  # JupyterLab, else the classic notebook
        exe = shutil.which(f"jupyter-{app}", path=search)
        if exe is not None:
            print(f"starting: jupyter {app} {path} (Ctrl-C to stop)")
            try:
                return subprocess.call([exe, str(path)])
            except KeyboardInterrupt:
                return 0
    print(f"open it in Jupyter: pip install jupyterlab && jupyter lab {path}")
    return 0
