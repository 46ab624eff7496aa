"""Packaging facts that must not drift (issue #16.1): what the base install pulls, and that the
one-line 'pip install memae-ts[extra]' hints name the extra that really brings the library.
The install itself is tested in test_wheel.py (a built wheel in a clean venv)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from memae_ts.extras import EXTRAS, MissingExtraError, _MissingExtraFinder, message

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_base_install_scores_without_edge_training_or_sklearn() -> None:
    base = {_name(r) for r in PROJECT["dependencies"]}
    assert base == {"numpy", "pandas", "pyarrow", "safetensors"}


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_each_hint_names_the_extra_that_installs_it(module: str) -> None:
    distribution, extra = EXTRAS[module]
    listed = {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    assert distribution in listed, f"{distribution} is not in [{extra}]"
    assert message(module).endswith(f"pip install 'memae-ts[{extra}]'")


def test_finder_speaks_only_for_known_top_level_names() -> None:
    finder = _MissingExtraFinder()
    with pytest.raises(MissingExtraError, match=r"pip install 'memae-ts\[edge\]'") as info:
        finder.find_spec("kafka")
    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == "kafka"
    assert finder.find_spec("kafka.errors") is None  # the parent import fails first, with the hint
    assert finder.find_spec("surely_not_a_module") is None


def test_finder_is_last_so_installed_libraries_are_untouched() -> None:
    from memae_ts.connectors import buffers  # noqa: F401  (importing the package installs the finder)

    assert isinstance(sys.meta_path[-1], _MissingExtraFinder)
    assert sum(isinstance(f, _MissingExtraFinder) for f in sys.meta_path) == 1
    import kafka  # installed in the dev venv: found by the real finder

    assert kafka.__name__ == "kafka"
    with pytest.raises(ModuleNotFoundError, match="surely_not_a_module"):
        __import__("surely_not_a_module")


def test_py_typed_ships_with_the_package() -> None:
    assert (REPO / "memae_ts" / "py.typed").is_file()
