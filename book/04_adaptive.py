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
# ResKD's student is a sum of stages, $Z_K = z_0 + z_1 + \dots + z_K$: the light student $S_0$ and the res-students
# $S_1, \dots, S_K$, each trained on the residual the earlier ones left. Because the sum is built stage by stage, the
# ensemble has an answer after every stage, $Z_k = z_0 + \dots + z_k$, and an easy sample need not pay for the later
# stages. This chapter makes that decision per sample, calibrates it on validation data, compares four ways to
# decide, and checks whether the MACs it saves become saved time.
#
# ```{note}
# A line under *Setup* says which profile produced the outputs stored in this page. The `smoke` profile (tiny
# models trained for seconds with a single res-student, what CI runs) only shows that the chapter runs; the `cpu`
# profile uses the trained CIFAR-10 models.
# ```
#
# **What is the paper's and what is ours.** The paper {cite}`li2021reskd` proposes a *sample-adaptive* inference
# strategy: for each sample, decide which res-students are unnecessary and skip them, so that the ensemble's cost
# follows the sample's difficulty. Everything that turns that idea into a rule here is our choice: the four stopping
# criteria and the learned gate with its features, one threshold per stage, the calibration of the thresholds on the
# validation split against an accuracy target or a MACs budget (and the coordinate search for per-stage
# thresholds), the accuracy-vs-average-MACs sweep borrowed from budgeted classification {cite}`huang2018multiscale`,
# and the masked execution whose wall-clock time we measure.

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

# %% tags=["parameters"]
# Defaults. A run through papermill (tools/run_book.py) puts the values it ran with in the next cell.
profile = "smoke"  # "smoke" (CI, seconds), "cpu" (the real run on two CPU cores), "paper" (a GPU)
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
# The models are those of the CIFAR chapter, for the same profile: the teacher, and for every seed of the profile a
# ResKD ensemble ($S_0$, the KD student, plus the profile's res-students). They are loaded from `artifacts/` (missing
# ones are trained). `runs.staged` runs every stage on the validation and the test split and keeps the cumulative
# logits $Z_k$ of each stage, so that any stopping rule can be scored without running the networks again.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from reskd import report, results
from reskd.adaptive import CRITERIA, AdaptiveEnsemble, LearnedGate, compare_latency, confidence, sweep
from reskd.experiment import Experiment
from reskd.flops import model_cost
from reskd.metrics import correct, top1
from reskd.profiles import get_profile, profile_banner
from reskd.studies import reskd_runs
from reskd.utils import model_memory_format

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)

DATASET = "cifar10"
CHAPTER = "04_adaptive"
config = get_profile(DATASET, profile)
if seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = Experiment(config, data_root=data_root, device=device, retrain=retrain, train_missing=train_missing,
                 progress=False)
runs = reskd_runs(exp)  # loss "auto": the validation winner of the first-stage ablation
ensembles = {seed: runs.ensemble(list(config.res_students), seed=seed) for seed in config.seeds}
staged = {seed: {split: runs.staged(ens, split) for split in ("val", "test")} for seed, ens in ensembles.items()}
teacher = exp.teacher()
teacher_macs = model_cost(teacher, exp.input_size).macs
first_seed = config.seeds[0]
first = staged[first_seed]
num_stages, stage_macs, cumulative_macs = first["val"].num_stages, first["val"].stage_macs, first["val"].cumulative_macs
teacher_top1 = top1(first["test"].teacher_logits, first["test"].labels)
display(Markdown(profile_banner(config, exp.data.source)))
print(f"ResKD: S0 = KD student {config.student.label}, res-students {[a.label for a in config.res_students]}, "
      f"seeds {list(config.seeds)}; {first['val'].num_samples:,} validation / {first['test'].num_samples:,} test "
      f"images; device {exp.device.type}")
print(f"MMACs per image: stages {[round(m / 1e6, 2) for m in stage_macs]}, all {num_stages} stages "
      f"{cumulative_macs[-1] / 1e6:.2f} = {100 * cumulative_macs[-1] / teacher_macs:.1f}% of the teacher "
      f"{config.teacher.label} ({teacher_macs / 1e6:.2f} MMACs, test top-1 {teacher_top1:.2f}%)")

# %% [markdown]
# ## Why stopping early can work: the student's confidence
#
# The natural measure of how sure $S_0$ is about a sample is its maximum softmax probability
# $c(x) = \max_j \operatorname{softmax}(z_0(x))_j$. On the **validation split** (the split reserved for calibrating
# thresholds; the test split is only evaluated), the left panel shows how $c(x)$ is spread over the samples $S_0$
# gets right and wrong. The right panel cuts the samples into equal-count bins of $c(x)$ and compares, in each bin,
# the accuracy of $S_0$ alone with that of the whole ensemble (first seed). If the confidence is informative, the
# confident bins are mostly right already and the two curves meet there, while the gap the res-students open lies in
# the unsure bins: the samples worth their MACs. A stopping rule bets on exactly this pattern.

# %%
CONFIDENCE_BINS = 5  # equal-count bins of S0's confidence
val0 = first["val"]
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
fig.suptitle(f"{exp.data.spec.display_name}, profile {config.name!r}, seed {first_seed}")
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
# entries, the criteria (`reskd.adaptive.CRITERIA`) are
#
# * `max_prob`: $c_k = p_{(1)}$;
# * `margin`: $c_k = p_{(1)} - p_{(2)}$;
# * `neg_entropy`: $c_k = \sum_j p_j \log p_j$ (minus the entropy);
# * `gate`: $c_k = 1 - \sigma(w_k^\top \phi(Z_k) + b_k)$, a logistic regression per stage on the three features
#   $\phi = (p_{(1)},\ p_{(1)} - p_{(2)},\ \sum_j p_j \log p_j)$, fitted on the validation split to predict whether
#   the later stages change the prediction ($\arg\max Z_k \ne \arg\max Z_K$). It is trained for *whether the rest
#   of the ensemble would disagree*, not merely for how peaked $p$ is, and its weights differ per stage.
#
# The gate is fitted once per seed on the validation split, the same split that calibrates the thresholds.

# %%
gates = {seed: LearnedGate.fit(st["val"]) for seed, st in staged.items()}


def gate_for(criterion: str, seed: int) -> LearnedGate | None:
    return gates[seed] if criterion == "gate" else None


# %% [markdown]
# ### Accuracy against average cost
#
# One threshold shared by all stages traces a curve: at $\tau = -\infty$ every sample stops after $S_0$, at
# $\tau = +\infty$ every sample runs all stages. `reskd.adaptive.sweep` takes the thresholds at quantiles of the
# criterion on the **validation** split and evaluates each on the **test** split (first seed). The static ensembles
# (always stopping after $S_0$, after $S_1$, ...) are the black points (mean over seeds); the teacher is the dashed
# line, or, when it lies far above the curves, named at the top of the frame. A
# criterion is better where its curve lies higher at the same average cost.

# %%
SWEEP_POINTS = 30  # thresholds per criterion
curves = pd.concat([sweep(first["val"], criterion, test=first["test"], gate=gate_for(criterion, first_seed),
                          teacher_macs=teacher_macs, points=SWEEP_POINTS) for criterion in CRITERIA])
static = pd.DataFrame([{"stages": f"S0..S{k}" if k else "S0", "macs": cumulative_macs[k],
                        "pct_teacher": 100 * cumulative_macs[k] / teacher_macs,
                        "test_top1": sum(top1(st["test"].logits[k], st["test"].labels) for st in staged.values())
                        / len(staged)} for k in range(num_stages)])

fig, ax = plt.subplots(figsize=(8.5, 4.2))
for criterion, curve in curves.groupby("criterion", sort=False):
    ax.plot(curve["test_pct_teacher"], curve["test_top1"], marker=".", lw=1.2, label=criterion)
ax.scatter(static["pct_teacher"], static["test_top1"], color="black", zorder=3, label="static stages")
for _, row in static.iterrows():
    ax.annotate(row["stages"], (row["pct_teacher"], row["test_top1"]), textcoords="offset points", xytext=(4, -12),
                fontsize=8)
teacher_name = f"teacher {config.teacher.label}: {teacher_top1:.2f}% (100% of its MACs)"
shown = pd.concat([curves["test_top1"], static["test_top1"]])
pad = 0.1 * (shown.max() - shown.min()) + 0.1
if teacher_top1 > shown.max() + 4 * pad:  # a line that far up would squash the curves into one band: name it instead
    ax.set_ylim(shown.min() - pad, shown.max() + pad)
    ax.text(0.02, 0.97, f"↑ {teacher_name}, above this frame", transform=ax.transAxes, va="top", fontsize=8,
            color="0.3")
else:
    ax.axhline(teacher_top1, color="gray", ls="--", label=teacher_name)
ax.set_xlim(0, 1.1 * static["pct_teacher"].max())
ax.set_xlabel("average MACs per test image (% of the teacher's)")
ax.set_ylabel("top-1 accuracy on the test split (%)")
ax.set_title(f"{exp.data.spec.display_name}, profile {config.name!r}: thresholds from val, seed {first_seed}")
ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Operating points calibrated on validation
#
# A deployed rule needs one threshold, chosen before the test data is seen. `reskd.adaptive.calibrate` picks it on
# the validation split for one of two targets: the **cheapest** rule whose validation top-1 is at most 0.5 or 1.0
# points below the full ensemble's ("full − 0.5", "full − 1"), or the **most accurate** rule whose average MACs stay
# within $S_0$'s MACs plus 25% or 50% of the res-students' ("S0 + 25% res", "S0 + 50% res"). Each policy is then
# evaluated once on the test split. The table gives, per operating point and criterion, the validation numbers the
# calibration saw, the test top-1 (mean over seeds, with its standard deviation when there are several seeds), the
# test average MACs, their share of the teacher's, and the agreement with the teacher's predictions.

# %%
ACCURACY_DROPS = (0.5, 1.0)  # points of validation top-1 below the full ensemble's
BUDGET_SHARES = (0.25, 0.5)  # of the res-students' MACs, on top of S0's
ops, policies = report.calibration_grid(staged, criteria=CRITERIA, teacher_macs=teacher_macs, drops=ACCURACY_DROPS,
                                       shares=BUDGET_SHARES, gate_for=gate_for)
shared = ops[ops["thresholds"] == "shared"]
grouped = shared.groupby(["operating point", "criterion"], sort=False)
table = grouped[["val top-1", "val MMACs", "test top-1"]].mean()
table["± (std)"] = grouped["test top-1"].std()
table = table.join(grouped[["test MMACs", "% of teacher", "agreement (%)"]].mean())
report.for_display(table)

# %% [markdown]
# ## Where the samples stop
#
# The operating point "full − 0.5" asks for nearly the full ensemble's accuracy at the lowest cost. Among the
# criteria, the one whose calibrated rule is cheapest **on validation** at that point is the chapter's choice (the
# test split plays no part in choosing it). The bars show, for every criterion at that operating point, the share of
# test samples that stop after each stage (mean over seeds).

# %%
CHOSEN_POINT = f"full − {ACCURACY_DROPS[0]:g}"
at_point = shared[shared["operating point"] == CHOSEN_POINT]
chosen = at_point.groupby("criterion", sort=False)["val MMACs"].mean().idxmin()
stage_columns = [f"S{k}" for k in range(num_stages)]
exit_fractions = at_point.groupby("criterion", sort=False)[stage_columns].mean()
print(f"chosen on validation: {chosen!r} (lowest validation MACs at {CHOSEN_POINT!r}); test exit fractions "
      + ", ".join(f"{s} {100 * f:.1f}%" for s, f in exit_fractions.loc[chosen].items()))

ax = (100 * exit_fractions).plot.bar(stacked=True, figsize=(6.5, 3.8), rot=0, colormap="viridis")
ax.set_xlabel("criterion")
ax.set_ylabel("test samples stopping after the stage (%)")
ax.set_title(f"where samples stop at {CHOSEN_POINT!r} (thresholds from val)")
ax.legend(title="stopped after", bbox_to_anchor=(1.02, 1), loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## One threshold, or one per stage
#
# The rule holds one threshold per stage but the last. So far all stages shared one value: a one-parameter family,
# cheap to calibrate and hard to overfit. The confidence of $Z_k$ is not on the same scale at every stage, though,
# so separate thresholds may buy more. `reskd.adaptive.calibrate_per_stage` starts from the shared threshold and
# runs a coordinate search on the validation split: it sets one stage's threshold at a time to the value (among
# quantiles of that stage's confidence) that most improves the objective while meeting the target, for a few passes.
# Since it only accepts improvements, on validation it is never worse than the shared threshold; whether the gain
# survives on the test split is what the table below checks (means over seeds).

# %%
compare = ops.groupby(["operating point", "criterion", "thresholds"], sort=False)[
    ["val top-1", "val MMACs", "test top-1", "test MMACs"]].mean().unstack("thresholds")
if num_stages == 2:
    print("this profile has a single res-student, hence a single threshold: the two calibrations coincide.")
else:
    diff = compare.xs("per stage", axis=1, level="thresholds") - compare.xs("shared", axis=1, level="thresholds")
    accuracy_points = [p for p in diff.index.get_level_values(0).unique() if p.startswith("full")]
    budget_points = [p for p in diff.index.get_level_values(0).unique() if p.startswith("S0")]
    print(f"per stage minus shared, mean over criteria and seeds: at the accuracy targets "
          f"{diff.loc[accuracy_points, 'val MMACs'].mean():+.3f} MMACs on val, "
          f"{diff.loc[accuracy_points, 'test MMACs'].mean():+.3f} on test "
          f"({diff.loc[accuracy_points, 'test top-1'].mean():+.2f} points of test top-1); at the budgets "
          f"{diff.loc[budget_points, 'val top-1'].mean():+.2f} points of val top-1, "
          f"{diff.loc[budget_points, 'test top-1'].mean():+.2f} on test")
report.for_display(compare)

# %% [markdown]
# ## Does it save time?
#
# MACs are a proxy. `reskd.adaptive.AdaptiveEnsemble` executes the rule for real: it runs $S_0$ on the batch, and
# stage $k$ only on the samples still active (gather, run, scatter back). We time it against running every stage
# (`ResKDEnsemble`) and against the teacher, on the chapter's device, with the chosen criterion's shared-threshold
# policy at "full − 0.5" (first seed), on the first test images: one image at a time, and in one large batch.
# `reskd.adaptive.compare_latency` times the three models in rotation (so drift in the machine's load hits them
# alike) and reports the median pass, in seconds per image; at batch 1 that is the mean over the images, each paying
# for its own exit.
#
# The comparison that matters is the **realized speedup** of adaptive over all stages, set against the speedup its
# average MACs promise on the same images:
#
# $$
# \frac{t_{\text{all stages}} / t_{\text{adaptive}}}{M_{\text{all stages}} / \bar M_{\text{adaptive}}} .
# $$
#
# The project's target is at least 0.8: masked execution should deliver most of what the MACs promise. Two effects
# pull the ratio away from 1. Fixed costs per stage call (Python, the decision, the gather and scatter) lower it.
# And the time of a small network is not proportional to its MACs, which moves the ratio either way: at batch 1 on a
# CPU, per-layer overheads make a light res-student cost nearly as much time as $S_0$, so skipping it saves more
# time than MACs. Timings vary from run to run (the stored ones are from one run on a shared machine).

# %%
LATENCY_IMAGES = 1000  # test images in the large batch (fewer when the test split is smaller)
BATCH1_IMAGES = 50 if config.name == "smoke" else 200  # images timed one at a time
REPEATS = 2 if config.name == "smoke" else 5  # timed passes (the median is kept)
TARGET_RATIO = 0.8  # the project's target for realized / MACs speedup

ensemble = ensembles[first_seed].to(exp.device).eval()
policy = policies[first_seed, CHOSEN_POINT, chosen, "shared"]
adaptive = AdaptiveEnsemble(ensemble, policy).to(exp.device).eval()
teacher = teacher.to(exp.device).eval()
batches, count = [], 0
for x, _, _ in exp.eval_loader("test"):
    batches.append(x)
    count += len(x)
    if count >= LATENCY_IMAGES:
        break
images = torch.cat(batches)[:LATENCY_IMAGES].contiguous(memory_format=model_memory_format(ensemble.stages[0]))
with torch.inference_mode():
    adaptive(images)
exits = adaptive.last_exits.cpu()
cum = torch.tensor(cumulative_macs, dtype=torch.float64)
models = {"teacher": teacher, "all stages": ensemble, "adaptive": adaptive}
settings = {"batch 1": (images[:BATCH1_IMAGES], 1), f"batch {len(images)}": (images, len(images))}
print(f"policy: {policy.criterion}, thresholds {[round(t, 4) for t in policy.thresholds]}; timing "
      f"{BATCH1_IMAGES} images one at a time and {len(images)} in one batch, {REPEATS} timed passes each")

# %% tags=["nbval-ignore-output"]
latency_rows = []
for setting, (x, batch_size) in settings.items():
    seconds = compare_latency(models, x, batch_size=batch_size, repeats=REPEATS)
    macs_speedup = cum[-1].item() / cum[exits[:len(x)]].mean().item()
    realized = seconds["all stages"] / seconds["adaptive"]
    latency_rows.append({"setting": setting, "images": len(x), "batch size": batch_size,
                         **{f"{name} (ms/image)": 1e3 * s for name, s in seconds.items()},
                         "MACs speedup": macs_speedup, "realized speedup": realized,
                         "realized / MACs speedup": realized / macs_speedup,
                         "adaptive vs teacher": seconds["teacher"] / seconds["adaptive"]})
latency = pd.DataFrame(latency_rows).set_index("setting")
for setting, row in latency.iterrows():
    verdict = "meets" if row["realized / MACs speedup"] >= TARGET_RATIO else "misses"
    print(f"{setting}: realized speedup {row['realized speedup']:.2f}x of a promised {row['MACs speedup']:.2f}x "
          f"(ratio {row['realized / MACs speedup']:.2f}, {verdict} the target {TARGET_RATIO}); "
          f"speedup over the teacher {row['adaptive vs teacher']:.2f}x")
latency

# %% [markdown]
# ## Results file
#
# The chapter's measurements go to `results/adaptive.json` (`reskd.results.write_analysis`): the static stages, every
# criterion at every calibrated operating point (shared and per-stage thresholds, means over seeds), the sweeps of
# the first seed, the exit fractions at the chosen operating point, and the latency.

# %%
analysis = report.adaptive_analysis(
    seeds=config.seeds, criteria=CRITERIA, stage_macs=stage_macs, teacher_macs=teacher_macs, teacher_top1=teacher_top1,
    static=static, grid=ops, curves=curves, chosen_point=CHOSEN_POINT, chosen=chosen,
    exit_fractions=exit_fractions.loc[chosen], latency=latency, timed=list(models),
    latency_setup={"device": exp.device.type, "threads": torch.get_num_threads(), "repeats": REPEATS,
                   "target_ratio": TARGET_RATIO})
path = results.write_analysis("adaptive", CHAPTER, DATASET, exp.data.source, config.name, exp.device.type, analysis,
                              root=results_dir)
print(f"wrote {path.parent.name}/{path.name} (profile {config.name!r})")
