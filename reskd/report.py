"""Records and verdicts: the chapters' model entries (from per-seed logits or calibrated adaptive rules), readable
tables of them, and the checks the book reports (a target like the paper's, ResKD against equal-cost baselines).
The schema these entries follow, and reading and writing them, are in :mod:`reskd.results`."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd
from torch import Tensor

from . import metrics
from .adaptive import StagedOutputs, calibrate, evaluate_policy
from .results import STATUS_NOT_RUN, ResultsError, plain_json


def results_table(records: Mapping[str, Mapping[str, Any]], *, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (data set, model): profile, kind, stages, MACs, % of teacher, top-1 and agreement.

    ``datasets`` lists the data sets to show, in order; one without a record, or recorded as not run, gets a single
    row saying so (numbers left empty) instead of being silently dropped.
    """
    by_dataset = {r["dataset"]: r for r in records.values()}
    rows = []
    for dataset in (datasets if datasets is not None else list(by_dataset)):
        record = by_dataset.get(dataset)
        if record is None or record.get("status") == STATUS_NOT_RUN or not record["models"]:
            reason = record.get("reason", "not run") if record is not None else "not run: no results file"
            rows.append({"dataset": dataset, "profile": record["profile"] if record else "", "model": reason})
            continue
        for m in record["models"]:
            rows.append({"dataset": dataset, "profile": record["profile"], "model": m["name"], "kind": m["kind"],
                         "stages": m["stages"], "MMACs": m["macs"] / 1e6, "% of teacher": m["pct_teacher"],
                         "top-1 (%)": m["top1_mean"], "± (std)": m["top1_std"], "seeds": len(m["seeds"]),
                         "agreement (%)": m["agreement_teacher"]})
    columns = ["dataset", "profile", "model", "kind", "stages", "MMACs", "% of teacher", "top-1 (%)", "± (std)",
               "seeds", "agreement (%)"]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"stages": "Int64", "seeds": "Int64"})


def book_verdict(records: Mapping[str, Mapping[str, Any]], *, budgets: Mapping[str, float] | None = None,
                 names: Mapping[str, str] | None = None) -> str:
    """The book's verdict in plain sentences, from the results records (:func:`reskd.results.load_results`): per data
    set run outside the smoke profile, the ResKD model its paper budget is judged by (:func:`judged_at_budget`), its
    gap to the teacher (whether the paper's claim of accuracy competitive with the teacher held) and its difference
    against the equal-cost KD student and the cascade; then which way the verdicts point. Data sets run only in the
    smoke profile, or not at all, are named as such. ``budgets``: the paper's budget per data set (% of the teacher's
    MACs; default :data:`reskd.profiles.PAPER_PCT_TEACHER`), in the order to report them; ``names``: display names."""
    if budgets is None:
        from .profiles import PAPER_PCT_TEACHER as budgets
    if names is None:
        from .data.specs import SPECS
        names = {k: spec.display_name for k, spec in SPECS.items()}
    by_dataset = {r["dataset"]: r for r in records.values()}
    paragraphs, held, judged_on, outcomes, not_run, smoke = [], [], [], {}, [], []
    for dataset, budget in budgets.items():
        name, record = names.get(dataset, dataset), by_dataset.get(dataset)
        if record is None or record.get("status") == STATUS_NOT_RUN or not record.get("models"):
            not_run.append(name)
            continue
        if record["profile"] == "smoke":
            smoke.append(name)
            continue
        judged = judged_at_budget(record, budget)
        if judged is None:
            paragraphs.append(f"**{name}**: no ResKD model was calibrated on validation to the paper's budget of "
                              f"{budget:g}% of the teacher's MACs.")
            continue
        m, gap = judged["model"], judged["gap"]
        judged_on.append(name)
        held += [name] if judged["competitive"] else []
        sentence = (
            f"**{name}** ({record['profile']} profile; the paper's budget: {budget:g}% of the teacher's MACs): the "
            f"ResKD model chosen on validation, {m['name']}, reaches {m['top1_mean']:.2f}% top-1 at "
            f"{m['pct_teacher']:.2f}%, {abs(gap):.2f} points {'below' if gap < 0 else 'above'} the teacher's "
            f"{judged['teacher']['top1_mean']:.2f}%: " + ("" if judged["competitive"] else "not ")
            + f"competitive with the teacher by our bar (within {judged['max_drop']:g} point).")
        paragraphs.append(sentence + ("" if not judged["versus"] else " Against " + ", against ".join(
            f"the {v['against']} {_signed(v['difference'])} points ({_verdict_words(v['verdict'])})"
            for v in judged["versus"]) + "."))
        outcomes[name] = {v["against"]: v["verdict"] for v in judged["versus"]}
    sentences = []
    if judged_on:
        sentences.append(f"The paper's claim held on {_and(held)}." if held else
                         "The paper's claim of accuracy competitive with the teacher held on none of the data sets "
                         f"we ran ({_and(judged_on)}).")
        baselines = list(dict.fromkeys(b for o in outcomes.values() for b in o))
        beaten = [b for b in baselines if any(o.get(b) == "ahead" for o in outcomes.values())]
        behind = {n: [b for b, v in o.items() if v == "behind"] for n, o in outcomes.items()}
        unbeaten = [b for b in baselines if b not in beaten]
        if unbeaten:
            sentences.append(f"At this scale the residual stages do not pay: on no data set is the ResKD model ahead "
                             f"of the {_and(unbeaten)}, which spend{'s' if len(unbeaten) == 1 else ''} the same MACs "
                             "without them" + "".join(f"; on {n} the {_and(b)} use{'s' if len(b) == 1 else ''} "
                                                      "them better" for n, b in behind.items() if b)
                             + "".join(f" (it is ahead of the {b} on "
                                       f"{_and([n for n, o in outcomes.items() if o.get(b) == 'ahead'])})"
                                       for b in beaten) + ".")
        else:
            sentences.append(f"The residual stages pay: the ResKD model is ahead of the {_and(baselines)} on at "
                             "least one data set" + "".join(f", though behind the {_and(b)} on {n}"
                                                            for n, b in behind.items() if b) + ".")
    if smoke:
        sentences.append(f"{_and(smoke)} ran only in the smoke profile (a pipeline check; its numbers mean nothing).")
    if not_run:
        sentences.append(f"{_and(not_run)} {'was' if len(not_run) == 1 else 'were'} not run.")
    return "\n\n".join(([" ".join(sentences)] if sentences else []) + paragraphs)  # the conclusion first


def _signed(x: float, digits: int = 2) -> str:
    """``x`` with its sign, and no sign where it rounds to zero (no "+0.00" or "-0.00")."""
    return f"{0.0:.{digits}f}" if round(x, digits) == 0 else f"{x:+.{digits}f}"


def _verdict_words(verdict: str) -> str:
    """A :func:`noise_verdict` as a reader reads it: the two-standard-error rule said where it decides."""
    return {"ahead": f"ahead by more than {NOISE_Z:g} standard errors",
            "behind": f"behind by more than {NOISE_Z:g} standard errors"}.get(verdict, verdict)


def _and(items: Sequence[str]) -> str:
    """``items`` joined as prose: "a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def frame_records(frame: pd.DataFrame, digits: int = 4) -> list[dict[str, Any]]:
    """``frame``'s rows as plain-JSON dicts (floats rounded to ``digits``, missing values as None), for ``extra``."""
    rounded = frame.round(digits).astype(object)
    return plain_json(rounded.where(frame.notna(), None).to_dict(orient="records"))


def for_display(frame: pd.DataFrame, digits: int = 2, missing: str = "") -> pd.DataFrame:
    """``frame`` with floats rounded to ``digits`` and missing values shown as ``missing`` (blank by default; "–"
    where a reader should see that a value does not exist, such as the spread of a single seed)."""
    rounded = frame.round(digits).astype(object)
    return rounded.where(frame.notna(), missing)


#: Readable table headers for the column names the package's frames use (:func:`readable`). Headers with spaces
#: wrap, so a table of them fits a book's text column where one of snake_case names runs past it.
HEADERS = {"macs": "MACs", "mmacs": "MMACs", "added_mmacs": "added MMACs", "pct_teacher": "% of teacher",
           "budget_pct": "budget (% of teacher)", "method": "rule",
           "val_top1": "val top-1 (%)", "test_top1": "test top-1 (%)", "val_gain": "val gain (points)",
           "test_gain": "test gain (points)", "val_pct_teacher": "val % of teacher",
           "test_pct_teacher": "test % of teacher", "top1_gap": "top-1: test - val",
           "pct_teacher_gap": "% of teacher: test - val", "test_agreement_teacher": "test agreement with T (%)",
           "train-sample_residual_energy": "train residual energy", "test_residual_energy": "test residual energy",
           "train_energy_s0": "train energy after S0", "train_energy_change_pct": "train energy change (%)",
           "test_energy_s0": "test energy after S0", "test_energy_change_pct": "test energy change (%)"}


def readable(frame: pd.DataFrame, headers: Mapping[str, str] = HEADERS) -> pd.DataFrame:
    """``frame`` with its columns and index levels renamed by ``headers`` (names not in it stay as they are)."""
    renamed = frame.rename(columns=headers)
    return renamed.rename_axis(index=[headers.get(n, n) if n is not None else None for n in renamed.index.names])


def page_table(frame: pd.DataFrame, digits: int = 2, missing: str = "–") -> pd.DataFrame:
    """``frame`` as a page shows it: readable headers (:func:`readable`), floats rounded to ``digits`` with no
    "-0.0", and ``missing`` where a value does not exist (the spread of a single run, a baseline's energy)."""
    frame = frame.copy()
    numeric = frame.select_dtypes("float").columns
    frame[numeric] = frame[numeric].round(digits) + 0.0  # -0.0 + 0.0 is 0.0
    return readable(for_display(frame, digits=digits, missing=missing))


def model_record(name: str, kind: str, *, stages: int, macs: float, teacher_macs: float, top1: Sequence[float],
                 seeds: Sequence[int], agreement_teacher: Sequence[float] | None = None) -> dict[str, Any]:
    """One entry of ``models``: the per-seed top-1 (and agreement) values averaged, MACs as % of the teacher's."""
    if len(top1) != len(seeds):
        raise ResultsError(f"{name!r}: {len(top1)} top-1 values for {len(seeds)} seeds; give one value per seed.")
    mean = sum(top1) / len(top1)
    std = math.sqrt(sum((t - mean) ** 2 for t in top1) / (len(top1) - 1)) if len(top1) > 1 else 0.0
    agree = sum(agreement_teacher) / len(agreement_teacher) if agreement_teacher else None
    return {"name": name, "kind": kind, "stages": int(stages), "macs": float(macs),
            "pct_teacher": 100.0 * float(macs) / float(teacher_macs), "top1_mean": float(mean), "top1_std": float(std),
            "seeds": [int(s) for s in seeds], "agreement_teacher": None if agree is None else float(agree)}


def logits_record(name: str, kind: str, logits: Mapping[int, Tensor], labels: Tensor, *, stages: int, macs: float,
                  teacher_macs: float, teacher_logits: Tensor | None = None) -> dict[str, Any]:
    """One entry of ``models`` from a model's test logits per seed (``logits[seed]``, N x C): top-1 against
    ``labels`` and, when ``teacher_logits`` are given, agreement with the teacher (:func:`model_record`)."""
    outputs = list(logits.values())
    return model_record(name, kind, stages=stages, macs=macs, teacher_macs=teacher_macs,
                        top1=[metrics.top1(z, labels) for z in outputs], seeds=list(logits),
                        agreement_teacher=None if teacher_logits is None
                        else [metrics.agreement(z, teacher_logits) for z in outputs])


def models_frame(models: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A chapter's ``models`` entries as a readable table (MACs in millions, percentages)."""
    frame = pd.DataFrame(list(models), columns=["name", "kind", "stages", "macs", "pct_teacher", "top1_mean",
                                                "top1_std", "agreement_teacher"])
    frame["macs"] = frame["macs"] / 1e6
    return frame.rename(columns={"name": "model", "macs": "MMACs", "pct_teacher": "% of teacher",
                                 "top1_mean": "top-1 (%)", "top1_std": "± (std)", "agreement_teacher": "agreement (%)"})


def models_table(models: Sequence[Mapping[str, Any]], *, kind_labels: Mapping[str, str] | None = None
                 ) -> pd.DataFrame:
    """A chapter's ``models`` entries as its page shows them (:func:`page_table`), one row per model: its kind by
    ``kind_labels`` (when given), how many seeds it averages, and "–" for the spread of a single run, which does not
    exist."""
    frame = models_frame(models).set_index("model")
    frame.loc[[len(m["seeds"]) < 2 for m in models], "± (std)"] = math.nan
    if kind_labels is not None:
        frame["kind"] = frame["kind"].map(lambda kind: kind_labels.get(kind, kind))
    frame.insert(2, "seeds", [len(m["seeds"]) for m in models])
    frame = frame.astype({"stages": int}).rename(columns={"± (std)": "± (std over seeds)"})
    return page_table(frame)


BASELINE_KINDS = ("kd-equal-cost", "cascade")  # what a ResKD model must beat at no more than the target's cost


def standard_error(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """The standard error of the difference of two entries' seed means, ``sqrt(s_a^2/n_a + s_b^2/n_b)``; None when
    either rests on one seed (no noise estimate)."""
    n_a, n_b = len(a["seeds"]), len(b["seeds"])
    if min(n_a, n_b) < 2:
        return None
    return math.sqrt(a["top1_std"] ** 2 / n_a + b["top1_std"] ** 2 / n_b)


def _ahead(a: Mapping[str, Any], b: Mapping[str, Any], z: float) -> tuple[bool, str]:
    """Whether entry ``a`` is ahead of ``b`` by more than ``z`` standard errors of the difference of seed means,
    and why not when it is not (one seed gives no noise estimate, so no lead can be established)."""
    diff, se = a["top1_mean"] - b["top1_mean"], standard_error(a, b)
    if se is None:
        return False, f"one seed, so no lead over {b['name']} can be established ({diff:+.2f} points)"
    if diff > z * se:
        return True, ""
    return False, f"not ahead of {b['name']} by more than {z:g} standard errors ({diff:+.2f} points, s.e. {se:.2f})"


def _ahead_paired(paired: Mapping[str, Any], name: str, z: float) -> tuple[bool, str]:
    """:func:`_ahead` from a paired difference (``difference`` and ``std. error`` over the same seeds; no lead where
    ``fits`` is False: the budget was not met on val)."""
    diff, se = paired["difference"], paired["std. error"]
    if paired.get("fits") is False:
        return False, f"no verdict against {name}: the budget is not met on val by every seed"
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return False, f"one seed, so no lead over {name} can be established ({diff:+.2f} points)"
    if diff > z * se:
        return True, ""
    return False, (f"not ahead of {name} by more than {z:g} standard errors ({diff:+.2f} points, paired s.e. "
                   f"{se:.2f})")


def _cost(model: Mapping[str, Any]) -> float:
    """What a model is held to at a budget: the budget its policy was calibrated to on val (``budget_pct``) when it
    has one, else its cost (``pct_teacher``); never a test-set cost chosen after the fact."""
    return model.get("budget_pct", model["pct_teacher"])


def check_target(models: Sequence[Mapping[str, Any]], *, max_pct_teacher: float, max_drop: float,
                 z: float = 2.0, reskd: str | None = None,
                 paired: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Whether ResKD reached a target like the paper's: a ResKD entry (adaptive or a static stage) within
    ``max_drop`` top-1 points of the teacher at no more than ``max_pct_teacher`` % of its MACs, and ahead of every
    baseline of :data:`BASELINE_KINDS` that costs no more than ``max_pct_teacher`` % (the equal-cost KD students also
    when they cost a little more: they are the equal-cost comparison) by more than ``z`` standard errors over seeds.
    An adaptive entry's cost is the budget it was calibrated to on val (:func:`_cost`). Picks the most accurate ResKD
    entry within the budget, or the entry named ``reskd`` (one chosen on validation, so that the test split
    picks nothing; it may also be a chain-to-teacher, as :func:`choose_on_val` picks among them); says why when none
    qualifies. ``paired``: for a baseline's name, the paired difference against it (``difference``, ``std. error``,
    as :func:`paired_difference` gives it over the same seeds) that replaces the one from seed means and spreads;
    :func:`judged_at_budget` gives it (its ``paired``) for the model it judges, so that both read the same
    difference. One with ``fits`` False (the budget not met on val by every seed) is no lead."""
    teacher = next((m for m in models if m["kind"] == "teacher"), None)
    if teacher is None:
        raise ResultsError("the models hold no teacher; the target is relative to the teacher's top-1.")
    kinds = ("reskd-stage", "reskd-adaptive") + (("chain-to-teacher",) if reskd is not None else ())
    within = [m for m in models if m["kind"] in kinds and _cost(m) <= max_pct_teacher]
    out: dict[str, Any] = {"max_pct_teacher": max_pct_teacher, "max_drop": max_drop, "teacher_top1": teacher["top1_mean"]}
    if not within:
        return {**out, "reached": False, "why": f"no ResKD entry costs at most {max_pct_teacher}% of the teacher"}
    if reskd is None:
        best = max(within, key=lambda m: m["top1_mean"])
    else:
        best = next((m for m in within if m["name"] == reskd), None)
        if best is None:
            known = [m["name"] for m in within]
            raise ResultsError(f"no ResKD entry named {reskd!r} costs at most {max_pct_teacher}% of the teacher; "
                               f"those that do: {known}.")
    drop = teacher["top1_mean"] - best["top1_mean"]
    baselines = [m for m in models if m["kind"] == "kd-equal-cost"
                 or (m["kind"] in BASELINE_KINDS and _cost(m) <= max_pct_teacher)]
    verdicts = {m["name"]: _ahead(best, m, z) if m["name"] not in (paired or {})
                else _ahead_paired(paired[m["name"]], m["name"], z) for m in baselines}
    beats = {name: ok for name, (ok, _) in verdicts.items()}
    reached = drop <= max_drop and all(beats.values())
    why = [] if drop <= max_drop else [f"{drop:.2f} points below the teacher (allowed {max_drop})"]
    why += [reason for ok, reason in verdicts.values() if not ok]
    return {**out, "reskd": best["name"], "reskd_top1": best["top1_mean"], "reskd_pct_teacher": best["pct_teacher"],
            "drop": drop, "beats": beats, "reached": reached, "why": "; ".join(why) or "reached"}


NOISE_Z = 2.0  # a difference counts when it exceeds this many standard errors of the difference of seed means


def noise_verdict(diff: float, se: float | None, *, z: float = NOISE_Z, subject: str = "") -> str:
    """A difference read against its standard error: "<subject>ahead" / "<subject>behind" beyond ``z`` standard
    errors, else "within seed noise"; "one seed: no noise estimate" without a standard error."""
    if se is None:
        return "one seed: no noise estimate"
    if abs(diff) > z * se:
        return f"{subject}ahead" if diff > 0 else f"{subject}behind"
    return "within seed noise"


def compare_at_cost(models: Sequence[Mapping[str, Any]], *, against: Sequence[str] = ("kd", "kd-equal-cost"),
                    z: float = NOISE_Z, reskd: str | None = None) -> pd.DataFrame:
    """The full ResKD chain (the static entry with the most stages), or the ResKD entry named ``reskd``, against
    every model of the kinds ``against``: both top-1 means, their difference, its standard error over seeds,
    sqrt(s_a^2/n_a + s_b^2/n_b), and a verdict: ResKD ahead or behind when the difference exceeds ``z`` standard
    errors, else within the seed noise (and "one seed" when either side has a single seed, so no noise estimate
    exists)."""
    if reskd is not None:
        chain = next((m for m in models if m["name"] == reskd and m["kind"].startswith("reskd")), None)
        if chain is None:
            raise ResultsError(f"the models hold no ResKD entry named {reskd!r}.")
    else:
        chains = [m for m in models if m["kind"] == "reskd-stage"]
        if not chains:
            raise ResultsError("the models hold no 'reskd-stage' entry; add the ResKD chain (reskd_records) first.")
        chain = max(chains, key=lambda m: m["stages"])
    rows = []
    for other in (m for m in models if m["kind"] in against):
        diff, se = chain["top1_mean"] - other["top1_mean"], standard_error(chain, other)
        verdict = noise_verdict(diff, se, z=z, subject="ResKD ")
        rows.append({"ResKD": chain["name"], "ResKD MMACs": chain["macs"] / 1e6, "ResKD top-1": chain["top1_mean"],
                     "versus": other["name"], "versus MMACs": other["macs"] / 1e6, "versus top-1": other["top1_mean"],
                     "difference": diff, "std. error": se, "verdict": verdict})
    return pd.DataFrame(rows)


def paired_difference(a: Sequence[float], b: Sequence[float], *, z: float = NOISE_Z,
                      names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """The paired difference ``a - b`` over seeds (``a[i]`` and ``b[i]`` from the same seed: the same S0, the same
    teacher): its mean, its standard error (the standard deviation of the per-seed differences over sqrt(n)) and a
    verdict at ``z`` standard errors ("<A> ahead", "<A> behind", "within seed noise"; "one seed: no noise
    estimate" when n = 1). A paired difference removes what the seeds share, so its standard error is smaller than
    :func:`standard_error`'s when the two sides move together."""
    if len(a) != len(b) or not len(a):
        raise ResultsError(f"give one value per seed on both sides, got {len(a)} and {len(b)}.")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    if n < 2:
        return {"seeds": n, "difference": mean, "std. error": None, "verdict": "one seed: no noise estimate"}
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    return {"seeds": n, "difference": mean, "std. error": se,
            "verdict": noise_verdict(mean, se, z=z, subject=f"{names[0]} ")}


#: The kinds of entries the book's one rule picks the ResKD model of a budget among: ResKD's own adaptive chains and
#: the chains-to-teacher (the res-students as middle exits). The cascade is what that model is held against.
CHOICE_KINDS = ("reskd-adaptive", "chain-to-teacher")
#: The book's one rule for the ResKD model each budget is judged by, in words a page can print.
CHOICE_RULE = ("at each budget, the ResKD model judged is the entry with the best validation top-1 (mean over its "
               "seeds) among every adaptive ResKD chain and every chain-to-teacher calibrated on validation to that "
               "budget; the test split chooses nothing")


def choose_on_val(models: Sequence[Mapping[str, Any]], budget_pct: float, *,
                  kinds: Sequence[str] = CHOICE_KINDS) -> Mapping[str, Any] | None:
    """The entry of ``kinds`` calibrated to ``budget_pct`` with the best validation top-1 (``val_top1_mean``; the
    test split chooses nothing), or None when no such entry records one."""
    candidates = [m for m in models if m["kind"] in kinds and m.get("budget_pct") is not None
                  and math.isclose(m["budget_pct"], budget_pct) and m.get("val_top1_mean") is not None]
    return max(candidates, key=lambda m: m["val_top1_mean"]) if candidates else None


def unpaired_verdict(a: Mapping[str, Any], b: Mapping[str, Any], *, z: float = NOISE_Z) -> dict[str, Any]:
    """Entry ``a`` against ``b`` from their seed means and spreads (:func:`standard_error`, independent seeds): the
    difference, its standard error and the verdict at ``z`` standard errors."""
    diff, se = a["top1_mean"] - b["top1_mean"], standard_error(a, b)
    return {"difference": diff, "std. error": se, "verdict": noise_verdict(diff, se, z=z)}


COMPETITIVE_DROP = 1.0  # top-1 points below the teacher still read as "competitive" when a record's target sets none


#: The verdict of a chain-to-teacher against the cascade at a budget that some seed's policy does not meet on val
#: (:func:`reskd.regimes.paired_verdicts` says so and records ``fits`` False): no verdict, never a normal one.
NOT_MET_ON_VAL = "does not meet the budget on val"


def chain_to_teacher_name(regime: str, thresholds_mode: str, budget_pct: float) -> str:
    """The name of a chain-to-teacher entry (:func:`reskd.regimes.chain_to_teacher_records`), by which its paired
    verdict (:func:`reskd.regimes.paired_verdicts`) is found again."""
    return f"{regime} -> teacher ({thresholds_mode} thresholds, {budget_pct:g}% budget)"


def _paired_rows(verdicts: pd.DataFrame | Sequence[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Paired chain-to-teacher verdicts (:func:`reskd.regimes.paired_verdicts` rows, as a frame or as records) by the
    name of the chain-to-teacher entry they judge; a missing standard error (one seed) as None."""
    if verdicts is None:
        return {}
    rows = verdicts.to_dict(orient="records") if isinstance(verdicts, pd.DataFrame) else list(verdicts)
    out = {}
    for v in rows:
        se = v.get("std. error")
        out[chain_to_teacher_name(v["regime"], v["thresholds_mode"], v["budget_pct"])] = {
            **v, "std. error": None if se is None or (isinstance(se, float) and math.isnan(se)) else float(se)}
    return out


def judged_at_budget(record: Mapping[str, Any], budget_pct: float, *, max_drop: float | None = None,
                     z: float = NOISE_Z,
                     chain_verdicts: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
    """A data set's ResKD model at ``budget_pct`` by the book's one rule (:func:`choose_on_val`) and what it is held
    against: its gap to the teacher (``competitive`` when within ``max_drop`` points: the record's target's, else
    :data:`COMPETITIVE_DROP`), and its difference, standard error and verdict against the equal-cost KD student
    (``kd-equal-cost`` with one stage) and the cascade calibrated to the same budget. Against the cascade, a
    chain-to-teacher's difference is the paired one its chapter computed (``chain_verdicts``, the rows of
    :func:`reskd.regimes.paired_verdicts`, else the record's ``extra.chain_to_teacher.verdicts``: the same S0 and
    teacher seed by seed), its verdict read by :func:`noise_verdict`, or :data:`NOT_MET_ON_VAL` where some seed does
    not meet the budget on val; every other comes from the seed means (:func:`unpaired_verdict`). ``paired``: the
    paired differences by the cascade's name, as :func:`check_target` takes them. None when no ResKD entry was
    calibrated to the budget."""
    models = record["models"]
    chosen = choose_on_val(models, budget_pct)
    if chosen is None:
        return None
    teacher = next(m for m in models if m["kind"] == "teacher")
    extra = record.get("extra") or {}
    target = extra.get("target") or {}
    max_drop = target.get("max_drop", COMPETITIVE_DROP) if max_drop is None else max_drop
    gap = chosen["top1_mean"] - teacher["top1_mean"]
    if chain_verdicts is None:
        chain_verdicts = (extra.get("chain_to_teacher") or {}).get("verdicts")
    paired_rows = _paired_rows(chain_verdicts)
    versus, paired = [], {}
    for other in models:
        if other["kind"] == "kd-equal-cost" and other["stages"] == 1:
            against = "equal-cost KD student"
        elif other["kind"] == "cascade" and math.isclose(other.get("budget_pct") or -1.0, budget_pct):
            against = "cascade to the teacher"
        else:
            continue
        v, how = unpaired_verdict(chosen, other, z=z), "seed means"
        if against.startswith("cascade") and chosen["kind"] == "chain-to-teacher" and chosen["name"] in paired_rows:
            p = paired_rows[chosen["name"]]
            met = p.get("fits") is not False and p.get("verdict") != NOT_MET_ON_VAL
            v = {"difference": p["difference"], "std. error": p["std. error"],
                 "verdict": noise_verdict(p["difference"], p["std. error"], z=z) if met else NOT_MET_ON_VAL}
            how = "paired over seeds"
            paired[other["name"]] = {**v, "fits": met}
        versus.append({"against": against, "model": other, **v, "s.e. from": how})
    return {"budget_pct": budget_pct, "model": chosen, "teacher": teacher, "gap": gap, "max_drop": max_drop,
            "competitive": -gap <= max_drop, "target_names": target.get("reskd"), "versus": versus,
            "paired": paired}


def reskd_records(staged: Mapping[int, Mapping[str, StagedOutputs]], teacher_macs: float, *,
                  drops: Sequence[float] = (0.5, 1.0), criterion: str = "max_prob") -> list[dict[str, Any]]:
    """Model entries of a ResKD chain, from ``staged[seed]["val" | "test"]`` (cumulative stage outputs with the
    teacher's logits): every static stage, and the adaptive rule calibrated on the validation split to keep its
    top-1 within each of ``drops`` points of the full ensemble's (the test split is only evaluated)."""
    seeds = list(staged)
    if not seeds:
        raise ResultsError("no staged outputs: give at least one seed's {'val': ..., 'test': ...}.")
    first = staged[seeds[0]]["test"]
    entries = []
    for k in range(first.num_stages):
        tests = [staged[seed]["test"] for seed in seeds]
        entries.append(model_record(
            "ResKD S0" if k == 0 else f"ResKD S0..S{k}", "reskd-stage", stages=k + 1, macs=first.cumulative_macs[k],
            teacher_macs=teacher_macs, top1=[metrics.top1(t.logits[k], t.labels) for t in tests], seeds=seeds,
            agreement_teacher=[metrics.agreement(t.logits[k], t.teacher_logits) for t in tests]
            if first.teacher_logits is not None else None))
    for drop in drops:
        runs = []
        for seed in seeds:
            val = staged[seed]["val"]
            full_val = metrics.top1(val.logits[-1], val.labels)
            policy = calibrate(val, criterion, target_top1=max(0.0, full_val - drop))  # a top-1 is never below 0
            runs.append(evaluate_policy(staged[seed]["test"], policy, teacher_macs=teacher_macs))
        entries.append(model_record(
            f"ResKD adaptive (val -{drop:g} pt)", "reskd-adaptive", stages=first.num_stages,
            macs=sum(r["avg_macs"] for r in runs) / len(runs), teacher_macs=teacher_macs,
            top1=[r["top1"] for r in runs], seeds=seeds,
            agreement_teacher=[r["agreement_teacher"] for r in runs] if "agreement_teacher" in runs[0] else None))
    return entries


def calibration_gap(curves: pd.DataFrame) -> pd.DataFrame:
    """How far test moves from val at the same thresholds: per method and budget of :func:`reskd.adaptive.
    budget_curves` rows (means over the seeds in them), val and test top-1 and mean MACs (% of the teacher), and
    test minus val for both."""
    needed = {"method", "budget_pct", "val_top1", "test_top1", "val_pct_teacher", "test_pct_teacher"}
    if not needed <= set(curves.columns):
        raise ValueError(f"curves lack the columns {sorted(needed - set(curves.columns))}; pass the rows of "
                         f"reskd.adaptive.budget_curves.")
    gap = curves.groupby(["method", "budget_pct"], sort=False)[
        ["val_top1", "test_top1", "val_pct_teacher", "test_pct_teacher"]].mean()
    gap["top1_gap"] = gap["test_top1"] - gap["val_top1"]
    gap["pct_teacher_gap"] = gap["test_pct_teacher"] - gap["val_pct_teacher"]
    return gap.reset_index()


#: What :func:`adaptive_analysis` needs of every regime the adaptive chapter runs.
ADAPTIVE_REGIME_KEYS = ("label", "seeds", "stage_macs", "static", "budget_curves", "calibration_gap",
                        "exit_fractions")


def adaptive_analysis(*, teacher_macs: float, teacher_top1: float, regimes: Mapping[str, Mapping[str, Any]],
                      wallclock: Mapping[str, Any], speedup_realized_over_macs: Mapping[str, Any],
                      operating_point: Mapping[str, Any] | None = None,
                      baselines: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The adaptive-inference chapter's ``analysis`` record, as plain JSON: per regime (the main one first, then the
    counterexamples, and the cascade) the fields of :data:`ADAPTIVE_REGIME_KEYS` (tables as lists of rows: the
    static stages, the budget curves of every criterion and the random baseline, the calibration gap, the exit
    fractions per stage and per class) and any others given (the oracle, the KD student); the ``wallclock`` timings
    (latency and throughput per method, with the machine) and, per setting, the ``speedup_realized_over_macs``
    (a ratio, or None with the reason for a trivial policy); the ``operating_point`` and the ``baselines`` outside
    any regime (the equal-cost KD student)."""
    if not regimes:
        raise ResultsError("no regimes: give at least the chapter's main regime.")
    out = {}
    for name, regime in regimes.items():
        missing = [k for k in ADAPTIVE_REGIME_KEYS if k not in regime]
        if missing:
            raise ResultsError(f"regime {name!r} lacks {missing}; give every field of ADAPTIVE_REGIME_KEYS.")
        out[name] = {k: frame_records(v) if isinstance(v, pd.DataFrame) else v for k, v in regime.items()}
    for setting, entry in speedup_realized_over_macs.items():
        if entry.get("ratio") is None and not entry.get("reason"):
            raise ResultsError(f"speedup_realized_over_macs[{setting!r}] has no ratio and no reason: say why "
                               f"(e.g. a trivial policy).")
    return plain_json({"teacher_macs": int(teacher_macs), "teacher_top1": teacher_top1, "regimes": out,
                       "operating_point": dict(operating_point or {}), "baselines": dict(baselines or {}),
                       "wallclock": dict(wallclock),
                       "speedup_realized_over_macs": dict(speedup_realized_over_macs)})


LATE_FRACTION = 0.2  # "the end of a run": the last fifth of its epochs
FLAT_GAIN = 0.5  # points of val top-1: a curve that gains less than this over its last fifth has flattened


def late_gain(history: pd.DataFrame, column: str = "val_top1", *,
              fraction: float = LATE_FRACTION) -> tuple[int, float]:
    """How much a run still gained at its end: the last ``fraction`` of its epochs (at least one) and what ``column``
    rose over them, from the epoch before them to the last (NaN when the run is too short to have an epoch before).
    Under a schedule that decays the learning rate at the end, part of that gain is the decay itself."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    values = history.sort_values("epoch")[column].to_numpy(dtype=float)
    n = max(1, round(fraction * len(values)))
    return n, float(values[-1] - values[-1 - n]) if len(values) > n else math.nan


def length_curve(runs: Mapping[int, Any]) -> pd.DataFrame:
    """One row per training length of a ladder (``{epochs: FitResult}``, :meth:`reskd.experiment.Experiment.
    length_ladder`): the last epoch's val and test top-1, the hours of the epochs this run trained itself (a forked
    run's shared epochs are counted once, in the run they came from), and where it forked."""
    rows = []
    for epochs, result in sorted(runs.items()):
        final, history = result.summary.get("final", {}), result.history
        start = result.summary.get("forked_from", {}).get("epoch", 0)
        own = history[history["epoch"] > start] if "epoch" in history else history
        rows.append({"epochs": epochs, "val_top1": final.get("val_top1"), "test_top1": final.get("test_top1"),
                     "own_hours": own["epoch_s"].sum() / 3600 if "epoch_s" in own else math.nan,
                     "forked_at": start or None})
    return pd.DataFrame(rows)


def chosen_length(curve: pd.DataFrame, gain: float, cap: int | None = None) -> int | None:
    """The ladder rule: the shortest length whose doubling is in ``curve`` and gains under ``gain`` points of val
    top-1; None when no rung qualifies yet (train a longer one). With ``cap`` (a profile's budget,
    ``Profile.length_cap``): a length no longer than the cap, so the cap itself, once trained, when the rule picks
    nothing up to it or a longer length (:func:`length_capped` tells which)."""
    val = dict(zip(curve["epochs"], curve["val_top1"]))
    rule = next((int(epochs) for epochs in sorted(val) if 2 * epochs in val and val[2 * epochs] - val[epochs] < gain),
                None)
    if cap is None or (rule is not None and rule <= cap):
        return rule
    return int(cap) if cap in val else None


def length_capped(curve: pd.DataFrame, gain: float, cap: int | None) -> bool:
    """Whether the ladder's pick is its budget's ``cap`` and not the rule's (the model was still gaining there)."""
    return cap is not None and chosen_length(curve, gain, cap) != chosen_length(curve, gain)


def targets_reading(models: Sequence[Mapping[str, Any]], targets: Sequence[tuple[str, float]]) -> str:
    """Whether each of a profile's accuracy ``targets`` (``(kind, test top-1 %)`` pairs) is reached by the first
    model entry of that kind (its mean over seeds), as a sentence."""
    parts = []
    for kind, target in targets:
        model = next((m for m in models if m["kind"] == kind), None)
        if model is None:
            raise ValueError(f"no model entry of kind {kind!r} to hold to its target of {target:g}%; the entries "
                             f"have kinds {sorted({m['kind'] for m in models})}.")
        seeds = len(model.get("seeds") or [0])
        got, gap = model["top1_mean"], model["top1_mean"] - target
        parts.append(f"{model['name']} {got:.2f}%" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
                     + f" against {target:g}%: " + (f"**reached** ({gap:+.2f})" if gap >= 0 else
                                                    f"**missed** by {-gap:.2f} points"))
    return "Test top-1 against the targets fixed before this profile's runs: " + "; ".join(parts) + "."


def top1_std_error(top1: float, n: int) -> float:
    """The binomial standard error (points) of a top-1 of ``top1`` % measured on ``n`` images."""
    p = top1 / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def ladder_sentence(title: str, curve: pd.DataFrame, gain: float, *, val_size: int | None = None,
                    cap: int | None = None) -> str:
    """A ladder's curve (:func:`length_curve`) in words: val top-1 at each length, what each doubling added, and the
    length the rule (:func:`chosen_length`, within the budget's ``cap``) picks, or that none qualifies yet. With
    ``val_size`` (the validation images), it adds the noise the rule's threshold sits in: the binomial standard error
    of the longest rung's val top-1, and that of a doubling's gain if the two rungs erred independently (an upper
    bound: both are measured on the same images, and a longer rung keeps most of the shorter one's answers)."""
    curve = curve.sort_values("epochs")
    steps = []
    for i, row in enumerate(curve.itertuples()):
        step = f"{row.val_top1:.2f}% after {row.epochs} epochs"
        if i and curve["epochs"].iloc[i - 1] * 2 == row.epochs:
            step += f" ({row.val_top1 - curve['val_top1'].iloc[i - 1]:+.2f} for doubling)"
        steps.append(step)
    chosen = chosen_length(curve, gain, cap)
    rule = f"the shortest length whose doubling gains under {gain:g} points"
    if length_capped(curve, gain, cap):
        doubled = curve.set_index("epochs")["val_top1"]
        still = (f", where doubling it still gained {doubled[2 * chosen] - doubled[chosen]:+.2f}"
                 if 2 * chosen in doubled else "")
        verdict = (f"no length up to {chosen} epochs qualifies under the rule ({rule}), so the profile's budget "
                   f"sets the length: **{chosen} epochs, its cap**{still}; the model was still gaining.")
    elif chosen is not None:
        verdict = f"the rule ({rule}) picks **{chosen} epochs**."
    else:
        verdict = f"no length qualifies yet under the rule ({rule}): a longer rung is needed."
    sentence = f"{title}: val top-1 " + ", ".join(steps) + "; " + verdict
    if val_size:
        se = top1_std_error(float(curve["val_top1"].iloc[-1]), val_size)
        sentence += (f" (On {val_size:,} validation images one top-1 near {curve['val_top1'].iloc[-1]:.0f}% has a "
                     f"binomial standard error of {se:.2f} points, and a doubling's gain at most "
                     f"{math.sqrt(2.0) * se:.2f}: the {gain:g}-point threshold reads one seed's curve, not a "
                     "significant difference.)")
    return sentence


#: The gaps the book's conclusion rests on, each a difference of test top-1 (points) at the paper's budget.
GAP_NAMES = {"over_s0": "ResKD over its KD S0", "equal_cost": "equal-cost KD student over ResKD",
             "cascade": "cascade over ResKD", "teacher": "teacher over ResKD"}


def verdict_gaps(record: Mapping[str, Any], budget_pct: float, *, z: float = NOISE_Z,
                 chain_verdicts: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The gaps the conclusion rests on for the model :func:`judged_at_budget` judges at ``budget_pct``: ResKD over
    its KD S0, the equal-cost KD student over ResKD, the cascade over ResKD (paired where the chapter recorded it),
    and the teacher over ResKD against the target's allowed drop (the teacher is one run: its spread is not counted).
    Each: ``gap`` (a key of :data:`GAP_NAMES`), ``difference``, ``std. error`` (None for one seed) and ``verdict``
    at ``z`` standard errors (``chain_verdicts`` as :func:`judged_at_budget` takes them). Empty when no ResKD model
    was calibrated to the budget."""
    judged = judged_at_budget(record, budget_pct, z=z, chain_verdicts=chain_verdicts)
    if judged is None:
        return []
    chosen = judged["model"]
    rows = []
    kd = next((m for m in record["models"] if m["kind"] == "kd"), None)
    if kd is not None:
        rows.append({"gap": "over_s0", **unpaired_verdict(chosen, kd, z=z)})
    for v in judged["versus"]:
        key = "equal_cost" if v["against"].startswith("equal-cost") else "cascade"
        se = v["std. error"]
        rows.append({"gap": key, "difference": -v["difference"], "std. error": se,
                     "verdict": v["verdict"] if v["verdict"] == NOT_MET_ON_VAL
                     else noise_verdict(-v["difference"], se, z=z)})
    n = len(chosen["seeds"])
    se = chosen["top1_std"] / math.sqrt(n) if n > 1 else None
    drop = -judged["gap"]
    verdict = noise_verdict(drop - judged["max_drop"], se, z=z)
    rows.append({"gap": "teacher", "difference": drop, "std. error": se,
                 "verdict": {"ahead": f"more than {judged['max_drop']:g} point: target missed",
                             "behind": f"within {judged['max_drop']:g} point: target met"}.get(
                     verdict, f"undecided at {judged['max_drop']:g} point ({verdict})")})
    return [{**row, "model": chosen["name"]} for row in rows]


def gaps_by_length(entries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The gaps of several profiles side by side (:func:`reskd.results.load_gaps`' ``{profile: entry}``): one row
    per gap and profile, with the profile's teacher and student epochs, ordered by teacher epochs."""
    rows = [{"profile": profile, "teacher_epochs": entry["teacher_epochs"], "student_epochs": entry["student_epochs"],
             "gap_name": GAP_NAMES.get(row["gap"], row["gap"]), **row}
            for profile, entry in entries.items() for row in entry["gaps"]]
    columns = ["profile", "teacher_epochs", "student_epochs", "gap", "gap_name", "model", "difference", "std. error",
               "verdict"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["teacher_epochs", "student_epochs"], kind="stable").reset_index(drop=True)


def gaps_table(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`gaps_by_length`'s rows as a reader's table: one row per gap, one column per profile (named with its
    teacher and student epochs), each cell "difference (s.e.): verdict" in points of test top-1."""
    if frame.empty:
        return pd.DataFrame()

    def cell(row: pd.Series) -> str:
        se = row["std. error"]
        spread = "" if se is None or pd.isna(se) else f" (s.e. {se:.2f})"
        return f"{_signed(row['difference'])}{spread}: {row['verdict']}"

    frame = frame.assign(column=frame["profile"] + " (teacher " + frame["teacher_epochs"].astype(int).astype(str)
                         + ", students " + frame["student_epochs"].astype(int).astype(str) + " epochs)",
                         cell=frame.apply(cell, axis=1))
    table = frame.pivot(index="gap_name", columns="column", values="cell")
    order = [GAP_NAMES[k] for k in GAP_NAMES if GAP_NAMES[k] in table.index]
    return table.loc[order, list(dict.fromkeys(frame["column"]))].rename_axis(index="gap (points of test top-1)",
                                                                                columns=None).fillna("–")


def length_reading(frame: pd.DataFrame) -> str:
    """One sentence on :func:`gaps_by_length`'s rows: whether each gap's verdict is the same at the shortest and the
    longest recorded training length, or that only one length is recorded (so the question is still open)."""
    if frame.empty:
        return "No training length is recorded yet."
    profiles = list(dict.fromkeys(frame["profile"]))
    if len(profiles) == 1:
        return (f"Only one training length is recorded (the `{profiles[0]}` profile), so whether the verdict "
                "survives longer training is not yet measured.")
    short, long = profiles[0], profiles[-1]
    parts, changed = [], 0
    for name in dict.fromkeys(frame["gap_name"]):
        rows = frame[frame["gap_name"] == name].set_index("profile")
        if short not in rows.index or long not in rows.index:
            continue
        before, after = rows.loc[short, "verdict"], rows.loc[long, "verdict"]
        changed += before != after
        parts.append(f"{name}: {_signed(rows.loc[short, 'difference'])} ({before}) at `{short}`, "
                     f"{_signed(rows.loc[long, 'difference'])} ({after}) at `{long}`")
    head = ("The verdict does not change with training length" if not changed else
            f"The verdict changes with training length on {changed} of {len(parts)} gaps")
    return f"{head}: " + "; ".join(parts) + "."
