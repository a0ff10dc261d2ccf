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
# # Adaptive inference
#
# **The question.** ResKD's student is a sum of stages, so it has an answer after each one: can a rule stop the easy
# images early, so that the chain pays for its res-students only where they change the answer, and does that beat
# what the same average MACs buy otherwise (random exits, the cascade to the teacher, a single wider KD student)?
#
# <!-- answer -->
# *The answer is computed from this page's results at its end; a page executed with `tools/run_book.py` shows it
# here.*
# <!-- /answer -->
#
# ResKD's student is a sum of stages, $Z_K = z_0 + z_1 + \dots + z_K$: the light student $S_0$ and the res-students
# $S_1, \dots, S_K$, each trained on the residual the earlier ones left. Because the sum is built stage by stage, the
# ensemble has an answer after every stage, $Z_k = z_0 + \dots + z_k$, and an easy sample need not pay for the later
# stages. This chapter makes that decision per sample, calibrates it on validation data, holds it against baselines at
# the same average cost, and checks whether the MACs it saves become saved time.
#
# Adaptive inference can only trade what the later stages have to offer: if they rarely change a prediction, every
# calibrated rule stops all samples after $S_0$ and "adaptive" is the KD student. The chapter therefore chooses
# two regimes of the CIFAR chapter's regime map (the ways of building the res-students it compares), on the
# **validation split only**, by one rule: among the regimes trained for every seed of the profile, the **main
# regime** is the one whose res-students raise validation top-1 most over $S_0$ alone (mean over seeds), so that
# adaptive inference has the most to trade, and the **counterexample** is the one whose res-students raise it least.
# The test split chooses nothing.
#
# ```{note}
# A line under *Setup* says which profile produced the outputs stored in this page. The `smoke` profile (tiny
# models trained for seconds, what CI runs) only shows that the chapter runs; the `cpu` profile uses the CIFAR-10
# models of short schedules, the `converged` profile those trained until longer training no longer paid.
# ```
#
# **What is the paper's and what is ours.** The paper {cite}`li2021reskd` proposes a *sample-adaptive* inference
# strategy: for each sample, decide which res-students are unnecessary and skip them, so that the ensemble's cost
# follows the sample's difficulty. Everything that turns that idea into a rule and tests it here is our choice: the
# regimes other than light res-students on the image, the stopping criteria and the learned gate, the calibration of
# thresholds on the validation split against budgets of average MACs (budgeted evaluation as MSDNet
# {cite}`huang2018multiscale` reports it), the baselines (random exits at the same cost, the oracle, the cascade to the
# teacher), and the masked execution whose wall-clock time we measure.

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

    fetch_data("04_adaptive")

# %% tags=["parameters", "hide-input"]
# Defaults. A run through papermill (tools/run_book.py) puts the values it ran with in the next cell.
profile = "smoke"  # "smoke" (CI, seconds), "cpu" (two CPU cores, short schedules), "converged" (CIFAR-10
# trained until longer training no longer pays: tens of hours on two cores), "paper" (a GPU)
data_root = None  # folder holding the data sets; None: $RESKD_DATA, else the project's data/
seeds = None  # student seeds, e.g. [0, 1, 2]; None: the profile's
retrain = False  # True: train again even where finished runs exist
device = "auto"  # "auto": the GPU when there is one, else the CPU
results_dir = None  # where results/adaptive.json goes; None: the project's results/
train_missing = True  # False: a run missing from artifacts/ is an error instead of (hours of) training

# %% tags=["remove-cell"]
from reskd.chapter import check_parameters

check_parameters(profile=profile, data_root=data_root, seeds=seeds, retrain=retrain, device=device,
                 results_dir=results_dir, train_missing=train_missing)

# %% [markdown]
# ## Setup
#
# The models are those of the CIFAR chapter, for the same profile: the teacher and, for every regime this chapter
# runs and every seed of the profile, a ResKD chain ($S_0$, the KD student, plus the regime's res-students), loaded
# from the stored runs (missing ones are trained, unless the run forbids training: then a missing seed is skipped
# and said so). Every stage is run once on the validation and the test split, and the cumulative logits $Z_k$ of
# each stage are kept, so that any stopping rule can be scored without running the networks again. The cascade to
# the teacher ($S_0$, then the teacher itself for the samples a rule sends on) is loaded the same way. The table
# below applies the choice rule above to every regime of the map: validation top-1 of $S_0$ and of all stages, the
# gain, and the share of validation images whose prediction the res-students change.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from reskd import regimes, report, results
from reskd.plots import KIND_STYLES
from reskd.adaptive import (CRITERIA, AdaptiveEnsemble, Cascade, LearnedGate, at_budgets, budget_curves, budget_range,
                            calibrate, calibrate_per_stage, compare_latency, confidence, evaluate_exits, evaluate_policy,
                            exit_fractions_by_class, exit_stages, oracle_exits, speedup_verdict, stage_call_times,
                            trivial_exit)
from reskd.experiment import Experiment, MissingRunError
from reskd.flops import model_cost
from reskd.metrics import correct, top1
from reskd.profiles import PAPER_PCT_TEACHER, get_profile, profile_banner
from reskd.utils import machine_info, model_memory_format

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)

DATASET = "cifar10"
CHAPTER = "04_adaptive"
FALLBACK_REGIMES = ("light-image",)  # a profile naming no adaptive regimes runs the paper's reading alone
config = get_profile(DATASET, profile)
if seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = Experiment(config, data_root=data_root, device=device, retrain=retrain, train_missing=train_missing,
                 progress=False)
teacher = exp.teacher()
teacher_macs = exp.teacher_macs  # counted once per experiment
if config.adaptive_regimes:  # a profile that fixes the chapter's regimes (none of CIFAR's does)
    regime_names, choice = list(config.adaptive_regimes), None
else:  # chosen on val among the map's regimes trained for every seed (reskd.regimes.ADAPTIVE_RULE)
    gains, candidates = regimes.adaptive_candidates(exp, config.regimes or FALLBACK_REGIMES, config.seeds)
    main_name, counter_name, choice = regimes.choose_adaptive(gains, config.seeds)
    regime_names = [main_name] + ([counter_name] if counter_name else [])
MAIN, COUNTER = regime_names[0], regime_names[1:]


def load_seeds(name: str, load) -> dict:
    """``{seed: {"val", "test"}}`` for every seed of the profile whose runs exist (or are trained now)."""
    loaded = {}
    for seed in config.seeds:
        try:
            loaded[seed] = load(seed)
        except MissingRunError:
            print(f"{name}: seed {seed} is not trained (train_missing=False), skipped")
    return loaded


staged = {name: (candidates[name] if choice is not None else
                 load_seeds(name, lambda seed, name=name: regimes.regime_staged(exp, regimes.CIFAR_REGIMES[name], seed)))
          for name in regime_names}
if not staged[MAIN]:
    raise MissingRunError(f"the main regime {MAIN!r} has no trained seed: train it (python -m reskd.cli {DATASET} "
                          f"{config.name} regime:{MAIN} --seeds {config.seeds[0]}) or run with train_missing=True.")
cascaded = load_seeds(regimes.CASCADE, lambda seed: regimes.cascade_staged(exp, seed))
equal_cost = None  # the single KD student about as costly as S0 plus the profile's res-students
if config.equal_cost is not None:
    equal_models = load_seeds("equal-cost KD student",
                              lambda seed: exp.student("kd", arch=config.equal_cost, seed=seed))
    if equal_models:
        equal_cost = {"name": f"KD student {config.equal_cost.label} (equal cost)", "seeds": list(equal_models),
                      "pct_teacher": 100 * model_cost(next(iter(equal_models.values())), exp.input_size).macs
                      / teacher_macs,
                      "test_top1": float(np.mean([top1(*exp.logits(m, "test")) for m in equal_models.values()]))}
first_seed = next(iter(staged[MAIN]))
first = staged[MAIN][first_seed]
teacher_top1 = top1(first["test"].teacher_logits, first["test"].labels)
classes = list(exp.data.test.classes)
display(Markdown(profile_banner(config, exp.data.source)))
if choice is not None:
    role_of = {MAIN: "main regime", **{name: "counterexample" for name in COUNTER}}
    choice_table = (choice.round(2) + 0.0).rename(columns={  # + 0.0: no "-0.0"
        "s0_top1": "S0 val top-1 (%)", "all_top1": "all stages val top-1 (%)", "gain": "gain (points)",
        "changed_pct": "predictions changed (%)"})
    choice_table.insert(0, "chosen as", [role_of.get(name, "") for name in choice_table.index])
    choice_table.index.name = "regime"
    display(report.for_display(choice_table))
    skipped = [name for name in config.regimes if name not in choice.index]
    if skipped:
        print(f"not eligible (not trained for every seed {list(config.seeds)}): {', '.join(skipped)}")
print(f"{first['val'].num_samples:,} validation / {first['test'].num_samples:,} test images; device "
      f"{exp.device.type}; teacher {config.teacher.label}: {teacher_macs / 1e6:.2f} MMACs, test top-1 "
      f"{teacher_top1:.2f}%")
for name in regime_names:
    st = next(iter(staged[name].values()))["test"]
    role = "main regime" if name == MAIN else "counterexample"
    print(f"{role} {regimes.CIFAR_REGIMES[name].label(exp)}; seeds {list(staged[name])}; stage MMACs "
          f"{[round(m / 1e6, 3) for m in st.stage_macs]} (all stages {100 * st.cumulative_macs[-1] / teacher_macs:.1f}%"
          f" of the teacher); seed {next(iter(staged[name]))} test top-1 per stage "
          f"{[round(top1(z, st.labels), 2) for z in st.logits]}")

# %% [markdown]
# ## Why stopping early can work: the student's confidence
#
# The natural measure of how sure $S_0$ is about a sample is its maximum softmax probability
# $c(x) = \max_j \operatorname{softmax}(z_0(x))_j$. On the **validation split** of the main regime (the split
# reserved for calibrating thresholds; the test split is only evaluated), the left panel shows how $c(x)$ is spread
# over the samples $S_0$ gets right and wrong. The right panel cuts the samples into equal-count bins of $c(x)$ and
# compares, in each bin, the accuracy of $S_0$ alone with that of the whole chain (first seed). If the confidence is
# informative, the confident bins are mostly right already and the two curves meet there, while the gap the later
# stages open lies in the unsure bins: the samples worth their MACs. A stopping rule bets on exactly this pattern.

# %%
CONFIDENCE_BINS = 5  # equal-count bins of S0's confidence
val0 = first["val"]
num_stages = val0.num_stages
frame = pd.DataFrame({"confidence": confidence(val0.logits[0], "max_prob").numpy(),
                      "S0": correct(val0.logits[0], val0.labels).numpy(),
                      "all": correct(val0.logits[-1], val0.labels).numpy()})
frame["bin"] = pd.qcut(frame["confidence"], CONFIDENCE_BINS, duplicates="drop")
by_bin = frame.groupby("bin", observed=True)[["confidence", "S0", "all"]].mean()

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
sns.histplot(data=frame.assign(prediction=frame["S0"].map({True: "correct", False: "wrong"})), x="confidence",
             hue="prediction", hue_order=["correct", "wrong"], bins=20, binrange=(0, 1), multiple="stack", ax=left)
left.set_xlabel("max softmax probability of S0")
left.set_ylabel("validation images (count)")
right.plot(by_bin["confidence"], 100 * by_bin["S0"], "o-", label="S0 alone")
right.plot(by_bin["confidence"], 100 * by_bin["all"], "s-", label=f"all {num_stages} stages")
right.set_xlabel("max softmax probability of S0 (bin mean)")
right.set_ylabel("validation top-1 in the bin (%)")
right.legend()
fig.suptitle(f"{exp.data.spec.display_name}, {MAIN}, profile {config.name!r}, seed {first_seed}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The stopping rule and four criteria
#
# After stage $k$ a criterion gives each sample a confidence $c_k(x)$ computed from the combined logits $Z_k(x)$,
# and the sample stops at the first stage whose confidence reaches that stage's threshold:
#
# $$
# e(x) = \min\{k : c_k(x) \ge \tau_k\}, \qquad \tau_K = -\infty, \qquad
# \hat y(x) = \arg\max_j Z_{e(x)}(x)_j .
# $$
#
# A sample pays for the stages it ran, $M(x) = \sum_{j \le e(x)} m_j$ with $m_j$ the MACs of stage $j$, and the
# cost of a rule is the average $\bar M = \frac1N \sum_x M(x)$, the unit of budgeted classification
# {cite}`huang2018multiscale`. With $p = \operatorname{softmax}(Z_k(x))$ and $p_{(1)} \ge p_{(2)}$ its two largest
# entries, the four criteria are
#
# * **max. probability**: $c_k = p_{(1)}$;
# * **margin**: $c_k = p_{(1)} - p_{(2)}$;
# * **minus entropy**: $c_k = \sum_j p_j \log p_j$;
# * **learned gate**: $c_k = 1 - \sigma(w_k^\top \phi(Z_k) + b_k)$, a logistic regression per stage on the three features
#   $\phi = (p_{(1)},\ p_{(1)} - p_{(2)},\ \sum_j p_j \log p_j)$, fitted on the validation split to predict whether
#   the later stages change the prediction ($\arg\max Z_k \ne \arg\max Z_K$). It is trained for *whether the rest
#   of the chain would disagree*, not merely for how peaked $p$ is, and its weights differ per stage.
#
# One threshold is shared by all stages (our choice: a one-parameter family, cheap to calibrate and hard to overfit).
# The gate is fitted once per regime and seed on the validation split, the same split that calibrates the thresholds.
#
# Three baselines frame the criteria. **Random exits** send a random share of the samples on, so that the average
# MACs equal the budget: a criterion is worth something only above them. The
# **oracle** stops each sample at the first stage whose prediction equals the full chain's (or the teacher's): the
# best any rule that only decides *when to stop* could do. It reads the later stages' outputs, so it is an upper
# bound, not a deployable rule. And the **cascade to the teacher** ($S_0$, then the teacher itself for the samples
# the max.-probability criterion sends on), which needs no residual training at all.

# %%
gates = {name: {seed: LearnedGate.fit(st["val"]) for seed, st in by_seed.items()} for name, by_seed in staged.items()}

# %% [markdown]
# ## Budgeted evaluation
#
# For a sweep of budgets of average MACs per image, from $S_0$'s cost to the full chain's (in % of the teacher's
# MACs), we calibrate each criterion's threshold on the **validation** split (the most
# accurate rule whose validation average MACs stay within the budget) and evaluates it once on the **test** split;
# random exits are drawn at the same average MACs. The cascade to the teacher is calibrated at the same budgets.
# Each figure (one per regime) plots test top-1 against the test MACs each rule really paid, as means over the seeds,
# with the book's marker and colour for each kind of model: the KD student $S_0$ (circle), the static chains
# $S_0..S_k$ (triangles), the adaptive rules (one line style per criterion), the cascade to the teacher (diamonds),
# the single KD student about as costly as $S_0$ plus the profile's res-students (square), the oracles (red, not
# deployable), and the teacher as a dotted line or, when it lies far above the curves, named at the top of the
# frame.

# %% tags=["hide-input"]
BUDGET_POINTS = 4 if config.name == "smoke" else 10  # budgets per regime, S0's cost to the full chain's
METHODS = [*CRITERIA, "random"]
CRITERION_NAMES = {"max_prob": "max. probability", "margin": "margin", "neg_entropy": "minus entropy",
                   "gate": "learned gate"}


def regime_tables(name: str) -> dict[str, pd.DataFrame]:
    """The budget curves of every criterion, random exits and the cascade, the static stages and the oracles."""
    budgets = budget_range(next(iter(staged[name].values()))["val"], teacher_macs, points=BUDGET_POINTS)
    curves, cascade_rows, static_rows, oracle_rows = [], [], [], []
    for seed, st in staged[name].items():
        curves.append(budget_curves(st["val"], st["test"], budgets, teacher_macs, criteria=tuple(CRITERIA),
                                    gate=gates[name][seed], seed=seed).assign(seed=seed))
        static_rows.append(regimes.static_rows(st, teacher_macs).assign(seed=seed, stage=range(st["test"].num_stages)))
        test = st["test"]
        for reference, ref in (("full chain", None), ("teacher", test.teacher_logits.argmax(1))):
            oracle_rows.append({"seed": seed, "oracle": f"oracle ({reference})",
                                **evaluate_exits(test, oracle_exits(test, ref), teacher_macs=teacher_macs)})
        if seed in cascaded:
            cascade_rows.append(at_budgets(cascaded[seed]["val"], cascaded[seed]["test"], budgets, teacher_macs)
                                .rename(columns={"criterion": "method"}).assign(method="cascade", seed=seed))
    return {"budgets": budgets, "curves": pd.concat(curves + cascade_rows, ignore_index=True),
            "static": pd.concat(static_rows, ignore_index=True), "oracle": pd.DataFrame(oracle_rows)}


tables = {name: regime_tables(name) for name in regime_names}


def plot_budgets(name: str, ax) -> None:
    t = tables[name]
    means = t["curves"].groupby(["method", "budget_pct"], sort=False)[["test_pct_teacher", "test_top1"]].mean()
    adaptive = KIND_STYLES["reskd-adaptive"]  # one colour and marker per kind of model, as on every page
    styles = {"random": dict(color="0.5", ls="--", marker="x", label="random exits"),
              "cascade": KIND_STYLES["cascade"].line(label="cascade S0 -> teacher (max. probability)")}
    for method, ls in zip(CRITERIA, ("-", "--", ":", "-.")):
        styles[method] = adaptive.line(ls=ls, label=f"ResKD, adaptive: {CRITERION_NAMES.get(method, method)}")
    for method in [*METHODS, "cascade"]:
        if method in means.index.get_level_values(0):
            curve = means.loc[method]
            ax.plot(curve["test_pct_teacher"], curve["test_top1"], lw=1.3, **{"markersize": 5, **styles[method]})
    static = t["static"].groupby("stage")[["test_pct_teacher", "test_top1"]].mean()
    for k, row in static.iterrows():
        style = KIND_STYLES["kd" if k == 0 else "reskd-stage"]
        ax.scatter(row["test_pct_teacher"], row["test_top1"], s=60, zorder=3,
                   **style.scatter(label=style.label if k <= 1 else None))
        ax.annotate("S0 = KD student" if k == 0 else f"S0..S{k}", (row["test_pct_teacher"], row["test_top1"]),
                    textcoords="offset points", xytext=(5, -13), fontsize=9)
    if equal_cost is not None:
        ax.scatter(equal_cost["pct_teacher"], equal_cost["test_top1"], s=60, zorder=3,
                   **KIND_STYLES["kd-equal-cost"].scatter(label=f"{equal_cost['name']}, {len(equal_cost['seeds'])} "
                                                                "seed(s)"))
    oracle = t["oracle"].groupby("oracle", sort=False)[["pct_teacher", "top1"]].mean()
    for (label, row), marker in zip(oracle.iterrows(), ("h", "p")):
        ax.scatter(row["pct_teacher"], row["top1"], marker=marker, s=110, color="tab:red", zorder=4,
                   label=f"{label}, not deployable")
    shown = pd.concat([means["test_top1"], static["test_top1"], oracle["top1"],
                       pd.Series([equal_cost["test_top1"]] if equal_cost else [], dtype=float)])
    pad = 0.1 * (shown.max() - shown.min()) + 0.1
    teacher_name = f"teacher {config.teacher.label}: {teacher_top1:.2f}% (100% of its MACs)"
    if teacher_top1 > shown.max() + 4 * pad:  # a line that far up would squash the curves: name it instead
        ax.set_ylim(shown.min() - pad, shown.max() + pad)
        ax.text(0.02, 0.97, f"↑ {teacher_name}, above this frame", transform=ax.transAxes, va="top", fontsize=8,
                color="0.3")
    else:
        ax.axhline(teacher_top1, color=KIND_STYLES["teacher"].color, ls=":", label=teacher_name)
    role = "main regime" if name == MAIN else "counterexample"
    ax.set_title(f"{role}: {name} ({len(staged[name])} seed(s); thresholds from val)", fontsize=11)
    ax.set_xlabel("average MACs per test image (% of the teacher's)")
    ax.set_ylabel("test top-1 (%)")


for name in regime_names:
    fig, ax = plt.subplots(figsize=(8.5, 5.6))
    plot_budgets(name, ax)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)  # below: the plot keeps its width
    fig.tight_layout()
    plt.show()

# %% [markdown]
# What the figures say, computed from the curves: at each regime's middle budget, the criterion best on test (a
# report: every threshold was chosen on validation), the random baseline and the cascade at the same budget, and the
# oracle's bound.

# %%
def budget_summary(name: str) -> str:
    t = tables[name]
    means = t["curves"].groupby(["method", "budget_pct"], sort=False)[["test_top1", "test_pct_teacher"]].mean()
    mid = t["budgets"][len(t["budgets"]) // 2]
    at = means.xs(mid, level="budget_pct")
    criteria_at = at.loc[[c for c in CRITERIA if c in at.index]]
    best = criteria_at["test_top1"].idxmax()
    text = (f"**{name}** at {mid:.2f}% of the teacher's MACs: best criterion on test {CRITERION_NAMES[best]} "
            f"{at.loc[best, 'test_top1']:.2f}% (spread over criteria "
            f"{criteria_at['test_top1'].max() - criteria_at['test_top1'].min():.2f} points), random exits "
            f"{at.loc['random', 'test_top1']:.2f}%")
    if "cascade" in at.index:
        text += f", cascade to the teacher {at.loc['cascade', 'test_top1']:.2f}%"
    oracle = t["oracle"].groupby("oracle", sort=False)[["top1", "pct_teacher"]].mean().iloc[0]
    static = t["static"].groupby("stage")["test_top1"].mean()
    return (text + f"; the full chain {static.iloc[-1]:.2f}%, S0 {static.iloc[0]:.2f}%; the oracle reaches the full "
            f"chain's {oracle['top1']:.2f}% at {oracle['pct_teacher']:.2f}% of the teacher.")


display(Markdown("\n\n".join(budget_summary(name) for name in regime_names)))

# %% [markdown]
# ## Calibration gap
#
# A threshold chosen on validation data meets its budget on validation by construction; on the test split both the
# accuracy and the cost move. The table sets the two side by side at the same thresholds (means over seeds):
# validation and test top-1, validation and test average MACs, and test minus validation, for the main regime's
# max.-probability rule and the cascade; the line below it the largest gaps over every
# criterion and regime.

# %%
gaps = {name: report.calibration_gap(tables[name]["curves"]) for name in regime_names}
main_gap = gaps[MAIN][gaps[MAIN]["method"].isin(["max_prob", "cascade"])].set_index(["method", "budget_pct"])
main_gap = main_gap.rename(index={**CRITERION_NAMES, "cascade": "cascade S0 -> teacher"}, level="method")
display(report.for_display(report.readable(main_gap.round(2) + 0.0)))  # + 0.0: no "-0.0"
for name, gap in gaps.items():
    calibrated = gap[gap["method"] != "random"]
    print(f"{name}: largest |test - val| over criteria and budgets: {calibrated['top1_gap'].abs().max():.2f} points of "
          f"top-1, {calibrated['pct_teacher_gap'].abs().max():.2f} points of the teacher's MACs")

# %% [markdown]
# ## Where the samples stop
#
# One operating point, chosen before the test split is seen: the budget of the paper's CIFAR-10 result (its cost of
# ResKD in % of the teacher's MACs) when it lies within the main regime's range, else the middle budget; at it, the
# criterion with the best **validation** top-1. The figure gives the share of test images that stop after each
# stage, per regime.

# %% tags=["hide-input"]
lo, hi = tables[MAIN]["budgets"][0], tables[MAIN]["budgets"][-1]
paper_budget = PAPER_PCT_TEACHER[DATASET]
middle_budget = tables[MAIN]["budgets"][len(tables[MAIN]["budgets"]) // 2]
OPERATING_BUDGET = paper_budget if lo <= paper_budget <= hi else middle_budget


def operating_policy(name: str) -> tuple[str, dict]:
    """The criterion with the best mean validation top-1 at ``OPERATING_BUDGET``, and its policy per seed."""
    target = OPERATING_BUDGET / 100 * teacher_macs
    policies = {c: {seed: calibrate(st["val"], c, target_macs=target, gate=gates[name][seed] if c == "gate" else None)
                    for seed, st in staged[name].items()} for c in CRITERIA}
    val_top1 = {c: np.mean([evaluate_exits(st["val"], exit_stages(st["val"], policies[c][seed]))["top1"]
                            for seed, st in staged[name].items()]) for c in CRITERIA}
    chosen = max(val_top1, key=val_top1.get)
    return chosen, policies[chosen]


operating = {name: operating_policy(name) for name in regime_names}
test_exits = {name: {seed: exit_stages(staged[name][seed]["test"], policy)
                     for seed, policy in operating[name][1].items()} for name in regime_names}
per_stage = {name: torch.stack([torch.bincount(e, minlength=staged[name][s]["test"].num_stages).double() / len(e)
                                for s, e in test_exits[name].items()]).mean(0).tolist() for name in regime_names}
per_class = torch.stack([exit_fractions_by_class(e, staged[MAIN][s]["test"].labels, num_stages, len(classes))
                         for s, e in test_exits[MAIN].items()]).nanmean(0)
for name in regime_names:
    chosen, policies = operating[name]
    fractions = per_stage[name]
    stage = trivial_exit(torch.cat(list(test_exits[name].values())))
    status = (f"TRIVIAL: every test sample exits after S{stage}, so this 'adaptive' rule is the static model "
              f"S0..S{stage}" if stage is not None else "not trivial")
    print(f"{name} at {OPERATING_BUDGET:.2f}% of the teacher: criterion {chosen!r} (best val top-1), thresholds "
          f"{[[round(t, 4) for t in p.thresholds] for p in policies.values()]}; test exits "
          + ", ".join(f"S{k} {100 * f:.1f}%" for k, f in enumerate(fractions)) + f"; {status}")

fig, ax = plt.subplots(figsize=(7, 4))
width = 0.8 / len(regime_names)
most_stages = max(len(f) for f in per_stage.values())
for i, (name, fractions) in enumerate(per_stage.items()):
    role = "main regime" if name == MAIN else "counterexample"
    ax.bar(np.arange(len(fractions)) + i * width, 100 * np.array(fractions), width, label=f"{role}: {name}")
ax.set_xticks(np.arange(most_stages) + width * (len(regime_names) - 1) / 2)
ax.set_xticklabels([f"S{k}" for k in range(most_stages)], fontsize=11)
ax.set_xlabel("stopped after", fontsize=11)
ax.set_ylabel("test images (%)", fontsize=11)
ax.legend(fontsize=10)
ax.set_title(f"where the test images stop at {OPERATING_BUDGET:.2f}% of the teacher's MACs (thresholds from val)",
             fontsize=11)
fig.tight_layout()
plt.show()

# %% [markdown]
# The same for the main regime, class by class: the share of each class's test images that stops after each stage
# (means over seeds).

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(2.2 + 1.3 * num_stages, 6))
sns.heatmap(pd.DataFrame(100 * per_class.numpy(), index=classes, columns=[f"stops after S{k}" for k in
                                                                          range(num_stages)]),
            annot=True, fmt=".0f", annot_kws={"fontsize": 12}, cmap="viridis", vmin=0, vmax=100,
            cbar_kws={"label": "% of the class's test images"}, ax=ax)
ax.tick_params(labelsize=11)
ax.set_title(f"{MAIN}: where each class stops\n(rule: {CRITERION_NAMES.get(operating[MAIN][0], operating[MAIN][0])})",
             fontsize=11)
fig.tight_layout()
plt.show()

# %% [markdown]
# Test images of the main regime (first seed), drawn at random with a fixed seed: above, images that needed every
# stage; below, images that stopped after $S_0$. Each carries its label, and a tick or, when the prediction at its
# exit is wrong, that prediction.

# %% tags=["hide-input"]
GRID_IMAGES = 5  # images per row
exits0, test0 = test_exits[MAIN][first_seed], staged[MAIN][first_seed]["test"]
for stage, title in ((num_stages - 1, "needed every stage"), (0, "stopped after S0")):
    fig, axes = plt.subplots(1, GRID_IMAGES, figsize=(2.1 * GRID_IMAGES, 3.1))
    pool = (exits0 == stage).nonzero().flatten()  # the test split is stored class by class: draw, with a fixed seed
    chosen_images = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(first_seed))][:GRID_IMAGES]
    for j, ax in enumerate(axes):
        ax.axis("off")
        if j < len(chosen_images):
            i = int(chosen_images[j])
            pred = int(test0.logits[stage, i].argmax())
            ax.imshow(exp.data.test.images[i].permute(1, 2, 0).numpy())  # stored as uint8 RGB: no un-normalizing
            ax.set_title(f"{classes[test0.labels[i]]}\n{'✓' if pred == test0.labels[i] else '✗ ' + classes[pred]}",
                         fontsize=12)
    fig.suptitle(f"{title} ({int((exits0 == stage).sum()):,} of {len(exits0):,} test images)", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # room for the title above the images' own
    plt.show()

# %% [markdown]
# ## Does it save time?
#
# MACs are a proxy. We execute the rule for real (masked execution): it runs $S_0$ on the batch, and stage $k$ only
# on the samples still active (gather, run, scatter back). Any cascade is executed the same way: the two-tier
# cascade ($S_0$, then the teacher on the samples sent on) and the **chain-to-teacher** of the CIFAR chapter ($S_0$,
# then $S_0 + S_1$ on the samples $S_0$ is unsure of, then the teacher on those still unsure; per-stage thresholds
# calibrated on val to the same budget). We time, on the chapter's device, the main regime's operating-point rule
# (masked execution) against running every stage, the teacher, the cascade and the chain-to-teacher at the same
# budget (first seed): one image at a time (latency, ms per image) and in one large batch (throughput, images per
# second). The models are timed in rotation (so drift in the machine's load hits them alike), and the median pass is
# kept; at batch 1 that is the mean over the images, each paying for its own exit.
#
# The comparison that matters is the **realized speedup** set against the speedup the average MACs promise on the
# same images, for masked execution over all stages and for the cascade over the teacher:
#
# $$
# \frac{t_{\text{all stages}} / t_{\text{adaptive}}}{M_{\text{all stages}} / \bar M_{\text{adaptive}}} .
# $$
#
# The project's target is at least 0.8. It is judged only for a rule whose exits are not all at one stage: a rule
# that stops every sample after $S_0$ is the KD student, and its "speedup" measures a smaller static model, not
# adaptive inference. Two effects pull the ratio away from 1: fixed
# costs per stage call (Python, the decision, the gather and scatter) lower it, and a small network's time is not
# proportional to its MACs, which moves it either way. The second table measures both: each stage alone, and the
# decision step alone. Timings vary from run to run (the stored ones are from one run on a shared
# machine).

# %%
LATENCY_IMAGES = 1000  # test images in the large batch (fewer when the test split is smaller)
BATCH1_IMAGES = 50 if config.name == "smoke" else 200  # images timed one at a time
REPEATS = 2 if config.name == "smoke" else 5  # timed passes (the median is kept)
TARGET_RATIO = 0.8  # the project's target for realized / MACs speedup

main_regime = regimes.CIFAR_REGIMES[MAIN]
ensemble = main_regime.runs(exp).ensemble(list(main_regime.stages), first_seed).to(exp.device).eval()
adaptive = AdaptiveEnsemble(ensemble, operating[MAIN][1][first_seed]).to(exp.device).eval()
teacher = teacher.to(exp.device).eval()
models = {"teacher": teacher, "all stages": ensemble, "adaptive (masked)": adaptive}
cum = torch.tensor(first["test"].cumulative_macs, dtype=torch.float64)
if first_seed in cascaded:
    cascade_policy = calibrate(cascaded[first_seed]["val"], "max_prob",
                               target_macs=OPERATING_BUDGET / 100 * teacher_macs)
    models["cascade"] = Cascade(ensemble.stages[0], teacher, cascade_policy).to(exp.device).eval()
    cascade_cum = torch.tensor(cascaded[first_seed]["test"].cumulative_macs, dtype=torch.float64)
# the chain-to-teacher: the main regime's chain, then the teacher (reskd.adaptive.cascade), thresholds from val
chain_t = regimes.chain_to_teacher_staged(exp, main_regime, first_seed, chain=first)
chain_policy = calibrate_per_stage(chain_t["val"], "max_prob", target_macs=OPERATING_BUDGET / 100 * teacher_macs)
models["chain-to-teacher"] = Cascade(ensemble, teacher, chain_policy).to(exp.device).eval()
chain_cum = torch.tensor(chain_t["test"].cumulative_macs, dtype=torch.float64)
chain_point = {f"{split}_{k}": v for split in ("val", "test")
               for k, v in evaluate_policy(chain_t[split], chain_policy, teacher_macs=teacher_macs).items()}
print(f"chain-to-teacher at {OPERATING_BUDGET:.2f}%: thresholds {[round(t, 4) for t in chain_policy.thresholds]}; "
      f"val top-1 {chain_point['val_top1']:.2f}% at {chain_point['val_pct_teacher']:.2f}%, test "
      f"{chain_point['test_top1']:.2f}% at {chain_point['test_pct_teacher']:.2f}%; test exits "
      + ", ".join(f"{name} {100 * chain_point[f'test_exit_frac_{k}']:.1f}%"
                  for k, name in enumerate(["S0"] + [f"S0..S{k}" for k in range(1, chain_t["test"].num_stages - 1)]
                                           + ["T"])))
batches = []
for x, _, _ in exp.eval_loader("test"):
    batches.append(x)
    if sum(len(b) for b in batches) >= LATENCY_IMAGES:
        break
images = torch.cat(batches)[:LATENCY_IMAGES].contiguous(memory_format=model_memory_format(ensemble.stages[0]))
with torch.inference_mode():
    adaptive(images)
    exits = {"adaptive (masked)": adaptive.last_exits.cpu()}
    if "cascade" in models:
        models["cascade"](images)
        exits["cascade"] = models["cascade"].last_exits.cpu()
    models["chain-to-teacher"](images)
    exits["chain-to-teacher"] = models["chain-to-teacher"].last_exits.cpu()
settings = {"batch 1": (images[:BATCH1_IMAGES], 1), f"batch {len(images)}": (images, len(images))}
print(f"masked execution: {adaptive.policy.criterion}, thresholds {[round(t, 4) for t in adaptive.policy.thresholds]}"
      + (f"; cascade: max_prob, threshold {cascade_policy.thresholds[0]:.4f}" if "cascade" in models else "")
      + f"; timing {BATCH1_IMAGES} images one at a time and {len(images)} in one batch, {REPEATS} timed passes each")

# %% tags=["hide-input", "nbval-ignore-output"]
comparisons = {"adaptive (masked)": ("all stages", cum), "cascade": ("teacher", None),
               "chain-to-teacher": ("teacher", None)}
timing_rows, speedups = [], {}
for setting, (x, batch_size) in settings.items():
    seconds = compare_latency(models, x, batch_size=batch_size, repeats=REPEATS)
    row = {"setting": setting, "images": len(x), "batch size": batch_size}
    row.update({f"{name} (ms/image)": 1e3 * s for name, s in seconds.items()})
    row.update({f"{name} (images/s)": 1 / s for name, s in seconds.items()})
    for name, (reference, macs) in comparisons.items():
        if name not in models:
            continue
        e = exits[name][:len(x)]
        if name == "cascade":
            promised = teacher_macs / cascade_cum[e].mean().item()
        elif name == "chain-to-teacher":
            promised = teacher_macs / chain_cum[e].mean().item()
        else:
            promised = macs[-1].item() / macs[e].mean().item()
        verdict = speedup_verdict(e, seconds[reference] / seconds[name], promised, target=TARGET_RATIO)
        speedups[f"{name} vs {reference}, {setting}"] = {
            "ratio": verdict["ratio"], "realized": seconds[reference] / seconds[name], "macs_speedup": promised,
            "trivial": verdict["trivial"], "meets_target": verdict["meets"], "target": TARGET_RATIO,
            **({"reason": verdict["verdict"]} if verdict["trivial"] else {})}
        print(f"{setting}, {name} vs {reference}: {verdict['verdict']}")
    if "cascade" in models:  # the chain-to-teacher against the two-tier cascade, on the same images
        e, ec = exits["chain-to-teacher"][:len(x)], exits["cascade"][:len(x)]
        realized = seconds["cascade"] / seconds["chain-to-teacher"]
        promised = cascade_cum[ec].mean().item() / chain_cum[e].mean().item()
        speedups[f"chain-to-teacher vs cascade, {setting}"] = {
            "ratio": realized / promised, "realized": realized, "macs_speedup": promised, "trivial": False,
            "meets_target": None, "target": None}
        print(f"{setting}, chain-to-teacher vs cascade: {realized:.2f}x the cascade's speed for {promised:.2f}x its "
              f"mean MACs")
    timing_rows.append(row)
timing = pd.DataFrame(timing_rows).set_index("setting")
for name in COUNTER:  # the counterexample's rule is judged without timing it when it is trivial
    e = torch.cat(list(test_exits[name].values()))
    if trivial_exit(e) is not None:
        verdict = speedup_verdict(e, 1.0, 1.0, target=TARGET_RATIO)
        speedups[f"{name} (adaptive, not timed)"] = {"ratio": None, "trivial": True, "target": TARGET_RATIO,
                                                      "meets_target": None, "reason": verdict["verdict"]}
        print(f"{name}: {verdict['verdict']}")
shown = report.for_display(timing.T, digits=3)
shown.loc["images"], shown.loc["batch size"] = timing["images"].astype(int), timing["batch size"].astype(int)
shown

# %% [markdown]
# Where masked execution's time goes: each stage called alone on the same images, and the decision step after $S_0$
# (confidence, threshold, gather and scatter) alone, in ms per image, against each stage's share of the MACs.

# %% tags=["hide-input", "nbval-ignore-output"]
pieces = {setting: stage_call_times(ensemble, adaptive.policy, x, batch_size=b, repeats=REPEATS)
          for setting, (x, b) in settings.items()}
stage_macs = first["test"].stage_macs
breakdown = pd.DataFrame({setting: {name: 1e3 * s for name, s in times.items()} for setting, times in pieces.items()})
breakdown["MACs (% of S0's)"] = [100 * stage_macs[k] / stage_macs[0] for k in range(num_stages)] + [None]
for setting, times in pieces.items():
    later = sum(times[f"S{k}"] for k in range(1, num_stages))
    print(f"{setting}: the later stages take {100 * later / times['S0']:.0f}% of S0's time for "
          f"{100 * sum(stage_macs[1:]) / stage_macs[0]:.0f}% of its MACs; the decision step "
          f"{100 * times['decision'] / times['S0']:.0f}% of S0's time")
    if "cascade" in models:
        teacher_time = 1e-3 * timing.loc[setting, "teacher (ms/image)"]
        print(f"{setting}: the teacher takes {teacher_time / times['S0']:.1f}x S0's time for "
              f"{teacher_macs / stage_macs[0]:.1f}x its MACs")
    # what the chain-to-teacher's exits would cost if each sample paid the measured time of the stages it ran
    e = exits["chain-to-teacher"][:len(settings[setting][0])].double()
    last = chain_t["test"].num_stages - 1
    stage_times = [times[f"S{k}"] for k in range(last)] + [1e-3 * timing.loc[setting, "teacher (ms/image)"]]
    ran = torch.stack([(e >= k).double().mean() for k in range(last + 1)])  # the share that ran each stage
    from_stages = float(sum(ran[k] * stage_times[k] for k in range(last + 1)) + ran[1] * times["decision"])
    measured = 1e-3 * timing.loc[setting, "chain-to-teacher (ms/image)"]
    teacher_time = stage_times[-1]
    print(f"{setting}, chain-to-teacher: the teacher's time over the time its exits' stages take (each stage's "
          f"time alone, weighted by the share that ran it, plus one decision step) is "
          f"{teacher_time / from_stages:.2f}x, over the measured time {teacher_time / measured:.2f}x, against "
          f"{teacher_macs / chain_cum[e.long()].mean().item():.2f}x in MACs; the stages alone take "
          f"{100 * from_stages / measured:.0f}% of the measured time")
short = [k for k, v in speedups.items() if v["ratio"] is not None and v.get("target") and v["ratio"] < TARGET_RATIO]
if short:
    print("below the target: " + "; ".join(short) + ". A skipped stage saves its time, not its MACs: where a stage "
          "(or the teacher) takes a smaller share of the time than of the MACs (lines above), skipping it saves less "
          "than promised, and S0 and the decision step are paid by every sample.")
report.for_display(breakdown, digits=3)

# %% [markdown]
# ## Results file
#
# The chapter's measurements go to its results file, which the summary chapter reads: how the regimes were chosen
# (the validation gains of every eligible regime), per regime (main, counterexample) the static stages, the budget
# curves of every criterion and of random exits (per seed, val and test), the cascade at the same budgets, the
# oracles, the calibration gap and the exit fractions per stage and per class at the operating point; the wall-clock
# timings (latency and throughput per method, with the machine) and the realized speedup over the MACs speedup (none,
# with the reason, for a rule that stops every image at one stage).

# %%
regime_records = {}
for name in regime_names:
    fractions = per_stage[name]
    entry = {"label": regimes.CIFAR_REGIMES[name].label(exp), "role": "main" if name == MAIN else "counterexample",
             "seeds": list(staged[name]), "stage_macs": next(iter(staged[name].values()))["test"].stage_macs,
             "static": tables[name]["static"], "budget_curves": tables[name]["curves"],
             "oracle": tables[name]["oracle"], "calibration_gap": gaps[name],
             "exit_fractions": {"budget_pct": OPERATING_BUDGET, "criterion": operating[name][0],
                                "per_stage": [float(f) for f in fractions],
                                "trivial": trivial_exit(torch.cat(list(test_exits[name].values()))) is not None}}
    if name == MAIN:
        entry["exit_fractions"]["per_class"] = {c: per_class[i].tolist() for i, c in enumerate(classes)}
    regime_records[name] = entry
wallclock = {**machine_info(exp.device), "precision": exp.inference_precision, "repeats": REPEATS, "regime": MAIN,
             "seed": first_seed,
             "settings": {setting: {"images": int(row["images"]), "batch_size": int(row["batch size"]),
                                    "latency_ms_per_image": {m: row[f"{m} (ms/image)"] for m in models},
                                    "throughput_images_per_s": {m: row[f"{m} (images/s)"] for m in models},
                                    "stage_call_ms_per_image": {k: 1e3 * v for k, v in pieces[setting].items()}}
                          for setting, row in timing.iterrows()}}
analysis = report.adaptive_analysis(
    teacher_macs=teacher_macs, teacher_top1=teacher_top1, regimes=regime_records, wallclock=wallclock,
    speedup_realized_over_macs=speedups, baselines={"kd_equal_cost": equal_cost},
    operating_point={"budget_pct": OPERATING_BUDGET, "paper_budget_pct": paper_budget,
                     "regime_choice": None if choice is None else {
                         "rule": regimes.ADAPTIVE_RULE, "split": "val", "main": MAIN, "counterexamples": COUNTER,
                         "val": {name: {k: float(v) for k, v in row.items()} for name, row in choice.iterrows()}},
                     "criteria": {name: operating[name][0] for name in regime_names},
                     "chain_to_teacher": {"regime": MAIN, "seed": first_seed, "criterion": "max_prob",
                                          "thresholds": list(chain_policy.thresholds),
                                          "stage_macs": chain_t["test"].stage_macs, **chain_point}})
path = results.write_analysis("adaptive", CHAPTER, DATASET, exp.data.source, config.name, exp.device.type, analysis,
                              root=results_dir)
# (the results file is written; the summary chapter reads it)

# %% tags=["remove-cell"]
# The chapter's answer, glued into its opening: computed from the results above at the operating point (test split,
# means over seeds; every threshold and both regimes were chosen on val).
from myst_nb import glue


def at_operating_point(name: str) -> dict[str, float]:
    """Test top-1 and MACs (% of the teacher's) of regime ``name``'s operating-point rule, S0 and the full chain, and
    of the cascade to the teacher at the same budget, means over seeds."""
    runs = [evaluate_exits(staged[name][seed]["test"], e, teacher_macs=teacher_macs)
            for seed, e in test_exits[name].items()]
    static = tables[name]["static"].groupby("stage")["test_top1"].mean()
    out = {"top1": np.mean([r["top1"] for r in runs]), "pct": np.mean([r["pct_teacher"] for r in runs]),
           "s0": static.iloc[0], "full": static.iloc[-1],
           "trivial": trivial_exit(torch.cat(list(test_exits[name].values())))}
    cascade_runs = [at_budgets(cascaded[seed]["val"], cascaded[seed]["test"], [OPERATING_BUDGET], teacher_macs).iloc[0]
                    for seed in staged[name] if seed in cascaded]
    if cascade_runs:
        out["cascade"] = np.mean([r["test_top1"] for r in cascade_runs])
        out["cascade_pct"] = np.mean([r["test_pct_teacher"] for r in cascade_runs])
    return out


def versus(a: float, b: float) -> str:
    d = a - b
    return f"{abs(d):.2f} points {'above' if d > 0 else 'below'}" if round(abs(d), 2) > 0 else "level with"


points = {name: at_operating_point(name) for name in regime_names}
m = points[MAIN]
how_chosen = ("" if choice is None else f", the regime whose res-students raise validation top-1 most over $S_0$ "
              f"({choice.loc[MAIN, 'gain'] + 0.0:+.2f} points, mean over {len(config.seeds)} seed(s))")
answer = (f"**The answer** ({exp.data.spec.display_name}, `{config.name}` profile). On the main regime, {MAIN}"
          f"{how_chosen}, the rule chosen on validation at {OPERATING_BUDGET:.2f}% of the teacher's MACs "
          f"({CRITERION_NAMES.get(operating[MAIN][0], operating[MAIN][0])}) reaches {m['top1']:.2f}% test top-1 at "
          f"{m['pct']:.2f}%, against {m['s0']:.2f}% for $S_0$ alone and {m['full']:.2f}% for the full chain")
if "cascade" in m:
    answer += (f"; that is {versus(m['top1'], m['cascade'])} the cascade to the teacher at the same budget "
               f"({m['cascade']:.2f}%)")
if equal_cost is not None:
    answer += (f", and {versus(m['top1'], equal_cost['test_top1'])} the single KD student of about the chain's cost "
               f"({equal_cost['test_top1']:.2f}% at {equal_cost['pct_teacher']:.2f}%)")
answer += "."
for name in COUNTER:
    c = points[name]
    gain = "" if choice is None else f" ({choice.loc[name, 'gain'] + 0.0:+.2f} points on validation)"
    answer += (f" Where the res-students change little, as in {name}{gain}, adaptive inference has little to trade: "
               + (f"the calibrated rule stops every test image after $S_{{{c['trivial']}}}$."
                  if c["trivial"] is not None else
                  f"its rule reaches {c['top1']:.2f}% at {c['pct']:.2f}%, against {c['s0']:.2f}% for $S_0$."))
judged = ((results.load_results(results_dir).get(DATASET) or {}).get("extra") or {}).get("target") or {}
if judged.get("reskd"):  # the model chapter 2 holds to the paper's claim, by the book's one rule
    judged_model = next((m for m in results.load_results(results_dir)[DATASET]["models"]
                         if m["name"] == judged["reskd"]), None)
    answer += (f" The ResKD model the book judges at {judged['max_pct_teacher']:g}% of the teacher's MACs (chapter 2, "
               f"by its one rule on validation) is {judged['reskd']}"
               + (f", {judged_model['top1_mean']:.2f}% at {judged_model['pct_teacher']:.2f}%" if judged_model else "")
               + "; this chapter's main regime is chosen for another question, where an exit rule has something to "
               "decide.")
glue("chapter_answer", Markdown(answer), display=False)
display(Markdown(answer))

# %% [markdown]
# ## Conclusion

# %% tags=["hide-input", "nbval-ignore-output"]
def timing_reading() -> str:
    """The realized speedup of masked execution and of the cascade, from the timings above (they vary per run)."""
    parts = []
    for key, v in speedups.items():
        if v.get("ratio") is None or v.get("target") is None:
            continue
        parts.append(f"{key}: {v['realized']:.2f}x the speed where the MACs promise {v['macs_speedup']:.2f}x (ratio "
                     f"{v['ratio']:.2f}, {'meets' if v['meets_target'] else 'misses'} the target of "
                     f"{v['target']:.1f})")
    return "; ".join(parts) if parts else "no rule here exits at more than one stage, so no speedup is judged"


gap_max = max(gaps[name][gaps[name]["method"] != "random"]["top1_gap"].abs().max() for name in regime_names)
lines = [answer.replace("**The answer**", "**Accuracy at the same cost**"),
         f"**Calibration.** The largest test-minus-validation gap in top-1 over every criterion, budget and regime is "
         f"{gap_max:.2f} points: thresholds chosen on validation "
         + ("hold on test." if gap_max < 1.0 else "move on test, so a budget met on validation is only roughly met."),
         f"**Time.** Measured on this page's machine ({exp.device.type}, first seed of {MAIN}): {timing_reading()}. "
         "MACs saved become time saved only in part: every image pays for $S_0$ and the decision step, and small "
         "networks do not run in proportion to their MACs."]
if choice is not None:
    lines.insert(0, f"**Which regimes.** Chosen on validation by one rule, {regimes.ADAPTIVE_RULE}: main regime "
                    f"{MAIN} ({choice.loc[MAIN, 'gain'] + 0.0:+.2f} points), counterexample "
                    + (", ".join(f"{n} ({choice.loc[n, 'gain'] + 0.0:+.2f} points)" for n in COUNTER) or "none") + ".")
display(Markdown("\n\n".join(lines)))
