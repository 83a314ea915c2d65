"""`minillm lesson`: list the course, grade exercises, run a lesson headless."""

from minillm import course

HELP = "the classroom course: list, check exercises, run a lesson headless"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="list the lessons")
    check = sub.add_parser("check", help="grade a lesson's exercises.py")
    check.add_argument("number", help="lesson number, e.g. 4")
    check.add_argument("--solutions", action="store_true", help="grade solutions.py (teacher's view)")
    check.add_argument("--file", help="grade this file instead of the lesson's exercises.py")
    run = sub.add_parser("run", help="run lesson.py headless and save its figures")
    run.add_argument("number")
    run.add_argument("--out", help="folder for the figures (default out/lessons/NN_slug)")


def run(args) -> int:
    if args.action == "list":
        for lesson in course.list_lessons():
            print(f"{lesson.number:02d}  {lesson.title}")
        return 0
    if args.action == "run":
        out, seconds = course.run_lesson(args.number, args.out)
        figures = sorted(p.name for p in out.glob("*.png"))
        print(f"lesson {int(args.number):02d} ran in {seconds:.1f} s; figures in {out}: "
              + (", ".join(figures) or "none"))
        return 0
    results = course.check_lesson(args.number, solutions=args.solutions, file=args.file)
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        print(f"[{mark}] {r.name} ({r.seconds:.1f} s)")
        if not r.passed:
            print("       " + r.message.replace("\n", "\n       "))
    score = sum(r.passed for r in results)
    print(f"score: {score}/{len(results)}")
    return 0 if score == len(results) else 1
