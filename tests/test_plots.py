from reskd.plots import KIND_STYLES, kind_style
from reskd.results import MODEL_KINDS

import pytest


def test_every_kind_of_model_has_its_own_marker_and_colour():
    assert set(MODEL_KINDS) <= set(KIND_STYLES)
    styles = [KIND_STYLES[k] for k in MODEL_KINDS]
    assert len({s.marker for s in styles}) == len(styles) and len({s.color for s in styles}) == len(styles)
    assert kind_style("kd").scatter(s=40) == {"marker": "o", "color": KIND_STYLES["kd"].color,
                                               "label": "KD student (S0)", "s": 40}
    with pytest.raises(ValueError, match="known kinds: teacher"):
        kind_style("bagging")


def test_the_gaps_figure_draws_one_panel_per_gap_with_every_profile():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from reskd.plots import gaps_figure

    frame = pd.DataFrame([{"profile": p, "teacher_epochs": t, "gap_name": g, "difference": d, "std. error": se}
                          for p, t in (("cpu", 30), ("converged", 120))
                          for g, d, se in (("ResKD over its KD S0", 0.3, 0.1), ("teacher over ResKD", 3.5, None))])
    fig = gaps_figure(frame)
    assert [ax.get_title() for ax in fig.axes] == ["ResKD over its KD S0", "teacher over ResKD"]
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["cpu", "converged"]
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [30, 120] and list(line.get_ydata()) == [0.3, 0.3]


def test_the_ladder_figure_draws_each_rung_from_its_fork_and_bolds_the_pick():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from reskd.plots import ladder_figure
    from reskd.train import FitResult

    def rung(epochs: int, fork: int | None) -> FitResult:
        history = pd.DataFrame({"epoch": range(1, epochs + 1), "val_top1": [50 + e * 30 / epochs
                                                                            for e in range(1, epochs + 1)]})
        return FitResult(None, history, {"forked_from": {"epoch": fork}} if fork else {})

    fig = ladder_figure({"teacher": {30: rung(30, None), 60: rung(60, 24)}}, {"teacher": 30})
    ax = fig.axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) > 1]
    assert [line.get_xdata()[0] for line in curves] == [1, 24]  # the 60-epoch rung starts where it forked
    assert [line.get_linewidth() for line in curves] == [2.4, 1.2]
    assert [t.get_text() for t in ax.texts] == ["80.00", "80.00"]
    assert ax.get_legend().get_texts()[0].get_text() == "30 epochs (the rule's pick)"
