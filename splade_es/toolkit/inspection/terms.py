"""Term origin and terminal tables: the model's expansions, told apart from the text's own words."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

BAR_WIDTH = 30


def _normal(term: str) -> str:
    """Case and word-piece markers aside: ``Wing``, ``wing`` and ``##wing`` are one word here."""
    return term.removeprefix("##").lower()


class TermOrigin:
    """Knows the text's own features; every other feature of its vector is an expansion."""

    def __init__(self, text_features: Iterable[str]) -> None:
        self._own = {_normal(term) for term in text_features}

    def in_text(self, term: str) -> bool:
        return _normal(term) in self._own


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar in eighths of a character, ``width`` characters for ``largest``."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = round(value / largest * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[rest]


def weight_table(rows: Sequence[tuple[str, float]], origin: TermOrigin) -> list[str]:
    """``rank  term  weight  bar  text|expansion``, one line per term, heaviest first."""
    if not rows:
        return []
    largest = max(weight for _, weight in rows)
    width = max(len(term) for term, _ in rows)
    lines = [f"{'#':>4}  {'term':<{width}}  {'weight':>8}  {'':<{BAR_WIDTH}}  origin"]
    for rank, (term, weight) in enumerate(rows, start=1):
        kind = "text" if origin.in_text(term) else "expansion"
        lines.append(f"{rank:>4}  {term:<{width}}  {weight:>8.4f}  {bar(weight, largest):<{BAR_WIDTH}}  {kind}")
    return lines
