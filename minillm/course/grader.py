"""The classroom course: list lessons, grade exercises, run lessons headless, open them as notebooks.

A lesson is a folder `lessons/NN_slug/` with:
    README.md      the lecture (first line: "# Lesson NN: Title")
    lesson.py      percent-format script (`# %%` cells), the one source of the lesson: runs as a
                   script (figures saved), or, converted by jupytext, as a notebook (figures inline):
                   `minillm lesson notebook NN` writes out/notebooks/NN_slug.ipynb and opens it
    exercises.py   stubs that raise NotImplementedError with a hint (students fill them in)
    solutions.py   the reference answers
    check.py       CHECKS = [(name, fn), ...]; fn(module) runs the student's function and
                   the reference on the same inputs and raises AssertionError with a message
                   that teaches (what was expected, what came, the likely mistake)

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


def lessons_dir() -> Path:
    """`$MINILLM_LESSONS`, else the checkout's `lessons/` folder."""
    path = Path(os.environ.get("MINILLM_LESSONS", _REPO / "lessons"))
    if not path.is_dir():
        raise MinillmError(f"no lessons folder at {path} (set MINILLM_LESSONS to a checkout's lessons/)")
    return path


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
    """Import a Python file by path (a student's exercises.py, a lesson's check.py)."""
    if not path.is_file():
        raise MinillmError(f"{path} does not exist")
    name = name or f"_minillm_lesson_{path.parent.name}_{path.stem}"
    for stale in ("solutions", "exercises", "check"):  # a bare `import solutions` in check.py
        sys.modules.pop(stale, None)  # must find this lesson's file, not another lesson's
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str
    seconds: float


def check_lesson(number: int | str, solutions: bool = False, file: str | Path | None = None
                 ) -> list[CheckResult]:
    """Grade `exercises.py` (or `solutions.py`, or any `file`) with the lesson's checks."""
    lesson = get_lesson(number)
    target = Path(file) if file else lesson.path / ("solutions.py" if solutions else "exercises.py")
    checks = import_file(lesson.path / "check.py").CHECKS
    student = import_file(target)
    results = []
    for name, fn in checks:
        start = time.perf_counter()
        try:
            fn(student)
            results.append(CheckResult(name, True, "ok", time.perf_counter() - start))
        except NotImplementedError as e:
            results.append(CheckResult(name, False, f"not implemented yet: {e}",
                                       time.perf_counter() - start))
        except AssertionError as e:
            results.append(CheckResult(name, False, str(e), time.perf_counter() - start))
        except Exception as e:  # the student's code crashed: show where
            tb = traceback.extract_tb(e.__traceback__)[-1]
            results.append(CheckResult(
                name, False, f"your code raised {type(e).__name__}: {e} "
                f"({Path(tb.filename).name}, line {tb.lineno})", time.perf_counter() - start))
    return results


def run_lesson(number: int | str, out_dir: str | Path | None = None, timeout: float = 600
               ) -> tuple[Path, float]:
    """Run lesson.py as a script in a subprocess (figures are saved, not shown); figures go to out_dir.

    Returns (out_dir, seconds). Raises MinillmError with the script's output on failure.
    """
    lesson = get_lesson(number)
    out = Path(out_dir or Path("out") / "lessons" / lesson.path.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MINILLM_LESSON_OUT": str(out)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(lesson.path / "lesson.py")], cwd=out, env=env,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise MinillmError(f"lesson {lesson.number:02d} failed:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-4000:]}")
    return out, seconds


def output_dir() -> Path:
    """Where a lesson run as a script saves its figures.

    `$MINILLM_LESSON_OUT` (set by `minillm lesson run`), else, for a lesson
    started as `python lessons/NN_slug/lesson.py`, the checkout's git-ignored
    `out/lessons/NN_slug/` (next to `lessons/`, never the working directory
    or the source tree), else `out/lessons/` under the working directory.
    """
    if os.environ.get("MINILLM_LESSON_OUT"):
        return Path(os.environ["MINILLM_LESSON_OUT"])
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and Path(main).name == "lesson.py" and Path(main).parent.name[:2].isdigit():
        lesson = Path(main).resolve().parent
        return lesson.parent.parent / "out" / "lessons" / lesson.name
    return Path("out") / "lessons"


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

        figures._enable_notebook_display()
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


def execute_notebook(number: int | str, workdir: str | Path, timeout: float = 600,
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
        client.execute(env={**os.environ, **(env or {})})  # the kernel's environment
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


def verdict(what: str, got, want, mistakes, fallback: str, tol: float = 1e-4) -> None:
    """For checks: raise a teaching AssertionError unless got ≈ want (max |error| / max |want| < tol)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: expected shape {want.shape}, got {got.shape}. {fallback}")
    if not np.issubdtype(got.dtype, np.number) or np.isnan(got.astype(np.float64)).any():
        raise AssertionError(f"{what}: your output is not a finite numeric array. {fallback}")
    if relative_error(got, want) < tol:
        return
    for hint, variant in (mistakes() if callable(mistakes) else mistakes).items():
        if relative_error(got, variant) < tol:
            raise AssertionError(f"{what}: your output matches a common mistake. {hint}")
    err = np.abs(got.astype(np.float64) - want)
    where = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape))
    raise AssertionError(
        f"{what}: relative error {relative_error(got, want):.2e} (tolerance {tol:.0e}); the largest "
        f"error is at index {where}: expected {float(want[where]):.6g}, "
        f"got {float(got[where]):.6g}. {fallback}")
