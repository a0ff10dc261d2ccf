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
# # CIFAR iterations
#
# **The question.** This chapter is the book's main evidence: ResKD run for real on CIFAR-10, res-student by
# res-student, against the teacher, the knowledge-distillation baselines, and two alternatives that cost the same
# MACs (a wider KD student and the cascade from the KD student to the teacher). Do residual stages pay for their cost?
#
# <!-- answer -->
# *The answer is computed from this page's results at its end; a page executed with `tools/run_book.py` shows it
# here.*
# <!-- /answer -->
#
# ```{note}
# A line under *Setup* says which profile produced the outputs stored in this page. The `smoke` profile (tiny
# models trained for seconds, what CI runs) only shows that the pipeline works; the `cpu` profile is the real run.
# ```

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

    fetch_data("02_cifar")

# %% tags=["parameters", "hide-input"]
# Defaults. A run through papermill (tools/run_book.py) puts the values it ran with in the next cell.
profile = "smoke"  # "smoke" (CI, seconds), "cpu" (two CPU cores, short schedules), "converged" (CIFAR-10
# trained until longer training no longer pays: tens of hours on two cores), "paper" (a GPU)
dataset = "cifar10"  # "cifar10" or "cifar100" (CIFAR-100 needs its data under the data root, or download)
download = False  # True: let torchvision fetch the data set into the data root when it is missing
data_root = None  # folder holding the data sets; None: $RESKD_DATA, else the project's data/
seeds = None  # student seeds, e.g. [0, 1, 2]; None: the profile's
retrain = False  # True: train again even where finished runs exist
device = "auto"  # "auto": the GPU when there is one, else the CPU
results_dir = None  # where results/<dataset>.json goes; None: the project's results/
train_missing = True  # False: a run missing from artifacts/ is an error instead of (hours of) training

# %% tags=["remove-cell"]
from reskd.chapter import check_parameters

check_parameters(profile=profile, data_root=data_root, seeds=seeds, retrain=retrain, device=device,
                 results_dir=results_dir, train_missing=train_missing, download=download,
                 dataset=(dataset, ("cifar10", "cifar100")))

# %% [markdown]
# ## Setup
#
# The heavy lifting lives in the `reskd` package; this chapter only wires it together. A *profile*
# (`reskd.profiles`) fixes every setting of the runs: `smoke` trains tiny models for two epochs on 1,000
# images (it checks that the chapter runs; its numbers mean nothing), `cpu` is the real run two CPU cores can afford
# (a resnet56 teacher for 30 epochs, resnet8 students and res-students for 15 epochs, three seeds each; CIFAR
# ResNets {cite}`he2016deep`), `paper` the paper-scale run for a GPU (240 epochs, the CRD recipe
# {cite}`tian2020contrastive` as mdistiller uses it; not run here). Finished runs are loaded from `artifacts/`, interrupted ones
# resumed, missing ones trained (with `train_missing=False`, as `make book` runs the chapters, a missing run is an
# error instead). Every choice below (the residual loss, thresholds, the ensemble's size) is made on
# the **validation split**, 5,000 training images held out from training; the test split is only evaluated.

# %%
import math

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from reskd import regimes, report, results
from reskd.plots import KIND_LABELS, KIND_STYLES, gaps_figure, kind_style, ladder_figure
from reskd.adaptive import sweep
from reskd.data import is_available
from reskd.experiment import Experiment, MissingRunError
from reskd.flops import model_cost
from reskd.metrics import correct, top1
from reskd.profiles import LADDER_GAIN, PAPER_PCT_TEACHER, get_profile, profile_banner
from reskd.studies import (PLAIN_SEED_OFFSET, ablate, ablate_losses, other_options, plain_ensemble_logits,
                           reskd_runs, stage_records)

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)
pd.set_option("display.max_colwidth", 60)

CHAPTER = "02_cifar"
MAX_DROP = 1.0  # our target: within this many top-1 points of the teacher
OPERATING_POINTS = (0.5, 1.0)  # adaptive thresholds keep validation top-1 within these points of the full ensemble
config = get_profile(dataset, profile)
budget = PAPER_PCT_TEACHER.get(dataset)  # the paper's budget on this data set, % of the teacher's MACs


if seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = Experiment(config, data_root=data_root, device=device, retrain=retrain, train_missing=train_missing,
                 progress=False, download=download)
display(Markdown(profile_banner(config, exp.data.source)))
print(f"data: {exp.data.source}: {len(exp.data.train):,} training / {len(exp.data.val):,} validation / "
      f"{len(exp.data.test):,} test images")
print(f"teacher {config.teacher.label}, student {config.student.label}, res-students "
      f"{', '.join(a.label for a in config.res_students)}, seeds {', '.join(map(str, config.seeds))}, "
      f"device {exp.device.type}")

# %% [markdown]
# ### How far these models are from the field
#
# The field's reference point for these networks is He et al.'s CIFAR ResNets {cite}`he2016deep`.

# %% tags=["hide-input"]
LITERATURE_TOP1 = {"cifar10": 93.03}  # He et al. (2016), resnet56 on the original CIFAR-10 (6.97% test error)
LITERATURE_EPOCHS = "160 to 240"  # He et al. train about 160 epochs (64k iterations); the CRD recipe 240
teacher_test_top1 = top1(*exp.logits(exp.teacher(), "test"))
epochs_t, epochs_s = config.teacher_train.epochs, config.student_train.epochs
if dataset in LITERATURE_TOP1:
    field = (
        f"Our teacher, {config.teacher.label} trained for {epochs_t} epochs, reaches {teacher_test_top1:.2f}% test "
        f"top-1; He et al. report {LITERATURE_TOP1[dataset]:.2f}% for the same network on the original "
        f"{exp.data.spec.display_name}, {LITERATURE_TOP1[dataset] - teacher_test_top1:.2f} "
        "points more. Two differences are thought to cost that gap. **The data**: this book reads a JPEG copy of the "
        "data set (quality about 75), whose compression removes fine detail that the original's lossless images "
        "keep; the book does not have the original here, so what the JPEG copy costs is **not measured**. **The "
        + (f"schedule**: {epochs_t} epochs for the teacher and {epochs_s} for the students and res-students, the "
           f"lengths the ladder below chose on validation (the literature trains for {LITERATURE_EPOCHS}): longer "
           "runs of this recipe no longer pay, so what is left of the gap is the data and the recipe, not the length."
           if config.teacher_lengths else
           f"schedule**: {epochs_t} epochs for the teacher and {epochs_s} for the students and res-students, where the "
           f"literature trains for {LITERATURE_EPOCHS}. The `converged` profile trains the same {config.teacher.label} "
           "by a ladder of lengths, each twice the last, until doubling no longer pays on validation; the section *Does "
           "the verdict depend on training length?* below sets its verdict beside this one's once it is trained. "
           "Every comparison in this chapter is between models trained on the same data with the same schedule."))
else:
    field = (f"Our teacher, {config.teacher.label} trained for {epochs_t} epochs, reaches {teacher_test_top1:.2f}% "
             f"test top-1 on {exp.data.spec.display_name}; the book quotes no literature figure for it.")
display(Markdown(field))

# %% [markdown]
# ## The teacher and the baselines
#
# The teacher $T$ is trained from scratch with cross-entropy. Two students of the same light architecture are the
# baselines ResKD has to beat: one trained from scratch, one distilled from the teacher with Hinton et al.'s
# soft-target loss {cite}`hinton2015distilling` at temperature $\tau$,
#
# $$
# \mathcal{L}_{\mathrm{KD}} = (1-\alpha)\, \mathrm{CE}(y, \sigma(z_S)) + \alpha\, \tau^2\,
# \mathrm{KL}\big(\sigma(z_T/\tau) \,\|\, \sigma(z_S/\tau)\big).
# $$
#
# Every model is scored on the test split; *agreement* is how often a model predicts the teacher's class. Cost is
# counted in multiply-accumulates (MACs) per image with fvcore (`reskd.flops`: convolutions and linear layers;
# 1 MAC = 2 FLOPs) and reported as a share of the teacher's, the paper's unit.

# %%
teacher = exp.teacher()
teacher_logits, labels = exp.logits(teacher, "test")  # every network is predicted once per split (then cached)
teacher_macs = exp.teacher_macs  # counted once per experiment
students = {kind: {seed: exp.student(kind, seed=seed) for seed in config.seeds} for kind in ("scratch", "kd")}
outputs = {kind: {seed: exp.logits(model, "test")[0] for seed, model in models.items()}
           for kind, models in students.items()}
student_macs = model_cost(students["kd"][config.seeds[0]], exp.input_size).macs
names = {"scratch": f"student {config.student.label} (scratch)", "kd": f"student {config.student.label} (KD)"}
models = [report.logits_record(f"teacher {config.teacher.label}", "teacher", {0: teacher_logits}, labels, stages=0,
                                macs=teacher_macs, teacher_macs=teacher_macs)]
models += [report.logits_record(names[kind], kind, logits, labels, stages=1, macs=student_macs,
                                teacher_macs=teacher_macs, teacher_logits=teacher_logits)
           for kind, logits in outputs.items()]


def models_table(entries: list[dict]) -> pd.DataFrame:
    """``entries`` as the page's table of models (kinds by their figure labels)."""
    return report.models_table(entries, kind_labels=KIND_LABELS)


display(models_table(models))
if config.accuracy_targets:  # converged: the accuracy its teacher and KD student were to reach
    display(Markdown(report.targets_reading(models, config.accuracy_targets)))

# %% [markdown]
# ### Training curves
#
# Validation top-1 after every epoch of the teacher and of the KD student $S_0$ (every seed), beside their top-1 on
# the (augmented) training batches: a curve still rising at its end is a model the schedule stopped early. The
# learning rate decays to zero at the end of every run (cosine in the `cpu` profile; held, then decayed linearly over
# the last fifth in `converged`), so some of the late rise is the decay itself. A profile with a length ladder
# (`converged`) shows it below the curves: each length trained, and the one its rule picks on validation.

# %% tags=["hide-input"]
curves = pd.concat(
    [exp.results[exp.teacher_name()].history.assign(model=f"teacher {config.teacher.label}", seed=0)]
    + [exp.results[f"kd-{config.student.label}-s{seed}"].history.assign(
        model=f"KD student {config.student.label} (S0)", seed=seed) for seed in config.seeds], ignore_index=True)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
late = []
for ax, (model, runs_of) in zip(axes, curves.groupby("model", sort=False)):
    for seed, run in runs_of.groupby("seed"):
        ax.plot(run["epoch"], run["val_top1"], marker="o", ms=3, lw=1.3, label=f"val, seed {seed}")
        ax.plot(run["epoch"], run["train_top1"], ls="--", lw=1, color=ax.lines[-1].get_color(),
                label=f"training batches, seed {seed}")
        late_epochs, gain = report.late_gain(run)  # the last fifth of its epochs (report.LATE_FRACTION)
        late.append({"model": model, "seed": seed, "epochs": int(run["epoch"].max()),
                     "val top-1 at the end (%)": run["val_top1"].iloc[-1],
                     "gain over the last fifth (points)": gain,
                     "gain over the last epoch (points)": run["val_top1"].iloc[-1] - run["val_top1"].iloc[-2],
                     "training-batch top-1 at the end (%)": run["train_top1"].iloc[-1]})
    ax.axvspan(run["epoch"].max() - late_epochs, run["epoch"].max(), color="0.9", zorder=0)
    ax.set_title(model)
    ax.set_xlabel("epoch (shaded: the last fifth)")
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()
late = pd.DataFrame(late)
late_by_model = late.groupby("model", sort=False).mean(numeric_only=True)
display(report.page_table(late.set_index(["model", "seed"])))
display(Markdown(" ".join(
    f"Over the last fifth of its epochs, {model} gains {row['gain over the last fifth (points)']:+.2f} points of "
    f"validation top-1 (mean over its runs; {row['gain over the last epoch (points)'] + 0.0:+.2f} in the last epoch) "
    f"and ends at {row['training-batch top-1 at the end (%)']:.1f}% on its training batches against "
    f"{row['val top-1 at the end (%)']:.1f}% on validation: "
    + ("**its curve had not flattened** when the schedule ended it."
       if row["gain over the last fifth (points)"] >= report.FLAT_GAIN else "its curve had flattened.")
    for model, row in late_by_model.iterrows())
    + f" (A curve counts as flattened when its last fifth adds under {report.FLAT_GAIN:g} points. Part of a late "
    "gain comes with the learning-rate decay, which any length ends with; "
    + ("under this profile's schedule the last fifth is the decay itself, so the ladder below, not these curves, says "
       "what more epochs add.)" if config.teacher_lengths else
       "only longer runs, the `converged` profile, can say what more epochs would add.)")))

# %% tags=["hide-input"]
if config.teacher_lengths:  # a length ladder (converged): each length trained, the rule's pick, the recipe checked
    ladders = {"teacher": exp.length_ladder("teacher"), "KD student S0 (seed 0)": exp.length_ladder("kd")}
    ladder_curves = {title: report.length_curve(runs) for title, runs in ladders.items()}
    picks = {title: report.chosen_length(curve, LADDER_GAIN, config.length_cap)
             for title, curve in ladder_curves.items()}
    ladder_figure(ladders, picks)
    plt.show()
    display(report.page_table(pd.concat(ladder_curves, names=["model", "row"]).droplevel("row")
                              .astype({"forked_at": "Int64"}).set_index("epochs", append=True)
                              .rename(columns={"own_hours": "hours (own epochs)", "forked_at": "forked at epoch"})))
    display(Markdown(" ".join(report.ladder_sentence(title, curve, LADDER_GAIN, val_size=len(exp.data.val),
                                                     cap=config.length_cap)
                              for title, curve in ladder_curves.items())))
    for title, recipe in (("teacher", config.teacher_train), ("KD student S0 (seed 0)", config.student_train)):
        if picks[title] != recipe.epochs:  # the page says its lengths are the ladder's: they must be
            raise ValueError(f"the {config.name!r} profile trains the {title} for {recipe.epochs} epochs but its "
                             f"ladder picks {picks[title]}: set the recipe's epochs in reskd/profiles.py to the pick "
                             "(or train the longer rung the ladder asks for) and run the chapter again.")

# %% [markdown]
# <!-- reskd: stages -->
# ## The first res-student: which loss, which input, which size
#
# Each res-student $S_k$ learns the residual $r_k = z_T - \sum_{j<k} z_j$ of the frozen ensemble before it
# (`reskd.reskd.ResidualDistiller`). **From the paper**: the residual in logit space as the target of a lighter
# network, and the sum of the stages as the new student. **Ours** (the paper's exact losses and architectures were
# not available to us): the loss, the res-student's input, and a last layer that starts at zero, so a new stage
# starts from the previous ensemble's predictions. The losses, with $s$ the new stage's logits and $Z = Z_{k-1} + s$:
#
# | loss | what it fits |
# | --- | --- |
# | `mse` | $\lVert s - r_k \rVert^2$, the raw logit residual |
# | `mse_centered` | the same after removing each sample's mean over classes (softmax ignores a shift) |
# | `logprob` | $\tau^2 \lVert \log\sigma(Z/\tau) - \log\sigma(z_T/\tau) \rVert^2$, the residual of log-probabilities |
# | `kd` | Hinton KD between the teacher and the combined logits $Z$ (plus weighted CE) |
# | `mse+ce` | `mse` plus weighted cross-entropy on $Z$ |
#
# The first stage is trained once per loss (seed 0, the profile's first res-student architecture) and the loss
# with the best **validation** top-1 of $S_0 + S_1$ becomes the loss of every later stage. The table also gives the
# residual energy $E = \operatorname{mean}_x \lVert z_T(x) - Z(x) \rVert^2$ before and after the stage, on training
# images (a fixed sample of 10,000) and on test images: a stage that fits the residual of images the student has
# already seen but not that of unseen images lowers the first and not the second.

# %%
ENERGY_COLUMNS = ["option", "added_mmacs", "val_gain", "test_gain", "train_energy_s0", "train_energy_change_pct",
                  "test_energy_s0", "test_energy_change_pct"]
if "loss-ablation" in config.studies:
    losses = ablate_losses(exp)
    runs = reskd_runs(exp)  # loss "auto": the validation winner of the table above
    print(f"S0 (KD student, seed 0): validation top-1 {losses['val_top1_s0'].iloc[0]:.2f}%, "
          f"test top-1 {losses['test_top1_s0'].iloc[0]:.2f}%; gains below are in top-1 points")
    print(f"chosen on validation: loss {runs.loss!r}")
    display(report.page_table(losses[ENERGY_COLUMNS].set_index("option")))
else:  # the profile names its loss (reskd.profiles.Profile.studies): nothing is ablated, nothing is chosen here
    losses, runs = None, reskd_runs(exp)
    display(Markdown(f"The `{config.name}` profile runs no loss ablation: it fixes the loss to `{runs.loss}`, the one "
                     "the `cpu` profile's ablation chose on validation, so its runs go to the comparison itself."))

# %% [markdown]
# With the chosen loss, the other choices around the first res-student: its input (a light head on $S_0$'s last
# feature maps, so the res-student sees what the student saw, instead of an independent network on the image), its
# size (half and twice the width), and its training length (twice the epochs). For scale, the last row is what the
# same MACs buy without the residual: $S_0$ averaged with an independently trained KD student of the res-student's
# architecture (the plain ensemble).

# %%
ablation = None
if "options-ablation" in config.studies:  # Profile checks that it comes with the loss ablation
    options = ablate(exp, other_options(config, runs.loss))
    ablation = pd.concat([losses[losses["loss"] == runs.loss], options], ignore_index=True)
    val_s0, test_s0 = ablation["val_top1_s0"].iloc[0], ablation["test_top1_s0"].iloc[0]
    pair = [config.student, config.res_students[0]]
    member_mmacs = model_cost(exp.student("kd", arch=config.res_students[0], seed=PLAIN_SEED_OFFSET),
                              exp.input_size).macs / 1e6
    for weighting, how in (("equal", "averaged"), ("val", "weights fit on val")):
        plain_pair = {split: plain_ensemble_logits(exp, pair, split, seed=0, weighting=weighting)
                      for split in ("val", "test")}
        ablation.loc[len(ablation), ["option", "added_mmacs", "val_gain", "test_gain"]] = [
            f"plain ensemble: S0 + independent KD {config.res_students[0].label} ({how})", member_mmacs,
            top1(*plain_pair["val"]) - val_s0, top1(*plain_pair["test"]) - test_s0]
    display(report.page_table(ablation[ENERGY_COLUMNS].set_index("option")))
else:
    display(Markdown(f"The `{config.name}` profile runs no ablation of these options (the `cpu` page has it)."))

# %% [markdown]
# ## Residual stages
#
# The chain of the profile, $S_0 + S_1 + \dots$, with the chosen loss, for every seed. Per stage: the cumulative
# MACs, validation and test top-1, agreement with the teacher, and the residual energy left after the stage on
# training and test images.

# %%
ensembles = {seed: runs.ensemble(list(config.res_students), seed=seed) for seed in config.seeds}
splits = ("train-sample", "val", "test")
staged = {seed: {split: runs.staged(ens, split) for split in splits} for seed, ens in ensembles.items()}
per_stage = pd.concat([stage_records(st, teacher_macs).assign(seed=seed) for seed, st in staged.items()])
per_stage_mean = per_stage.groupby("stage").mean().drop(columns="seed")
report.page_table(per_stage_mean.assign(mmacs=per_stage_mean["macs"] / 1e6)[
    ["mmacs", "pct_teacher", "val_top1", "test_top1", "test_agreement_teacher", "train-sample_residual_energy",
     "test_residual_energy"]])

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
energy = per_stage.melt(id_vars=["stage", "seed"], value_vars=["train-sample_residual_energy", "test_residual_energy"],
                        var_name="images", value_name="residual energy")
energy["images"] = energy["images"].map({"train-sample_residual_energy": "training", "test_residual_energy": "test"})
sns.lineplot(data=energy, x="stage", y="residual energy", hue="images", marker="o", errorbar="sd", ax=axes[0])
axes[0].set_title("residual energy left after each stage")
agree = per_stage.melt(id_vars=["stage", "seed"], value_vars=["test_top1", "test_agreement_teacher"],
                       var_name="measure", value_name="%")
agree["measure"] = agree["measure"].map({"test_top1": "test top-1", "test_agreement_teacher": "agreement with T"})
sns.lineplot(data=agree, x="stage", y="%", hue="measure", marker="o", errorbar="sd", ax=axes[1])
axes[1].set_title("test accuracy and teacher agreement")
for ax in axes:
    ax.set_xticks(sorted(per_stage["stage"].unique()))
    ax.set_xlabel("after stage k (0 = the KD student)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Which classes does each res-student fix? The change of per-class test accuracy from stage $k-1$ to stage $k$,
# averaged over seeds (positive: the stage fixed more images of that class than it broke).

# %% tags=["hide-input"]
classes = exp.data.test.classes
gains = {}
for k in range(1, len(config.res_students) + 1):
    per_seed = []
    for st in staged.values():
        test = st["test"]
        right_now = correct(test.logits[k], test.labels).float()
        right_before = correct(test.logits[k - 1], test.labels).float()
        per_seed.append(torch.zeros(len(classes)).index_add_(0, test.labels, right_now - right_before)
                        / torch.bincount(test.labels, minlength=len(classes)).clamp(min=1))
    gains[f"S{k}"] = (100 * torch.stack(per_seed).mean(0)).numpy()
class_gains = pd.DataFrame(gains, index=classes)
fig, ax = plt.subplots(figsize=(1.2 * len(gains) + 3, 0.28 * min(len(classes), 20) + 1.2))
limit = max(float(class_gains.abs().to_numpy().max()), 0.1)
MAX_CLASSES_SHOWN = 20  # with more classes (CIFAR-100), the classes most changed by the res-students
shown = class_gains.loc[class_gains.abs().sum(axis=1).sort_values(ascending=False).index[:MAX_CLASSES_SHOWN]]
sns.heatmap(shown, annot=len(shown) <= MAX_CLASSES_SHOWN, fmt=".1f",
            cmap="RdBu", vmin=-limit, vmax=limit, cbar_kws={"label": "change of class top-1 (points)"}, ax=ax)
ax.set_title("per-class change of test top-1 added by each res-student")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Equal-cost baselines and adaptive inference
#
# ResKD has to beat what the same MACs buy otherwise: one wider KD student of about the full chain's cost (its
# architecture and MACs are printed below) and a plain ensemble of independently trained KD students with the
# stages' architectures, its logits either averaged or weighted by non-negative weights fit on the validation split
# (averaging lets the weaker, lighter members drag the student down, which would make the baseline a straw man). The adaptive rule
# (the paper's idea; the rule is ours, studied in the adaptive-inference chapter) stops a sample after a stage once
# its max-softmax probability reaches a threshold, one threshold shared by all stages, calibrated on the validation
# split so that validation top-1 stays within 0.5 or 1.0 points of the full ensemble's.

# %%
stage_models = report.reskd_records(staged, teacher_macs, drops=OPERATING_POINTS)
first = staged[config.seeds[0]]["test"]
equal = {seed: exp.student("kd", arch=config.equal_cost, seed=seed) for seed in config.seeds}
equal_logits = {seed: exp.logits(m, "test")[0] for seed, m in equal.items()}
stage_models.append(report.logits_record(
    f"KD student {config.equal_cost.label} (equal cost)", "kd-equal-cost", equal_logits, labels, stages=1,
    macs=model_cost(equal[config.seeds[0]], exp.input_size).macs, teacher_macs=teacher_macs,
    teacher_logits=teacher_logits))
archs = [config.student, *config.res_students]
for weighting, how in ((("equal", "averaged"), ("val", "weights fit on val"))
                       if "plain-ensembles" in config.studies else ()):
    plain = {seed: plain_ensemble_logits(exp, archs, "test", seed=seed, weighting=weighting)[0]
             for seed in config.seeds}
    stage_models.append(report.logits_record(
        f"plain KD ensemble ({len(archs)} members, {how}, equal cost)", "kd-equal-cost", plain, labels,
        stages=len(archs), macs=first.cumulative_macs[-1], teacher_macs=teacher_macs, teacher_logits=teacher_logits))
curve = sweep(staged[config.seeds[0]]["val"], "max_prob", test=first, teacher_macs=teacher_macs, points=20)
for model in stage_models:  # every ResKD entry names its regime (the map below varies it)
    if model["kind"].startswith("reskd"):
        model["regime"] = regimes.CIFAR_REGIMES["light-image"].label(exp)
equal_cost = next(m for m in stage_models if m["kind"] == "kd-equal-cost")
display(Markdown(f"The equal-cost KD student is {config.student.label} at {config.equal_cost.width:g}x width "
                 f"({config.equal_cost.label}): {equal_cost['macs'] / 1e6:.1f} MMACs against the full chain's "
                 f"{first.cumulative_macs[-1] / 1e6:.1f}."
                 + ("" if "plain-ensembles" in config.studies else
                    f" The `{config.name}` profile trains no plain ensemble: the wider student is its equal-cost "
                    "baseline (the `cpu` page has both).")))

# %% [markdown]
# ### The cascade to the teacher
#
# A practitioner who has the teacher at hand can spend the same MACs without training anything: run $S_0$, and send
# the images it is unsure about (max-softmax probability below a threshold, calibrated on the validation split) to
# the teacher itself, which replaces $S_0$'s prediction and costs its full MACs on top of $S_0$'s
# (`reskd.adaptive.cascade`). It is the bar every residual stage has to clear (ours, not the paper's), compared at
# the same mean MACs per test image: at most 12.5%, 18.04% (the paper's CIFAR-10 figure) and 25% of the teacher's.

# %%
cascade_models, cascade_rows, cascades = regimes.cascade_records(exp, config.seeds)
stage_models += cascade_models
cascaded = cascades[config.seeds[0]]
cascade_curve = sweep(cascaded["val"], "max_prob", test=cascaded["test"], teacher_macs=teacher_macs, points=20)
models_table(cascade_models)

# %% [markdown]
# ## Every model
#
# Every model: MACs, % of the teacher's, test top-1 (mean and standard deviation over seeds, last epoch) and
# agreement with the teacher.

# %%
models = models + stage_models
models_table(models)

# %% [markdown]
# Beside the last epoch, each run's best epoch on the test split (the maximum over epochs, so optimistic; it is
# shown, never used to choose anything):

# %%
runs_table = exp.training_table()
role = runs_table["role"].where(runs_table["seed"] < PLAIN_SEED_OFFSET, "kd (plain-ensemble member)")
runs_table["config"] = (role + " " + runs_table["arch"] + ", " + runs_table["loss"] + ", "
                        + runs_table["epochs"].astype(str) + " epochs")
report.page_table(runs_table.groupby("config", sort=False)  # the spread of a single run does not exist: "–"
      .agg(**{"runs": ("seed", "size"), "last epoch: test top-1 (%)": ("test_top1", "mean"),
              "± (std)": ("test_top1", "std"), "best epoch: test top-1 (%)": ("best_test_top1", "mean"),
              "best epoch (mean over runs)": ("best_test_epoch", "mean")}).rename_axis("run"), digits=2)

# %% [markdown]
# What the runs cost, as measured while they trained (hours of wall-clock per run, training plus the per-epoch
# evaluation; the cpu profile ran two one-thread workers side by side on two cores, so these are contended times).
# Everything after the teacher runs in parallel, so the profile's wall-clock on two workers is about the teacher's
# hours plus half of the rest.

# %%
cost = runs_table.assign(part=runs_table["role"].where(runs_table["role"] == "teacher", "students and res-students"))
hours = cost.groupby("part")["train_hours"].sum()
print(hours.round(2).to_string())
two_workers = hours.get("teacher", 0.0) + hours.drop("teacher", errors="ignore").sum() / 2
print(f"about {two_workers:.1f} hours of wall-clock on two workers ({profile} profile, {len(runs_table)} runs)")

# %% [markdown]
# ## Do residual stages pay?
#
# The chapter's question, answered from the table above: the full ResKD chain against the KD student it starts from
# (what the res-students add), against the two ways of spending the same MACs without residuals, and against the
# cascade to the teacher at each budget. A difference
# counts only when it exceeds twice its standard error over seeds (`reskd.report.compare_at_cost`); with a single
# seed there is no noise estimate, and the verdict says so.

# %%
at_cost = report.compare_at_cost(models, against=("kd", "kd-equal-cost", "cascade"))
for _, row in at_cost.iterrows():
    print(f"{row['ResKD']} ({row['ResKD MMACs']:.1f} MMACs) vs {row['versus']} ({row['versus MMACs']:.1f} MMACs): "
          f"{row['ResKD top-1']:.2f}% vs {row['versus top-1']:.2f}%, difference {row['difference']:+.2f} points "
          f"-> {row['verdict']}")
report.page_table(at_cost.drop(columns=["ResKD", "ResKD MMACs", "ResKD top-1"]))

# %% [markdown]
# ## A regime map: where could residual stages pay?
#
# The chain above is one reading of ResKD: light res-students that read the image and regress the residual. The
# paper's exact res-student architectures and losses were not available to us (the introduction says what that left
# us to choose), so the question "do residual stages pay?" deserves more than one point. The map varies four axes (only the first regime is
# our reading of the paper, every other one is ours; the introduction's
# [glossary](glossary) names each regime):
#
# - **input**: the image, $S_0$'s last feature map, or an earlier one (a stage that sees what $S_0$ saw can read
#   $S_0$'s mistakes instead of re-learning them);
# - **size** against $S_0$: lighter, as heavy, heavier (resnet20); a heavy stage is paid only by the images the exit
#   rule sends on;
# - **objective**: residual regression, or *decision-focused*: Hinton KD plus cross-entropy on the combined logits,
#   taken only over the least confident 25-30% of each batch, the images an exit rule would send on;
# - **$S_0$**: the profile's resnet8, or a stronger KD resnet14 from the same teacher.
#
# Each regime is screened with one seed: its thresholds are calibrated on the validation split for each budget, and
# the test split is only reported. Screening numbers are one seed; three seeds come only for the regimes that the
# validation split says are worth it.

# %%
regime_frame, not_trained = regimes.screen_available(exp, config.regimes)
screen_seed = regimes.SCREEN_SEEDS[0]
stronger = sorted({regimes.CIFAR_REGIMES[n].student for n in config.regimes if n not in not_trained} - {None},
                  key=lambda arch: arch.label)  # a regime with its own S0 is held against the cascade from that S0
regime_frame = pd.concat([cascade_rows[cascade_rows["seed"] == screen_seed], regime_frame]
                         + [regimes.cascade_budgets(exp, screen_seed, student=arch) for arch in stronger],
                         ignore_index=True)
described = {name: regimes.CIFAR_REGIMES[name].label(exp) for name in config.regimes}
for name in config.regimes:
    print(f"{'NOT TRAINED YET' if name in not_trained else 'screened':>15}  {described[name]}")
regime_map = regimes.map_table(regime_frame)
# two narrower tables instead of one wide one: what each regime reaches on test, then what chose it
display(Markdown("**Test top-1 (%)**: the whole chain, and the adaptive policy at each budget"),
        report.page_table(regime_map.xs("test", axis=1, level=1)))
display(Markdown("**What chose each policy** (val top-1, %) **and what it paid on test** (% of the teacher's MACs)"),
        report.page_table(regime_map.drop(columns="test", level=1)))

# %% [markdown]
# The map as a picture: every static prefix of each regime's chain (connected), its adaptive policies at the three
# budgets, and the cascade to the teacher, against the test cost each one really paid.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(9, 7))
# one colour and one marker per regime, none reused (tab10 and two more colours: the map has twelve rows)
colours = sns.color_palette("tab10", 10) + [(0.0, 0.0, 0.5), (0.6, 0.85, 0.2)]
regime_markers = "osD^vPXh<>pd"
palette = {name: colours[i % len(colours)] for i, name in enumerate(regime_map.index)}
marker_of = {name: regime_markers[i % len(regime_markers)] for i, name in enumerate(regime_map.index)}
for name, rows in regime_frame[regime_frame["seed"] == screen_seed].groupby("regime", sort=False):
    static = rows[rows["policy"].str.startswith("static")]
    adaptive = rows[rows["policy"].str.startswith("adaptive")]
    if name == regimes.CASCADE:  # S0 and the teacher alone are the ends of its curve
        ax.plot(cascade_curve["test_pct_teacher"], cascade_curve["test_top1"], color=palette[name], lw=1.5,
                label="cascade to the teacher (sweep)")
    else:
        ax.plot(static["test_pct_teacher"], static["test_top1"], marker=marker_of[name], ms=5, lw=1,
                color=palette[name], label=name)
    ax.scatter(adaptive["test_pct_teacher"], adaptive["test_top1"], marker="*", s=110, color=palette[name],
               edgecolors="white", linewidths=0.5, zorder=3)
equal_cost = next(m for m in models if m["kind"] == "kd-equal-cost")
ax.scatter([equal_cost["pct_teacher"]], [equal_cost["top1_mean"]], color="black", zorder=3,
           **{k: v for k, v in kind_style("kd-equal-cost").scatter(s=60).items() if k not in ("color", "label")},
           label=f"equal-cost KD student ({config.equal_cost.label}), mean of {len(equal_cost['seeds'])} seeds")
for b in regimes.BUDGETS_PCT:
    ax.axvline(b, color="crimson" if b == budget else "0.6", ls=":", lw=1)
    ax.text(b, 1.005, f"{b:g}%", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9,
            color="crimson" if b == budget else "0.3")
ax.set_xscale("log")
ax.set_xlim(8, 130)
ax.set_ylim(bottom=min(regime_frame["test_top1"].min(), equal_cost["top1_mean"]) - 0.5)
ax.set_xlabel("mean cost per test image (% of the teacher's MACs, log scale; dotted: the budgets)")
ax.set_ylabel("top-1 on the test split (%)")
ax.set_title(f"regime map, seed {screen_seed} (stars: adaptive at each budget)", pad=18)
ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
ax.xaxis.set_minor_formatter(ticker.NullFormatter())
ax.set_xticks([10, 15, 20, 30, 50, 100])
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3)  # below: no point hidden
fig.tight_layout()
plt.show()

# %% [markdown]
# Why removing residual energy need not buy accuracy: for each regime's first res-student, the share of the residual
# energy it removed on test images, the top-1 it gained, and where that energy sat: on the images $S_0$ already got
# right, or on those it got wrong (fixed and broken are in % of all test images).

# %%
screened = {name: regimes.regime_staged(exp, regimes.CIFAR_REGIMES[name], screen_seed)  # from the evaluation cache
            for name in config.regimes if name not in not_trained}
screen_staged = dict(screened)  # kept for the chain-to-teacher below (the name is reused for the best regime)
energy_table = regimes.first_stage_energy(screened)
report.page_table(energy_table)

# %% [markdown]
# Where a stage would have to pay: the images an exit rule sends on. For each regime's first res-student, the test
# images $S_0$ is least sure of (the quarter of the images with the lowest max-softmax probability; the cut is the
# probability below which a quarter of the **validation** images fall), top-1 there of $S_0$, of $S_0$ plus the
# stage, and of the teacher, which is what the cascade pays for on those images; fixed and broken are in % of those
# images.

# %%
hard = regimes.hard_images(screened)
display(report.page_table(hard))
gain = hard["S0 + stage top-1"] - hard["S0 top-1"]
reading = regimes.hard_images_reading(hard)
focused = [n for n in hard.index if regimes.CIFAR_REGIMES[n].focus is not None]
if focused:
    reading += (" The decision-focused stages, trained on exactly such images, change their top-1 by "
                + ", ".join(f"{gain[n]:+.1f} points ({n})" for n in focused) + ".")
display(Markdown(reading))

# %% [markdown]
# ### How many stages does each regime keep?
#
# A regime trains a fixed number of stages; a user stops adding them when the next one no longer pays. The rule
# (`reskd.studies.grow`, through `reskd.regimes.stages_paid_for`) keeps a stage only while its **validation** top-1
# gain per added million MACs is at least what the same MACs buy as width: the slope, on validation, from $S_0$ to
# the equal-cost KD student. A regime whose first stage already falls below that bar would do better spending its
# MACs on a wider student.

# %%
s0_val = top1(*exp.logits(students["kd"][screen_seed], "val"))
equal_val = top1(*exp.logits(equal[screen_seed], "val"))
s0_mmacs = model_cost(students["kd"][screen_seed], exp.input_size).macs / 1e6
equal_mmacs = model_cost(equal[screen_seed], exp.input_size).macs / 1e6
width_slope = (equal_val - s0_val) / (equal_mmacs - s0_mmacs)
print(f"the bar: {config.student.label} -> {config.equal_cost.label} gains {equal_val - s0_val:+.2f} val points for "
      f"{equal_mmacs - s0_mmacs:.2f} MMACs = {width_slope:.3f} points per MMAC (seed {screen_seed})")
growth = pd.concat([regimes.stages_paid_for(exp, regimes.CIFAR_REGIMES[name], screen_seed,
                                            min_gain_per_mmac=width_slope)
                    for name in config.regimes if name not in not_trained], ignore_index=True)
kept = growth.groupby("regime", sort=False).apply(
    lambda log: pd.Series({"stages trained": len(regimes.CIFAR_REGIMES[log.name].stages),
                           "stages kept": int(log["decision"].str.startswith("added").sum()),
                           "why it stopped": log["decision"].iloc[-1] if log["decision"].iloc[-1].startswith("stop")
                           else "kept every trained stage"}), include_groups=False)
kept

# %% [markdown]
# The **screen**: the regime with the best **validation** top-1 at the paper's budget on one seed, against the cascade
# to the teacher and the equal-cost KD student at the same seed. It only chooses which regime gets three seeds; it is
# not the model each budget is judged by (that one is chosen by the book's rule once every ResKD entry exists,
# below), and one seed gives no noise estimate, so a lead here is a reason to run more seeds, not a result.

# %%
screened = regimes.best_at_budget(regime_frame, budget)
if screened is not None:
    best, cascade_row = screened
    equal_seed = top1(equal_logits[screen_seed], labels)
    print(f"best regime on val at <= {budget}% of the teacher: {best['regime']} "
          f"(val {best['val_top1']:.2f}%, test {best['test_top1']:.2f}% at {best['test_pct_teacher']:.2f}%)")
    print(f"cascade to the teacher, same budget: val {cascade_row['val_top1']:.2f}%, test {cascade_row['test_top1']:.2f}% "
          f"at {cascade_row['test_pct_teacher']:.2f}% -> regime {best['test_top1'] - cascade_row['test_top1']:+.2f} "
          f"points on test")
    print(f"equal-cost KD student, seed {screen_seed}: test {equal_seed:.2f}% at {equal_cost['pct_teacher']:.2f}% -> "
          f"regime {best['test_top1'] - equal_seed:+.2f} points on test")
else:
    print(f"no trained regime of the map meets the budget of {budget}% on val: see the list above")

# %% [markdown]
# The screened regime then runs with every seed of the profile: its adaptive entries join the candidates of the
# rule below, with all the seeds that are trained (one seed gives no noise estimate, and the verdicts say so).

# %%
if screened is not None:
    best_rows, best_seeds = regimes.budgets_over_seeds(exp, best["regime"], config.seeds)
    missing_seeds = [s for s in config.seeds if s not in best_seeds]
    print(f"{best['regime']}: seeds {best_seeds} trained" + (
        f"; seeds {missing_seeds} are not (python -m reskd.cli {dataset} {config.name} regime:{best['regime']} "
        f"--seeds {' '.join(map(str, missing_seeds))})" if missing_seeds else ""))
    best_models = regimes.budget_records(best_rows, teacher_macs, kind="reskd-adaptive", labels=described)
    for model in best_models:  # the map's best regime joins the models
        model["name"] = f"ResKD {model['name']}"
    models += best_models
    display(models_table(best_models))
    screened_name = f"ResKD {best['regime']} (adaptive, {budget:g}% budget)"
    screened_at_cost = report.compare_at_cost(models, against=("kd", "kd-equal-cost", "cascade"),
                                              reskd=screened_name)
    for _, row in screened_at_cost.iterrows():
        print(f"{row['ResKD']} ({row['ResKD MMACs']:.1f} MMACs) vs {row['versus']} ({row['versus MMACs']:.1f} "
              f"MMACs): {row['difference']:+.2f} points, s.e. "
              + ("n/a" if pd.isna(row["std. error"]) else f"{row['std. error']:.2f}") + f" -> {row['verdict']}")

# %% [markdown]
# ### Res-students inside the cascade: $S_0$, then $S_0 + S_1$, then the teacher
#
# The map holds each regime's chain, which ends at its own last res-student, against the cascade from $S_0$
# straight to the teacher. The question that follows from both: what if the res-students are **middle exits** of
# that cascade? A sample stops after $S_0$ when $S_0$ is sure; else $S_0 + S_1$ gets a say; only the samples still
# unsure pay for the teacher, its full MACs on top of every stage they ran (ours, not the paper's). One definition
# covers all three (`reskd.adaptive.cascade(chain, teacher_logits, teacher_macs)`; the two-tier cascade is the
# chain of $S_0$ alone). For every regime of the map trained with all the profile's seeds, at five budgets from
# 12.5% to 25% of the teacher's MACs, the thresholds (one shared by the stages, or one per stage) and, in a chain
# of several res-students, how many of them run before the teacher are chosen on the validation split; the two-tier
# cascade is calibrated on the same split to the same budget, and test is only reported. The verdict is the
# **paired** difference over seeds (both sides share the seed's $S_0$ and the teacher): its mean, its standard
# error, and whether it exceeds twice that.

# %%
chain_budgets = regimes.CHAIN_TEACHER_BUDGETS_PCT
CHAIN_POINTS = 50 if config.name == "smoke" else 200  # candidate thresholds per stage (smoke: a pipeline check)
chain_regimes, chain_frames = [], []  # the regimes of the map trained with every seed of the profile, their rows
for name in config.regimes:
    if name in not_trained:
        continue
    regime = regimes.CIFAR_REGIMES[name]
    try:
        chain_frames.append(regimes.chain_to_teacher_rows(exp, regime, config.seeds, budgets_pct=chain_budgets,
                                                          points=CHAIN_POINTS,
                                                          cascades=None if regime.student else cascades,
                                                          chains={screen_seed: screen_staged[name]}))
        chain_regimes.append(name)
    except MissingRunError:  # some seed is not trained: no paired verdict over the profile's seeds
        continue
chain_rows = pd.concat(chain_frames, ignore_index=True)
chain_verdicts = regimes.paired_verdicts(chain_rows)
chain_models = regimes.chain_to_teacher_records(chain_rows, teacher_macs, labels=described, mode="per-stage")
chain_models += regimes.chain_to_teacher_records(chain_rows, teacher_macs, labels=described, mode="shared")
models += chain_models
print(f"regimes with seeds {list(config.seeds)} trained: {', '.join(chain_regimes)}")
display(Markdown("**Chain-to-teacher minus the two-tier cascade**, test top-1 points, paired over seeds "
                 "(mean, s.e.; per-stage thresholds)"))
per_stage_verdicts = chain_verdicts[chain_verdicts["thresholds_mode"] == "per-stage"]
display(report.page_table(regimes.verdicts_table(per_stage_verdicts.drop(columns=["thresholds_mode"]))))
display(Markdown("The same with **one threshold shared** by the stages:"))
display(report.page_table(regimes.verdicts_table(chain_verdicts[chain_verdicts["thresholds_mode"] == "shared"][
    ["regime", "budget_pct", "difference", "std. error", "verdict", "val difference"]])))

# %% [markdown]
# Where the difference comes from, on test (means over seeds, per-stage thresholds): the share of the images the
# middle exits stop and, of those, the share the two-tier cascade sent to the teacher at the same budget; top-1 on
# those images under both; the share that reaches the teacher in each (which is also its MACs, in % of the
# teacher's, per image), the teacher spared (images the cascade sends to it that the chain stops earlier) and taken
# on (the reverse); the MACs the middle stages add per image; and the images one gets right and the other wrong.

# %%
chain_routing = chain_rows[chain_rows["thresholds_mode"] == "per-stage"].groupby(
    ["regime", "budget_pct"], sort=False)[list(regimes.ROUTING_COLUMNS)].mean()
middle_table, teacher_table = regimes.routing_tables(chain_routing)
display(Markdown("**The middle exits**"), report.page_table(middle_table, digits=1),
        Markdown("**The teacher's load**"), report.page_table(teacher_table, digits=1))
ROUTE_NAMES = {"S0": "S0", "mid": "a middle exit", "T": "the teacher"}
route_columns = [f"{kind}_{c}_{r}{suffix}" for c, r in regimes.ROUTES
                 for kind, suffix in (("route", "_pct"), ("gain", ""))]
chain_routes = chain_rows[chain_rows["thresholds_mode"] == "per-stage"].groupby(
    ["regime", "budget_pct"], sort=False)[route_columns].mean()
chain_routes.columns = pd.MultiIndex.from_tuples(
    [(f"cascade: {ROUTE_NAMES[c]}, chain: {ROUTE_NAMES[r]}", label) for c, r in regimes.ROUTES
     for label in ("images (%)", "gain (points)")])
route_budget = budget if budget in chain_budgets else chain_budgets[len(chain_budgets) // 2]
display(Markdown(f"By **route**, at {route_budget:g}% (where the cascade stops an image, then where the "
                 "chain-to-teacher does): each route's share of the test images and what it adds to the difference "
                 "(points of top-1 on all test images; the gains sum to it). The results file has every budget."))
display(report.page_table(chain_routes.xs(route_budget, level="budget_pct").T))


def route_parts(regime: str, top: int = 2) -> list[tuple[tuple[str, str], float, float]]:
    """The ``top`` routes (the two policies stopping an image at different places) that move the difference most
    at the paper's budget: (route, share of the images, gain in points)."""
    at = chain_routes.loc[(regime, budget)]
    parts = [((c, x), at[(f"cascade: {ROUTE_NAMES[c]}, chain: {ROUTE_NAMES[x]}", "images (%)")],
              at[(f"cascade: {ROUTE_NAMES[c]}, chain: {ROUTE_NAMES[x]}", "gain (points)")])
             for c, x in regimes.ROUTES if c != x]
    return sorted(parts, key=lambda part: -abs(part[2]))[:top]


at_paper = per_stage_verdicts[per_stage_verdicts["budget_pct"] == budget]
chain_reading = []
for _, v in at_paper.iterrows():
    r = chain_routing.loc[(v["regime"], budget)]
    chain_reading.append(
        f"**{v['regime']}** at {budget:g}%: {v['difference']:+.2f} points (s.e. "
        + ("n/a" if pd.isna(v["std. error"]) else f"{v['std. error']:.2f}") + f", {v['verdict']}); its middle exit "
        f"stops {r['middle_exit_pct']:.1f}% of the test images, {r['middle_sent_to_teacher_by_cascade_pct']:.0f}% of "
        f"which the cascade sent to the teacher, at {r['middle_top1']:.1f}% top-1 there against the cascade's "
        f"{r['middle_top1_cascade']:.1f}%; the teacher sees {r['teacher_pct']:.1f}% of the images instead of "
        f"{r['cascade_teacher_pct']:.1f}%; the largest parts of the difference by route: "
        + ", ".join(f"{gain:+.2f} points from the {share:.1f}% of the images the cascade stops at {ROUTE_NAMES[c]} "
                    f"and the chain at {ROUTE_NAMES[x]}" for (c, x), share, gain in route_parts(v["regime"])))
display(Markdown("\n".join(f"- {line}." for line in chain_reading)))
# the paired verdicts at the paper's budget join the chapter's comparisons at equal cost
at_cost = pd.concat([at_cost, regimes.chain_at_cost_rows(at_paper, teacher_macs)], ignore_index=True)

# %% [markdown]
# ## The ResKD model judged at each budget
#
# Every ResKD entry now exists: the profile chain's adaptive rules, the screened regime's adaptive rules over its
# seeds, and every chain-to-teacher with per-stage and with shared thresholds. One rule, the book's, picks the model
# each budget is judged by; the screen above only chose which regime got more seeds. Against the equal-cost KD
# student the difference and its standard error come from the seed means and spreads; against the cascade at the
# same budget, a chain-to-teacher's difference is the paired one computed above (the same $S_0$ and teacher, seed by
# seed), any other entry's again from the seed means and spreads; a budget some seed does not meet on validation
# gets no verdict. The last two columns compare the res-students the
# model may run with how many the growth rule above keeps for its regime.

# %% tags=["hide-input"]
display(Markdown(f"**The rule**: {report.CHOICE_RULE}."))
equal_cost = next(m for m in models if m["kind"] == "kd-equal-cost" and m["stages"] == 1)


def regime_of(model: dict) -> str | None:
    """The map's regime a ResKD entry belongs to (None for the profile's own chain)."""
    name = model["name"].removeprefix("ResKD ")
    return next((r for r in config.regimes if name.startswith((f"{r} -> ", f"{r} ("))), None)


def res_students_used(model: dict) -> int:
    """How many res-students ``model`` may run (at most, over its seeds): its stages less S0 (and the teacher)."""
    return model["stages"] - (2 if model["kind"] == "chain-to-teacher" else 1)


def plain(verdict_text: str) -> str:
    """A verdict without its subject ("chain-to-teacher ahead" -> "ahead")."""
    return verdict_text.removeprefix("chain-to-teacher ").removeprefix("ResKD ")


def versus(j: dict, against: str) -> dict | None:
    """The judged model's comparison ``against`` (difference, standard error, verdict, where its s.e. comes from)."""
    v = next((v for v in j["versus"] if v["against"] == against), None)
    return None if v is None else {k: v[k] for k in ("difference", "std. error", "verdict", "s.e. from")}


record = {"models": models, "extra": {"target": {"max_drop": MAX_DROP}}}
judged, judged_rows = {}, []
for b in sorted(set(regimes.BUDGETS_PCT) | ({budget} if budget else set())):
    j = report.judged_at_budget(record, b, chain_verdicts=chain_verdicts)
    if j is None:
        continue
    model = j["model"]
    cascade_b = next((v["model"] for v in j["versus"] if v["against"] == "cascade to the teacher"), None)
    vs_equal = {k: v for k, v in versus(j, "equal-cost KD student").items() if k != "s.e. from"}
    vs_cascade = versus(j, "cascade to the teacher")
    regime = regime_of(model)
    judged[b] = {"model": model, "cascade": cascade_b, "vs_equal": vs_equal, "vs_cascade": vs_cascade,
                 "paired": j["paired"], "regime": regime, "used": res_students_used(model),
                 "kept": int(kept.loc[regime, "stages kept"]) if regime in kept.index else None}
    none = {"difference": math.nan, "std. error": math.nan, "verdict": "–", "s.e. from": "–"}
    judged_rows.append({
        ("", "budget (% of teacher)"): b, ("", "ResKD model judged"): model["name"].replace(f", {b:g}% budget)", ")"),
        ("", "val top-1 (%)"): model["val_top1_mean"], ("", "test top-1 (%)"): model["top1_mean"],
        ("", "test % of teacher"): model["pct_teacher"],
        ("against the equal-cost KD student", "difference"): vs_equal["difference"],
        ("against the equal-cost KD student", "s.e."): vs_equal["std. error"],
        ("against the equal-cost KD student", "verdict"): plain(vs_equal["verdict"]),
        **{("against the cascade at that budget", k if k != "std. error" else "s.e."):
           (plain(v) if k == "verdict" else v) for k, v in (vs_cascade or none).items()},
        ("res-students", "it may run"): judged[b]["used"],
        ("res-students", "the growth rule keeps"): judged[b]["kept"]})
if judged_rows:
    judged_table = pd.DataFrame(judged_rows)
    judged_table.columns = pd.MultiIndex.from_tuples(judged_table.columns)
    judged_table = (judged_table.set_index([("", "budget (% of teacher)")]).rename_axis("budget (% of teacher)")
                    .astype({("res-students", "the growth rule keeps"): "Int64"}))
    # two tables a text column wide: the models, then what they are held against
    judged_models = judged_table[["", "res-students"]]
    judged_models.columns = [b if a == "" else f"res-students {b}" for a, b in judged_models.columns]
    display(report.page_table(judged_models))
    paired_note = ("; against the cascade, a chain-to-teacher's s.e. is paired over seeds (the same $S_0$ and teacher)"
                   if any(j["vs_cascade"] and j["vs_cascade"]["s.e. from"] == "paired over seeds" for j in judged.values())
                   else "")
    display(Markdown(f"Each judged model against the baselines (test top-1 points{paired_note}):"),
            report.page_table(judged_table[["against the equal-cost KD student", "against the cascade at that budget"]]
                              .drop(columns=[("against the cascade at that budget", "s.e. from")])))
else:  # e.g. a smoke run, whose chains meet no budget on val
    display(Markdown("No ResKD entry was calibrated on validation to any of the budgets: nothing to judge."))
chosen = judged.get(budget)
chosen_name = chosen["model"]["name"] if chosen else None
more_stages = [j for j in judged.values() if j["kept"] is not None and j["used"] > j["kept"]]
display(Markdown(" ".join(
    f"At {b:g}%, {j['model']['name']} may run {j['used']} res-student(s) of {j['regime']}, where the growth rule "
    f"keeps {j['kept']}: it is judged as trained, with more stages than the rule would keep."
    for b, j in judged.items() if j in more_stages)
    or "No judged model runs more res-students than the growth rule keeps for its regime."))
# the judged models against the equal-cost student and the cascade join the chapter's comparisons at equal cost
judged_at_cost = pd.DataFrame([{
    "ResKD": j["model"]["name"], "ResKD MMACs": j["model"]["macs"] / 1e6, "ResKD top-1": j["model"]["top1_mean"],
    "versus": other["name"] + (", paired over seeds" if v.get("s.e. from") == "paired over seeds" else ""),
    "versus MMACs": other["macs"] / 1e6, "versus top-1": other["top1_mean"], "difference": v["difference"],
    "std. error": v["std. error"],  # a paired verdict names its subject, as the chains-to-teacher's rows above do
    "verdict": f"chain-to-teacher {v['verdict']}" if v.get("s.e. from") == "paired over seeds"
    and v["verdict"] in ("ahead", "behind") else v["verdict"]}
    for j in judged.values() for other, v in ((equal_cost, j["vs_equal"]), (j["cascade"], j["vs_cascade"]))
    if other is not None])
at_cost = pd.concat([at_cost, judged_at_cost], ignore_index=True).drop_duplicates(["ResKD", "versus"])

# %% [markdown]
# ## Accuracy against cost
#
# Every model of the chapter at its mean cost per test image and its test top-1 (mean over seeds), one marker and
# colour per kind of model as in every chapter of the book, with the adaptive sweeps of the profile's chain and of
# the cascade (thresholds from validation). Of the chains-to-teacher, only the judged ones are drawn (the tables above
# hold the rest); the model judged at each budget is ringed, and the one at the paper's budget named.

# %% tags=["hide-input"]
drawn = [m for m in models if m["kind"] != "chain-to-teacher"]
drawn += [j["model"] for j in judged.values() if j["model"]["kind"] == "chain-to-teacher" and j["model"] not in drawn]
SIZES = {"kd": 230, "reskd-stage": 140, "reskd-adaptive": 60}  # larger behind, smaller in front: shared points show
fig, ax = plt.subplots(figsize=(10, 6.8))
for kind in KIND_STYLES:
    part = [m for m in drawn if m["kind"] == kind]
    if part:
        style = kind_style(kind)
        hollow = ({"facecolors": "none", "edgecolors": style.color, "color": None} if style.marker not in "x+"
                  else {})  # a line marker (x) has no face: it keeps its colour
        ax.scatter([m["macs"] / 1e6 for m in part], [m["top1_mean"] for m in part],
                   **style.scatter(s=SIZES.get(kind, 90), linewidths=1.6, zorder=3, **hollow))
stages = sorted((m for m in drawn if m["kind"] == "reskd-stage"), key=lambda m: m["stages"])
ax.plot([m["macs"] / 1e6 for m in stages], [m["top1_mean"] for m in stages], color=kind_style("reskd-stage").color,
        lw=1, zorder=2)
ax.plot(curve["test_avg_macs"] / 1e6, curve["test_top1"], color=kind_style("reskd-adaptive").color, lw=1, ls="--",
        zorder=1, label="ResKD adaptive sweep (seed 0)")
ax.plot(cascade_curve["test_avg_macs"] / 1e6, cascade_curve["test_top1"], color=kind_style("cascade").color, lw=1,
        ls="--", zorder=1, label="cascade sweep (seed 0)")
for b in regimes.BUDGETS_PCT:
    x = b / 100 * teacher_macs / 1e6
    ax.axvline(x, color="crimson" if b == budget else "0.6", ls=":", lw=1)
    ax.text(x, 1.005, f"{b:g}%", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9,
            color="crimson" if b == budget else "0.3")
for b, j in judged.items():
    m = j["model"]
    ax.scatter([m["macs"] / 1e6], [m["top1_mean"]], s=520, facecolors="none", edgecolors="crimson" if b == budget
               else "0.4", linewidths=1.2, zorder=4)
    if b == budget:
        ax.annotate(f"judged at {b:g}%:\n{m['name']}\n{m['top1_mean']:.2f}% at {m['pct_teacher']:.1f}% of T",
                    (m["macs"] / 1e6, m["top1_mean"]), xytext=(70, -75), textcoords="offset points", fontsize=9,
                    color="crimson", arrowprops={"arrowstyle": "->", "color": "crimson", "lw": 1})
for m in drawn:  # the equal-cost baselines share a kind: name them
    if m["kind"] == "kd-equal-cost":
        label = (config.equal_cost.label if "ensemble" not in m["name"] else
                 "plain ensemble, " + ("averaged" if "averaged" in m["name"] else "weights fit on val"))
        ax.annotate(label, (m["macs"] / 1e6, m["top1_mean"]), xytext=(8, -3), textcoords="offset points",
                    fontsize=8, color=kind_style("kd-equal-cost").color)
ax.set_xscale("log")
ax.margins(y=0.08)
ax.set_xlabel("mean cost per test image (millions of MACs, log scale; dotted: the budgets, % of the teacher)")
ax.set_ylabel("top-1 on the test split (%)")
ax.set_title(f"{exp.data.spec.display_name}, profile {config.name!r}", pad=18)
ax.xaxis.set_major_formatter(ticker.ScalarFormatter())  # plain numbers on the log axis
ax.xaxis.set_minor_formatter(ticker.NullFormatter())
ax.set_xticks([t for t in (10, 15, 20, 30, 50, 100, 150) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]])
ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3)  # below: no point hidden
fig.tight_layout()
plt.show()
same = pd.DataFrame([{"at": (round(m["macs"] / 1e6, 2), round(m["top1_mean"], 2)), "name": m["name"]}
                     for m in drawn]).groupby("at", sort=False)["name"].agg(list)
display(Markdown(" ".join(
    f"Drawn at the same place ({at[0]:.1f} MMACs, {at[1]:.2f}%): " + ", ".join(names) + "."
    for at, names in same.items() if len(names) > 1)))

# %% [markdown]
# ## The paper's claim beside ours
#
# The paper reports accuracy competitive with the teacher at 18.04% of its compute on CIFAR-10 (23.14% on
# CIFAR-100). Our target, fixed before the runs: a ResKD model (adaptive or a static stage) **within 1.0 point of
# the teacher at no more than that share of its MACs, and ahead of the equal-cost baselines and of the cascade to
# the teacher by more than twice the standard error over seeds**. The model held to it is the one the book's rule
# judges at that budget (the table above; the test split chooses nothing); against the cascade at the same budget, a
# chain-to-teacher is read by its paired difference.

# %%
verdict = report.check_target(models, max_pct_teacher=budget or 100.0, max_drop=MAX_DROP, reskd=chosen_name,
                              paired=chosen["paired"] if chosen else None)
print(f"teacher top-1 {verdict['teacher_top1']:.2f}%; ResKD held to the target within {verdict['max_pct_teacher']}% "
      "of its MACs: "
      f"{verdict.get('reskd', 'none')}"
      + (f", {verdict['reskd_top1']:.2f}% at {verdict['reskd_pct_teacher']:.2f}%" if "reskd" in verdict else ""))
print("target reached" if verdict["reached"] else f"target NOT reached: {verdict['why']}")

# %% [markdown]
# ## Does the verdict depend on training length?
#
# A skeptic's first question: is this an artifact of short training? Every run of this chapter outside the smoke
# profile records, for its profile, the gaps the conclusion rests on at the paper's budget: the model judged over its
# KD $S_0$, the equal-cost KD student over it, the cascade over it (paired where the model is a chain-to-teacher), and
# the teacher over it against the target's allowed point. The table puts every recorded profile side by side, one
# column per training length; the `converged` profile trains the teacher and the KD student as long as doubling the
# length still gains 0.3 validation points (`python -m reskd.cli cifar10 converged teacher-lengths`).

# %%
if config.name != "smoke" and budget is not None:  # a smoke run's numbers mean nothing: it records no column
    results.write_gaps(dataset, config.name, teacher_epochs=config.teacher_train.epochs,
                       student_epochs=config.student_train.epochs,
                       gaps=report.verdict_gaps(record, budget, chain_verdicts=chain_verdicts),
                       choices={"residual_loss": runs.loss, "judged_model": chosen_name,
                                "judged_regime": chosen["model"].get("regime_name") if chosen else None}, root=results_dir)
lengths = report.gaps_by_length(results.load_gaps(dataset, results_dir))
if lengths.empty:
    display(Markdown("No profile outside smoke has recorded its gaps yet."))
else:
    display(report.gaps_table(lengths))
    if lengths["profile"].nunique() > 1:
        gaps_figure(lengths)
        plt.show()
display(Markdown(report.length_reading(lengths)))

# %% [markdown]
# ## What this run shows
#
# The findings, each computed from the run above (so a run with another profile or data set states its own numbers).

# %% tags=["hide-input"]
def mean_gain(k: int) -> float:
    """Mean over seeds of the test top-1 that stage ``k`` adds to stage ``k - 1``."""
    return float(per_stage_mean.loc[k, "test_top1"] - per_stage_mean.loc[k - 1, "test_top1"])


by_name = {m["name"]: m for m in models}


def se_text(v: dict) -> str:
    """A verdict's standard error as text ("n/a" where one seed gives none)."""
    return "n/a" if v["std. error"] is None or pd.isna(v["std. error"]) else f"{v['std. error']:.2f}"


def judged_reading(j: dict) -> str:
    """The judged model against the equal-cost KD student and the cascade: differences, s.e. and verdicts."""
    parts = [f"{j['vs_equal']['difference']:+.2f} points against the equal-cost KD student (s.e. "
             f"{se_text(j['vs_equal'])}: {plain(j['vs_equal']['verdict'])})"]
    if j["vs_cascade"] is not None:
        parts.append(f"{j['vs_cascade']['difference']:+.2f} against the cascade at the same budget (s.e. "
                     f"{se_text(j['vs_cascade'])}, {j['vs_cascade']['s.e. from']}: "
                     f"{plain(j['vs_cascade']['verdict'])})")
    return " and ".join(parts)
chain = max((m for m in models if m["kind"] == "reskd-stage"), key=lambda m: m["stages"])
kd = next(m for m in models if m["kind"] == "kd")
energy_cut = 100 * (1 - per_stage_mean.loc[1, "test_residual_energy"] / per_stage_mean.loc[0, "test_residual_energy"])
adaptive_entries = [m for m in stage_models if m["kind"] == "reskd-adaptive"]  # the chain's operating points
trivial = [m["name"] for m in adaptive_entries if abs(m["pct_teacher"] - kd["pct_teacher"]) < 0.01]
cascade_at = next((m for m in cascade_models if f"{budget:g}% budget" in m["name"]), None)
findings = [
    f"**The first res-student** adds {mean_gain(1):+.2f} test points to $S_0$ on average over {len(config.seeds)} "
    f"seed(s) and removes {energy_cut:.0f}% of the test residual energy"
    + ("; the later ones add " + ", ".join(f"{mean_gain(k):+.2f}" for k in range(2, len(config.res_students) + 1))
       + " points." if len(config.res_students) > 1 else "."),
    f"**The same MACs spent on width**: {equal_cost['name']} reaches {equal_cost['top1_mean']:.2f} ± "
    f"{equal_cost['top1_std']:.2f}% at {equal_cost['pct_teacher']:.2f}% of the teacher, against the full chain's "
    f"{chain['top1_mean']:.2f} ± {chain['top1_std']:.2f}% at {chain['pct_teacher']:.2f}%.",
    ("**Adaptive inference has nothing to skip in this regime**: at " + " and ".join(trivial) + " the calibrated "
     "threshold stops every test image after $S_0$, so those entries are the KD student, not a trade."
     if trivial else "**Adaptive inference** sends some images past $S_0$ at every operating point."),
]
if cascade_at is not None:
    findings.append(f"**The cascade to the teacher** reaches {cascade_at['top1_mean']:.2f} ± "
                    f"{cascade_at['top1_std']:.2f}% at {cascade_at['pct_teacher']:.2f}% of the teacher's MACs, "
                    f"{cascade_at['top1_mean'] - chain['top1_mean']:+.2f} points against the full chain and "
                    f"{cascade_at['top1_mean'] - equal_cost['top1_mean']:+.2f} against the equal-cost student, "
                    f"with no training at all.")
if screened is not None:
    findings.append(f"**The regime map's screen** (seed {screen_seed}, {len(config.regimes) - len(not_trained)} of "
                    f"{len(config.regimes)} regimes trained): the best at {budget}% on validation is "
                    f"{best['regime']}, {best['test_top1'] - cascade_row['test_top1']:+.2f} test points against the "
                    f"cascade at the same budget and seed; it chose which regime got more seeds, not the model judged.")
if not at_paper.empty:
    findings.append(f"**Res-students inside the cascade** ({len(chain_regimes)} regimes with {len(config.seeds)} "
                    f"seed(s), per-stage thresholds from val): at {budget:g}% the chain-to-teacher against the "
                    "two-tier cascade, paired over seeds: " + "; ".join(
                        f"{v['regime']} {v['difference']:+.2f} (s.e. "
                        + ("n/a" if pd.isna(v["std. error"]) else f"{v['std. error']:.2f}") + f", {v['verdict']})"
                        for _, v in at_paper.iterrows()) + ". Over the budgets "
                    + ", ".join(f"{b:g}%" for b in chain_budgets) + ", the verdicts are: "
                    + "; ".join(f"{verdict_text} {count}" for verdict_text, count in
                                per_stage_verdicts["verdict"].value_counts().items()) + ".")
for b, j in judged.items():
    findings.append(f"**The ResKD model judged at {b:g}%** (the book's rule, on validation): {j['model']['name']}, "
                    f"{j['model']['top1_mean']:.2f}% test top-1 at {j['model']['pct_teacher']:.2f}% of the teacher; "
                    + judged_reading(j) + ".")
findings.append(f"**The target** ({MAX_DROP} point from the teacher at {verdict['max_pct_teacher']}% of its MACs, "
                f"ahead of the cascade and the equal-cost student): "
                + ("reached." if verdict["reached"] else f"not reached: {verdict['why']}."))
findings.append(f"**What it cost**: {hours.sum():.1f} hours of run time summed over the {len(runs_table)} runs of the "
                f"chain and its baselines, {hours.get('teacher', 0.0):.1f} of them the teacher's, about {two_workers:.1f} "
                f"hours of wall-clock on two workers (see the cost table above).")
display(Markdown("\n".join(f"- {line}" for line in findings)))

# %% tags=["remove-cell"]
# The chapter's answer, glued into its opening: computed from the results above (test split, means over seeds; every
# choice was made on val).
from myst_nb import glue

by_seed = per_stage.pivot_table(index="seed", columns="stage", values="test_top1")
first_gain = report.paired_difference(list(by_seed[1]), list(by_seed[0]), names=("S0 + S1", "S0"))
answer = (f"**The answer** ({exp.data.spec.display_name}, `{config.name}` profile, {len(config.seeds)} seeds). "
          f"The first res-student adds {first_gain['difference']:+.2f} points of test top-1 to the KD student $S_0$ "
          f"(paired s.e. {se_text(first_gain)}: {plain(first_gain['verdict']).replace('S0 + S1 ', '')}). ")
if chosen is not None:
    m = chosen["model"]
    answer += (f"At the paper's budget of {budget:g}% of the teacher's MACs, the ResKD model the book's rule picks on "
               f"validation is {m['name']}, with {m['top1_mean']:.2f}% test top-1 at {m['pct_teacher']:.2f}%: "
               + judged_reading(chosen) + ". ")
else:
    answer += f"No ResKD model is calibrated to the paper's budget of {budget}% in this run. "
answer += (f"The paper's target (within {MAX_DROP:g} point of the teacher at that budget, ahead of both baselines "
           "by more than twice the standard error) is "
           + ("**reached**." if verdict["reached"] else
              f"**not reached**: the teacher has {verdict['teacher_top1']:.2f}%, "
              + (f"{verdict['drop']:.2f} points more." if "drop" in verdict else "and no ResKD entry qualifies.")))
glue("chapter_answer", Markdown(answer), display=False)

# %% [markdown]
# ## Conclusion

# %% tags=["hide-input"]
display(Markdown(answer + " Residual stages pay here only as far as the verdicts above say: a difference within "
                 "twice its standard error over seeds is no evidence either way, and the whole comparison rests on "
                 f"a {config.teacher_train.epochs}-epoch teacher and {config.student_train.epochs}-epoch students "
                 "on a JPEG copy of the data (see *How far these models are from the field*). "
                 + report.length_reading(lengths)))

# %% [markdown]
# What the numbers do not say by themselves: a capacity gap of the kind teacher-assistant distillation
# {cite}`mirzadeh2020improved` was designed to bridge separates every light model here from the teacher, and the
# regime map is a screen of one seed.

# %% [markdown]
# ## Results file
#
# The chapter's numbers go to `results/<dataset>.json` (`reskd.results`), which the summary chapter reads.

# %% tags=["remove-output"]
extra = {"notes": config.notes, "train_images": len(exp.data.train), "test_images": len(exp.data.test),
         "residual_loss": runs.loss, "target": verdict, "at_equal_cost": report.frame_records(at_cost),
         "judged": {"rule": report.CHOICE_RULE, "split": "val", "budgets": [
             {"budget_pct": b, "model": j["model"]["name"], "kind": j["model"]["kind"],
              "val_top1": j["model"]["val_top1_mean"], "test_top1": j["model"]["top1_mean"],
              "pct_teacher": j["model"]["pct_teacher"], "res_students": j["used"], "growth_rule_keeps": j["kept"],
              "versus_equal_cost": j["vs_equal"], "versus_cascade": j["vs_cascade"]} for b, j in judged.items()]},
         "training_curves_end": report.frame_records(late),
         "ablation": None if ablation is None else report.frame_records(ablation[ENERGY_COLUMNS]),
         "per_stage": report.frame_records(per_stage_mean.reset_index()),
         "regime_map": {"seeds": list(regimes.SCREEN_SEEDS), "budgets_pct": list(regimes.BUDGETS_PCT),
                        "regimes": described, "not_trained": not_trained,
                        "rows": report.frame_records(regime_frame.drop(columns=["thresholds"], errors="ignore")),
                        "first_stage_energy": report.frame_records(energy_table.reset_index())},
         "chain_to_teacher": {"seeds": list(config.seeds), "budgets_pct": list(chain_budgets),
                              "regimes": chain_regimes, "verdicts": report.frame_records(chain_verdicts),
                              "routing": report.frame_records(chain_routing.reset_index()),
                              "routes": report.frame_records(chain_rows[chain_rows["thresholds_mode"] == "per-stage"]
                                                             .groupby(["regime", "budget_pct"], sort=False)
                                                             [route_columns].mean().reset_index()),
                              "rows": report.frame_records(chain_rows.drop(columns=["thresholds"]))}}
path = results.write_results(CHAPTER, dataset, exp.data.source, config.name, exp.device.type, models, extra=extra,
                             root=results_dir)
print(f"wrote {path.parent.name}/{path.name} (profile {config.name!r})")

# %% [markdown]
# ## CIFAR-100
#
# The same chapter runs CIFAR-100 with `dataset="cifar100"` (papermill: `-p dataset cifar100`; add
# `-p download True` to let torchvision fetch it). Where that was not done, the results say so instead of showing a
# number.

# %% tags=["remove-output"]
if dataset != "cifar100" and not is_available("cifar100", data_root):
    existing = results.load_results(results_dir)
    if existing.get("cifar100", {}).get("status") != results.STATUS_RUN:
        path = results.write_not_run(CHAPTER, "cifar100", "CIFAR-100 data not found under the data root "
                                     "(run this chapter with dataset='cifar100', download=True)", profile,
                                     root=results_dir)
        print(f"CIFAR-100 not run: wrote {path.parent.name}/{path.name}")
