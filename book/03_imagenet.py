# ---
# jupyter:
#   jupytext:
#     comment_magics: false
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
# The page's banner below says which profile produced its outputs. ImageNet was not run.

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
# Tiny-ImageNet-200 {cite}`le2015tiny`: 100,000 training images of 200 ImageNet classes at 64×64, and 10,000 labelled
# validation images, which (as in papers) are the test split reported here. A validation split for calibration is
# carved from the training images (`val_size` of the profile), so thresholds never see the test split.
#
# The **cpu** profile (`reskd.profiles`) is sized for two CPU cores: ResNet-18s with a stem for 64×64 images (one
# 3×3 stride-2 conv, no max-pool: the four stages see 32, 16, 8 and 4 pixels, a CIFAR ResNet's resolutions;
# `reskd.models.STEMS`), a teacher at width 0.375, $S_0$ at width 0.25 (45% of the teacher's MACs) and one lighter
# res-student at width 0.125 on the image, so that $S_0 + S_1$ costs about the paper's 53.59%. It trains the teacher
# 18 epochs and every student 10, far from the 100-200 epochs in which a full-width ResNet-18 with a stride-1 stem
# reaches about 56-62% top-1 (mdistiller's Tiny-ImageNet recipe): absolute accuracies here are low, and only the
# comparisons between models trained alike carry over. The residual loss is the one CIFAR-10's ablation picked on
# its validation split (`mse+ce`), not chosen again here. Where this is ours and not the paper's, as in the CIFAR
# chapter: the losses, the stage architectures, the feature-head regimes and the exit rule.

# %%
import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from reskd import regimes, report, results
from reskd.adaptive import sweep
from reskd.experiment import Experiment
from reskd.flops import model_cost
from reskd.profiles import PAPER_PCT_TEACHER, find_profile, profile_banner

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)

CHAPTER, DATASET = "03_imagenet", "tiny-imagenet"
PAPER_PCT = PAPER_PCT_TEACHER[DATASET]  # the paper's Tiny-ImageNet ResKD cost, % of its teacher's MACs
config = find_profile(DATASET, profile)  # reskd.profiles: "smoke" and "cpu" are defined for Tiny-ImageNet
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
if problem is None:
    display(Markdown(profile_banner(config, exp.data.source)))
    print(f"data: {exp.data.source}: {len(exp.data.train):,} training / {len(exp.data.val):,} validation / "
          f"{len(exp.data.test):,} test images")
    print(f"teacher {config.teacher.label}, student {config.student.label}, res-students "
          f"{[a.label for a in config.res_students]}, regimes {list(config.regimes)}, seeds {list(config.seeds)}")
else:
    print(f"not run: {problem}")

# %% [markdown]
# ## The teacher and the baselines
#
# As in the CIFAR chapter: a teacher trained with cross-entropy, and students of $S_0$'s architecture trained from
# scratch and with Hinton KD {cite}`hinton2015distilling`; beside them, one wider KD student that costs about as much
# as $S_0 + S_1$ (the equal-cost baseline). Cost is in MACs per 64×64 image (fvcore, 1 MAC = 2 FLOPs).

# %%
models: list[dict] = []  # every entry of the results file
if problem is None:
    teacher = exp.teacher()
    teacher_logits, labels = exp.logits(teacher, "test")
    teacher_macs = exp.teacher_macs
    models.append(report.logits_record(f"teacher {config.teacher.label}", "teacher", {0: teacher_logits}, labels,
                                       stages=0, macs=teacher_macs, teacher_macs=teacher_macs))
    baselines = [("scratch", config.student, "scratch"), ("kd", config.student, "kd")]
    if config.equal_cost is not None:
        baselines.append(("kd", config.equal_cost, "kd-equal-cost"))
    for kind, arch, entry_kind in baselines:
        students = {seed: exp.student(kind, arch=arch, seed=seed) for seed in config.seeds}
        logits = {seed: exp.logits(m, "test")[0] for seed, m in students.items()}
        suffix = " (KD, equal cost)" if entry_kind == "kd-equal-cost" else f" ({kind.replace('kd', 'KD')})"
        models.append(report.logits_record(
            f"student {arch.label}{suffix}", entry_kind, logits, labels, stages=1,
            macs=model_cost(students[config.seeds[0]], exp.input_size).macs, teacher_macs=teacher_macs,
            teacher_logits=teacher_logits))
    display(report.for_display(report.models_frame(models)))

# %% [markdown]
# <!-- reskd: stages -->
# ## ResKD stages, adaptive inference and the cascade to the teacher
#
# The profile's chain (`chain`: a lighter res-student on the image, trained on the residual $z_T - z_{S_0}$ of the
# frozen $S_0$; our reading of the paper) and the regimes of the CIFAR-10 map that paid there (a light head on
# $S_0$'s last feature map, `features-last`, and a three-block one, `features-deep`; ours). Each is shown static
# ($S_0 + S_1$ on every image) and adaptive: a sample stops after $S_0$ once its max-softmax probability reaches a
# threshold calibrated on the validation split so that the mean cost stays within each budget (48%, the paper's
# 53.59% and 60% of the teacher's MACs; test is only reported). The **cascade** spends the same budgets without a
# res-student: $S_0$ first, then the teacher itself on the images $S_0$ is unsure of, at the teacher's full cost on
# top of $S_0$'s (ours, the bar every residual stage has to clear).

# %%
# reskd: stages
budgets = regimes.budgets_for(config)
chain = regimes.profile_chain(config)
regime_list = [chain] + [regimes.CIFAR_REGIMES[name] for name in config.regimes]
budget_rows = []
stage_models: list[dict] = []  # ResKD's entries (kinds "reskd-stage" and "reskd-adaptive") and the cascade's
curves = {}  # seed 0's staged outputs of each regime and of the cascade, for the figure's adaptive sweeps
if problem is None:
    for regime in regime_list:
        records, rows, staged = regimes.regime_records(exp, regime, config.seeds, budgets_pct=budgets)
        stage_models += records
        budget_rows.append(rows)
        curves[regime.name] = staged[config.seeds[0]]
    records, cascade_rows, cascades = regimes.cascade_records(exp, config.seeds, budgets_pct=budgets)
    stage_models += records
    curves[regimes.CASCADE] = cascades[config.seeds[0]]
    budget_frame = pd.concat([cascade_rows, *budget_rows], ignore_index=True)
    for regime in regime_list:
        print(regime.label(exp))
    display(report.for_display(report.models_frame(stage_models)))

# %% [markdown]
# The same as a map, one row per regime (means over seeds): the test top-1 of the static chain ("all stages") and,
# at each budget, of the adaptive policy whose threshold the validation split set; blank where a regime cannot meet
# the budget on validation. The results file keeps every row with its validation top-1 and realised costs.

# %%
if problem is None:
    regime_map = regimes.map_table(budget_frame)
    display(report.for_display(regime_map.xs("test", axis=1, level=1), digits=2))

# %% [markdown]
# ## Accuracy against cost
#
# Every model of the chapter, and the adaptive sweeps (thresholds from validation, seed 0) of each regime and of
# the cascade; the dotted line is the paper's 53.59% of the teacher's MACs.

# %% tags=["hide-input"]
if problem is None:
    table = report.models_frame(models + stage_models)
    fig, ax = plt.subplots(figsize=(8, 6))
    palette = sns.color_palette("deep", 10)
    for i, (kind, part) in enumerate(table.groupby("kind", sort=False)):
        ax.scatter(part["MMACs"], part["top-1 (%)"], marker="osD^vP*"[i % 7], s=90, facecolors="none",
                   edgecolors=palette[i % 10], linewidths=1.4, zorder=3, label=kind)
    for i, (name, staged) in enumerate(curves.items()):
        curve = sweep(staged["val"], "max_prob", test=staged["test"], teacher_macs=teacher_macs, points=20)
        ax.plot(curve["test_avg_macs"] / 1e6, curve["test_top1"], lw=1.2, zorder=1, color=palette[(i + 5) % 10],
                ls="-" if name == regimes.CASCADE else "--", label=f"{name} (adaptive sweep)")
    ax.axvline(PAPER_PCT / 100 * teacher_macs / 1e6, color="crimson", ls=":", lw=1,
               label=f"{PAPER_PCT}% of the teacher (the paper's)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())  # plain numbers on the log axis
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    low, high = ax.get_xlim()
    ax.set_xticks([t for t in (1, 2, 3, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150) if low <= t <= high])
    ax.set_xlabel("mean cost per test image (millions of MACs, log scale)")
    ax.set_ylabel("top-1 accuracy on the test split (%)")
    ax.set_title(f"{exp.data.spec.display_name}, profile {config.name!r}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## At the paper's cost, and against the equal-cost baselines
#
# Where the paper's 53.59% sits on our curves: at that budget, the regime with the best **validation** top-1 (mean
# over seeds; the test split chooses nothing) beside the cascade, and whether it meets our target as in the CIFAR
# chapter (within 1.0 top-1 point of the teacher, and ahead of the KD student, the equal-cost KD student and the
# cascade at that budget by more than twice the standard error over seeds). Then every regime's static chain
# against the same baselines (`reskd.report.compare_at_cost`); with one seed there is no noise estimate, and the
# verdicts say so.

# %%
MAX_DROP = 1.0  # our target: within this many top-1 points of the teacher
verdict = None
at_cost = pd.DataFrame()
if problem is None:
    at_budget = budget_frame[(budget_frame["budget_pct"] == PAPER_PCT) & budget_frame["fits"].astype(bool)]
    means = at_budget.groupby("regime")[["val_top1", "test_top1", "test_pct_teacher"]].mean()
    recorded = {m["name"] for m in stage_models}  # a budget some seed cannot meet on val has no entry
    candidates = means[[not regimes.is_cascade(n) and f"{n} (adaptive, {PAPER_PCT:g}% budget)" in recorded
                        for n in means.index]]
    chosen = None if candidates.empty else f"{candidates['val_top1'].idxmax()} (adaptive, {PAPER_PCT:g}% budget)"
    display(report.for_display(report.readable(means)))
    verdict = report.check_target(models + stage_models, max_pct_teacher=PAPER_PCT, max_drop=MAX_DROP,
                                  reskd=chosen)
    print(f"teacher top-1 {verdict['teacher_top1']:.2f}%; at {PAPER_PCT}% of its MACs, chosen on val: "
          f"{verdict.get('reskd', 'none')}"
          + (f", {verdict['reskd_top1']:.2f}% at {verdict['reskd_pct_teacher']:.2f}%" if "reskd" in verdict else ""))
    print("target reached" if verdict["reached"] else f"target NOT reached: {verdict['why']}")
    full_chains = [f"{regime.name}: S0..S{len(regime.stages)}" for regime in regime_list]  # every stage, static
    at_cost = pd.concat([report.compare_at_cost(models + stage_models, against=("kd", "kd-equal-cost", "cascade"),
                                                reskd=name) for name in full_chains], ignore_index=True)
    display(report.for_display(at_cost.drop(columns=["ResKD MMACs"]).set_index(["ResKD", "ResKD top-1", "versus"]),
                               missing="–"))  # one seed: no standard error exists

# %% [markdown]
# ## Res-students inside the cascade
#
# As in the CIFAR chapter: the res-student as a **middle exit** of the cascade, $S_0 \to S_0 + S_1 \to T$. A sample
# stops after $S_0$ when $S_0$ is sure; else $S_0 + S_1$ gets a say; only the samples still unsure pay for the
# teacher, its full MACs on top of $S_0$ and $S_1$ (`reskd.adaptive.cascade`; ours, not the paper's). For
# `features-last` and `features-deep`, at the profile's budgets and the paper's 53.59%, the thresholds (one shared,
# or one per stage) are calibrated on the validation split, as is the two-tier cascade's at the same budget; test is
# only reported. The verdict is the paired difference over seeds (the same $S_0$ and teacher on both sides): mean,
# standard error, and whether it exceeds twice that. Then where it comes from, on test (means over seeds,
# per-stage thresholds): the images the middle exit stops and what the cascade did with them, the share of the
# images each sends to the teacher, and the difference split by route (where the cascade stops an image, then
# where the chain-to-teacher does; the gains sum to the difference).

# %%
chain_rows, chain_verdicts, chain_routes = pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
if problem is None:
    chain_budgets = tuple(sorted(set(budgets) | {PAPER_PCT}))
    chain_regimes = [name for name in config.regimes if name in ("features-last", "features-deep")]
    chain_rows = pd.concat([regimes.chain_to_teacher_rows(exp, regimes.CIFAR_REGIMES[name], config.seeds,
                                                          budgets_pct=chain_budgets, cascades=cascades,
                                                          points=50 if config.name == "smoke" else 200)
                            for name in chain_regimes], ignore_index=True)
    chain_verdicts = regimes.paired_verdicts(chain_rows)
    labels = {name: regimes.CIFAR_REGIMES[name].label(exp) for name in chain_regimes}
    for mode in ("per-stage", "shared"):
        stage_models += regimes.chain_to_teacher_records(chain_rows, teacher_macs, labels=labels, mode=mode)
    display(report.for_display(chain_verdicts.drop(columns=["fits"]).set_index(
        ["regime", "thresholds_mode", "budget_pct"]), missing="–"))
    per_stage_rows = chain_rows[chain_rows["thresholds_mode"] == "per-stage"]
    shown = ["middle_exit_pct", "middle_sent_to_teacher_by_cascade_pct", "middle_top1", "middle_top1_cascade",
             "teacher_pct", "cascade_teacher_pct", "teacher_spared_pct", "teacher_taken_on_pct", "middle_macs_pct"]
    chain_routing = per_stage_rows.groupby(["regime", "budget_pct"], sort=False)[shown].mean()
    display(report.for_display(chain_routing.rename(columns={
        "middle_exit_pct": "stop at S0 + S1 (%)", "middle_sent_to_teacher_by_cascade_pct": "of those, cascade sent "
        "to T (%)", "middle_top1": "top-1 there", "middle_top1_cascade": "cascade top-1 there",
        "teacher_pct": "reach T (%)", "cascade_teacher_pct": "cascade: reach T (%)", "teacher_spared_pct":
        "T spared (%)", "teacher_taken_on_pct": "T taken on (%)", "middle_macs_pct": "S1 (% of T's MACs)"}),
        digits=1))
    names = {"S0": "S0", "mid": "S0 + S1", "T": "T"}
    route_columns = [f"{kind}_{c}_{r}{suffix}" for c, r in regimes.ROUTES
                     for kind, suffix in (("route", "_pct"), ("gain", ""))]
    chain_routes = per_stage_rows[per_stage_rows["budget_pct"] == PAPER_PCT].groupby("regime", sort=False)[
        route_columns].mean()
    chain_routes.columns = pd.MultiIndex.from_tuples(
        [(f"cascade {names[c]}, chain {names[r]}", label) for c, r in regimes.ROUTES
         for label in ("images (%)", "gain (points)")])
    display(Markdown(f"By route at {PAPER_PCT}%:"))
    display(report.for_display(chain_routes.T, digits=2))
    at_paper = chain_verdicts[(chain_verdicts["thresholds_mode"] == "per-stage")
                              & (chain_verdicts["budget_pct"] == PAPER_PCT)]
    display(Markdown("\n".join(
        f"- **{v['regime']}** at {PAPER_PCT}%: chain-to-teacher {v['chain-to-teacher test top-1']:.2f}% against "
        f"the cascade's {v['cascade test top-1']:.2f}%, {v['difference']:+.2f} points (s.e. "
        + ("n/a" if pd.isna(v["std. error"]) else f"{v['std. error']:.2f}") + f", {v['verdict']}); S0 + S1 stops "
        f"{chain_routing.loc[(v['regime'], PAPER_PCT), 'middle_exit_pct']:.1f}% of the test images and the teacher "
        f"sees {chain_routing.loc[(v['regime'], PAPER_PCT), 'teacher_pct']:.1f}% of the images instead of "
        f"{chain_routing.loc[(v['regime'], PAPER_PCT), 'cascade_teacher_pct']:.1f}%." for _, v in at_paper.iterrows())))
    at_cost = pd.concat([at_cost, regimes.chain_at_cost_rows(at_paper, teacher_macs)], ignore_index=True)

# %% [markdown]
# ## Where the residual energy goes
#
# Why a stage pays or not, as in the CIFAR chapter, for the first seed: the share of the residual energy
# $E = \operatorname{mean}_x \lVert z_T(x) - Z(x) \rVert^2$ that each regime's first res-student removes, the
# top-1 it gains, and where the removed energy sat (on images $S_0$ already got right, or on those it got wrong;
# fixed and broken in % of all images). Then the quarter of the test images $S_0$ is least sure of (its max-softmax
# probability at or below the val quantile `regimes.HARD_FRACTION`; the cut is set on val), the images an exit rule
# sends on: top-1 there of $S_0$, of $S_0$ plus the stage, and of the teacher, which is what the cascade pays its
# full MACs for (fixed and broken in % of those images).

# %%
energy_table, hard = pd.DataFrame(), pd.DataFrame()
if problem is None:
    first_stages = {name: staged for name, staged in curves.items() if not regimes.is_cascade(name)}
    energy_table = regimes.first_stage_energy(first_stages)
    hard = regimes.hard_images(first_stages)
    display(report.for_display(energy_table))
    display(report.for_display(hard))
    removed = energy_table.xs("test", level="split")["energy removed (%)"]
    display(Markdown("On test, the first res-students remove "
                     + ", ".join(f"{share:.1f}% ({name})" for name, share in removed.items())
                     + " of the residual energy. " + regimes.hard_images_reading(hard)))

# %% [markdown]
# What the runs cost, as measured while they trained (hours of wall-clock per run, training plus the per-epoch
# evaluation), and each run's last-epoch top-1:

# %%
if problem is None:
    runs_table = exp.training_table()
    display(report.for_display(report.readable(runs_table[["run", "epochs", "val_top1", "test_top1", "train_hours"]]
                                               .set_index("run").rename(columns={"train_hours": "hours"}))))
    print(f"{runs_table['train_hours'].sum():.2f} hours of run time in all ({len(runs_table)} runs, "
          f"profile {profile!r})")

# %%
if problem is None:
    extra = {"notes": config.notes, "train_images": len(exp.data.train), "budgets_pct": list(budgets),
             "regimes": {regime.name: regime.label(exp) for regime in regime_list},
             "regime_map": report.frame_records(budget_frame.drop(columns=["thresholds"], errors="ignore")),
             "target": verdict, "at_equal_cost": report.frame_records(at_cost),
             "first_stage_energy": report.frame_records(energy_table.reset_index()),
             "hard_images": report.frame_records(hard.reset_index()),
             "train_hours": float(runs_table["train_hours"].sum()),
             "chain_to_teacher": {"seeds": list(config.seeds), "budgets_pct": list(chain_budgets),
                                  "verdicts": report.frame_records(chain_verdicts),
                                  "routing": report.frame_records(chain_routing.reset_index()),
                                  "routes_at_paper_budget": report.frame_records(
                                      per_stage_rows[per_stage_rows["budget_pct"] == PAPER_PCT].groupby(
                                          "regime", sort=False)[route_columns].mean().reset_index()),
                                  "rows": report.frame_records(chain_rows.drop(columns=["thresholds"]))}}
    path = results.write_results(CHAPTER, DATASET, exp.data.source, config.name, exp.device.type,
                                 models + stage_models, extra=extra, root=results_dir)
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
