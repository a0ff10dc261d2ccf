# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reproduction summary
#
# What the paper claims, what we measured, and under which setting.

# %% tags=["remove-cell"]
# In Colab only: clone the book's repository, install the package and fetch the data sets this chapter reads
# (elsewhere this cell does nothing). A GPU runtime makes the cpu and paper profiles practical (device="auto").
import os
import subprocess
import sys

REPOSITORY_URL = ""  # written from _config.yml (repository.url) by tools/run_book.py when the page is executed
if "google.colab" in sys.modules:
    if not os.path.exists("reskd/pyproject.toml"):
        if not REPOSITORY_URL:
            raise RuntimeError("This copy of the chapter names no repository (the book's _config.yml had no "
                               "repository.url when it was executed): clone the reskd repository into ./reskd, "
                               "then run this cell again.")
        subprocess.run(["git", "clone", "--depth", "1", REPOSITORY_URL, "reskd"], check=True)
    os.chdir("reskd")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "."], check=True)
    sys.path.insert(0, os.getcwd())
    from reskd.chapter import fetch_data

    fetch_data("05_summary")

# %% tags=["parameters", "hide-input"]
# Defaults. A run through papermill (tools/run_book.py) puts the values it ran with in the next cell.
profile = "smoke"  # "smoke" (CI, seconds), "cpu" (the real run on two CPU cores), "paper" (a GPU)
data_root = None  # folder holding the data sets; None: $RESKD_DATA, else the project's data/
seeds = None  # student seeds, e.g. [0, 1, 2]; None: the profile's
retrain = False  # True: train again even where finished runs exist
device = "auto"  # "auto": the GPU when there is one, else the CPU
results_dir = None  # where results/<dataset>.json goes; None: the project's results/
train_missing = True  # False: a run missing from artifacts/ is an error instead of (hours of) training

# %% tags=["remove-cell"]
from reskd.chapter import check_parameters

check_parameters(profile=profile, data_root=data_root, seeds=seeds, retrain=retrain, device=device,
                 results_dir=results_dir, train_missing=train_missing)


# %% [markdown]
# ## The paper's headline numbers
#
# The paper {cite}`li2021reskd` reports that ResKD, with adaptive inference, reaches accuracy competitive with the
# teacher at the following share of the teacher's computational cost. Beside it: the ResKD model the chapter held
# to our target within that share (the one its validation split chose; else its most accurate), and whether it met
# our target (within 1.0 top-1 point of the teacher, and ahead of the equal-cost baselines, a larger KD student and
# plain ensembles of KD students, and of the cascade to the teacher at the same budget, by more than twice the
# standard error over seeds). Our numbers are read **only** from the results files the chapters wrote (`results/*.json`); a data set that was not
# run says so instead of a number.

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from reskd import report, results
from reskd.profiles import PAPER_PCT_TEACHER  # the paper's headline cost, % of the teacher's MACs

pd.set_option("display.precision", 2)
pd.set_option("display.max_colwidth", None)  # the reasons a data set did not run, in full

DISPLAY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny-imagenet": "Tiny-ImageNet", "imagenet": "ImageNet"}
records = {r["dataset"]: r for r in results.load_results(results_dir).values()}
notes: dict[str, str] = {}  # per data set: its data source and the target's verdict in full, below the table


def ours(dataset: str) -> dict:
    """Our best ResKD model within the paper's budget beside the teacher, and whether our target was reached
    (as the chapter recorded it), or why there is no number."""
    record = records.get(dataset)
    if record is None:
        return {"ours: % of teacher": "not run (no results file)"}
    if record["status"] == results.STATUS_NOT_RUN:
        return {"ours: % of teacher": f"not run: {record['reason']}"}
    if record["profile"] == "smoke":  # tiny models trained for seconds: no number of theirs belongs beside the paper's
        return {"ours: % of teacher": "only a smoke run (a pipeline check; its numbers mean nothing)",
                "profile": record["profile"]}
    by_name = {m["name"]: m for m in record["models"]}
    teacher = next(m for m in record["models"] if m["kind"] == "teacher")
    row = {"profile": record["profile"], "teacher top-1 (%)": teacher["top1_mean"]}
    target = (record.get("extra") or {}).get("target")
    if target is None:
        ran_reskd = any(m["kind"].startswith("reskd") for m in record["models"])
        return {"ours: % of teacher": "ResKD ran, no target recorded" if ran_reskd else
                "ResKD not run yet (baselines only)", **row}
    verdict = "reached" if target["reached"] else "not reached"
    notes[dataset] = f"data: {record['data_source']}; target {verdict}" + (
        "" if target["reached"] else f": {target['why']}")
    if "reskd" not in target:
        return {"ours: % of teacher": "no ResKD model within the budget", "our target": verdict, **row}
    m = by_name[target["reskd"]]
    return {"ours: % of teacher": f"{m['pct_teacher']:.2f}", "ResKD model": m["name"], "ResKD top-1 (%)": m["top1_mean"],
            "seeds": len(m["seeds"]), "our target": verdict, **row}


summary = pd.DataFrame([{"data set": DISPLAY[d], "paper: % of teacher": pct, **ours(d)}
                        for d, pct in PAPER_PCT_TEACHER.items()])
if "seeds" in summary:
    summary["seeds"] = summary["seeds"].astype("Int64")  # a count, blank where a data set has no ResKD model
# one column per data set, so that the long cells wrap inside the text column
display(report.for_display(summary.set_index("data set")).T)
display(Markdown("\n".join(f"- **{DISPLAY[d]}**: {note}" for d, note in notes.items())))

# %% [markdown]
# ## Do residual stages pay at equal cost?
#
# Each chapter compares its full ResKD chain with the KD student it starts from and with what the same MACs buy
# without residuals (a larger KD student, a plain ensemble, the cascade to the teacher at each budget). A difference
# counts when it exceeds twice its standard
# error over seeds; the verdict says "one seed" where there is no noise estimate. A data set run only in the smoke
# profile has no row here: its models trained for seconds, and no verdict of theirs means anything.

# %% tags=["hide-input"]
compared = [d for d in PAPER_PCT_TEACHER if d in records and records[d]["profile"] != "smoke"]  # smoke: no verdict
at_cost = pd.DataFrame([{"data set": DISPLAY[d], "profile": records[d]["profile"], **row} for d in compared
                        for row in (records[d].get("extra") or {}).get("at_equal_cost") or []])
if at_cost.empty:
    print("No chapter has recorded the equal-cost comparison yet.")
else:
    columns = ["profile", "ResKD", "ResKD top-1", "versus", "versus top-1", "difference", "std. error", "verdict"]
    display(report.for_display(at_cost.set_index("data set")[columns]))

# %% [markdown]
# ## The best configuration at the paper's budget
#
# At each data set's paper budget (18.04% of the teacher's MACs on CIFAR-10, 53.59% on Tiny-ImageNet), the
# configuration with the best **validation** top-1 among every adaptive chain, chain-to-teacher (the res-students as
# middle exits of the cascade) and cascade its chapter calibrated to that budget (`reskd.report.choose_on_val`; the
# test split chooses nothing), against the equal-cost KD student and the cascade at the same budget: the test
# difference, its standard error over seeds and the verdict at two standard errors. Against the cascade, a
# chain-to-teacher's difference is the paired one its chapter recorded (the same $S_0$ and teacher seed by seed);
# every other difference comes from the seed means and spreads.

# %% tags=["hide-input"]
choice_rows, choice_lines = [], []
for d in compared:
    record, budget = records[d], PAPER_PCT_TEACHER[d]
    if record["status"] == results.STATUS_NOT_RUN:
        continue  # the tables above say why
    best = report.choose_on_val(record["models"], budget)
    if best is None:
        choice_lines.append(f"**{DISPLAY[d]}**: no configuration calibrated to {budget}% with a validation top-1 "
                            "recorded (re-run its chapter)")
        continue
    cascade = next((m for m in record["models"] if m["kind"] == "cascade" and m.get("budget_pct") == budget), None)
    versus = [m for m in record["models"] if m["kind"] == "kd-equal-cost" and "ensemble" not in m["name"]]
    versus += [cascade] if cascade is not None and cascade is not best else []
    paired = {f"{v['regime']} -> teacher ({v['thresholds_mode']} thresholds, {v['budget_pct']:g}% budget)": v
              for v in ((record.get("extra") or {}).get("chain_to_teacher") or {}).get("verdicts", [])}
    parts = []
    for other in versus:
        v = report.unpaired_verdict(best, other)
        how = "seed means"
        if other is cascade and best["name"] in paired:
            p = paired[best["name"]]
            v = {"difference": p["difference"], "std. error": p["std. error"], "verdict": p["verdict"]}
            how = "paired over seeds"
        choice_rows.append({"data set": DISPLAY[d], "budget (% of T)": budget, "best on val": best["name"],
                            "kind": best["kind"], "val top-1": best["val_top1_mean"], "test top-1": best["top1_mean"],
                            "versus": other["name"], "versus top-1": other["top1_mean"], **v, "s.e. from": how})
        se = "n/a" if v["std. error"] is None else f"{v['std. error']:.2f}"
        parts.append(f"{v['difference']:+.2f} points against {other['name']} (s.e. {se}, {how}: {v['verdict']})")
    choice_lines.append(f"**{DISPLAY[d]}** at {budget}%: the best on validation is {best['name']} ({best['kind']}), "
                        f"{best['top1_mean']:.2f}% on test at {best['pct_teacher']:.2f}% of the teacher's MACs; "
                        + ("; ".join(parts) if parts else "it is the cascade itself"))
if choice_rows:
    display(report.for_display(pd.DataFrame(choice_rows).set_index(["data set", "best on val"]), missing="–"))
display(Markdown("\n".join(f"- {line}." for line in choice_lines) if choice_lines else
                 "No chapter outside the smoke profile has recorded configurations at the paper's budget yet."))

# %% [markdown]
# ## Every model we ran
#
# All models of every results file, with their cost (millions of MACs and % of the teacher), test top-1 (mean and
# standard deviation over seeds) and top-1 agreement with the teacher, one table per data set. Each heading names
# the profile that produced its numbers: **smoke** numbers come from tiny models trained for seconds and only show
# that the pipeline runs.

# %% tags=["hide-input"]
every_model = report.results_table(records, datasets=list(PAPER_PCT_TEACHER))
for dataset, table in every_model.groupby("dataset", sort=False):
    if table["kind"].isna().all():  # not run: the row holds the reason
        display(Markdown(f"**{DISPLAY[dataset]}**: {table['model'].iloc[0]}"))
        continue
    display(Markdown(f"**{DISPLAY[dataset]}** (profile `{', '.join(dict.fromkeys(table['profile']))}`)"))
    table = table.assign(**{"± (std)": table["± (std)"].where(table["seeds"] > 1)})  # one seed has no spread
    display(report.for_display(table.drop(columns=["dataset", "profile"]).set_index("model"), missing="–"))

# %% tags=["hide-input"]
smoke = sorted(d for d, r in records.items()
               if r["profile"] == "smoke" and r["status"] != results.STATUS_NOT_RUN and d in PAPER_PCT_TEACHER)
if smoke:
    print("Ran only in the smoke profile (numbers not comparable with the paper): " + ", ".join(smoke))
