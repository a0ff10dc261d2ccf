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
