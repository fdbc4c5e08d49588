"""The one batch-profile rule, for settings, the CLI, the build form and the build plan."""

from __future__ import annotations

from collections.abc import Sequence

#: the largest batch anything here builds or runs
MAX_BATCH = 64
RULE = f"min,opt,max with 1 <= min <= opt <= max <= {MAX_BATCH} (or one size N for a static batch)"


def batch_profile(sizes: Sequence[int] | str) -> tuple[int, int, int]:
    """``[1, 4, 8]`` / ``"1,4,8"`` -> ``(1, 4, 8)``; one size N -> ``(N, N, N)`` (static).

    ValueError with a one-line message (the caller names where the value came from)."""
    if isinstance(sizes, str):
        try:
            values = [int(x) for x in sizes.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError(f"batch {sizes!r} must be {RULE}") from None
    else:
        values = list(sizes)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"batch {values!r} must be integers: {RULE}")
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2] <= MAX_BATCH:
        raise ValueError(f"batch {','.join(map(str, values)) or '(empty)'} must be {RULE}")
    return values[0], values[1], values[2]
