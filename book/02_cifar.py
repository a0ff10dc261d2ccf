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
# # CIFAR
#
# This chapter trains the CIFAR-10 teacher, the two baseline students and (with the method) the ResKD stages, and
# measures what each costs and how accurate it is.
#
# ```{note}
# The outputs stored in this page come from the **smoke** profile: tiny models trained for seconds. They show that
# the pipeline works; their accuracies are not a reproduction.
# ```

# %% tags=["remove-cell"]
# In Colab only: fetch the reskd repository and install the package (elsewhere this cell does nothing).
import os
import subprocess
import sys

REPOSITORY_URL = ""  # the git URL of the reskd repository (what `git remote get-url origin` prints)
if "google.colab" in sys.modules:
    if not os.path.exists("reskd/pyproject.toml"):
        if not REPOSITORY_URL:
            raise RuntimeError("Set REPOSITORY_URL in this cell to the git URL of the reskd repository, then re-run.")
        subprocess.run(["git", "clone", "--depth", "1", REPOSITORY_URL, "reskd"], check=True)
    os.chdir("reskd")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "."], check=True)
    sys.path.insert(0, os.getcwd())

# %% tags=["parameters"]
profile = "smoke"  # "smoke" (CI, seconds), "cpu" (the real run on two CPU cores), "paper" (a GPU)
data_root = None  # folder holding the data sets; None: $RESKD_DATA, else the project's data/
seeds = None  # student seeds, e.g. [0, 1, 2]; None: the profile's
retrain = False  # True: train again even where finished runs exist
device = "auto"  # "auto": the GPU when there is one, else the CPU
results_dir = None  # where results/<dataset>.json goes; None: the project's results/

# %% [markdown]
# ## Setup
#
# The heavy lifting lives in the `reskd` package; this chapter only wires it together. A *profile*
# (`reskd.experiment`) fixes every setting of the runs: `smoke` trains tiny models for two epochs on 1,000
# images (it checks that the chapter runs; its numbers mean nothing), `cpu` is the real run two CPU cores can afford,
# `paper` the paper-scale run for a GPU. Finished runs are loaded from `artifacts/`, interrupted ones resumed,
# missing ones trained.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reskd import results
from reskd.experiment import Experiment, get_profile
from reskd.flops import model_cost
from reskd.train import predict, top1

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)

DATASET = "cifar10"
CHAPTER = "02_cifar"
config = get_profile(DATASET, profile)
if seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = Experiment(config, data_root=data_root, device=device, retrain=retrain, progress=False)
print(f"profile {config.name!r}: {config.notes}")
print(f"data: {exp.data.spec.display_name}, {len(exp.data.train):,} training / {len(exp.data.val):,} validation / "
      f"{len(exp.data.test):,} test images")
print(f"teacher {config.teacher.label}, student {config.student.label}, seeds {list(config.seeds)}, "
      f"device {exp.device.type}")

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
# Every model is scored on the test split; *agreement* is how often a model predicts the teacher's class.

# %%
test_loader = exp.eval_loader("test")
teacher = exp.teacher()
teacher_logits, labels = predict(teacher, test_loader, device=exp.device)
students = {kind: {seed: exp.student(kind, seed=seed) for seed in config.seeds} for kind in ("scratch", "kd")}
outputs = {kind: {seed: predict(model, test_loader, device=exp.device)[0] for seed, model in models.items()}
           for kind, models in students.items()}

# %% [markdown]
# ## Cost
#
# Cost is counted in multiply-accumulates (MACs) per $32\times32$ image with fvcore (`reskd.flops`: convolutions
# and linear layers; 1 MAC = 2 FLOPs), and reported as a share of the teacher's, the paper's unit.

# %%
teacher_macs = model_cost(teacher, exp.input_size).macs
student_macs = model_cost(students["kd"][config.seeds[0]], exp.input_size).macs
names = {"scratch": f"student {config.student.label} (scratch)", "kd": f"student {config.student.label} (KD)"}
models = [results.model_record(f"teacher {config.teacher.label}", "teacher", stages=0, macs=teacher_macs,
                               teacher_macs=teacher_macs, top1=[top1(teacher_logits, labels)], seeds=[0])]
for kind, logits in outputs.items():
    models.append(results.model_record(
        names[kind], kind, stages=1, macs=student_macs, teacher_macs=teacher_macs,
        top1=[top1(out, labels) for out in logits.values()], seeds=list(logits),
        agreement_teacher=[results.agreement(out, teacher_logits) for out in logits.values()]))

# %% [markdown]
# <!-- reskd: stages -->
# ## Residual stages
#
# Each res-student $S_k$ learns the residual $r_k = z_T - \sum_{j<k} z_j$ of the frozen ensemble before it
# (`reskd.reskd.ResidualDistiller`); its last layer starts at zero, so adding a stage starts from the previous
# ensemble's predictions. The paper gives the residual target and the additive ensemble; the loss
# (`config.residual_loss`) and the res-student's input (`config.residual_input`) are our choices, ablated in the
# adaptive-inference chapter. Every stage is scored on the test split; thresholds and choices use only the
# validation split.

# %%
from reskd.adaptive import calibrate, evaluate_policy, sweep  # reskd: stages
from reskd.experiment import ResKDRuns, plain_ensemble_logits, stage_records

runs = ResKDRuns(exp)
ensembles = {seed: runs.ensemble(list(config.res_students), seed=seed) for seed in config.seeds}
staged = {seed: {split: runs.staged(ens, split) for split in ("val", "test")} for seed, ens in ensembles.items()}
per_stage = pd.concat([stage_records(st, teacher_macs).assign(seed=seed) for seed, st in staged.items()])
per_stage.groupby("stage")[["macs", "pct_teacher", "val_top1", "test_top1", "test_agreement_teacher",
                            "test_residual_energy"]].mean()

# %% [markdown]
# ## Equal-cost baselines and adaptive inference
#
# ResKD has to beat what the same MACs buy otherwise: one larger KD student (`config.equal_cost`) and a plain
# ensemble of independently trained KD students with the stages' architectures (averaged logits). The adaptive
# rule stops a sample after a stage once its max-softmax probability reaches a threshold, calibrated on the
# validation split to stay within 0.5 points of the full ensemble's validation accuracy.

# %%
stage_models: list[dict] = []
first = staged[config.seeds[0]]["test"]
for k in range(first.num_stages):
    tops = [100.0 * (st["test"].logits[k].argmax(1) == labels).float().mean().item() for st in staged.values()]
    agree = [results.agreement(st["test"].logits[k], teacher_logits) for st in staged.values()]
    stage_models.append(results.model_record(f"ResKD S0..S{k}", "reskd-stage", stages=k + 1,
                                             macs=first.cumulative_macs[k], teacher_macs=teacher_macs, top1=tops,
                                             seeds=list(staged), agreement_teacher=agree))
adaptive_runs = []
for seed, st in staged.items():
    full_val = 100.0 * (st["val"].logits[-1].argmax(1) == st["val"].labels).float().mean().item()
    policy = calibrate(st["val"], "max_prob", target_top1=full_val - 0.5)
    adaptive_runs.append(evaluate_policy(st["test"], policy, teacher_macs=teacher_macs))
stage_models.append(results.model_record(
    "ResKD adaptive (max prob)", "reskd-adaptive", stages=first.num_stages,
    macs=sum(r["avg_macs"] for r in adaptive_runs) / len(adaptive_runs), teacher_macs=teacher_macs,
    top1=[r["top1"] for r in adaptive_runs], seeds=list(staged),
    agreement_teacher=[r["agreement_teacher"] for r in adaptive_runs]))
equal = {seed: exp.student("kd", arch=config.equal_cost, seed=seed) for seed in config.seeds}
equal_logits = {seed: predict(m, test_loader, device=exp.device)[0] for seed, m in equal.items()}
stage_models.append(results.model_record(
    f"KD student {config.equal_cost.label} (equal cost)", "kd-equal-cost", stages=1,
    macs=model_cost(equal[config.seeds[0]], exp.input_size).macs, teacher_macs=teacher_macs,
    top1=[top1(z, labels) for z in equal_logits.values()], seeds=list(equal),
    agreement_teacher=[results.agreement(z, teacher_logits) for z in equal_logits.values()]))
archs = [config.student, *config.res_students]
plain = {seed: plain_ensemble_logits(exp, archs, "test", seed=seed)[0] for seed in config.seeds}
stage_models.append(results.model_record(
    f"plain KD ensemble ({len(archs)} members, equal cost)", "kd-equal-cost", stages=len(archs),
    macs=first.cumulative_macs[-1], teacher_macs=teacher_macs, top1=[top1(z, labels) for z in plain.values()],
    seeds=list(plain), agreement_teacher=[results.agreement(z, teacher_logits) for z in plain.values()]))
curve = sweep(staged[config.seeds[0]]["val"], "max_prob", test=first, teacher_macs=teacher_macs, points=20)

# %% [markdown]
# ## Accuracy against cost

# %%
models = models + stage_models
table = results.models_frame(models)
results.for_display(table)

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
sns.scatterplot(data=table, x="MMACs", y="top-1 (%)", hue="kind", style="kind", s=90, ax=ax)
for _, row in table.iterrows():
    ax.annotate(row["model"], (row["MMACs"], row["top-1 (%)"]), textcoords="offset points", xytext=(0, 8),
                ha="center", fontsize=8)
ax.plot(curve["test_avg_macs"] / 1e6, curve["test_top1"], color="gray", lw=1, zorder=0,
        label="adaptive sweep (thresholds from val)")
ax.set_xlim(0, 1.15 * table["MMACs"].max())
ax.margins(y=0.2)
ax.set_xlabel("cost per image (millions of MACs)")
ax.set_ylabel("top-1 accuracy on the test split (%)")
ax.set_title(f"{exp.data.spec.display_name}, profile {config.name!r}")
ax.legend(title="kind", loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Results file
#
# The chapter's numbers go to `results/cifar10.json` (`reskd.results`), which the summary chapter reads.

# %%
path = results.write_results(CHAPTER, DATASET, exp.data.source, config.name, exp.device.type, models,
                             extra={"notes": config.notes, "train_images": len(exp.data.train),
                                    "test_images": len(exp.data.test)}, root=results_dir)
print(f"wrote {path.parent.name}/{path.name} (profile {config.name!r})")
