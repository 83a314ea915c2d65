"""Which OpenBLAS kernels this CPU can execute, for re-running the numerics tests under each.

    python -m tests.blas_kernels            # the kernels other than the active one, one a line
    python -m tests.blas_kernels --active   # the kernel OpenBLAS uses now (honours OPENBLAS_CORETYPE)

A float32 GEMM's bits depend on the kernel, so a test that only passes with one kernel
asserts one CPU's rounding, not a property. `.ci/run` re-runs the tests marked
`numerics` with `OPENBLAS_CORETYPE=<kernel>` for every kernel printed here, and checks
with `--active` that OpenBLAS really switched (an unknown name silently falls back).
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys

# OpenBLAS core name -> CPU flags (/proc/cpuinfo) it needs. Kernels from older to newer.
X86_KERNELS = {
    "Sandybridge": {"avx"},
    "Haswell": {"avx2", "fma"},
    "SkylakeX": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"},
}
ARM_KERNELS = {"ARMV8": set()}  # the generic AArch64 kernel runs on every ARMv8 CPU


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def active_kernel() -> str | None:
    """The core name numpy's OpenBLAS runs with, or None when numpy uses another BLAS."""
    import numpy as np

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libs, "*openblas*")):
        lib = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                       "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


def executable_kernels() -> list[str]:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        flags = cpu_flags()
        return [k for k, need in X86_KERNELS.items() if need <= flags]
    if machine in ("aarch64", "arm64"):
        return list(ARM_KERNELS)
    return []


def main(argv: list[str]) -> int:
    active = active_kernel()
    if argv[1:] == ["--active"]:
        print(active or "not OpenBLAS")
        return 0
    if active is None:
        return 0  # another BLAS: OPENBLAS_CORETYPE means nothing to it
    for kernel in executable_kernels():
        if kernel.lower() != active.lower():
            print(kernel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
