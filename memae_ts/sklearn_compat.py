"""scikit-learn's estimator protocol, with or without scikit-learn installed.

`MemAE` follows scikit-learn's estimator protocol (`get_params(deep)`, `set_params`, tags), so
`clone`, `Pipeline`, `GridSearchCV` and `check_estimator` work with it as with any scikit-learn
model, but it does not inherit from `sklearn.base.BaseEstimator`: that import costs 1-3 s (it
loads SciPy) on every `memae-ts score`, and a gateway that only loads a bundle and scores should
need neither scikit-learn nor SciPy (about 50 MB of wheels). scikit-learn itself duck-types
estimators, so nothing is lost but `isinstance(model, BaseEstimator)` and the HTML repr.
scikit-learn comes with the `[train]` extra.
"""

from __future__ import annotations

import inspect
from typing import Any


class ParamsMixin:
    """`get_params`/`set_params` as scikit-learn defines them: the parameters are the keyword
    arguments of `__init__`, stored under their own names."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def __repr__(self) -> str:
        """`MemAE(window=8, epochs=3)`: the parameters that differ from their defaults, as
        scikit-learn prints estimators (and names the tests of `check_estimator`)."""
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name, value in self.get_params(deep=False).items():
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = bool(value == default) if type(value) is type(default) else False
            except (TypeError, ValueError):  # an array compares elementwise
                same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters; with `deep`, also those of nested estimators as
        `name__param` (none of memae-ts's own parameters is an estimator, but a user's may be)."""
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            out[name] = value
        return out

    def set_params(self, **params: Any) -> ParamsMixin:
        """Set parameters by name (`name__param` for a nested estimator); an unknown name is an
        error naming the valid ones, never a silently ignored typo."""
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for estimator {type(self).__name__}; "
                    f"valid parameters are: {sorted(self._get_param_names())}"
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self


def sklearn_tags(estimator: object) -> Any:
    """The scikit-learn tags of `estimator` (`__sklearn_tags__`, scikit-learn >= 1.6).

    Only scikit-learn itself calls this, so scikit-learn is imported here and never at import
    time. The tags say what the contract is: readings may be missing (NaN is a gap the model
    handles and reports, not an error), `y` is ignored, scores are not class labels. The
    estimator type stays unset on purpose: scikit-learn's "outlier_detector" means predict
    returns -1 for an outlier and decision_function is negative there, the opposite of PyOD's
    (and memae-ts's) 1 = anomaly, higher = more abnormal."""
    from sklearn.utils import InputTags, Tags, TargetTags

    return Tags(
        estimator_type=None,
        target_tags=TargetTags(required=False),
        transformer_tags=None,
        regressor_tags=None,
        classifier_tags=None,
        input_tags=InputTags(allow_nan=True),
        requires_fit=True,
    )


__all__ = ["ParamsMixin", "sklearn_tags"]
