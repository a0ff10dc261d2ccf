"""One look for every figure of the book: a marker, a colour and a label per kind of model.

A results file's entries have a ``kind`` (:data:`reskd.results.MODEL_KINDS`); every chapter draws each kind the same
way, so a reader who learnt chapter 2's legend can read chapter 3's figure without one. Colours are from seaborn's
colour-blind palette; markers differ too, so the figures also read in grey.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import seaborn as sns

_PALETTE = sns.color_palette("colorblind", 10)


@dataclass(frozen=True)
class KindStyle:
    """How one kind of model is drawn: its marker, colour and legend label."""

    marker: str
    color: tuple[float, float, float]
    label: str

    def scatter(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Axes.scatter`` (``overrides`` win)."""
        return {"marker": self.marker, "color": self.color, "label": self.label, **overrides}

    def line(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot`` of a curve of this kind (``overrides`` win)."""
        return {"marker": self.marker, "color": self.color, "label": self.label, "markersize": 5, **overrides}


#: The style of each kind of model (the kinds of reskd.results.MODEL_KINDS).
KIND_STYLES: Mapping[str, KindStyle] = {
    "teacher": KindStyle("*", (0.0, 0.0, 0.0), "teacher"),
    "scratch": KindStyle("x", _PALETTE[7], "student from scratch"),
    "kd": KindStyle("o", _PALETTE[0], "KD student (S0)"),
    "kd-equal-cost": KindStyle("s", _PALETTE[1], "equal-cost KD student"),
    "reskd-stage": KindStyle("^", _PALETTE[2], "ResKD, every stage"),
    "reskd-adaptive": KindStyle("v", _PALETTE[4], "ResKD, adaptive"),
    "cascade": KindStyle("D", _PALETTE[3], "cascade S0 -> teacher"),
    "chain-to-teacher": KindStyle("P", _PALETTE[5], "S0 -> S0+S1 -> teacher"),
}


def kind_style(kind: str) -> KindStyle:
    """The style of ``kind``; an unknown kind is an error that lists the known ones."""
    if kind not in KIND_STYLES:
        raise ValueError(f"no style for kind {kind!r}; known kinds: {', '.join(KIND_STYLES)}.")
    return KIND_STYLES[kind]
