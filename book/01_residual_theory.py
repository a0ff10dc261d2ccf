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
# **The question.** Is the residual between the teacher's and the student's logits a sound target for a lighter
# network, and does fitting it move the student towards the teacher on images it has not seen?
# **The answer**, computed from this page's results (the conclusion at the end says more):
#
# <!-- answer -->
# *The answer is computed from this page's results at its end; a page executed with `tools/run_book.py` shows it
# here.*
# <!-- /answer -->
#
# ResKD's central move is to train each new, lighter network on what the previous ones got wrong: the residual
# between the teacher's logits and the student's. This chapter derives what that means, starting from Hinton et al.'s
# distillation loss, connects it to gradient boosting, argues why a res-student can be much lighter than the student,
# and proves two small facts that make the method sensible. It then checks everything twice: on a two-dimensional
# toy problem small enough to draw, and on the trained CIFAR-10 models of the next chapter, where it also looks at
# how the residual differs between training and unseen images.
#
# ```{note}
# The toy problem is the same in every profile (the `smoke` profile trains its models for fewer steps), and on every
# machine: it trains to the same bits anywhere. The CIFAR-10 section uses the trained models of the next chapter,
# and a line under its setup cell says which profile produced the outputs stored in this page. In the `smoke`
# profile (tiny models trained for seconds, what CI runs) the numbers mean nothing; the statements are proved, so
# their checks hold whatever the numbers.
# ```
#
# **What is the paper's and what is ours.** The paper {cite}`li2021reskd` gives the residual in logit space as the
# res-students' target, the additive ensemble, the lighter res-students and the sample-adaptive inference. The
# derivations, the two statements with their proofs, the link to boosting spelled out here, the toy problem and the
# measurements are ours.

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

    fetch_data("01_residual_theory")

# %% tags=["parameters", "hide-input"]
# Defaults. A run through papermill (tools/run_book.py) puts the values it ran with in the next cell.
profile = "smoke"  # "smoke" (CI, seconds), "cpu" (the real run on two CPU cores), "paper" (a GPU)
data_root = None  # folder holding the data sets; None: $RESKD_DATA, else the project's data/
seeds = None  # seeds, e.g. [0, 1, 2]; None: the profile's (CIFAR-10 uses the first; the toy all of them, default [0])
retrain = False  # True: train again even where finished runs exist
device = "auto"  # "auto": the GPU when there is one, else the CPU
results_dir = None  # where results/<name>.json goes; None: the project's results/
train_missing = True  # False: a run missing from artifacts/ is an error instead of (hours of) training

# %% tags=["remove-cell"]
from reskd.chapter import check_parameters

check_parameters(profile=profile, data_root=data_root, seeds=seeds, retrain=retrain, device=device,
                 results_dir=results_dir, train_missing=train_missing)


# %% [markdown]
# ## Residuals as an additive model
#
# Let $z_T(x) \in \mathbb{R}^C$ be the teacher's logits on an input $x$ with $C$ classes. ResKD
# {cite}`li2021reskd` first distils the teacher into a light student $S_0$ with logits $z_0(x)$. The *knowledge gap*
# left over is the logit residual. In general, after stages $S_0, \dots, S_k$ the student is the sum of their
# logits, and the residual the next stage is trained on is what that sum still misses:
#
# $$
# Z_k(x) = \sum_{j \le k} z_j(x), \qquad r_{k+1}(x) = z_T(x) - Z_k(x) = z_T(x) - \sum_{j \le k} z_j(x),
# $$
#
# with $r_0 = z_T$ (before any stage, $Z_{-1} = 0$). $Z_k = z_0 + \dots + z_k$ is the ensemble *after* stage $k$, as in
# the later chapters; $r_k$ is the residual stage $S_k$ is trained to predict. The next, still lighter *res-student*
# $S_{k+1}$ is trained to predict $r_{k+1}$, and $Z_{k+1} = Z_k + z_{k+1}$ is the new student. The student is therefore
# an **additive model**, built one stage at a time.
#
# Softmax ignores a per-sample shift of the logits, $\operatorname{softmax}(z + a\mathbf 1) = \operatorname{softmax}(z)$,
# so only the *centered* logits $\bar z = z - \tfrac1C \mathbf 1 \mathbf 1^\top z$ (each sample's mean over the classes
# removed) matter for predictions. The residual splits orthogonally into its centered part and its mean $m(r)$,
#
# $$
# \lVert r \rVert_2^2 = \lVert \bar r \rVert_2^2 + C\, m(r)^2, \qquad m(r) = \tfrac1C \textstyle\sum_c r_c ,
# $$
#
# and only the first term can change a prediction. Below we track both.
#
# ## From Hinton's distillation to logit regression
#
# $S_0$ is trained with Hinton et al.'s soft-target loss {cite}`hinton2015distilling`: with
# $p = \operatorname{softmax}(z_T/T)$ and $q = \operatorname{softmax}(z_S/T)$ at temperature $T$,
#
# $$
# \mathcal{L}_T(z_S) = T^2\, \mathrm{KL}(p \,\|\, q), \qquad
# \frac{\partial \mathcal{L}_T}{\partial z_{S}} = T\,(q - p) .
# $$
#
# (Without the factor $T^2$ the gradient is $(q - p)/T$, Hinton et al.'s eq. 2; the factor keeps the gradient's
# scale independent of $T$.) When $T$ is large compared with the logits, $e^{z_c/T} \approx 1 + z_c/T$, and if the
# logits have zero mean per sample ($\sum_c z_c = 0$) then $q_c \approx \tfrac1C + \tfrac{z_{S,c}}{CT}$ and likewise
# for $p$. The gradient becomes
#
# $$
# \frac{\partial \mathcal{L}_T}{\partial z_S} \approx T \cdot \frac{z_S - z_T}{C\,T} = \frac{z_S - z_T}{C},
# $$
#
# the gradient of $\tfrac{1}{2C} \lVert z_S - z_T \rVert_2^2$: "in the high temperature limit, distillation is
# equivalent to minimizing $\tfrac12 (z_i - v_i)^2$, provided the logits are zero-meaned separately for each transfer
# case" (Hinton et al., section 2.1, where the unscaled loss has gradient $\approx (z_S - z_T)/(C T^2)$).
#
# The zero-mean proviso is not needed if we say what the limit is. Write $u = (z_S - z_T)/T$ and
# $\operatorname{lse}(v) = \log \sum_c e^{v_c}$. Since $\log \operatorname{softmax}(v)_c = v_c - \operatorname{lse}(v)$,
#
# $$
# \mathrm{KL}(p \,\|\, q) = \operatorname{lse}(z_T/T + u) - \operatorname{lse}(z_T/T) - \langle p, u \rangle
# = \tfrac12\, u^\top H u + O(\lVert u \rVert^3),
# $$
#
# with $H = \nabla^2 \operatorname{lse} = \operatorname{diag}(p) - p p^\top$. As $T \to \infty$, $p \to \tfrac1C \mathbf 1$
# and $H \to \tfrac1C (I - \tfrac1C \mathbf 1 \mathbf 1^\top)$, whose quadratic form is
# $u^\top H u = \tfrac1C \lVert \bar u \rVert^2$. The $T^2$ cancels the $1/T^2$ in $\lVert u \rVert^2$, so
#
# $$
# \lim_{T \to \infty} T^2\, \mathrm{KL}\bigl(\operatorname{softmax}(z_T/T) \,\big\|\, \operatorname{softmax}(z_S/T)\bigr)
# = \frac{1}{2C}\, \lVert \bar z_S - \bar z_T \rVert_2^2 .
# $$
#
# **Distillation at a high temperature is least-squares regression of the centered logits**, and the error it leaves
# is the centered residual $\bar r_1 = \bar z_T - \bar z_0$. The same limit applied to a res-student's output $s$ trained
# with KD on the sum $Z_{k-1} + s$ (one of the res-student losses this book compares) gives
# $\tfrac{1}{2C} \lVert \bar s - \bar r_k \rVert^2$: KD on the ensemble is regression of the residual. The other losses
# regress $r_k$ (mean squared error) or $\bar r_k$ (the same on centered logits) directly. At a finite temperature
# the equivalence is approximate; the CIFAR-10 section measures how close it is on real logits.
#
# ## Functional gradient boosting
#
# Measure how far the student is from the teacher with the squared loss
# $L(Z) = \tfrac12\, \mathbb{E}_x \lVert z_T(x) - Z(x) \rVert_2^2$. Its functional gradient at $Z_{k-1}$ is
# $\partial L / \partial Z(x) = -(z_T(x) - Z_{k-1}(x)) = -r_k(x)$: the residual is the **negative gradient**. Fitting a
# new model to the residual and adding it is one step of functional gradient descent with step size 1, which is
# exactly gradient boosting with squared loss {cite}`friedman2001greedy`. ResKD's res-students are boosting's weak
# learners, with the teacher's logits as regression targets.
#
# Friedman's algorithm adds a line search: the fitted learner $h$ enters as $Z_{k-1} + \rho h$ with the $\rho$ that
# minimises the loss. For the squared loss that is the least-squares coefficient
#
# $$
# \rho^\star = \frac{\mathbb{E}_x \langle r_k, h \rangle}{\mathbb{E}_x \lVert h \rVert^2}, \qquad
# \mathbb{E}_x \lVert r_k - \rho^\star h \rVert^2 = E_k - \frac{(\mathbb{E}_x \langle r_k, h\rangle)^2}{\mathbb{E}_x
# \lVert h \rVert^2} \le E_k ,
# $$
#
# so a line-searched stage never raises the energy $E_k$ defined below. ResKD adds each stage with $\rho = 1$. The
# measured $\rho^\star$ of a trained stage (column "step" below, on centered logits) is a diagnostic: near 1 the stage
# has the residual's size; above 1 it is too timid; below 1 it overshoots; near 0 its output is unrelated to the
# residual on that data.
#
# ## Why a res-student can be far lighter
#
# The student $S_0$ has to produce all of $\bar z_T$; the res-student $S_1$ only $\bar r_1$, which is smaller in
# three ways that matter for how much capacity it needs. This is an argument, not a theorem:
#
# * **Less energy.** If $S_0$ is a reasonable student, $\mathbb{E}\lVert \bar r_1 \rVert^2$ is a fraction of
#   $\mathbb{E}\lVert \bar z_T \rVert^2$. A regression target with less variation is easier to fit, and a stage only
#   has to beat the trivial prediction $s = 0$ to help (statement 1 below): *any* correlation with the residual,
#   scaled right, lowers the energy.
# * **Concentrated on hard samples.** Where $S_0$ is confident and right, it has largely matched the teacher and the
#   residual is small; the energy sits on the samples $S_0$ finds hard. A light network that corrects those and
#   outputs about zero elsewhere removes most of the energy. With the paper's sample-adaptive inference
#   {cite}`li2021reskd` the res-students run only on those samples anyway.
# * **Only the part above the teacher's margin matters.** By statement 2 below, a residual smaller than the teacher's
#   top-1 margin cannot change the predicted class, so the res-student need not be precise where the teacher is
#   decisive.
#
# The CIFAR-10 section measures each of the three: the energy per stage, its distribution over samples and its
# relation to $S_0$'s confidence, and the margin condition.
#
# ## Statement 1: a stage that beats zero lowers the residual energy
#
# Call $E_k = \mathbb{E}_x \lVert r_k(x) \rVert_2^2$ the residual energy, with the expectation over any fixed set of
# inputs (the training images, or the test images), and $\ell_k = \mathbb{E}_x \lVert r_k(x) - z_k(x) \rVert_2^2$ the
# squared error of stage $S_k$ on its target, over the same inputs.
#
# **Statement 1.** $E_{k+1} = \ell_k$. Hence $E_{k+1} < E_k$ if and only if $\ell_k < E_k$, i.e. if and only if the
# stage beats the trivial prediction $z_k = 0$ (whose error is $E_k$); equivalently, if and only if
# $2\,\mathbb{E}_x\langle r_k, z_k\rangle > \mathbb{E}_x \lVert z_k \rVert^2$. The same holds with every residual and
# output centered (with $\bar E_k = \mathbb{E}_x \lVert \bar r_k \rVert^2$).
#
# *Proof.* $r_{k+1} = z_T - Z_k = z_T - Z_{k-1} - z_k = r_k - z_k$ at every input, so
# $E_{k+1} = \mathbb{E}_x \lVert r_k - z_k \rVert^2 = \ell_k$; expanding the square gives
# $E_{k+1} = E_k - 2\,\mathbb{E}_x\langle r_k, z_k\rangle + \mathbb{E}_x\lVert z_k\rVert^2$. Centering is linear, so
# $\bar r_{k+1} = \bar r_k - \bar z_k$ and the same lines hold for the centered quantities. $\square$
#
# The statement is exact on whatever inputs the expectation runs over, but a stage is *trained* to make $\ell_k$ small
# on the training images only. On the test images $\ell_k < E_k$ holds only as far as the stage generalises: comparing
# the energy drop on training and test images is the real content of the check.
#
# ## Statement 2: a small logit residual means nearly the teacher's predictions
#
# Why is matching logits enough? Write $Z$ for the student's logits (any ensemble $Z_k$) and $r = z_T - Z$ for the residual at one input and define its *oscillation*
# $\operatorname{osc}(r) = \max_c r_c - \min_c r_c$.
#
# **Statement 2.** For every class $c$,
#
# $$
# \bigl\lvert \log \operatorname{softmax}(z_T)_c - \log \operatorname{softmax}(Z)_c \bigr\rvert
# \;\le\; \operatorname{osc}(r) \;\le\; 2 \min\bigl(\lVert r \rVert_\infty,\; \lVert \bar r \rVert_\infty\bigr) .
# $$
#
# *Proof.* $\operatorname{lse}$ is increasing in every coordinate and $\operatorname{lse}(v + a\mathbf 1) =
# \operatorname{lse}(v) + a$. Since $Z + (\min_j r_j)\mathbf 1 \le z_T \le Z + (\max_j r_j)\mathbf 1$ coordinate-wise,
# $\delta := \operatorname{lse}(z_T) - \operatorname{lse}(Z) \in [\min_j r_j, \max_j r_j]$ (log-sum-exp is
# 1-Lipschitz in the max-norm). The gap of class $c$ is $r_c - \delta$, the difference of two numbers in that interval,
# so its absolute value is at most $\operatorname{osc}(r)$. Finally $\operatorname{osc}(r) = \operatorname{osc}(r -
# a\mathbf 1) \le 2\lVert r - a \mathbf 1 \rVert_\infty$ for every shift $a$; $a = 0$ and $a = m(r)$ give the two
# max-norms. $\square$
#
# The oscillation is the tightest bound of the family: it equals $\min_a 2 \lVert r - a\mathbf 1\rVert_\infty$ (take $a$
# halfway between the largest and smallest entry) and, unlike $\lVert r \rVert_\infty$, it ignores the part of the
# residual softmax cannot see. It is attained in the limit where $Z$ puts all its mass on the class where $r$ is
# largest and $c$ is the class where $r$ is smallest; with $r = (a, -a, \dots, -a)$ that limit also shows the factor 2
# in front of $\lVert r \rVert_\infty$ cannot be dropped (both are tests of the package). Every log-ratio being
# bounded, so is $\mathrm{KL}(\operatorname{softmax}(z_T) \,\|\, \operatorname{softmax}(Z)) \le \operatorname{osc}(r)$.
#
# **Corollary (top-1 agreement).** Let $c^\star$ be the teacher's class and $\mu(z_T) = z_{T,c^\star} - \max_{c \ne
# c^\star} z_{T,c}$ its top-1 margin. If $\mu(z_T) > \operatorname{osc}(r)$, the student predicts $c^\star$ too.
#
# *Proof.* For $c \ne c^\star$: $Z_{c^\star} - Z_c = (z_{T,c^\star} - z_{T,c}) - (r_{c^\star} - r_c) \ge \mu(z_T) -
# \operatorname{osc}(r) > 0$. $\square$
#
# So the rate at which the student's top-1 class differs from the teacher's is at most the fraction of samples with
# $\mu(z_T(x)) \le \operatorname{osc}(r(x))$, a bound that can be checked sample by sample (a teacher tie, $\mu = 0$,
# counts as a possible disagreement). Driving the logit residual to zero drives the student's log-probabilities, its KL
# divergence to the teacher and, wherever the teacher is not near a tie, its predicted class to the teacher's.
#
# The package computes these quantities (the gap, its bound, the teacher's margin, the bound on the disagreement)
# and tabulates them per stage; the rest of the chapter checks the statements, first on a problem small enough to
# draw.

# %% [markdown]
# ## A toy problem: three spirals
#
# Three interleaved spirals in the plane, 600 training and 600 test points, generated with NumPy (no data set
# needed). The teacher is an MLP with two hidden layers of 64 units, trained with cross-entropy. The student $S_0$
# and the res-students $S_1, S_2, S_3$ are MLPs with a single hidden layer of 8 units; each is fitted with the
# mean squared error to its residual $r_k$ (for $S_0$, $r_0 = z_T$: plain logit matching).
#
# Gradient descent on a network is chaotic: two CPUs whose arithmetic kernels add numbers in another order differ in
# the last bit of a gradient, and after a thousand steps in the second decimal of the accuracy. So every toy model is
# trained in double precision on one thread, from initial weights drawn by NumPy's seeded generator (PyTorch's own
# draws depend on the CPU), and its weights are rounded to multiples of $2^{-20}$ after every optimiser step: a
# last-bit difference then moves no weight, and the toy's numbers and verdicts below are the same, bit for bit, on
# every machine (the package's tests check it against the scalar kernels of a CPU without AVX2).

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from torch import nn

from reskd import report, results, theory
from reskd.metrics import agreement, top1
from reskd.adaptive import StagedOutputs
from reskd.toy import (NUM_CLASSES, NUM_STAGES, POINTS_PER_CLASS, STUDENT_HIDDEN, DTYPE, GRID_BITS, fit_stages, macs,
                       one_thread, regress, spirals)
from reskd.toy import STEPS as TOY_STEPS

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 3)

CHAPTER, TOY_DATASET = "01_residual_theory", "toy-spirals"


def fixed(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, never "-0.000" (a value that rounds to zero is printed unsigned)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


STEPS = TOY_STEPS[profile]  # full-batch Adam steps per model
toy_seeds = list(seeds) if seeds is not None else [0]
threads = torch.get_num_threads()
torch.set_num_threads(1)  # the toy on one thread: models this small gain nothing from more, and sums keep one order
print(f"{STEPS} full-batch Adam steps per model, in float64 on one thread, the weights rounded to multiples of "
      f"2^-{GRID_BITS} after every step")


# %%
x_train, y_train = spirals(POINTS_PER_CLASS, seed=0)
x_test, y_test = spirals(POINTS_PER_CLASS, seed=1)
print(f"{len(x_train)} training and {len(x_test)} test points, {NUM_CLASSES} classes")

# %% [markdown]
# ## Teacher, student and res-students
#
# The stages are trained one after another; stage $k$ sees only the residual the previous stages left. Their
# cumulative logits $Z_0, \dots, Z_3$ are stored the way the CIFAR-10 models' are, and one function checks both the
# same way: it takes the
# residuals and energies from the ensemble's logits and each stage's loss $\ell_k$ from the stage's own output. Here
# the ensemble *is* the running sum of the stages' outputs, so on the toy statement 1 checks only the arithmetic; on
# CIFAR-10 the two come from different computations.

# %%
@torch.no_grad()
def staged_outputs(teacher: nn.Module, stages: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> StagedOutputs:
    """The cumulative logits Z_0, ..., Z_{K-1} of the stages on ``x``, with the labels and the teacher's logits."""
    cumulative = torch.stack([stage(x) for stage in stages]).cumsum(0)
    return StagedOutputs(cumulative, y, [macs(s) for s in stages], teacher(x))


@torch.no_grad()
def stage_outputs(stages: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Each stage's own logits z_0, ..., z_{K-1} on ``x`` (what statement 1's stage loss is measured from)."""
    return torch.stack([stage(x) for stage in stages])


def top1_per_stage(st: StagedOutputs) -> list[float]:
    return [top1(z, st.labels) for z in st.logits]


# The columns of the two statements' checks, under readable names: one table per statement, so that each fits the page
STATEMENT_COLUMNS = {
    1: {"energy_before": "E_k", "stage_mse": "stage loss l_k", "energy_after": "E_k+1", "lowers_energy": "E falls",
        "statement1_holds": "(1) holds"},
    2: {"gap_max": "max log-prob gap", "bound_max": "max bound osc(r)", "disagreement_pct": "disagreement (%)",
        "disagreement_bound_pct": "its bound (%)", "statement2_holds": "(2) holds"}}

STATEMENT_CLAIMS = {1: "$E_{k+1} = \\ell_k$, so the energy falls exactly when $\\ell_k < E_k$",
                    2: "the largest log-probability gap is at most the largest oscillation, and the top-1 "
                       "disagreement with the teacher at most its per-sample bound"}


def stage_name(k: int) -> str:
    """The ensemble after stage k, for titles and legends."""
    return {0: "$S_0$", 1: "$S_0+S_1$"}.get(k, f"$S_0+\\dots+S_{{{k}}}$")


def show(records: pd.DataFrame, extra: dict[str, list[float]] | None = None) -> None:
    """The checks of ``records`` as two tables, statement 1 then statement 2, one row per stage (per split and stage
    when ``records`` holds several splits); ``extra`` adds columns (one value per row) to the first."""
    index = ["split", "stage"] if records["split"].nunique() > 1 else ["stage"]
    rows = records.set_index(index).rename_axis([{"stage": "stage k"}.get(i, i) for i in index])
    for statement, columns in STATEMENT_COLUMNS.items():
        table = rows[list(columns)].rename(columns=columns)
        if statement == 1 and extra:
            table = table.assign(**extra)
        display(Markdown(f"**Statement {statement}**: {STATEMENT_CLAIMS[statement]}"))
        display(table)


runs = {seed: fit_stages(seed, x_train, y_train, STEPS) for seed in toy_seeds}
toy_staged = {seed: {"train": staged_outputs(t, s, x_train, y_train), "test": staged_outputs(t, s, x_test, y_test)}
              for seed, (t, s) in runs.items()}
teacher, stages = runs[toy_seeds[0]]
toy_own = {"train": stage_outputs(stages, x_train), "test": stage_outputs(stages, x_test)}
toy_records = theory.stage_theory_records(toy_staged[toy_seeds[0]], toy_own)
teacher_top1 = top1(teacher(x_test), y_test)
print(f"teacher: top-1 {teacher_top1:.1f}% on the test points, {macs(teacher):,} MACs; "
      f"each stage {macs(stages[0]):,} MACs")
show(toy_records.query("split == 'train'"), extra={"top-1 (%)": top1_per_stage(toy_staged[toy_seeds[0]]["train"])})

# %% [markdown]
# On the training points the columns "stage loss" and $E_{k+1}$ are equal, as statement 1 says, and the energy falls
# exactly at the stages whose loss is below the energy before them. The log-probability gap stays below the
# oscillation of the residual, and the top-1 disagreement with the teacher below its bound. On the test points
# $E_{k+1} = \ell_k$ still holds, but the stages were not fitted there, so a decrease is not guaranteed:

# %%
toy_test = toy_staged[toy_seeds[0]]["test"]
print("test points: the energy falls at stages", list(toy_records.query("split == 'test' and lowers_energy")["stage"]),
      f"of 0..{NUM_STAGES - 1}; the largest |E_k+1 - l_k| / (1 + E_k) over both splits: "
      f"{toy_records['statement1_gap'].max():.1e} (float64 rounding)")
show(toy_records.query("split == 'test'"), extra={"top-1 (%)": top1_per_stage(toy_test)})

# %% [markdown]
# ## Decision regions, stage by stage
#
# Each panel colours the plane by the predicted class of the teacher and of the growing student
# $Z_k = z_0 + \dots + z_k$; the points are the test set.

# %%
PANELS_PER_ROW = 3  # panels side by side; more would shrink each below legibility in the book's text column


@torch.no_grad()
def plot_regions(models: dict[str, list[nn.Module]]) -> None:
    grid = torch.linspace(-3.6, 3.6, 300, dtype=DTYPE)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    plane = torch.stack([gx.ravel(), gy.ravel()], 1)
    palette = sns.color_palette("deep", NUM_CLASSES)
    rows = -(-len(models) // PANELS_PER_ROW)
    fig, axes = plt.subplots(rows, PANELS_PER_ROW, figsize=(3.3 * PANELS_PER_ROW, 3.3 * rows), sharex=True,
                             sharey=True, squeeze=False)
    for ax in axes.ravel()[len(models):]:
        ax.set_visible(False)
    for ax, (title, parts) in zip(axes.ravel(), models.items()):
        pred = sum(m(plane) for m in parts).argmax(1).reshape(gx.shape)
        ax.contourf(gx, gy, pred, levels=np.arange(NUM_CLASSES + 1) - 0.5, colors=palette, alpha=0.35)
        ax.scatter(x_test[:, 0], x_test[:, 1], c=[palette[i] for i in y_test], s=6, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("$x_1$")
        ax.set_aspect("equal")
    for ax in axes[:, 0]:
        ax.set_ylabel("$x_2$")
    fig.tight_layout()
    plt.show()


plot_regions({"teacher $T$": [teacher], **{stage_name(k): stages[:k + 1] for k in range(NUM_STAGES)}})


# %%
def energy_curve(records: pd.DataFrame, *, centered: bool = False) -> pd.DataFrame:
    """E_0 (no model), E_1 (after S0), ... per split (of the centered residual if ``centered``), for plotting."""
    suffix = "_centered" if centered else ""
    rows = []
    for split, part in records.groupby("split", sort=False):
        values = [part[f"energy_before{suffix}"].iloc[0], *part[f"energy_after{suffix}"]]
        rows += [{"split": split, "stages": k, "energy": v} for k, v in enumerate(values)]
    return pd.DataFrame(rows)


fig, ax = plt.subplots(figsize=(5.5, 3.5))
sns.lineplot(data=energy_curve(toy_records), x="stages", y="energy", hue="split", marker="o", ax=ax)
ax.set_xticks(range(NUM_STAGES + 1))
ax.set_xlabel("stages $k$ in the student (0: none, 1: $S_0$, 2: $S_0+S_1$, ...)")
ax.set_ylabel("residual energy $E_k$ (squared logits)")
ax.set_title("The residual shrinks stage by stage")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## CIFAR-10: the trained models
#
# The same checks on real artifacts: the CIFAR-10 teacher, the KD student $S_0$ and the res-students of the next
# chapter, for the first seed, loaded exactly as that chapter loads them (trained if missing). Statistics on training
# images use a fixed random sample of the training split (the number of images under the setup cell; the whole
# split when it is smaller), un-augmented like the validation and test images.

# %%
from reskd.distill import kd_loss
from reskd.experiment import TRAIN_SAMPLE, Experiment, MissingRunError
from reskd.profiles import get_profile, profile_banner
from reskd.studies import learnability, reskd_runs

torch.set_num_threads(threads)  # back to every core for the convolutional networks
DATASET = "cifar10"
config = get_profile(DATASET, profile)
if seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = Experiment(config, data_root=data_root, device=device, retrain=retrain, train_missing=train_missing,
                 progress=False)
seed = config.seeds[0]
res_runs = reskd_runs(exp)  # loss "auto": the validation winner of the first-stage ablation
ensemble = res_runs.ensemble(list(config.res_students), seed=seed)
splits = {"train": TRAIN_SAMPLE, "val": "val", "test": "test"}
# the ensemble's logits from its own forward pass, each stage's from its network run alone: statement 1 compares them
staged = {name: res_runs.staged(ensemble, split, joint=True) for name, split in splits.items()}
stage_logits = {name: res_runs.stage_outputs(ensemble, split) for name, split in splits.items()}
records = theory.stage_theory_records(staged, stage_logits)
num_stages = staged["test"].num_stages
display(Markdown(profile_banner(config, exp.data.source)))
print(f"data: {exp.data.spec.display_name}; images: " +
      ", ".join(f"{name} {st.num_samples:,}" for name, st in staged.items()))
print(f"teacher {config.teacher.label}, student {config.student.label}, res-students "
      f"{[a.label for a in config.res_students]} (loss {res_runs.loss!r}), seed {seed}, device {exp.device.type}")

# %% [markdown]
# ### How close distillation is to logit regression
#
# The ratio of Hinton's $T^2$-scaled loss between $S_0$ and the teacher to its high-temperature limit
# $\tfrac{1}{2C}\,\mathbb{E}\lVert \bar z_0 - \bar z_T \rVert^2$, on the test images: it tends to 1 as $T$ grows, and
# its value at the profile's temperature says how far the student's training loss is from a regression of centered
# logits.

# %%
TEMPERATURES = sorted({1.0, 2.0, config.temperature, 16.0, 64.0, 256.0})
test = staged["test"]
limit = theory.kd_limit(test.logits[0], test.teacher_logits).item()
kd_vs_limit = pd.DataFrame({"temperature T": TEMPERATURES,
                            "KD loss / limit": [kd_loss(test.logits[0].double(), test.teacher_logits.double(), T).item()
                                                / limit for T in TEMPERATURES]})
print(f"limit (1/2C) E||centered(z_0) - centered(z_T)||^2 = {limit:.4g}; profile temperature {config.temperature:g}")
kd_vs_limit.set_index("temperature T")

# %% [markdown]
# ### Residual energy per stage, on training and test images
#
# The energy before any model ($E_0 = \mathbb{E}\lVert z_T\rVert^2$) and after each stage, raw and centered, with the
# line-search coefficient $\rho^\star$ of each stage ("step", centered). A naive res-student was found to add almost
# nothing in this project; one suspect is that the residual on training images, which $S_0$ was fitted to, differs
# from the residual on unseen images. If so, the energy after $S_0$ is smaller on training than on test images, and a
# res-student removes a larger share of it on training images (with $\rho^\star$ near 1 there) than on test images
# (with $\rho^\star$ well below 1).

# %%
ENERGY_COLUMNS = {"split": "split", "stage": "stage k", "energy_before": "E_k", "energy_after": "E_k+1",
                  "energy_before_centered": "centered E_k", "energy_after_centered": "centered E_k+1",
                  "step": "step rho*"}
energy_table = records[records["split"] != "val"][list(ENERGY_COLUMNS)].rename(columns=ENERGY_COLUMNS)
energy_table.set_index(["split", "stage k"])

# %%
by_split = {split: part.set_index("stage") for split, part in records.groupby("split")}
for split in ("train", "test"):
    part = by_split[split]
    print(f"{split}: centered energy of the teacher's logits {part.loc[0, 'energy_before_centered']:.4g}, "
          f"after S0 {part.loc[0, 'energy_after_centered']:.4g} "
          f"({100 * part.loc[0, 'energy_after_centered'] / part.loc[0, 'energy_before_centered']:.1f}% left)")
ratio = by_split["test"].loc[0, "energy_after_centered"] / by_split["train"].loc[0, "energy_after_centered"]
print(f"after S0 the test residual carries {ratio:.2f} times the training residual's centered energy")
for k in range(1, num_stages):
    drop = {split: 100 * (1 - by_split[split].loc[k, "energy_after_centered"]
                          / by_split[split].loc[k, "energy_before_centered"]) for split in ("train", "test")}
    print(f"S{k} removes {drop['train']:.1f}% of the centered residual energy on training images and "
          f"{drop['test']:.1f}% on test images; step rho* {by_split['train'].loc[k, 'step']:.2f} (train) vs "
          f"{by_split['test'].loc[k, 'step']:.2f} (test)")

# %%
curves = pd.concat([energy_curve(records, centered=centered).assign(residual="centered" if centered else "raw")
                    for centered in (False, True)])
both = curves.pivot_table(index=["split", "stages"], columns="residual", values="energy")
gap = (both["raw"] / both["centered"] - 1).abs().max()
print(f"raw and centered residual energy differ by at most {100 * gap:.2f}% at any stage and split: "
      + ("the two curves of each split lie on top of each other (the stages learn no per-sample shift to remove)"
         if gap < 0.01 else "the dashed curves show the centered residual"))
fig, ax = plt.subplots(figsize=(6.5, 3.8))
sns.lineplot(data=curves, x="stages", y="energy", hue="split", style="residual", markers=True, ax=ax)
ax.set_xticks(range(num_stages + 1))
ax.set_yscale("log")
ax.set_xlabel("stages in the student (0: none, 1: $S_0$, ...)")
ax.set_ylabel("residual energy (squared logits, log scale)")
ax.set_title(f"{exp.data.spec.display_name}: the residual stage by stage")
fig.tight_layout()
plt.show()

# %% tags=["hide-input"]
STILL_FITTED = 1.2  # a test/train ratio of S0's residual energy below this: S0 underfits rather than memorises
drops = {k: {split: 100 * (1 - by_split[split].loc[k, "energy_after_centered"]
                           / by_split[split].loc[k, "energy_before_centered"]) for split in ("train", "test")}
         for k in range(1, num_stages)}
reading = [f"After $S_0$ the residual carries {ratio:.2f} times as much centered energy on test images as on "
           "training images: " + ("the student underfits rather than memorises, so the res-students see the same "
                                  "kind of residual on both." if ratio < STILL_FITTED else
                                  "the student fits its training images better than unseen ones, so the "
                                  "res-students learn a residual smaller than the one they meet at test time.")]
if drops:
    reading.append(f"$S_1$ removes {drops[1]['train']:.1f}% of the residual on training images and "
                   f"{drops[1]['test']:.1f}% on test images.")
if len(drops) > 1:
    later = max(max(d.values()) for k, d in drops.items() if k > 1)
    reading.append(f"The later stages, the same architecture fitted to what $S_1$ left, remove at most {later:.1f}% "
                   "each.")
steps = [by_split["train"].loc[k, "step"] for k in range(1, num_stages)]
if steps and min(steps) > 1:
    span = f"{steps[0]:.2f}" if len(steps) == 1 else f"from {min(steps):.2f} to {max(steps):.2f}"
    reading.append(f"Every stage's line-search step $\\rho^\\star$ is above 1 ({span} on training images): each "
                   "stage's output is too small, and scaling it would remove more.")
s0_test = records[(records["split"] == "test") & (records["stage"] == 0)].iloc[0]
if s0_test["disagreement_pct"] > 0:
    reading.append(f"The second statement's bound on $S_0$'s top-1 disagreement with the teacher is "
                   f"{s0_test['disagreement_bound_pct'] / s0_test['disagreement_pct']:.1f} times the measured "
                   "disagreement on test images: a worst case, loose on average.")
display(Markdown(f"**What this run shows** ({exp.data.source}, profile `{config.name}`, seed {seed}): "
                 + " ".join(reading)))

# %% [markdown]
# ### Where the residual lives
#
# The distribution of the per-sample centered energy $\lVert \bar r(x) \rVert^2$ over the test images, before any
# model (the teacher's centered logits) and after each stage, as empirical CDFs on a log scale. A curve further left
# is a smaller residual; a long right tail is a residual concentrated on few images.

# %%
per_sample = [pd.DataFrame({"energy": theory.sample_energy(test.teacher_logits, torch.zeros_like(test.teacher_logits),
                                                           center=True).numpy(), "after": "$z_T$ (no model)"})]
for k in range(num_stages):
    per_sample.append(pd.DataFrame({"energy": theory.sample_energy(test.teacher_logits, test.logits[k],
                                                                   center=True).numpy(), "after": stage_name(k)}))
per_sample = pd.concat(per_sample, ignore_index=True)
CDF_SAME = 0.01  # two CDFs closer than this everywhere (Kolmogorov-Smirnov distance) are drawn on top of each other
names = list(dict.fromkeys(per_sample["after"]))
differences = []
for before, after in zip(names, names[1:]):
    distance = theory.ks_distance(per_sample.loc[per_sample["after"] == before, "energy"].to_numpy(),
                                  per_sample.loc[per_sample["after"] == after, "energy"].to_numpy())
    differences.append(f"- {after} against {before}: largest CDF difference {distance:.3f}"
                       + (" (the curves coincide; the dashes tell them apart)" if distance < CDF_SAME else ""))
display(Markdown("\n".join(differences)))
fig, ax = plt.subplots(figsize=(6.5, 3.8))
dashes = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
for i, name in enumerate(names):
    sns.ecdfplot(per_sample.loc[per_sample["after"] == name, "energy"], log_scale=True, ax=ax, label=name,
                 ls=dashes[i % len(dashes)], lw=1.4)
ax.legend(fontsize=8, title="residual after")
ax.set_xlabel(r"per-image centered residual energy $\|\bar r(x)\|^2$ (test)")
ax.set_ylabel("fraction of test images")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The residual and the student's confidence
#
# The test images in five equal groups by $S_0$'s largest softmax probability: per group the mean centered residual
# energy $\lVert \bar r_1(x) \rVert^2$ left by $S_0$, the group's share of the total, and $S_0$'s accuracy. If the
# residual concentrates on the images $S_0$ is unsure of, the least confident group's share is well above an even
# fifth: that is what makes the sample-adaptive rule of the adaptive-inference chapter sensible (run the
# res-students where $S_0$ is unsure, skip them elsewhere).

# %%
CONFIDENCE_BINS = 5
by_confidence = theory.energy_by_confidence(test.teacher_logits, test.logits[0], test.labels, bins=CONFIDENCE_BINS,
                                            center=True)
least, most = by_confidence.iloc[0], by_confidence.iloc[-1]
print(f"least confident {100 / CONFIDENCE_BINS:.0f}% of test images (max prob <= {least['confidence_high']:.3f}): "
      f"{least['energy_share_pct']:.1f}% of S0's residual energy, S0 top-1 {least['top1_pct']:.1f}%")
print(f"most confident {100 / CONFIDENCE_BINS:.0f}% (max prob >= {most['confidence_low']:.3f}): "
      f"{most['energy_share_pct']:.1f}% of the energy, S0 top-1 {most['top1_pct']:.1f}%")
by_confidence.rename(columns={"confidence_low": "max prob from", "confidence_high": "to",
                              "energy_mean": "mean energy", "top1_pct": "S0 top-1 (%)",
                              "energy_share_pct": "share of energy (%)", "samples": "images"})

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
groups = [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(by_confidence["confidence_low"], by_confidence["confidence_high"])]
ax.bar(groups, by_confidence["energy_share_pct"], color=sns.color_palette("deep")[0], label="share of energy (%)")
ax.plot(groups, by_confidence["top1_pct"], color=sns.color_palette("deep")[3], marker="o", label="$S_0$ top-1 (%)")
ax.axhline(100 / CONFIDENCE_BINS, color="gray", ls="--", lw=1, label="even spread")
ax.set_xlabel("$S_0$'s max softmax probability (equal-count groups of test images)")
ax.set_ylabel("%")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% tags=["hide-input"]
share_least, share_most = least["energy_share_pct"], most["energy_share_pct"]
even = 100 / CONFIDENCE_BINS
display(Markdown(
    f"The least confident {even:.0f}% of the test images carry {share_least:.1f}% of $S_0$'s residual energy (an "
    f"even spread would be {even:.0f}%), the most confident {even:.0f}% still {share_most:.1f}%. "
    + ("The residual is concentrated on the images $S_0$ is unsure of: a per-sample rule can save the res-students' "
       "cost on the confident ones, where there is little for them to fix." if share_least > 2 * even else
       "The residual is only mildly concentrated on unsure images: a per-sample rule can save the res-students' cost "
       "on the confident images, but it cannot expect them to fix much there either way; the gain it rations is the "
       "small gain the stages bring." if share_least > even else
       "The residual is not concentrated on the images $S_0$ is unsure of: confidence is a poor guide to where the "
       "res-students have work to do.")))

# %% [markdown]
# ### Checking the two statements
#
# Per split and stage: statement 1 ($E_{k+1}$ equals the stage's loss $\ell_k$; the energy falls exactly when
# $\ell_k < E_k$) and statement 2 (the largest log-probability gap over the images against the largest oscillation,
# and the top-1 disagreement with the teacher against its per-sample bound).
#
# What statement 1's check measures: $E_{k+1}$ comes from the ensemble's logits $Z_k$, computed by the ensemble's
# own forward pass, and $\ell_k$ from stage $S_k$'s own logits, its network run alone on the same images. Computing $z_k$ as $Z_k - Z_{k-1}$ would make the two equal
# by construction; measured this way they agree only if the trained ensemble really is the sum of its stages (each
# stage fed the input it was trained on, none skipped or counted twice). The two are float32 computations along
# different paths, so "holds" means equal within a relative $10^{-5}$ of $1 + E_k$;
# a wrong wiring misses by orders of magnitude more. A False in a "holds" column would be a bug, in the proofs or in
# the code. "E falls" may well be False: a stage trained with a loss that cannot see a per-sample shift (KD, for
# $S_0$ always) can raise the raw energy while it lowers the centered one; statement 1 then only says that its raw
# squared error on $r_k$ is above $E_k$.

# %%
print("statement 1 holds on every split and stage:", bool(records["statement1_holds"].all()),
      f"(each stage's own output against the ensemble's logits, within {theory.STAGE_TOLERANCE:g} of 1 + E_k)")
print("statement 2 holds on every split and stage:", bool(records["statement2_holds"].all()))
show(records)

# %% [markdown]
# The bound is a worst case over classes and samples; how tight it is shows per image. Each point is a test image:
# its measured gap $\max_c \lvert \log \operatorname{softmax}(z_T)_c - \log \operatorname{softmax}(Z)_c \rvert$ against
# $\operatorname{osc}(r)$; the statement says every point lies below the diagonal.

# %%
rows = -(-num_stages // 2)
fig, axes = plt.subplots(rows, 2, figsize=(8.5, 3.6 * rows), squeeze=False)
for ax in axes.ravel()[num_stages:]:
    ax.set_visible(False)
for k, ax in enumerate(axes.ravel()[:num_stages]):
    gap = theory.logprob_gap(test.teacher_logits, test.logits[k]).numpy()
    bound = theory.logprob_gap_bound(test.teacher_logits, test.logits[k]).numpy()
    ax.scatter(bound, gap, s=4, alpha=0.4, linewidths=0)
    top = float(max(bound.max(), gap.max()))
    ax.plot([0, top], [0, top], color="gray", lw=1, ls="--", label="gap = bound")
    ax.set_xlabel(r"oscillation of the residual $\mathrm{osc}(r)$")
    ax.set_title(stage_name(k), fontsize=10)
for ax in axes[:, 0]:
    ax.set_ylabel("largest log-probability gap")
axes[0][0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Why a residual is harder to learn than the task
#
# The measurements above and the next chapter's show a pattern: a stage fitted to the residual $r = z_T - z_0$
# removes some residual energy, adds little accuracy, and a second stage of the same architecture removes almost
# nothing more. **The argument (ours, not the paper's)**, three claims, each with what it predicts:
#
# 1. $r = z_T - z_0$ holds $S_0$'s own idiosyncratic errors with a minus sign. A stage that sees only the image must
#    model $S_0$'s quirks as well as the teacher's knowledge. *Prediction:* one network and recipe, trained from the
#    image, explains a smaller fraction of the residual's variance than of the teacher's logits or of $S_0$'s.
# 2. A stage that reads $S_0$'s features can read those quirks. *Prediction:* a head on $S_0$'s last feature map
#    explains more of the residual than a network on the image, although it is far lighter.
# 3. Stage-wise fitting with fully trained learners of one class stalls (unlike boosting, which takes small steps
#    with shrinkage): what a converged learner of the class could fit, the previous stage already took.
#    *Prediction:* in the chain of same-architecture stages, each later stage explains a smaller fraction of its own
#    residual than the one before it, until a stage explains nothing (the stall itself: nothing left to fall).
#    Fractions measured on the test samples are noisy, so a step counts as a fall only when it exceeds two bootstrap
#    standard errors of the difference (resampling the test samples with replacement), and as stalled when neither fraction is above zero by more than two of its standard errors (the two stages explain
#    nothing, or less than nothing); a rise beyond the margin refutes the claim, and a level step with something
#    explained leaves it undecided. This reading of "stalled", which counts a stage that explains less than nothing,
#    was fixed after the first measurement: under the stricter one (both fractions within the margin of zero),
#    CIFAR-10's last step would be undecided, since its last stage explains less than nothing by more than its
#    margin.
#
# The measure is the fraction of a target's variance over the test samples a prediction explains,
# $1 - \sum \lVert \bar y - \bar{\hat y} \rVert^2 / \sum \lVert \bar y - \mathbb{E}\,\bar y \rVert^2$, with
# logits centered over classes: 1 is a perfect fit, 0 no better than the
# target's mean. Every network of a comparison has the same architecture, recipe (MSE regression) and initial
# weights, so the rows differ only in what they fit.
#
# First the toy: networks of the stages' size (one hidden layer of 8) regress each target from the points; the head
# for claim 2 is the same size, on $S_0$'s hidden layer.

# %%
TOY_INITS = 5  # initial weights per target (seeds 1000, 1001, ...): the toy's regressors are cheap, their spread is not


def toy_learnability(seed: int, inits: int = TOY_INITS) -> pd.DataFrame:
    """Explained variance of each target on the test points, per regressor (the stages' size) and initialisation."""
    teacher, stages = runs[seed]
    s0 = stages[0]
    with torch.no_grad():
        targets = {split: {"teacher's logits z_T": teacher(x), "S0's logits z_S0": s0(x),
                           "residual z_T - z_S0": teacher(x) - s0(x)} for split, x in (("train", x_train),
                                                                                        ("test", x_test))}
        hidden = {"train": s0[:2](x_train), "test": s0[:2](x_test)}  # S0's hidden layer: its "features"
    rows = []
    for target in targets["train"]:
        inputs = {"points": {"train": x_train, "test": x_test}}
        if target.startswith("residual"):
            inputs["S0's hidden layer"] = hidden
        for input, x in inputs.items():
            for init in range(inits):  # the same initial weights for every target
                net = regress(seed + 1000 + init, x["train"], targets["train"][target], STEPS)
                with torch.no_grad():
                    prediction = net(x["test"])
                rows.append({"target": target, "input": input, "init": init,
                             "explained_variance": theory.explained_variance(targets["test"][target], prediction)})
    return pd.DataFrame(rows)


with one_thread():  # the regressors train on one thread anyway; their evaluation too, so its sums keep one order
    toy_runs = toy_learnability(toy_seeds[0])
LEARN_COLUMNS = {"explained_variance": "explained fraction", "std": "std over initialisations", "network": "network",
                 "top1": "top-1 (%)", "top1_of": "top-1 of"}
toy_learn = (toy_runs.groupby(["target", "input"], sort=False)["explained_variance"]
             .agg(explained_variance="mean", std="std").reset_index())
toy_chain = theory.stage_explained_variance(toy_staged[toy_seeds[0]]["test"])
print(f"toy, test points, mean and std over {TOY_INITS} initialisations per row; the chain's res-students (one "
      "initialisation each) explain of their own residual: "
      + ", ".join(f"S{k} {fixed(v)}" for k, v in enumerate(toy_chain, start=1)))
toy_learn.rename(columns=LEARN_COLUMNS).set_index(["target", "input"])

# %% [markdown]
# Then CIFAR-10: resnet-sized regressors of the profile's first res-student
# architecture, trained with the student recipe and plain MSE from the image, and a feature head on $S_0$'s last
# feature map; the top-1 column is each prediction alone for the logits and $S_0$ plus it for the residual. Claim 3
# is read off the profile's chain of the sections above.

# %%
LEARN_ARCH = config.res_students[0]
try:
    learn = learnability(exp, LEARN_ARCH, seed=seed)
except MissingRunError:
    learn = None
    print(f"the learnability runs of seed {seed} are not trained in the {config.name} profile: train them with "
          f"`python -m reskd.cli {DATASET} {config.name} learnability --seeds {seed}` and execute this page again")
chain_fractions = theory.stage_explained_variance(staged["test"])
print(f"the profile's chain ({LEARN_ARCH.label} stages, loss {res_runs.loss!r}), test images: each res-student's "
      "explained fraction of its own residual: "
      + ", ".join(f"S{k} {fixed(v)}" for k, v in enumerate(chain_fractions, start=1)))
if learn is not None:
    display(learn[learn["split"] == "test"].drop(columns="split")
            .assign(network=lambda f: f["network"].str.replace("_", " "))
            .rename(columns=LEARN_COLUMNS).set_index(["target", "input"]))


# %% tags=["hide-input"]
def claim_verdicts(frame: pd.DataFrame, chain: StagedOutputs, inputs: tuple[str, str]) -> list[str]:
    """The three predictions against a learnability table (rows of one split) and a chain's staged outputs (claim 3:
    its explained fractions, decided with a margin of two bootstrap standard errors)."""
    ev = frame.set_index(["target", "input"])["explained_variance"]
    image, features = inputs
    residual, teacher_ev, s0_ev = (ev[("residual z_T - z_S0", image)], ev[("teacher's logits z_T", image)],
                                   ev[("S0's logits z_S0", image)])
    feature_ev = ev[("residual z_T - z_S0", features)]
    holds = lambda ok: "holds" if ok else "**does not hold**"  # noqa: E731
    lines = [f"claim 1 {holds(residual < min(teacher_ev, s0_ev))}: the residual {fixed(residual)} against the "
             f"teacher's logits {fixed(teacher_ev)} and S0's {fixed(s0_ev)}",
             f"claim 2 {holds(feature_ev > residual)}: the residual from {features} {fixed(feature_ev)} against from "
             f"the {image} {fixed(residual)}"]
    if chain.num_stages > 2:
        fractions = theory.stage_explained_variance(chain)
        fraction_se, difference_se = theory.stage_explained_variance_se(chain)
        verdict, steps = theory.stall_verdict(fractions, fraction_se, difference_se)
        word = {"holds": "holds", "does not hold": "**does not hold**", "undecided": "is **undecided**"}[verdict]
        lines.append(f"claim 3 {word}: each stage's fraction of its own residual "
                     + ", ".join(f"S{k} {fixed(v)} (se {se:.4f})"
                                 for k, (v, se) in enumerate(zip(fractions, fraction_se), start=1))
                     + f"; steps (margin: {theory.MARGIN_Z:g} bootstrap se of the difference): "
                     + ", ".join(f"S{k}->S{k + 1} {step} ({'+' if b - a >= 0 else '-'}{fixed(abs(b - a), 4)}, "
                                 f"margin {theory.MARGIN_Z * se:.4f})"
                                 for k, (step, a, b, se) in enumerate(zip(steps, fractions, fractions[1:],
                                                                          difference_se), start=1)))
    return lines


def show_verdicts(verdicts: dict[str, list[str]]) -> None:
    display(Markdown("\n".join(f"- **{name}** (test): " + "; ".join(lines) for name, lines in verdicts.items())))


verdicts = {"toy": claim_verdicts(toy_learn, toy_staged[toy_seeds[0]]["test"], ("points", "S0's hidden layer"))}
show_verdicts(verdicts)

# %% [markdown]
# The same three predictions on CIFAR-10 (nothing is trained here: the numbers come from the committed runs, so this
# verdict is checked whenever the page is re-executed).

# %% tags=["hide-input"]
if learn is not None:
    cifar_name = exp.data.spec.display_name
    verdicts[cifar_name] = claim_verdicts(learn[learn["split"] == "test"], staged["test"],
                                          ("image", "S0's last feature map"))
    show_verdicts({cifar_name: verdicts[cifar_name]})

# %% tags=["hide-input"]
REFINED = {  # what a failed prediction changes in the argument (the numbers stay as measured)
    "claim 1": "the residual can be as learnable as the task where S0's errors are themselves a simple function of "
               "the input; the claim holds only where S0's quirks are hard to model from the input.",
    "claim 2": "reading S0's features helps only when they carry more than a stage could compute from the input "
               "itself (a wide feature map), not through a bottleneck narrower than the input, such as the toy's "
               "eight hidden units.",
    "claim 3": "stage-wise fitting stalls only once a stage has fit what its class can; where an earlier stage "
               "stops short of that (an unlucky initialisation, or too few steps: compare its fraction with the "
               "regressors' of the same target above), the next stage of the same class takes up the rest.",
}
failed = {claim: [name for name, lines in verdicts.items()
                  if any(l.startswith((f"{claim} **does not", f"{claim} is **undecided")) for l in lines)]
          for claim in REFINED}
refinements = [f"- **{claim} fails or is undecided on {', '.join(names)}**, so the argument is refined: "
               f"{REFINED[claim]}" for claim, names in failed.items() if names]
if refinements:
    display(Markdown("\n".join(refinements)))
panels = {"toy (test points)": toy_runs.assign(input=toy_runs["input"].replace({"points": "image / points"}))}
if learn is not None:
    test_learn = learn[learn["split"] == "test"]
    panels[f"{exp.data.spec.display_name} (test images)"] = test_learn.assign(
        input=test_learn["input"].replace({"image": "image / points"}))
fig, axes = plt.subplots(len(panels), 1, figsize=(6.8, 3.4 * len(panels)), squeeze=False)  # one per row: readable
for ax, (title, frame) in zip(axes[:, 0], panels.items()):
    sns.barplot(data=frame, x="target", y="explained_variance", hue="input", ax=ax, errorbar="sd",
                hue_order=sorted(frame["input"].unique(), key=lambda name: not name.startswith("image")))
    ax.set_title(title + (f" (bars: mean and std over {TOY_INITS} initialisations)" if title.startswith("toy") else ""),
                 fontsize=10)
    ax.set_xlabel("")
    ax.set_ylabel("explained fraction\nof the variance")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, title="input", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Results files
#
# The toy's numbers (cost in MACs of the linear layers, test accuracy, agreement with the teacher) go to
# `results/toy-spirals.json`; the checks on CIFAR-10 (per split and stage: the residual energies, the stage losses,
# the gap and its bound, the disagreement and its bound), the distillation limit, the energy by confidence and the
# toy's per-stage checks go to `results/theory.json`.

# %%
teacher_macs = macs(teacher)
models = [report.model_record("teacher MLP", "teacher", stages=0, macs=teacher_macs, teacher_macs=teacher_macs,
                               top1=[teacher_top1], seeds=[toy_seeds[0]])]
for k in range(NUM_STAGES):
    per_seed = [st["test"] for st in toy_staged.values()]
    models.append(report.model_record(
        "S0" if k == 0 else f"S0+...+S{k}", "kd" if k == 0 else "reskd-stage", stages=k + 1,
        macs=(k + 1) * macs(stages[0]), teacher_macs=teacher_macs, top1=[top1_per_stage(st)[k] for st in per_seed],
        seeds=toy_seeds, agreement_teacher=[agreement(st.logits[k], st.teacher_logits) for st in per_seed]))
path = results.write_results(CHAPTER, TOY_DATASET, "synthetic three spirals (NumPy)", profile, "cpu", models,
                             extra={"steps": STEPS, "train_points": len(x_train), "test_points": len(x_test)},
                             root=results_dir)

# %%
analysis = {
    "notes": config.notes, "seed": seed, "teacher": config.teacher.label, "student": config.student.label,
    "res_students": [a.label for a in config.res_students], "residual_loss": res_runs.loss, "bound": "oscillation",
    "train_split": TRAIN_SAMPLE, "samples": {name: st.num_samples for name, st in staged.items()},
    "stages": theory.json_ready(records),
    "kd_limit": {"limit": limit, "ratios": theory.json_ready(kd_vs_limit.rename(
        columns={"temperature T": "temperature", "KD loss / limit": "ratio"}))},
    "energy_by_confidence": theory.json_ready(by_confidence),
    "toy": {"dataset": TOY_DATASET, "steps": STEPS, "seed": toy_seeds[0], "stages": theory.json_ready(toy_records)},
    "learnability": {
        "arch": LEARN_ARCH.label, "loss": "mse", "seed": seed, "verdicts": verdicts,
        "cifar10": None if learn is None else theory.json_ready(learn),
        "chain_explained_variance_test": chain_fractions, "chain_loss": res_runs.loss,
        "chain_explained_variance_test_se": dict(zip(("fractions", "differences"),
                                                     theory.stage_explained_variance_se(staged["test"]))),
        "margin_z": theory.MARGIN_Z, "bootstrap_resamples": theory.BOOTSTRAP_RESAMPLES,
        "toy": {"inits": TOY_INITS, "table": theory.json_ready(toy_runs), "chain_explained_variance_test": toy_chain}},
}
path = results.write_analysis("theory", CHAPTER, DATASET, exp.data.source, config.name, exp.device.type, analysis,
                              root=results_dir)

# %% [markdown]
# ## Conclusion

# %% tags=["hide-input"]
from myst_nb import glue


def claim_word(name: str, claim: str) -> str:
    """'holds', 'does not hold' or 'undecided' for one claim of one data set's verdicts ('' when not measured)."""
    for line in verdicts.get(name, []):
        if line.startswith(claim + " "):
            return ("undecided" if "undecided" in line.split(":")[0] else
                    "does not hold" if "does not hold" in line.split(":")[0] else "holds")
    return ""


proved = bool(records[["statement1_holds", "statement2_holds"]].all().all()
              and toy_records[["statement1_holds", "statement2_holds"]].all().all())
test_top1 = [top1(z, test.labels) for z in test.logits]
cifar = exp.data.spec.display_name
checked = (f"Both statements hold on every split and stage, on the toy and on {cifar}" if proved else
           "A statement **fails** on some split or stage (see the checks above): a bug in the proofs or the code")
answer = [checked + ": a res-student lowers the residual energy exactly when it beats predicting zero, and a "
          "residual smaller than the teacher's top-1 margin keeps the teacher's class, so the residual is a sound "
          "target."]
conclusion = [checked + " (statement 1: a stage lowers the residual energy exactly when it beats predicting zero; "
              "statement 2: the student's log-probabilities are within the residual's oscillation of the "
              "teacher's). Neither promises a gain on unseen images: that is measured."]
if drops:
    later = max((d["test"] for k, d in drops.items() if k > 1), default=None)
    gain = (f"On {cifar}'s test images $S_1$ removes {fixed(drops[1]['test'], 1)}% of the centered residual energy "
            "$S_0$ leaves" + (f", the later stages at most {fixed(later, 1)}% each" if later is not None else "")
            + f", and top-1 goes from {test_top1[0]:.2f}% ($S_0$) to {test_top1[-1]:.2f}% ($S_0$ and "
            f"{num_stages - 1} res-student{'s' if num_stages > 2 else ''}; the teacher: "
            f"{top1(test.teacher_logits, test.labels):.2f}%).")
    answer.append(gain)
    conclusion.append(gain)
if learn is not None:
    ev = learn[learn["split"] == "test"].set_index(["target", "input"])["explained_variance"]
    residual_ev, teacher_ev = ev[("residual z_T - z_S0", "image")], ev[("teacher's logits z_T", "image")]
    feature_ev = ev[("residual z_T - z_S0", "S0's last feature map")]
    words = {claim: claim_word(cifar, claim) or "was not measured" for claim in ("claim 1", "claim 2", "claim 3")}
    toy_words = ", ".join(claim_word("toy", claim) or "not measured" for claim in ("claim 1", "claim 2", "claim 3"))
    answer.append(f"The residual is {'harder' if residual_ev < teacher_ev else 'no harder'} to learn from the image "
                  f"than the task: a network explains {fixed(residual_ev)} of its variance against "
                  f"{fixed(teacher_ev)} of the teacher's logits.")
    conclusion.append(
        f"The argument of the last section, on {cifar}: its first claim {words['claim 1']} (one network and recipe "
        f"explain {fixed(residual_ev)} of the residual's variance from the image, {fixed(teacher_ev)} of the "
        f"teacher's logits), the second {words['claim 2']} (a light head on $S_0$'s last feature map explains "
        f"{fixed(feature_ev)} of the residual's), and the third {words['claim 3']} (stages of one architecture "
        f"stall). On the toy the three claims in turn: {toy_words}."
        + (" For the next chapters this means: a res-student should read $S_0$'s features rather than the image"
           + (", and a chain of same-size stages cannot be expected to keep paying." if words["claim 3"] == "holds"
              else ".") if words["claim 2"] == "holds" else ""))
glue("chapter_answer", Markdown(" ".join(answer)), display=False)
display(Markdown(" ".join(conclusion)))
