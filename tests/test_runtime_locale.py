"""Loading a bundle does not depend on the process locale: the C++ JSON reader parsed numbers
with strtod, which under a decimal-comma locale (de_DE, as German plants run) stopped at the
'.', so every bundle failed to load. scripts/tools.d/locales.sh installs de_DE.UTF-8."""

from __future__ import annotations

import locale
import os
from pathlib import Path

import numpy as np
import pytest
from runtime_bundles import random_bundle, random_windows, write_bundle

from memae_ts.engines.runtime import Runtime


@pytest.fixture
def decimal_comma_locale():  # type: ignore[no-untyped-def]
    old = locale.setlocale(locale.LC_ALL)
    for name in ("de_DE.UTF-8", "de_DE.utf8"):
        try:
            locale.setlocale(locale.LC_ALL, name)
            break
        except locale.Error:
            continue
    else:
        if os.environ.get("CI") == "true":
            pytest.fail("de_DE.UTF-8 is not installed (scripts/tools.d/locales.sh installs it)")
        pytest.skip("no decimal-comma locale installed (scripts/tools.d/locales.sh installs de_DE.UTF-8)")
    try:
        assert locale.localeconv()["decimal_point"] == ","
        yield
    finally:
        locale.setlocale(locale.LC_ALL, old)


def test_bundle_loads_and_scores_the_same_under_a_german_locale(tmp_path: Path, decimal_comma_locale) -> None:  # type: ignore[no-untyped-def]
    config, weights = random_bundle("conv", channels=(4, 8), latent=4, slots=12, seed=2)
    path = write_bundle(tmp_path / "m", config, weights)
    x = random_windows(config, 5)
    locale.setlocale(locale.LC_ALL, "C")
    expected = Runtime.load(path).score(x)[0]
    locale.setlocale(locale.LC_ALL, "de_DE.UTF-8")
    runtime = Runtime.load(path)
    assert runtime.threshold == 0.75
    np.testing.assert_array_equal(runtime.score(x)[0], expected)
