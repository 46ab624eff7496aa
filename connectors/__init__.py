"""Part of the `[edge]` extra: a missing library fails with one line naming the extra to install."""

from memae_ts import extras as _extras

_extras.install()
