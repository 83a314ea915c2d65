"""The classroom course: list lessons, grade exercises, run lessons headless, open them as notebooks.

A lesson is a folder `lessons/NN_slug/` with:
    README.md      the lecture (first line: "# Lesson NN: Title")
    lesson.py      percent-format script (`# %%` cells), the one source of the lesson: runs as a
                   script (figures saved), or, converted by jupytext, as a notebook (figures inline):
                   `minillm lesson notebook NN` writes out/notebooks/NN_slug.ipynb and opens it
    exercises.py   stubs that raise NotImplementedError with a hint (students fill them in)
    solutions.py   the reference answers
    check.py       CHECKS = [(name, fn), ...]; fn(student, ref) runs the student's function and
                   the reference on the same inputs and raises AssertionError with a message
                   that teaches (what was expected, what came, the likely mistake). The grader
                   passes both; a check imports neither.

A lesson draws with matplotlib's object API (`minillm.views.figures.subplots`, or any
function returning a Figure) and hands each figure to `show(fig, "name.png")`: inline in
a notebook, saved under `output_dir()` in a script. The tests run every lesson as a
notebook and expect at least one inline image per `show(` line.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from minillm.errors import MinillmError

_REPO = Path(__file__).resolve().parents[2]


def _is_lessons_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() and p.name[:2].isdigit() and (p / "check.py").is_file()
                                 for p in path.iterdir())


def lessons_dir() -> Path:
    """The lessons folder of the checkout or copy you are working in.

    In order: `$MINILLM_LESSONS`; the current folder, or the first parent, that is
    a lessons folder (holds `NN_slug/check.py`), is a lesson folder (then its
    parent), or contains `lessons/`; else the lessons of the checkout minillm
    was installed from. A teacher's copy (`cp -r`) or a student handout is
    graded from where the command runs.
    """
    env = os.environ.get("MINILLM_LESSONS")
    if env:
        path = Path(env).resolve()
        if not path.is_dir():
            raise MinillmError(f"MINILLM_LESSONS={env}: no such folder")
        return path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if _is_lessons_folder(folder):
            return folder
        if (folder / "check.py").is_file() and _is_lessons_folder(folder.parent):
            return folder.parent
        if _is_lessons_folder(folder / "lessons"):
            return folder / "lessons"
    if _is_lessons_folder(_REPO / "lessons"):
        return _REPO / "lessons"
    raise MinillmError(f"no lessons folder in {here} or its parents "
                       "(set MINILLM_LESSONS to a lessons folder)")


@dataclass
class Lesson:
    number: int
    slug: str
    path: Path

    @property
    def title(self) -> str:
        readme = self.path / "README.md"
        first = readme.read_text().splitlines()[0] if readme.is_file() else self.slug
        return first.lstrip("# ").split(":", 1)[-1].strip()


def list_lessons() -> list[Lesson]:
    found = []
    for p in sorted(lessons_dir().iterdir()):
        number, _, slug = p.name.partition("_")
        if p.is_dir() and number.isdigit():
            found.append(Lesson(int(number), slug, p))
    return found


def get_lesson(number: int | str) -> Lesson:
    for lesson in list_lessons():
        if lesson.number == int(number):
            return lesson
    have = ", ".join(f"{x.number:02d}" for x in list_lessons())
    raise MinillmError(f"no lesson {number}; the course has lessons {have}")


def import_file(path: Path, name: str | None = None) -> ModuleType:
    """Import a Python file by path (a student's exercises.py, a lesson's check.py).

    A syntax error or an exception while importing is one MinillmError naming the
    file and line, not an importlib traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise MinillmError(f"{path} does not exist")
    name = name or f"_minillm_lesson_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise MinillmError(f"{path}, line {e.lineno}: {e.msg} (a syntax error: fix it, then check again)"
                           ) from None
    except Exception as e:  # an error at import time (a typo in an import, a NameError at top level)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
        where = f", line {frames[-1].lineno}" if frames else ""
        raise MinillmError(f"{path}{where}: {type(e).__name__}: {e} (raised while importing the file)"
                           ) from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def reference(lesson: Lesson):
    """The lesson's reference answers: solutions.py, or the answers recorded in a handout."""
    from minillm.course.expected import EXPECTED_JSON, Replayer

    if (lesson.path / "solutions.py").is_file():
        return import_file(lesson.path / "solutions.py")
    if (lesson.path / EXPECTED_JSON).is_file():
        return Replayer(lesson.path)
    raise MinillmError(f"{lesson.path}: neither solutions.py nor recorded answers ({EXPECTED_JSON}); "
                       "a student copy is made with `minillm lesson handout`")


def student_version(number: int, name: str, fallback):
    """The student's `name` from the lesson's exercises.py once implemented, else `fallback`.

    Lesson scripts call this for every function an exercise asks for, so the
    student's code drives the lesson; it prints which version is used.
    "Implemented" means the function body is more than `raise NotImplementedError`.
    `fallback=None` means the script has no stand-in (the answer would give the
    exercise away) and skips what it would show.
    """
    lesson = get_lesson(number)
    path = lesson.path / "exercises.py"
    instead = "using the reference" if fallback is not None else "no stand-in, the script skips it"
    try:
        module = import_file(path, name=f"_minillm_student_{lesson.path.name}")
        fn = getattr(module, name)
    except (MinillmError, AttributeError) as e:
        print(f"[{name}] {instead}: your {path.name} could not be used ({e})")
        return fallback
    if _is_stub(fn):
        print(f"[{name}] {instead} (yours in {path} is not implemented yet)")
        return fallback
    print(f"[{name}] using YOUR version from {path}")
    return fn


def _is_stub(fn) -> bool:
    """True if fn's body (after the docstring) only raises NotImplementedError."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str
    seconds: float


def grading_target(number: int | str, solutions: bool = False, file: str | Path | None = None) -> Path:
    """The absolute path of the file `check_lesson` grades."""
    lesson = get_lesson(number)
    target = Path(file) if file else lesson.path / ("solutions.py" if solutions else "exercises.py")
    return target.resolve()


def check_lesson(number: int | str, solutions: bool = False, file: str | Path | None = None,
                 ref=None) -> list[CheckResult]:
    """Grade `exercises.py` (or `solutions.py`, or any `file`) with the lesson's checks.

    Each check receives (student module, reference); the reference is the
    lesson's solutions.py, or in a student copy the recorded answers.
    """
    lesson = get_lesson(number)
    target = grading_target(number, solutions, file)
    checks = import_file(lesson.path / "check.py").CHECKS
    ref = reference(lesson) if ref is None else ref
    student = import_file(target)
    results = []
    for name, fn in checks:
        start = time.perf_counter()
        try:
            fn(student, ref)
            results.append(CheckResult(name, True, "ok", time.perf_counter() - start))
        except NotImplementedError as e:
            results.append(CheckResult(name, False, f"not implemented yet: {e}",
                                       time.perf_counter() - start))
        except AssertionError as e:
            results.append(CheckResult(name, False, str(e), time.perf_counter() - start))
        except MinillmError as e:  # a handout without the answer for this case, or bad input
            results.append(CheckResult(name, False, str(e), time.perf_counter() - start))
        except Exception as e:  # the student's code crashed: show where
            tb = traceback.extract_tb(e.__traceback__)[-1]
            results.append(CheckResult(
                name, False, f"your code raised {type(e).__name__}: {e} "
                f"({Path(tb.filename).name}, line {tb.lineno})", time.perf_counter() - start))
    return results


def handout(number: int | str, folder: str | Path) -> Path:
    """Write a student copy of a lesson into folder/NN_slug, without solutions.py.

    The teacher's solutions are run through the checks once, and every answer
    the reference gives is recorded (expected.json + expected.safetensors), so
    the copy grades without the solutions (see minillm.course.expected).
    Returns the lesson folder written. Refuses to write into the source lessons.
    """
    import shutil

    from minillm.course.expected import Recorder

    lesson = get_lesson(number)
    dest = (Path(folder) / lesson.path.name).resolve()
    if dest == lesson.path.resolve() or lesson.path.resolve() in dest.parents:
        raise MinillmError(f"{dest} is inside the lesson itself; choose another folder")
    if not (lesson.path / "solutions.py").is_file():
        raise MinillmError(f"{lesson.path}: a handout is made from a lesson with its solutions.py")
    solutions = import_file(lesson.path / "solutions.py")
    recorder = Recorder(solutions)
    failed = [r for r in check_lesson(number, solutions=True, ref=recorder) if not r.passed]
    if failed:
        raise MinillmError(f"lesson {lesson.number:02d}: the solutions fail their own checks "
                           f"({', '.join(r.name for r in failed)}); not writing a handout")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(lesson.path, tmp, ignore=shutil.ignore_patterns(
            "solutions.py", "__pycache__", "*.pyc", ".ipynb_checkpoints", "*.ipynb"))
        recorder.save(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_lesson(number: int | str, out_dir: str | Path | None = None, timeout: float = 900,
               echo: bool = True) -> tuple[Path, float]:
    """Run lesson.py headless (Agg backend) in a subprocess, streaming its output.

    Figures and files go to out_dir (default out/lessons/NN_slug under the current
    folder), and everything the script prints is shown live (echo) and saved as
    out_dir/output.txt. Returns (out_dir, seconds); raises MinillmError with the
    end of the output if the script fails.
    """
    lesson = get_lesson(number)
    out = Path(out_dir or Path("out") / "lessons" / lesson.path.name).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MinillmError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    env = {**os.environ, "MPLBACKEND": "Agg", "MINILLM_LESSON_OUT": str(out), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    log = out / "output.txt"
    tail: list[str] = []
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, str(lesson.path / "lesson.py")], cwd=out, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                f.write(line)
                tail = (tail + [line])[-40:]
                if echo:
                    print(line, end="", flush=True)
            proc.wait(timeout=timeout)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            raise
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise MinillmError(f"lesson {lesson.number:02d} failed (exit {proc.returncode}); the end of its "
                           f"output (all of it in {log}):\n" + "".join(tail))
    return out, seconds


def _running_lesson() -> str | None:
    """The folder name (NN_slug) of the lesson running here: a script's lesson.py folder, else
    $MINILLM_LESSON (set for notebooks run by execute_notebook), else the notebook's own name
    when Jupyter tells it (out/notebooks/NN_slug.ipynb)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and Path(main).name == "lesson.py" and Path(main).resolve().parent.name[:2].isdigit():
        return Path(main).resolve().parent.name
    if os.environ.get("MINILLM_LESSON"):
        return os.environ["MINILLM_LESSON"]
    session = Path(os.environ.get("JPY_SESSION_NAME", ""))
    return session.stem if session.suffix == ".ipynb" and session.stem[:2].isdigit() else None


def output_dir(lesson: int | Lesson | None = None) -> Path:
    """Where a lesson saves its figures and files (created if missing).

    `$MINILLM_LESSON_OUT` (set by `minillm lesson run`), else the git-ignored
    `out/lessons/NN_slug/` of the checkout the lesson comes from (next to
    `lessons/`: never the working directory or the source tree). With
    `lesson`, that lesson's folder beside it (lesson 14 reads lesson 13's model).
    """
    env = os.environ.get("MINILLM_LESSON_OUT")
    if env:
        current = Path(env)
    else:
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        if main and Path(main).name == "lesson.py" and Path(main).resolve().parent.name[:2].isdigit():
            root = Path(main).resolve().parents[2]  # <root>/lessons/NN_slug/lesson.py
        else:
            try:
                root = lessons_dir().parent
            except MinillmError:
                root = Path.cwd()
        current = root / "out" / "lessons" / (_running_lesson() or "lesson")
    if lesson is not None:
        lesson = lesson if isinstance(lesson, Lesson) else get_lesson(lesson)
        current = current.parent / lesson.path.name
    current.mkdir(parents=True, exist_ok=True)
    return current


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where figures display inline instead of being saved)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def show(fig, name: str) -> None:
    """Show a lesson's figure: inline in a notebook; in a script, saved as output_dir() / name.

    In a notebook it is also saved when `$MINILLM_LESSON_OUT` is set.
    """
    from minillm.views import figures

    if in_notebook():
        from IPython.display import display

        figures.enable_notebook_display()
        display(fig)
        if not os.environ.get("MINILLM_LESSON_OUT"):
            return
    path = figures.save(fig, output_dir() / name)
    if not in_notebook():
        print(f"figure: {path}")


def notebooks_dir() -> Path:
    """Default folder of the students' notebooks: the checkout's git-ignored out/notebooks/."""
    return lessons_dir().parent / "out" / "notebooks"


def _jupytext():
    try:
        import jupytext
    except ImportError as e:
        raise MinillmError("lessons open as notebooks through jupytext, which is not installed: "
                           "pip install 'minillm[notebook]' (or jupytext nbclient ipykernel)") from e
    return jupytext


def lesson_notebook(number: int | str):
    """The lesson's lesson.py (percent format) as an nbformat notebook, for a Python 3 kernel."""
    lesson = get_lesson(number)
    nb = _jupytext().read(lesson.path / "lesson.py", fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # Paired with a percent-format .py beside the notebook (jupytext's pairing): a student's edits
    # can be diffed as text. The lesson's own lesson.py in lessons/ stays the source.
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    return nb


def write_notebook(number: int | str, folder: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write lesson NN as `NN_slug.ipynb` into `folder` (default out/notebooks/); returns its path.

    An existing notebook (a student's work) is kept unless overwrite=True.
    """
    import nbformat

    lesson = get_lesson(number)
    path = Path(folder or notebooks_dir()) / f"{lesson.path.name}.ipynb"
    if path.exists() and not overwrite:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".ipynb.part")
    nbformat.write(lesson_notebook(number), tmp)
    os.replace(tmp, path)
    return path


def execute_notebook(number: int | str, workdir: str | Path, timeout: float = 900,
                     env: dict[str, str] | None = None):
    """Run lesson NN as a notebook headless (nbclient, an ipykernel) in `workdir`; returns it executed.

    Raises MinillmError naming the failing cell if a cell raises.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = lesson_notebook(number)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    try:
        # the kernel's environment; it names the lesson (for output_dir)
        client.execute(env={**os.environ, "MINILLM_LESSON": get_lesson(number).path.name, **(env or {})})
    except CellExecutionError as e:
        raise MinillmError(f"lesson {int(number):02d} failed as a notebook:\n{str(e)[-3000:]}") from e
    return nb


@functools.lru_cache(maxsize=4)
def shared_model(name: str = "smollm2-135m", dtype: str = "float32"):
    """Load a model once per process, for checks that need one (read-only use!)."""
    import minillm

    return minillm.load(name, dtype=np.dtype(dtype))


# --- helpers for check.py files -----------------------------------------------------------

def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return np.inf
    err = np.nan_to_num(np.abs(got - want), nan=np.inf)
    return float(err.max(initial=0.0) / max(np.abs(want).max(initial=0.0), 1e-30))


def verdict(what: str, got, want, mistakes, fallback: str, tol: float = 1e-4,
            nan_hint: str = "") -> None:
    """For checks: raise a teaching AssertionError unless got ≈ want (max |error| / max |want| < tol).

    mistakes: {hint: the output that mistake gives} (a dict, or a function returning one; a
    value may itself be a function, computed only when needed). nan_hint: what a NaN in the
    output usually means for this exercise.
    """
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: expected shape {want.shape}, got {got.shape}. {fallback}")
    if not np.issubdtype(got.dtype, np.number):
        raise AssertionError(f"{what}: your output is not a numeric array. {fallback}")
    if np.isnan(got.astype(np.float64)).any():
        where = tuple(int(i) for i in np.argwhere(np.isnan(got))[0])
        raise AssertionError(f"{what}: your output has NaN (first at index {where}). "
                             f"{nan_hint or fallback}")
    if relative_error(got, want) < tol:
        return
    for hint, variant in (mistakes() if callable(mistakes) else mistakes).items():
        variant = variant() if callable(variant) else variant
        if relative_error(got, variant) < tol:
            raise AssertionError(f"{what}: your output matches a common mistake. {hint}")
    err = np.abs(got.astype(np.float64) - want)
    where = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape))
    raise AssertionError(
        f"{what}: relative error {relative_error(got, want):.2e} (tolerance {tol:.0e}); the largest "
        f"error is at index {where}: expected {float(want[where]):.6g}, "
        f"got {float(got[where]):.6g}. {fallback}")
