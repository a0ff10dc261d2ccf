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
# # Tiny-ImageNet and ImageNet
#
# The paper's larger-scale experiments: Tiny-ImageNet-200 (64×64 images, 200 classes) and ImageNet-1k. This
# chapter runs what this machine can run and says plainly what it cannot.
#
# ```{note}
# The outputs stored in this page come from the **smoke** profile (a subset and one epoch). ImageNet was not run.
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

    fetch_data("03_imagenet")

# %% tags=["parameters"]
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
# ## Setup
#
# `reskd.profiles` defines a **smoke** profile for Tiny-ImageNet (ImageNet-layout ResNet-18s at reduced width, one
# epoch on 1,000 images: it checks that the pipeline works on 64×64 images with 200 classes; its numbers mean
# nothing). The `cpu` and `paper` settings for Tiny-ImageNet are not defined yet: with those profiles the chapter records that nothing was run instead of
# inventing numbers.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reskd import report, results
from reskd.experiment import Experiment
from reskd.flops import model_cost
from reskd.profiles import find_profile
from reskd.studies import reskd_runs
from reskd.train import predict

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)

CHAPTER, DATASET = "03_imagenet", "tiny-imagenet"
config = find_profile(DATASET, profile)  # reskd.profiles: only "smoke" is defined for Tiny-ImageNet so far
if config is not None and seeds is not None:
    config = config.replace(seeds=tuple(seeds))
exp = (Experiment(config, data_root=data_root, device=device, retrain=retrain, train_missing=train_missing,
                  progress=False) if config else None)


def find_data() -> str | None:
    """Why Tiny-ImageNet cannot be loaded (None when it can)."""
    try:
        exp.data
    except (FileNotFoundError, ValueError) as e:
        print(f"{type(e).__name__}: {e}")
        return "Tiny-ImageNet not found under the data root (see data/README.md)"
    return None


problem = f"no Tiny-ImageNet settings for profile {profile!r} yet" if exp is None else find_data()
print(f"profile {profile!r}: " + (config.notes if config else "not defined for Tiny-ImageNet"))
print("Tiny-ImageNet: " + ("found, " + exp.data.source if problem is None else "not run: " + problem))

# %% [markdown]
# ## Tiny-ImageNet: teacher and baselines
#
# As in the CIFAR chapter: a teacher trained with cross-entropy, and a light student trained from scratch and with
# Hinton KD {cite}`hinton2015distilling`. Cost is in MACs per $64\times64$ image.

# %%
if problem is None:
    test_loader = exp.eval_loader("test")
    teacher = exp.teacher()
    teacher_logits, labels = predict(teacher, test_loader, device=exp.device)
    teacher_macs = model_cost(teacher, exp.input_size).macs
    models = [report.logits_record(f"teacher {config.teacher.label}", "teacher", {0: teacher_logits}, labels,
                                    stages=0, macs=teacher_macs, teacher_macs=teacher_macs)]
    for kind in ("scratch", "kd"):
        students = {seed: exp.student(kind, seed=seed) for seed in config.seeds}
        logits = {seed: predict(m, test_loader, device=exp.device)[0] for seed, m in students.items()}
        models.append(report.logits_record(
            f"student {config.student.label} ({kind})", kind, logits, labels, stages=1,
            macs=model_cost(students[config.seeds[0]], exp.input_size).macs, teacher_macs=teacher_macs,
            teacher_logits=teacher_logits))
    display(report.for_display(report.models_frame(models)))
else:
    print(f"not run: {problem}")

# %% [markdown]
# <!-- reskd: stages -->
# ## Tiny-ImageNet: ResKD stages
#
# The same method as in the CIFAR chapter, unchanged: the residual loss chosen by the first-stage ablation on this
# data set's validation split (`loss="auto"`), the profile's res-students trained one after the other, and the
# adaptive rule calibrated on the validation split.

# %%
# reskd: stages
stage_models: list[dict] = []  # ResKD's entries (kinds "reskd-stage" and "reskd-adaptive")
if problem is None:
    runs = reskd_runs(exp)  # loss "auto": the validation winner of the first-stage ablation
    staged = {seed: {split: runs.staged(runs.ensemble(list(config.res_students), seed=seed), split)
                     for split in ("val", "test")} for seed in config.seeds}
    stage_models = report.reskd_records(staged, teacher_macs)
    print(f"residual loss chosen on validation: {runs.loss!r}")
    display(report.for_display(report.models_frame(stage_models)))

# %%
if problem is None:
    path = results.write_results(CHAPTER, DATASET, exp.data.source, config.name, exp.device.type,
                                 models + stage_models, extra={"notes": config.notes,
                                                               "train_images": len(exp.data.train)},
                                 root=results_dir)
else:
    path = results.write_not_run(CHAPTER, DATASET, problem, profile, root=results_dir)
print(f"wrote {path.parent.name}/{path.name} (profile {profile!r})")

# %% [markdown]
# ## ImageNet
#
# ImageNet-1k (1.28 million training images) is not available on the machine that built this book, and training
# on it is far beyond two CPU cores: the chapter records it as not run. With the data in
# `<data root>/imagenet/{train,val}/<wnid>/*.JPEG`, `reskd.data.load_dataset("imagenet")` loads it; the paper's
# ImageNet setting (a ResNet teacher and ResNet students of reduced width) is the `paper` profile's to define.

# %%
path = results.write_not_run(CHAPTER, "imagenet", "ImageNet is not available here (and needs a GPU)", profile,
                             root=results_dir)
print(f"wrote {path.parent.name}/{path.name}: not run")
