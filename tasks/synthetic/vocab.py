"""The closed vocabulary of the synthetic world: shapes, colours, sizes, relations, themes.

Near-miss tables (neighbouring colour, confusable shape) drive the annotator and captioner
errors; they describe how a careless human or a weak model goes wrong, never the label.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")
SHAPE_PLURALS = {s: s + "s" if not s.endswith("s") else s + "es" for s in SHAPES}
SHAPE_PLURALS["cross"] = "crosses"

# Fill colours (R, G, B) in the source palette, chosen far apart. The shifted style's warm light
# moves a few objects nearer another colour's RGB value (bench/augment_colour_names.py measures
# 7.4 % of objects, mostly yellow toward orange); their label is still the source colour.
COLOURS = {
    "red": (215, 35, 35),
    "orange": (245, 140, 25),
    "yellow": (240, 215, 30),
    "green": (45, 165, 55),
    "cyan": (35, 200, 215),
    "blue": (35, 70, 215),
    "purple": (135, 55, 185),
    "pink": (245, 135, 195),
    "brown": (125, 75, 35),
    "black": (25, 25, 25),
}
COLOUR_NAMES = tuple(COLOURS)

NEAR_COLOUR = {
    "red": ("orange", "pink", "brown"),
    "orange": ("red", "yellow", "brown"),
    "yellow": ("orange", "green"),
    "green": ("cyan", "yellow"),
    "cyan": ("blue", "green"),
    "blue": ("cyan", "purple"),
    "purple": ("blue", "pink"),
    "pink": ("purple", "red"),
    "brown": ("orange", "black", "red"),
    "black": ("brown", "purple"),
}
NEAR_SHAPE = {
    "circle": ("ring", "hexagon"),
    "square": ("diamond", "hexagon"),
    "triangle": ("diamond", "star"),
    "diamond": ("square", "triangle"),
    "star": ("cross", "triangle"),
    "cross": ("star", "square"),
    "hexagon": ("circle", "square"),
    "ring": ("circle",),
}

# Object radius as a fraction of the image side, per size word.
SIZES = {"small": 0.075, "medium": 0.115, "large": 0.165}
SIZE_NAMES = tuple(SIZES)
NEAR_SIZE = {"small": ("medium",), "medium": ("small", "large"), "large": ("medium",)}

RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

STYLES = ("source", "shift")

# VCR "movies": scene families whose colour palettes differ, so group shift by movie is a
# real distribution shift (weights multiply the uniform colour prior).
THEMES = {
    "garden": ("green", "yellow", "pink"),
    "ocean": ("blue", "cyan", "purple"),
    "fire": ("red", "orange", "yellow"),
    "night": ("black", "purple", "blue"),
    "candy": ("pink", "purple", "red"),
    "earth": ("brown", "green", "orange"),
}
MOVIES_PER_THEME = 2
MOVIES = tuple(f"synth_{t}_{k:02d}" for t in THEMES for k in range(1, MOVIES_PER_THEME + 1))


def nearest_colour(rgb) -> str:
    """The palette colour nearest (RGB distance) to an (R, G, B) triple of numbers."""
    return min(COLOURS, key=lambda name: sum((float(c) - p) ** 2 for c, p in zip(rgb, COLOURS[name])))


def movie_theme(movie: str) -> str:
    return movie.split("_")[1]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
