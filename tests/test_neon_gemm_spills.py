"""The NEON GEMM inner loop keeps its whole register tile in registers: no spill to the stack.

The aarch64 kernels are compiled to assembly with the cross compiler and the flags of the
release build (cpp/CMakeLists.txt: -O3, C++17), and for every GEMM register tile R x NV
(`gemm_tile<R, NV>`, and the full tile of `sim_exp_tile`, the similarity GEMM with the softmax
in its epilogue) the k loop (the backward-branch loop with exactly R * NV `fmla`) is
checked for loads and stores that address the stack pointer. The former 3 x 32 tile needed
24 accumulators + 8 panel vectors + the A values, more than the 32 q registers, and spilled
18 stores and 7 loads per 24 fmla in this loop; this test fails on it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CXX = "aarch64-linux-gnu-g++"
STACK_STORE = re.compile(r"\s+(str|stp|st1)\s.*\[sp")
STACK_LOAD = re.compile(r"\s+(ldr|ldp|ld1)\s.*\[sp")
# b.ne and its alias bne (GCC prints either), cbz/cbnz, b.
CONDITIONS = "eq|ne|lt|le|gt|ge|hi|hs|lo|ls|mi|pl|cc|cs"
BRANCH = re.compile(rf"\s+(b\.\w+|b(?:{CONDITIONS})|cbnz|cbz|b)\s+(?:\w+,\s*)?(\.L\w+)")
TILE = re.compile(r"gemm_tile<(\d+), (\d+)(?:, (?:true|false))?>")  # <R, NV[, PLAIN]>
# The similarity GEMM with the softmax's exponentials in its epilogue: the same k loop. Only its
# full tile is held to no spill: it runs every 16 columns of the memory but a partial last
# panel's (sim_exp_tile<5, 3> reloads two GPRs from the stack in its k loop, measured here).
SIM_TILE = re.compile(r"sim_exp_tile<5, 4>")


def _functions(asm: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in asm.splitlines():
        m = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if m and not m.group(1).startswith(".L"):
            current = out.setdefault(m.group(1), [])
            continue
        if current is not None:
            current.append(line)
    return out


def _k_loops(body: list[str], fmla: int) -> list[list[str]]:
    """Backward-branch loops of `body` with exactly `fmla` fmla instructions."""
    labels: dict[str, int] = {}
    loops = []
    for i, line in enumerate(body):
        m = re.match(r"^(\.L\w+):", line)
        if m:
            labels[m.group(1)] = i
        m = BRANCH.match(line)
        if m and m.group(2) in labels:
            loop = body[labels[m.group(2)] : i + 1]
            if sum(1 for x in loop if x.strip().startswith("fmla")) == fmla:
                loops.append(loop)
    return loops


@pytest.fixture(scope="module")
def neon_asm(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which(CXX) is None:
        if os.environ.get("CI") == "true" and platform.machine() == "x86_64":
            pytest.fail(f"{CXX} is missing (scripts/tools.d/cpp-test-deps.sh installs it)")
        pytest.skip(f"{CXX} is missing (scripts/tools.d/cpp-test-deps.sh installs it)")
    out = tmp_path_factory.mktemp("neon") / "kernels_neon.s"
    subprocess.run(
        [
            CXX,
            "-std=c++17",
            "-O3",
            "-DNDEBUG",
            f"-I{ROOT / 'cpp' / 'include'}",
            "-S",
            str(ROOT / "cpp" / "src" / "kernels_neon.cpp"),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out.read_text()


@pytest.mark.slow  # the -O3 cross compile of the unrolled kernels takes ~1 min on this machine
def test_every_neon_gemm_tile_inner_loop_is_free_of_stack_spills(neon_asm: str) -> None:
    names = _functions(neon_asm)
    demangled = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    checked: dict[tuple[int, int], int] = {}
    for (name, body), pretty in zip(names.items(), demangled, strict=True):
        m = TILE.search(pretty)
        if not m:
            continue
        rows, vectors = int(m.group(1)), int(m.group(2))
        for loop in _k_loops(body, rows * vectors):
            stores = sum(1 for x in loop if STACK_STORE.match(x))
            loads = sum(1 for x in loop if STACK_LOAD.match(x))
            assert (stores, loads) == (0, 0), (
                f"gemm_tile<{rows}, {vectors}> ({name}) spills in its k loop: {stores} stack stores, "
                f"{loads} stack loads per {rows * vectors} fmla:\n" + "\n".join(loop)
            )
            checked[(rows, vectors)] = checked.get((rows, vectors), 0) + 1
    sim_checked = 0
    for (name, body), pretty in zip(names.items(), demangled, strict=True):
        if not SIM_TILE.search(pretty):
            continue
        for loop in _k_loops(body, 20):
            stores = sum(1 for x in loop if STACK_STORE.match(x))
            loads = sum(1 for x in loop if STACK_LOAD.match(x))
            assert (stores, loads) == (0, 0), (
                f"sim_exp_tile<5, 4> ({name}) spills in its k loop: {stores} stack stores, "
                f"{loads} stack loads per 20 fmla:\n" + "\n".join(loop)
            )
            sim_checked += 1
    assert sim_checked, "no sim_exp_tile<5, 4> k loop found in the NEON assembly"
    # The full tile (MR x NT, the one every row block but the last runs) must have been found;
    # the shorter row tails are inlined into gemm_panel and hold fewer accumulators.
    assert checked, "no gemm_tile k loop found in the NEON assembly"
    assert max(checked) == (5, 4), f"expected the 5 x 16 tile (5 rows x 4 vectors), got {sorted(checked)}"
