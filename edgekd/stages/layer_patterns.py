"""Layer-name patterns in recipes (``ignore``, ``group_ratios``, quantize ``overrides``).

One matcher, so every recipe key that names layers behaves alike: fnmatch patterns, optional
aliases, and a pattern that matches nothing is an error naming the key and the nearest layer names
(a typo must never silently protect or prune the wrong layer).
"""

from __future__ import annotations

import difflib
import fnmatch

from ..errors import RecipeError


def match_layers(pattern: str, layers: list[str], key: str, aliases: dict[str, list[str]] | None = None) -> list[str]:
    """Layers whose names match the fnmatch ``pattern`` (or an alias's layers); RecipeError if none."""
    hits = (aliases or {}).get(pattern) or [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
    if not hits:
        near = difflib.get_close_matches(pattern, layers, n=4, cutoff=0.3) or layers[:4]
        also = f" (or {', '.join(aliases)})" if aliases else ""
        raise RecipeError(f"{key}: {pattern!r} matches no conv/linear layer; e.g. {', '.join(near)}{also}")
    return hits
