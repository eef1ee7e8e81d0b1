"""The figure choices the commands offer, stated once and readable without loading matplotlib.

Shape legend: none.

:mod:`crfpose.viz` uses these; ``crfpose viz``, ``crfpose predict --draw``, the demo and the app offer them.
"""

__all__ = ["THRESHOLD", "FORMATS", "SELECTION_RULES", "STYLE_NAMES"]

THRESHOLD = 0.3  # the lowest joint score drawn, in every figure
FORMATS = ("png", "pdf", "svg")
SELECTION_RULES = ("largest-difference", "worst", "typical", "random", "first")  # how a gallery chooses its examples
STYLE_NAMES = ("screen", "paper", "paper-wide")  # named styles besides each figure's print width
