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
# # Residuals: derivation and theory
#
# ResKD's central move is to train each new, lighter network on what the previous ones got wrong: the residual
# between the teacher's logits and the student's. This chapter derives what that means, connects it to gradient
# boosting, proves two small facts that make the method sensible, and checks them on a two-dimensional toy problem.

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
# ## Residuals as an additive model
#
# Let $z_T(x) \in \mathbb{R}^C$ be the teacher's logits on an input $x$ with $C$ classes. ResKD
# {cite}`li2021reskd` first distils the teacher into a light student $S_0$ with logits $z_0(x)$. The *knowledge gap*
# left over is the logit residual. In general, after stages $S_0, \dots, S_{k-1}$ the student is the sum of their
# logits and the residual is
#
# $$
# F_k(x) = \sum_{j<k} z_j(x), \qquad r_k(x) = z_T(x) - F_k(x) = z_T(x) - \sum_{j<k} z_j(x),
# $$
#
# with $F_0 = 0$ and $r_0 = z_T$. The next, still lighter *res-student* $S_k$ is trained to predict $r_k$, and
# $F_{k+1} = F_k + z_k$ is the new student. The student is therefore an **additive model**, built one stage at a
# time.
#
# ### Functional gradient boosting
#
# Measure how far the student is from the teacher with the squared loss
# $L(F) = \tfrac12\, \mathbb{E}_x \lVert z_T(x) - F(x) \rVert_2^2$. Its functional gradient at $F_k$ is
# $\partial L / \partial F(x) = -(z_T(x) - F_k(x)) = -r_k(x)$: the residual is the **negative gradient**. Fitting a
# new model to the residual and adding it is one step of functional gradient descent with step size 1, which is
# exactly gradient boosting with squared loss {cite}`friedman2001greedy`. ResKD's res-students are boosting's weak
# learners, with the teacher's logits as regression targets.
#
# ### Each useful stage lowers the residual energy
#
# Call $E_k = \mathbb{E}_x \lVert r_k(x) \rVert_2^2$ the residual energy. If stage $S_k$ is trained with the
# regression loss $\ell_k = \mathbb{E}_x \lVert r_k(x) - z_k(x) \rVert_2^2$, then the next residual is
# $r_{k+1} = z_T - F_k - z_k = r_k - z_k$, so
#
# $$
# E_{k+1} = \mathbb{E}_x \lVert r_k(x) - z_k(x) \rVert_2^2 = \ell_k .
# $$
#
# The new energy *is* the stage's loss. Predicting zero costs $\ell_k = E_k$, so any stage whose regression loss is
# below the current residual energy, $\ell_k < E_k$, strictly lowers it, $E_{k+1} < E_k$. (The bound holds on the
# data the loss is measured on; on new data it holds as far as the stage generalises.)
#
# ### A small logit residual means nearly the teacher's predictions
#
# Why is matching logits enough? Write $\delta = z_T - F$ for the residual at one input and
# $\operatorname{lse}(z) = \log \sum_c e^{z_c}$, so that $\log \operatorname{softmax}(z)_c = z_c - \operatorname{lse}(z)$.
# The gradient of $\operatorname{lse}$ is $\operatorname{softmax}(z)$, whose entries are non-negative and sum to one,
# so by the mean value theorem $\lvert \operatorname{lse}(z_T) - \operatorname{lse}(F) \rvert \le
# \lVert \delta \rVert_\infty$. Hence, for every class $c$,
#
# $$
# \bigl\lvert \log \operatorname{softmax}(z_T)_c - \log \operatorname{softmax}(F)_c \bigr\rvert
# \le \lvert \delta_c \rvert + \lvert \operatorname{lse}(z_T) - \operatorname{lse}(F) \rvert
# \le 2\, \lVert z_T - F \rVert_\infty .
# $$
#
# Driving the logit residual to zero drives the student's log-probabilities (and so its KL divergence to the teacher
# and its predicted class, wherever the teacher is not near a tie) to the teacher's.
#
# The rest of this chapter checks these statements on a problem small enough to draw.

# %% [markdown]
# ## A toy problem: three spirals
#
# Three interleaved spirals in the plane, 600 training and 600 test points, generated with NumPy (no data set
# needed). The teacher is an MLP with two hidden layers of 64 units, trained with cross-entropy. The student $S_0$
# and the res-students $S_1, S_2, S_3$ are MLPs with a single hidden layer of 8 units; each is fitted with the
# mean squared error to its residual $r_k$ (for $S_0$, $r_0 = z_T$: plain logit matching).

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from torch import nn

from reskd import results
from reskd.utils import seed_everything

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 3)

CHAPTER, DATASET = "01_residual_theory", "toy-spirals"
NUM_CLASSES, POINTS_PER_CLASS, NOISE, TURNS = 3, 200, 0.25, 1.5
TEACHER_HIDDEN, STUDENT_HIDDEN, NUM_STAGES = 64, 8, 4  # S0 plus three res-students
STEPS = {"smoke": 600, "cpu": 2000, "paper": 2000}[profile]  # full-batch Adam steps per model
LEARNING_RATE = 0.01
seeds = list(seeds) if seeds is not None else [0]
torch.set_num_threads(1)  # models this small have no parallel work to share: one thread is the fastest
print(f"{STEPS} full-batch Adam steps per model")


# %% tags=["hide-input"]
def spirals(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``NUM_CLASSES`` interleaved noisy spirals: points (n, 2) and labels (n,)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.1, 1.0, size=(NUM_CLASSES, n_per_class))
    angle = 2 * np.pi * (TURNS * t + np.arange(NUM_CLASSES)[:, None] / NUM_CLASSES)
    points = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=-1) * 3
    points += NOISE * t[..., None] * rng.standard_normal(points.shape)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    return torch.tensor(points.reshape(-1, 2), dtype=torch.float32), torch.tensor(labels)


def mlp(*widths: int) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def macs(model: nn.Module) -> int:
    """Multiply-accumulates per input: the weights of the linear layers."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def train(model: nn.Module, x: torch.Tensor, loss_fn) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss_fn(model(x)).backward()
        optimizer.step()
    return model.eval()


# %%
x_train, y_train = spirals(POINTS_PER_CLASS, seed=0)
x_test, y_test = spirals(POINTS_PER_CLASS, seed=1)
print(f"{len(x_train)} training and {len(x_test)} test points, {NUM_CLASSES} classes")

# %% [markdown]
# ## Teacher, student and res-students
#
# The stages are trained one after another; stage $k$ sees only the residual the previous stages left.

# %%
def fit_stages(seed: int) -> tuple[nn.Module, list[nn.Module]]:
    seed_everything(seed)
    teacher = train(mlp(2, TEACHER_HIDDEN, TEACHER_HIDDEN, NUM_CLASSES), x_train,
                    lambda z: F.cross_entropy(z, y_train))
    with torch.no_grad():
        residual = teacher(x_train)  # r_0 = z_T
    stages = []
    for _ in range(NUM_STAGES):
        target = residual.clone()
        stage = train(mlp(2, STUDENT_HIDDEN, NUM_CLASSES), x_train, lambda z: F.mse_loss(z, target))
        with torch.no_grad():
            residual = residual - stage(x_train)  # r_{k+1} = r_k - z_k
        stages.append(stage)
    return teacher, stages


@torch.no_grad()
def stage_report(teacher: nn.Module, stages: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Per stage k: residual energy before/after, the stage's loss, accuracy, agreement and the log-softmax bound."""
    z_t = teacher(x)
    total = torch.zeros_like(z_t)
    rows = []
    for k, stage in enumerate(stages):
        r_k = z_t - total
        z_k = stage(x)
        total = total + z_k
        gap = (F.log_softmax(z_t, 1) - F.log_softmax(total, 1)).abs().amax(1)
        bound = 2 * (z_t - total).abs().amax(1)
        rows.append({"stages": k + 1, "energy before E_k": (r_k ** 2).sum(1).mean().item(),
                     "stage loss l_k": ((r_k - z_k) ** 2).sum(1).mean().item(),
                     "energy after E_k+1": ((z_t - total) ** 2).sum(1).mean().item(),
                     "top-1 (%)": 100 * (total.argmax(1) == y).float().mean().item(),
                     "agreement (%)": results.agreement(total, z_t),
                     "max log-softmax gap": gap.max().item(), "bound holds": bool((gap <= bound + 1e-5).all())})
    return pd.DataFrame(rows)


runs = {seed: fit_stages(seed) for seed in seeds}
teacher, stages = runs[seeds[0]]
train_report = stage_report(teacher, stages, x_train, y_train)
test_report = stage_report(teacher, stages, x_test, y_test)
teacher_top1 = 100 * (teacher(x_test).argmax(1) == y_test).float().mean().item()
print(f"teacher: top-1 {teacher_top1:.1f}% on the test points, {macs(teacher):,} MACs; "
      f"each stage {macs(stages[0]):,} MACs")
train_report

# %% [markdown]
# On the training points the columns "stage loss" and "energy after" are equal, as derived above, and the energy
# falls at every stage whose loss is below the energy before it. On the test points the identity
# $E_{k+1} = \ell_k$ still holds, but the stages were not fitted there, so a decrease is not guaranteed; here the
# energy falls all the same. The last columns check the log-softmax bound at every test point.

# %%
test_report

# %% [markdown]
# ## Decision regions, stage by stage
#
# Each panel colours the plane by the predicted class of the teacher and of the growing student
# $F_k = z_0 + \dots + z_{k-1}$; the points are the test set.

# %%
@torch.no_grad()
def plot_regions(models: dict[str, list[nn.Module]]) -> None:
    grid = torch.linspace(-3.6, 3.6, 300)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    plane = torch.stack([gx.ravel(), gy.ravel()], 1)
    palette = sns.color_palette("deep", NUM_CLASSES)
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.4), sharex=True, sharey=True)
    for ax, (title, parts) in zip(axes, models.items()):
        pred = sum(m(plane) for m in parts).argmax(1).reshape(gx.shape)
        ax.contourf(gx, gy, pred, levels=np.arange(NUM_CLASSES + 1) - 0.5, colors=palette, alpha=0.35)
        ax.scatter(x_test[:, 0], x_test[:, 1], c=[palette[i] for i in y_test], s=6, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("$x_1$")
        ax.set_aspect("equal")
    axes[0].set_ylabel("$x_2$")
    fig.tight_layout()
    plt.show()


plot_regions({"teacher $T$": [teacher], **{("$S_0$" if k == 0 else f"$S_0+\\dots+S_{k}$"): stages[:k + 1]
                                            for k in range(NUM_STAGES)}})

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.5))
energy = pd.concat([pd.DataFrame({"stages": range(NUM_STAGES + 1), "split": split,
                                  "energy": [report["energy before E_k"].iloc[0], *report["energy after E_k+1"]]})
                    for split, report in (("train", train_report), ("test", test_report))])
sns.lineplot(data=energy, x="stages", y="energy", hue="split", marker="o", ax=ax)
ax.set_xticks(range(NUM_STAGES + 1))
ax.set_xlabel("stages $k$ in the student (0: none, 1: $S_0$, 2: $S_0+S_1$, ...)")
ax.set_ylabel("residual energy $E_k$ (squared logits)")
ax.set_title("The residual shrinks stage by stage")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Results file
#
# The toy's numbers (cost in MACs of the linear layers, test accuracy, agreement with the teacher) go to
# `results/toy-spirals.json`.

# %%
teacher_macs = macs(teacher)
models = [results.model_record("teacher MLP", "teacher", stages=0, macs=teacher_macs, teacher_macs=teacher_macs,
                               top1=[teacher_top1], seeds=[seeds[0]])]
for k in range(NUM_STAGES):
    per_seed = [stage_report(t, s, x_test, y_test).iloc[k] for t, s in runs.values()]
    models.append(results.model_record(
        "S0" if k == 0 else f"S0+...+S{k}", "kd" if k == 0 else "reskd-stage", stages=k + 1,
        macs=(k + 1) * macs(stages[0]), teacher_macs=teacher_macs, top1=[r["top-1 (%)"] for r in per_seed],
        seeds=seeds, agreement_teacher=[r["agreement (%)"] for r in per_seed]))
path = results.write_results(CHAPTER, DATASET, "synthetic three spirals (NumPy)", profile, "cpu", models,
                             extra={"steps": STEPS, "train_points": len(x_train), "test_points": len(x_test)},
                             root=results_dir)
print(f"wrote {path.parent.name}/{path.name} (profile {profile!r})")
