"""The Python face of the C++ runtime: input checks, zero copy, threads, no torch, the stub."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from runtime_bundles import random_bundle, random_windows, write_bundle

from memae_ts import _runtime
from memae_ts.engines.runtime import Runtime, available_isas
from memae_ts.errors import DataError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def conv_runtime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Runtime, dict]:
    config, weights = random_bundle("conv", seed=5)
    path = write_bundle(tmp_path_factory.mktemp("api") / "conv", config, weights)
    return Runtime.load(path), config


def test_contiguous_float32_is_read_in_place(conv_runtime: tuple[Runtime, dict]) -> None:
    _, config = conv_runtime
    x = random_windows(config, 3)
    assert _runtime._buffer_address(x) == x.ctypes.data
    # A strided view cannot be passed through without a copy; noconvert refuses it instead.
    with pytest.raises(TypeError):
        _runtime._buffer_address(x[:, ::2])
    with pytest.raises(TypeError):
        _runtime._buffer_address(x.astype(np.float64))


def test_non_contiguous_input_is_copied_and_scored_the_same(conv_runtime: tuple[Runtime, dict]) -> None:
    runtime, config = conv_runtime
    x = random_windows(config, 6)
    fortran = np.asfortranarray(x)
    assert not fortran.flags.c_contiguous
    np.testing.assert_array_equal(runtime.score(fortran)[0], runtime.score(x)[0])
    every_other = np.concatenate([x, x])[::2]
    np.testing.assert_array_equal(
        runtime.score(every_other)[0], runtime.score(np.ascontiguousarray(every_other))[0]
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: x.astype(np.float64), "float32"),
        (lambda x: x.astype(np.int32), "float32"),
        (lambda x: x[:, :-1], r"shape \(batch, 64, 8\)"),
        (lambda x: x[:, :, :3].copy(), r"shape \(batch, 64, 8\)"),
        (lambda x: x[0], r"shape \(batch, 64, 8\)"),
        (lambda x: x.tolist(), "numpy array"),
    ],
)
def test_wrong_input_raises_a_clear_data_error(
    conv_runtime: tuple[Runtime, dict], make, message: str
) -> None:
    runtime, config = conv_runtime
    with pytest.raises(DataError, match=message):
        runtime.score(make(random_windows(config, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_window_row_and_sensor(
    conv_runtime: tuple[Runtime, dict], bad: float
) -> None:
    runtime, config = conv_runtime
    x = random_windows(config, 4)
    x[2, 17, 5] = bad
    with pytest.raises(DataError, match=r"window 2, row 17, sensor 5"):
        runtime.score(x)
    with pytest.raises(ValueError, match="NaN or Inf"):  # the raw module raises ValueError too
        runtime._model.score(x, 1)


def test_shape_errors_from_cpp_are_value_errors(conv_runtime: tuple[Runtime, dict]) -> None:
    runtime, config = conv_runtime
    with pytest.raises(ValueError, match=r"got \(2, 63, 8\)"):
        runtime._model.score(random_windows(config, 2)[:, :63].copy(), 1)
    with pytest.raises(ValueError, match="threads"):
        runtime._model.score(random_windows(config, 2), 0)


def test_empty_batch_gives_empty_results(conv_runtime: tuple[Runtime, dict]) -> None:
    runtime, config = conv_runtime
    scores, contributions = runtime.score(random_windows(config, 0))
    assert scores.shape == (0,) and contributions.shape == (0, 8)


def test_concurrent_calls_from_threads_agree_with_serial(conv_runtime: tuple[Runtime, dict]) -> None:
    """One Runtime shared by threads: no shared scratch, so results match the serial ones."""
    runtime, config = conv_runtime
    inputs = [random_windows(config, batch, seed=seed) for seed, batch in enumerate([1, 7, 40, 3, 65, 16])]
    expected = [runtime.score(x)[0] for x in inputs]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(inputs))}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(15):
                results[i].append(runtime.score(inputs[i])[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, got in results.items():
        assert len(got) == 15
        for scores in got:
            np.testing.assert_array_equal(scores, expected[i])


def test_multithreaded_batches_match_single_thread(tmp_path: Path) -> None:
    config, weights = random_bundle("mlp", seed=9)
    path = write_bundle(tmp_path / "mlp", config, weights)
    x = random_windows(config, 203)
    one = Runtime.load(path, threads=1).score(x)
    many = Runtime.load(path, threads=3).score(x)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])
    with pytest.raises(ValueError, match="threads"):
        Runtime.load(path, threads=0)


def test_every_isa_listed_can_be_selected(conv_runtime: tuple[Runtime, dict]) -> None:
    runtime, _ = conv_runtime
    names = available_isas()
    assert names[0].startswith("scalar_")
    assert runtime.isa == names[-1]  # the best one is the default
    model = _runtime.Model.load(str(runtime.path))
    for name in names:
        model.set_isa(name)
        assert model.isa == name
    with pytest.raises(ValueError, match="not available"):
        model.set_isa("sse9_1x1")


def test_runtime_imports_and_scores_without_torch(tmp_path: Path) -> None:
    """A gateway has no torch: block it and score in a fresh interpreter. Nor does scoring load
    pandas: the runtime process stays at about 34 MiB instead of 105 (bench/runtime.py)."""
    config, weights = random_bundle("conv", seed=2)
    path = write_bundle(tmp_path / "b", config, weights)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from memae_ts.engines import load_engine\n"
        f"engine = load_engine({str(path)!r})\n"
        "assert engine.name == 'runtime', engine.name\n"
        "scores, contributions = engine.score(np.full((2, 64, 8), 100.0, np.float32))\n"
        "assert scores.shape == (2,) and np.all(np.isfinite(scores))\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "assert 'pandas' not in sys.modules, 'scoring imported pandas (70 MB of a gateway process)'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _stub_members() -> tuple[set[str], dict[str, set[str]]]:
    tree = ast.parse((ROOT / "memae_ts" / "_runtime.pyi").read_text())
    top: set[str] = set()
    classes: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, classes


def test_stub_matches_the_extension_module() -> None:
    top, classes = _stub_members()
    module_names = {n for n in dir(_runtime) if not n.startswith("__")}
    assert top == module_names
    model_names = {n for n in dir(_runtime.Model) if not n.startswith("__") and not n.startswith("_pybind11")}
    assert classes["Model"] == model_names
    assert issubclass(_runtime.FormatError, ValueError)
    # Parameter names in the stub are the keyword names the module accepts.
    tree = ast.parse((ROOT / "memae_ts" / "_runtime.pyi").read_text())
    model_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model")
    for fn in model_cls.body:
        if not isinstance(fn, ast.FunctionDef) or any(
            isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list
        ):
            continue
        params = [a.arg for a in fn.args.args if a.arg != "self"]
        doc = inspect.getdoc(getattr(_runtime.Model, fn.name)) or ""
        signature = doc.splitlines()[0]
        for p in params:
            assert f"{p}:" in signature, (fn.name, p, signature)


@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_a_window_scores_the_same_alone_or_in_any_batch(kind: str, tmp_path: Path) -> None:
    """Bit-identical per-window results whatever the batch composition (live vs offline)."""
    config, weights = random_bundle(kind, seed=12)
    runtime = Runtime.load(write_bundle(tmp_path / kind, config, weights))
    x = random_windows(config, 45)
    together = runtime.score(x)[0]
    for i in (0, 17, 44):
        np.testing.assert_array_equal(runtime.score(x[i : i + 1])[0], together[i : i + 1])
    np.testing.assert_array_equal(runtime.score(x[3:40])[0], together[3:40])


def test_from_bundle_works_for_in_memory_bundles_and_keeps_the_bundle(tmp_path: Path) -> None:
    from memae_ts.engines.bundle import load_bundle, make_bundle

    config, weights = random_bundle("mlp", seed=4)
    path = write_bundle(tmp_path / "b", config, weights)
    in_memory = make_bundle(config, weights)  # never written to disk
    runtime = Runtime.from_bundle(in_memory)
    assert runtime.bundle is in_memory
    x = random_windows(config, 5)
    np.testing.assert_array_equal(runtime.score(x)[0], Runtime.load(path).score(x)[0])
    assert Runtime.load(path).bundle.sensors == load_bundle(path).sensors
