"""One look for every figure of the book: a marker, a colour and a label per kind of model.

A results file's entries have a ``kind`` (:data:`reskd.results.MODEL_KINDS`); every chapter draws each kind the same
way, so a reader who learnt chapter 2's legend can read chapter 3's figure without one. Colours are from seaborn's
colour-blind palette; markers differ too, so the figures also read in grey.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

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
    "chain-to-teacher": KindStyle("P", _PALETTE[9], "S0 -> S0+S1 -> teacher"),
}

#: Each kind's legend label, for tables (reskd.report.models_table's ``kind_labels``).
KIND_LABELS: Mapping[str, str] = {kind: style.label for kind, style in KIND_STYLES.items()}


def kind_style(kind: str) -> KindStyle:
    """The style of ``kind``; an unknown kind is an error that lists the known ones."""
    if kind not in KIND_STYLES:
        raise ValueError(f"no style for kind {kind!r}; known kinds: {', '.join(KIND_STYLES)}.")
    return KIND_STYLES[kind]


def gaps_figure(frame: pd.DataFrame, *, z: float = 2.0) -> Figure:
    """How each gap the conclusion rests on moves with training length: :func:`reskd.report.gaps_by_length`'s rows,
    one panel per gap, its difference (points of test top-1) against the teacher's epochs, with ``z`` standard errors
    as bars and zero (no gap) as a line; each point is labelled with its profile."""
    names = list(dict.fromkeys(frame["gap_name"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        part = frame[frame["gap_name"] == name]
        se = part["std. error"].astype(float).fillna(0.0)
        ax.errorbar(part["teacher_epochs"], part["difference"], yerr=z * se, marker="o", capsize=3, color="0.2")
        for _, row in part.iterrows():
            ax.annotate(row["profile"], (row["teacher_epochs"], row["difference"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
        ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("teacher epochs")
        ax.margins(x=0.25, y=0.25)
    axes[0][0].set_ylabel(f"points of test top-1 (bars: {z:g} s.e.)")
    fig.tight_layout()
    return fig


def ladder_figure(ladders: Mapping[str, Mapping[int, Any]], chosen: Mapping[str, int | None]) -> Figure:
    """A length ladder per panel (``ladders``: ``{title: {epochs: FitResult}}``, as
    :meth:`reskd.experiment.Experiment.length_ladder` returns): each rung's val top-1 per epoch, from the epoch it
    forked at (the epochs before are its shorter rung's), its last epoch marked and labelled; the rung the ladder rule
    picks (``chosen[title]``; None: none yet) drawn bold."""
    fig, axes = plt.subplots(1, len(ladders), figsize=(5.5 * len(ladders), 3.8), squeeze=False)
    for ax, (title, runs) in zip(axes[0], ladders.items()):
        for i, (epochs, result) in enumerate(sorted(runs.items())):
            history = result.history.sort_values("epoch")
            start = result.summary.get("forked_from", {}).get("epoch", 0)
            own = history[history["epoch"] >= start] if start else history  # from the fork point, so lines join
            bold = epochs == chosen.get(title)
            color = _PALETTE[i % len(_PALETTE)]
            ax.plot(own["epoch"], own["val_top1"], color=color, lw=2.4 if bold else 1.2,
                    label=f"{epochs} epochs" + (" (the rule's pick)" if bold else ""))
            last = history.iloc[-1]
            ax.plot([last["epoch"]], [last["val_top1"]], marker="o", color=color, ms=6)
            ax.annotate(f"{last['val_top1']:.2f}", (last["epoch"], last["val_top1"]), textcoords="offset points",
                        xytext=(-8, 6), ha="right", fontsize=8, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 (%)")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
