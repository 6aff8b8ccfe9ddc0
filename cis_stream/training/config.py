"""Config checking shared by train.py and the data loaders: unknown keys are errors with a hint."""

from __future__ import annotations

import difflib


def check_keys(section: str, given: dict, allowed: set[str]) -> None:
    """Raise ValueError naming any key of `given` not in `allowed`, with the closest valid key."""
    if not isinstance(given, dict):
        raise ValueError(f'{section}: expected a mapping, got {type(given).__name__}')
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, 1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise ValueError(f'{section}: unknown key {key!r}{hint}; allowed: {sorted(allowed)}')
