"""Label conventions of the challenge: 0 background, 1 surface (recto sheet), 2 unlabeled/ignore."""

from __future__ import annotations

BACKGROUND = 0
SURFACE = 1
IGNORE = 2
VALID_LABEL_VALUES = frozenset({BACKGROUND, SURFACE, IGNORE})

#: Fixed RGBA colours for label layers: surface is opaque orange, ignore a translucent blue-grey.
LABEL_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (0.0, 0.0, 0.0, 0.0),
    BACKGROUND: (0.0, 0.0, 0.0, 0.0),
    SURFACE: (1.0, 0.55, 0.0, 1.0),
    IGNORE: (0.35, 0.55, 0.85, 0.35),
}
