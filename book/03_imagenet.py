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
import pandas as pd
import seaborn as sns
from IPython.display import display

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
# on it is far beyond two CPU cores: the chapter records it as **not run**, with no accuracy of ours. What can be
# computed without the data is computed below: what the paper-like configurations cost. With the data in
# `<data root>/imagenet/` (ILSVRC-2012's `train/<wnid>/*.JPEG`, and `val/` either in class folders or flat beside
# Kaggle's `LOC_val_solution.csv`), `reskd.data.load_dataset("imagenet")` loads it: random-resized crops and flips
# for training, the short side resized and the centre cropped for evaluation. A teacher may start from
# torchvision's ImageNet weights, `reskd.models.create_model("resnet34", 1000, pretrained=True)` (downloaded once,
# when online; offline it says so and what to do).
#
# ### Cost at 224×224
#
# MACs per 224×224 image (fvcore, `reskd.flops`) of the paper-like configurations: torchvision's ResNet-34
# teacher, its ResNet-18 as the student S0, width-reduced ResNet-18 res-students, a feature head on S0's last
# feature maps ($512\times7\times7$) as a cheaper alternative, and one wider KD student of about the cost of S0 plus
# a res-student (the equal-cost baseline). A res-student that reads the image costs its own MACs on top of S0; the
# feature head reuses S0's features.

# %%
import torchvision

from reskd.flops import GIGA, MEGA
from reskd.models import create_model
from reskd.profiles import PAPER_PCT_TEACHER
from reskd.reskd import FeatureHead

IMAGENET_INPUT, IMAGENET_CLASSES = (3, 224, 224), 1000
S0_FEATURES = (512, 7, 7)  # ResNet-18's last feature maps at 224x224, what a feature head reads
RES_WIDTHS = (0.5, 0.375, 0.25)
EQUAL_COST_WIDTH = 1.075  # one ResNet-18 about as costly as S0 + the x0.375 res-student

costs = {"teacher ResNet-34": model_cost(torchvision.models.resnet34(), IMAGENET_INPUT),
         "S0 ResNet-18": model_cost(torchvision.models.resnet18(), IMAGENET_INPUT)}
for w in RES_WIDTHS:
    costs[f"res-student ResNet-18 x{w}"] = model_cost(create_model("resnet18", IMAGENET_CLASSES, width=w),
                                                      IMAGENET_INPUT)
costs["res-student feature head (64 ch.)"] = model_cost(FeatureHead(S0_FEATURES[0], IMAGENET_CLASSES, channels=64),
                                                        S0_FEATURES)
costs[f"KD student ResNet-18 x{EQUAL_COST_WIDTH}"] = model_cost(
    create_model("resnet18", IMAGENET_CLASSES, width=EQUAL_COST_WIDTH), IMAGENET_INPUT)
combinations = {f"S0 + ResNet-18 x{w}": ["S0 ResNet-18", f"res-student ResNet-18 x{w}"] for w in RES_WIDTHS}
combinations["S0 + 2 x ResNet-18 x0.25"] = ["S0 ResNet-18"] + ["res-student ResNet-18 x0.25"] * 2
combinations["S0 + feature head"] = ["S0 ResNet-18", "res-student feature head (64 ch.)"]
teacher_macs_224 = costs["teacher ResNet-34"].macs
rows = [{"model": name, "params_M": c.params / MEGA, "GMACs": c.macs / GIGA, "pct_teacher": 100 * c.macs /
         teacher_macs_224} for name, c in costs.items()]
for name, parts in combinations.items():
    macs, params = sum(costs[p].macs for p in parts), sum(costs[p].params for p in parts)
    rows.append({"model": name, "params_M": params / MEGA, "GMACs": macs / GIGA,
                 "pct_teacher": 100 * macs / teacher_macs_224})
macs_table = pd.DataFrame(rows).round({"params_M": 2, "GMACs": 3, "pct_teacher": 1})
display(macs_table)
print(f"the paper's ImageNet ResKD student: {PAPER_PCT_TEACHER['imagenet']}% of its teacher's MACs")

# %%
path = results.write_not_run(CHAPTER, "imagenet", "ImageNet is not available here (and needs a GPU)", profile,
                             extra={"macs_224": macs_table.to_dict("records"),
                                    "input_size": list(IMAGENET_INPUT)}, root=results_dir)
print(f"wrote {path.parent.name}/{path.name}: not run (the costs at 224x224 only)")

# %% [markdown]
# ### Launching it
#
# Every job of `reskd.cli` runs data-parallel under `torchrun` (`reskd.distributed`): nccl on GPUs, gloo
# on CPUs; only the student is wrapped in `DistributedDataParallel`, each rank takes its slice of every global batch
# (the same samples and views as one process), metrics are all-reduced before they are logged, rank 0 writes the
# checkpoints and every rank resumes from them. The global batch is the profile's `batch_size` whatever the number
# of processes, and the learning rate is used as given; a run's identity records the world size, the per-rank and
# global batch and that rule. ImageNet's `paper` profile (`reskd.profiles`: resnet34 teacher, resnet18 student, a
# resnet18x0.375 res-student, the 100-epoch recipe of torchdistill and mdistiller) is what `imagenet paper` below
# trains; it has not been run here. Decode the data once, in one process, before the ranks read it:
#
# ```bash
# export RESKD_DATA=/path/to/data           # holds imagenet/train/ and imagenet/val/
# python -c "from reskd.data import load_dataset; load_dataset('imagenet')"
# ```
#
# One node with 8 GPUs:
#
# ```bash
# torchrun --standalone --nproc_per_node 8 -m reskd.cli imagenet paper teacher kd reskd
# ```
#
# Several nodes (the same command on each; the rendezvous endpoint is one of the nodes):
#
# ```bash
# torchrun --nnodes 4 --nproc_per_node 8 --rdzv_id reskd-imagenet --rdzv_backend c10d \
#     --rdzv_endpoint node01:29500 -m reskd.cli imagenet paper teacher kd reskd
# ```
#
# On SLURM, one torchrun per node:
#
# ```bash
# #!/bin/bash
# #SBATCH --job-name=reskd-imagenet
# #SBATCH --nodes=4
# #SBATCH --ntasks-per-node=1
# #SBATCH --gpus-per-node=8
# #SBATCH --cpus-per-task=32
# head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 8 --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d \
#     --rdzv_endpoint "$head:29500" -m reskd.cli imagenet paper teacher kd reskd
# ```
#
# An interrupted job resumes when launched again (every rank loads rank 0's last checkpoint).
#
# For scale, published numbers (not ours): torchvision's ResNet-34 reaches 73.31% top-1 and its ResNet-18 69.76%;
# Hinton KD from the ResNet-34 into the ResNet-18 reaches about 71.0-71.4% in torchdistill and mdistiller (100
# epochs). What ResKD adds on top of such a student at the costs above is what an ImageNet run here would measure.
