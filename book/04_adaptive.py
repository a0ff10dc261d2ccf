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
# At inference ResKD lets easy samples stop after the light student and sends only the hard ones through the
# res-students. This chapter studies that rule; for now it examines the quantity the rule thresholds.
#
# ```{note}
# The outputs stored in this page come from the **smoke** profile: tiny models trained for seconds.
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
# ## The student's confidence
#
# ResKD's adaptive inference runs the cheap student $S_0$ first and calls the res-students only for the samples it
# is unsure of. The natural measure of sureness is the maximum softmax probability
# $c(x) = \max_c \operatorname{softmax}(z_0(x))_c$. This chapter loads the CIFAR-10 models of the CIFAR chapter
# (same profile; they are trained there, and only loaded here) and looks at $c(x)$ on the **validation split**,
# the split reserved for calibrating thresholds (the test split stays untouched until the final numbers).

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from reskd.experiment import Experiment, get_profile
from reskd.train import predict

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)

DATASET = "cifar10"
SHARES_ALONE = (0.25, 0.5, 0.75)  # shares of samples the student answers alone
config = get_profile(DATASET, profile)
if seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = Experiment(config, data_root=data_root, device=device, retrain=retrain, progress=False)
student = exp.student("kd", seed=config.seeds[0])
logits, labels = predict(student, exp.eval_loader("val"), device=exp.device)
confidence, predicted = torch.softmax(logits, 1).max(1)
val = pd.DataFrame({"confidence": confidence.numpy(), "correct": (predicted == labels).numpy()})
print(f"profile {config.name!r}: KD student {config.student.label} (seed {config.seeds[0]}) on "
      f"{len(val):,} validation images, top-1 {100 * val.correct.mean():.1f}%")

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
sns.histplot(data=val.assign(prediction=val.correct.map({True: "correct", False: "wrong"})), x="confidence",
             hue="prediction", bins=20, binrange=(0, 1), multiple="stack", ax=ax)
ax.set_xlabel("max softmax probability of the KD student")
ax.set_ylabel("validation images (count)")
ax.set_title(f"{exp.data.spec.display_name}, profile {config.name!r}")
fig.tight_layout()
plt.show()

# %% [markdown]
# If confident predictions are more often right, a threshold $\tau$ on $c(x)$ splits the samples into those the
# student answers alone and those that go on to the res-students. Below, $\tau$ is set at quantiles of $c(x)$ so that
# the student answers 25%, 50% or 75% of the validation images alone; the table compares its accuracy on those
# with its accuracy on the rest.

# %%
rows = []
for share in SHARES_ALONE:
    tau = val.confidence.quantile(1 - share)
    alone = val[val.confidence >= tau]
    rows.append({"threshold τ": tau, "answered by S0 alone (%)": 100 * len(alone) / len(val),
                 "top-1 on those (%)": 100 * alone.correct.mean() if len(alone) else float("nan"),
                 "top-1 on the rest (%)": 100 * val[val.confidence < tau].correct.mean()
                 if len(alone) < len(val) else float("nan")})
pd.DataFrame(rows)

# %% [markdown]
# <!-- reskd: adaptive -->
# ## Ablations
#
# The adaptive-inference ablations (the paper's rule against alternatives, thresholds calibrated on the validation
# split, accuracy against average cost) are added here together with the method.

# %%
# reskd: adaptive
