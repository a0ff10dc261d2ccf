"""Profiles: every setting of one chapter's runs on one data set, and the paper's reference numbers.

A :class:`Profile` is the explicit, torchdistill-style configuration of a chapter's runs:

* ``smoke``: tiny models on a small subset, seconds on a CPU (for CI);
* ``cpu``: the real run two CPU cores can afford (hours, resumable, artifacts committed);
* ``converged``: the same families trained until more training no longer pays (CIFAR: tens of hours on two cores,
  resumed over sessions), to answer whether a verdict of ``cpu`` is an artifact of short training;
* ``paper``: paper-scale settings for a GPU (deeper teacher, 240 epochs).

:data:`PROFILES` maps a data set to its profiles; adding a data set's profile is one entry there.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .train import TrainConfig

PROFILE_NAMES = ("smoke", "cpu", "converged", "paper")

#: The paper's headline cost of ResKD, % of the teacher's MACs (Li et al., IEEE TIP 2021), by data set.
PAPER_PCT_TEACHER = {"cifar10": 18.04, "cifar100": 23.14, "tiny-imagenet": 53.59, "imagenet": 56.86}


@dataclass(frozen=True)
class Arch:
    """An architecture by registry name and width multiplier; ``stem`` names an ImageNet-style ResNet's stem
    (:data:`reskd.models.STEMS`; None: the family's default)."""

    name: str
    width: float = 1.0
    stem: str | None = None

    @property
    def label(self) -> str:
        label = self.name if self.width == 1.0 else f"{self.name}x{self.width:g}"
        return label if self.stem is None else f"{label}-{self.stem}stem"

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options :func:`reskd.models.create_model` needs beyond name and width, which a run's spec
        records too (none for the default stem, so older runs keep their keys)."""
        return {} if self.stem is None else {"stem": self.stem}


#: The optional studies of the CIFAR chapter, each a section with runs of its own: the first res-student's loss
#: ablation (which picks the residual loss on val when the profile leaves it "auto"), its other options (input, size,
#: length), and the plain KD ensembles of the stages' architectures, an equal-cost baseline beside the wider student.
CIFAR_STUDIES = ("loss-ablation", "options-ablation", "plain-ensembles")


@dataclass(frozen=True)
class Profile:
    """Every setting of one chapter's runs on one data set."""

    name: str
    dataset: str
    teacher: Arch
    student: Arch
    res_students: tuple[Arch, ...]
    teacher_train: TrainConfig
    student_train: TrainConfig
    equal_cost: Arch | None = None  # a single KD student about as costly as S0 plus all res-students
    seeds: tuple[int, ...] = (0, 1, 2)
    temperature: float = 4.0
    residual_loss: str = "auto"  # a loss of reskd.reskd.RESIDUAL_LOSSES, or "auto": the one the ablation picks on val
    residual_input: str = "image"  # "image" or "features"
    val_size: int | None = None  # None: the data set's default (5,000 on CIFAR)
    split_seed: int = 0
    regimes: tuple[str, ...] = ()  # the regime map's regimes this profile screens (names of reskd.regimes)
    # the regimes the adaptive-inference chapter runs, the main one first (names of reskd.regimes); () on CIFAR:
    # chosen on val from ``regimes`` by reskd.regimes.choose_adaptive (reskd.regimes.ADAPTIVE_RULE)
    adaptive_regimes: tuple[str, ...] = ()
    budgets_pct: tuple[float, ...] = ()  # budgets (% of the teacher's MACs) of adaptive comparisons; () the map's
    train_subset: int | None = None
    test_subset: int | None = None
    # training lengths (epochs) at which the teacher and the KD student are trained to show that more training no
    # longer pays (wsd recipes: each length forks from the stable phase of the one before, reskd.train.fit)
    teacher_lengths: tuple[int, ...] = ()
    student_lengths: tuple[int, ...] = ()
    # the longest length a ladder may pick, the profile's compute budget: where the rule picks nothing up to it (or a
    # longer length), the pick is the cap, and the pages say the model was still gaining (reskd.report.chosen_length)
    length_cap: int | None = None
    # what the data source of the committed runs (and so of the stored pages) is called, a part of
    # reskd.data.DataSplits.source (None: no committed runs); a chapter run on another source says its numbers differ
    stored_source: str | None = None
    studies: tuple[str, ...] = CIFAR_STUDIES  # the optional studies its chapter runs (CIFAR_STUDIES)
    # (kind of model entry, test top-1 %) pairs its models should reach, fixed before its runs; the chapter says
    # whether each was reached (reskd.report.targets_reading)
    accuracy_targets: tuple[tuple[str, float], ...] = ()
    notes: str = ""

    def __post_init__(self):
        unknown = sorted(set(self.studies) - set(CIFAR_STUDIES))
        if unknown:
            raise ValueError(f"profile {self.name!r}: unknown studies {unknown}; choose among {list(CIFAR_STUDIES)}.")
        if self.length_cap is not None and self.length_cap not in (*self.teacher_lengths, *self.student_lengths):
            raise ValueError(f"profile {self.name!r}: its length cap {self.length_cap} is no rung of its ladders "
                             f"{self.teacher_lengths} / {self.student_lengths}; cap at one of their lengths.")
        if self.residual_loss == "auto" and "loss-ablation" not in self.studies:
            raise ValueError(f"profile {self.name!r} leaves the residual loss to the ablation (\"auto\") but does not "
                             "run it: add \"loss-ablation\" to its studies or name the loss (residual_loss=...).")
        if "options-ablation" in self.studies and "loss-ablation" not in self.studies:
            raise ValueError(f"profile {self.name!r} ablates the first res-student's options without the loss "
                             "ablation they start from: add \"loss-ablation\" to its studies or drop "
                             "\"options-ablation\".")

    def replace(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)


_CIFAR_TEACHER_CPU = TrainConfig(epochs=30, batch_size=128, lr=0.1, schedule="cosine", weight_decay=5e-4)
# Students, res-students and baselines share one recipe; 15 epochs keep the ~30 student runs of the profile (3 seeds
# of every configuration plus the ablations) within a few hours on two cores.
_CIFAR_STUDENT_CPU = TrainConfig(epochs=15, batch_size=128, lr=0.1, schedule="cosine", weight_decay=5e-4)
_CIFAR_PAPER = TrainConfig(epochs=240, batch_size=64, lr=0.05, schedule="multistep", milestones=(0.625, 0.75, 0.875),
                           weight_decay=5e-4)
# The converged profile: the same recipe (SGD, Nesterov, lr 0.1, batch 128, weight decay 5e-4) with a warm-up,
# stable, decay schedule (one warm-up epoch, linear decay over the last 20%) in place of cosine, so that the runs of a
# length ladder share their stable phase (each longer run forks from the previous one's stable.pt: 30, 60 and 120
# epochs cost 138 epochs, not 210). WSD with a 20% linear cool-down matches cosine at equal length (Hagele et al.,
# 2024); the 30-epoch rung measures it against the cpu profile's cosine teacher on val. No label smoothing for the
# teacher: it erases the information in the wrong-class logits that KD transfers (Muller et al., 2019). The teacher's
# and the student's ``epochs`` are the lengths chosen on val by the ladder rule (the shortest length whose doubling
# gains under 0.3 points of val top-1); until a ladder is trained its length is the longest rung, provisional.
_CIFAR_WSD = TrainConfig(epochs=120, batch_size=128, lr=0.1, schedule="wsd", warmup_epochs=1, decay_fraction=0.2,
                         weight_decay=5e-4)
# The teacher's ladder pick: 60 epochs (val top-1 88.28, 89.80, 89.64 at 30, 60, 120 epochs; doubling 60 gains -0.16).
_CIFAR_TEACHER_WSD = dataclasses.replace(_CIFAR_WSD, epochs=60)
# The KD student's ladder (seed 0): val top-1 83.16, 84.28, 84.78, 85.62 at 30, 60, 120, 240 epochs; every doubling
# gained 0.3 points or more (+1.12, +0.50, +0.84), so the rule picks no length by 240. The two ladders took 19.4 of
# the profile's budget of about 30 hours; a 480-epoch rung (288 more epochs of S0) and a comparison at 240 epochs
# (twice the epochs of one at 120, for its 20 student runs) do not fit what is left, so the profile caps the lengths
# at 120 (CIFAR_LENGTH_CAP): its students train 120 epochs, one doubling short of where S0 still gained 0.84 points.
_CIFAR_STUDENT_WSD = dataclasses.replace(_CIFAR_WSD, epochs=120)  # the KD student's ladder pick: the cap
CIFAR_TEACHER_LENGTHS = (30, 60, 120)
CIFAR_STUDENT_LENGTHS = (30, 60, 120, 240)
CIFAR_LENGTH_CAP = 120  # epochs: the converged profile's budget (see _CIFAR_STUDENT_WSD)
# What the converged profile takes from the cpu profile's choices on val instead of training its studies again (their
# runs at convergence would cost more than the comparison itself): the residual loss its ablation picked, and the
# feature-head regime of the model its rule judged at the paper's budget, beside the paper's reading (light-image).
# results/lengths/cifar10.json records both for the cpu profile; tests/test_profiles.py checks these against it.
CIFAR_CPU_RESIDUAL_LOSS = "mse+ce"
CIFAR_CONVERGED_REGIMES = ("light-image", "features-deep")
LADDER_GAIN = 0.3  # points of val top-1: a length is long enough when doubling it gains less than this
# What the converged profile's teacher and KD student S0 (mean over seeds) should reach on the JPEG copy's test split,
# fixed before its runs: the field's 93.0-93.6% for resnet56 less what the JPEG copy is thought to cost (not measured).
CIFAR_CONVERGED_TARGETS = (("teacher", 90.0), ("kd", 84.0))
_SMOKE = TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="cosine", weight_decay=5e-4)
_TINY_SMOKE = TrainConfig(epochs=1, batch_size=64, lr=0.05, schedule="cosine", weight_decay=5e-4)


#: The regime map of the CIFAR cpu profile (reskd.regimes.CIFAR_REGIMES), in the order they were screened.
CIFAR_CPU_REGIMES = ("light-image", "equal-image", "heavy-image", "features-last", "features-deep", "features-mid",
                     "features-chain", "focus-equal", "focus-heavy", "strong-s0")
CIFAR_SMOKE_REGIMES = ("light-image", "features-last", "focus-equal")  # enough to run every step of the map
# The adaptive chapter's regimes are not fixed here: it chooses them on val among the map's regimes
# (reskd.regimes.choose_adaptive), the test split chooses nothing.


JPEG_COPY = "JPEG copy"  # reskd.data's name for a class-folder copy of a torchvision data set (the shared CIFAR-10)


def _cifar_profiles(dataset: str) -> dict[str, Profile]:
    res = (Arch("resnet8", 0.5), Arch("resnet8", 0.5), Arch("resnet8", 0.5))
    return {
        "smoke": Profile("smoke", dataset, Arch("resnet8", 0.5), Arch("resnet8", 0.25), (Arch("resnet8", 0.25),),
                         _SMOKE, _SMOKE, equal_cost=Arch("resnet8", 0.35), seeds=(0,), val_size=500,
                         regimes=CIFAR_SMOKE_REGIMES,
                         train_subset=1000, test_subset=500, notes="tiny models on 1,000 training images, 2 epochs"),
        "cpu": Profile("cpu", dataset, Arch("resnet56"), Arch("resnet8"), res, _CIFAR_TEACHER_CPU, _CIFAR_STUDENT_CPU,
                       equal_cost=Arch("resnet8", 1.35), regimes=CIFAR_CPU_REGIMES,
                       stored_source=JPEG_COPY,
                       notes="resnet56 teacher (30 epochs) and resnet8 students (15 epochs), on two CPU cores"),
        "converged": Profile("converged", dataset, Arch("resnet56"), Arch("resnet8"), res, _CIFAR_TEACHER_WSD,
                             _CIFAR_STUDENT_WSD,
                             equal_cost=Arch("resnet8", 1.35), regimes=CIFAR_CONVERGED_REGIMES,
                             residual_loss=CIFAR_CPU_RESIDUAL_LOSS, studies=(),
                             teacher_lengths=CIFAR_TEACHER_LENGTHS,
                             student_lengths=CIFAR_STUDENT_LENGTHS, length_cap=CIFAR_LENGTH_CAP,
                             stored_source=JPEG_COPY,
                             accuracy_targets=CIFAR_CONVERGED_TARGETS,
                             notes="resnet56 teacher and resnet8 students trained until doubling the training "
                                   "gains under 0.3 points of val top-1 (warm-up, stable, decay schedule)"),
        "paper": Profile("paper", dataset, Arch("resnet110"), Arch("resnet8"), res, _CIFAR_PAPER, _CIFAR_PAPER,
                         equal_cost=Arch("resnet8", 1.35),
                         notes="paper-scale settings for a GPU (240 epochs, CRD/mdistiller recipe)"),
    }


# Tiny-ImageNet's cpu profile (sized on two cores, fp32: the models train at about 20 GMAC/s there): ResNet-18s with
# the 64px stem (a 3x3 stride-2 conv, reskd.models.STEMS). Teacher x0.375 (79 MMACs, about 6 minutes an epoch of 90,000
# images), S0 x0.25 (35 MMACs, 45% of the teacher), a res-student x0.125 (9 MMACs: S0 + S1 at 56%, near the paper's
# 53.59%). The precision is pinned to fp32: the profile's runs are trained over several sessions on machines drawn at
# random, some without bf16 units (where bf16 is emulated, 6-12x slower: benchmarks/results/precision-no-bf16.json),
# and one precision keeps every run of the profile comparable and loadable everywhere.
_TINY_TEACHER_CPU = TrainConfig(epochs=18, batch_size=128, lr=0.1, schedule="cosine", weight_decay=5e-4)
_TINY_STUDENT_CPU = TrainConfig(epochs=10, batch_size=128, lr=0.1, schedule="cosine", weight_decay=5e-4)
TINY_STEM = "64px"
#: The regimes of the CIFAR-10 map that Tiny-ImageNet's cpu profile runs: the two that paid on CIFAR-10 (a head on S0's
#: last feature map) beside the profile's own chain (one lighter res-student on the image, the paper's reading).
TINY_CPU_REGIMES = ("features-last", "features-deep")
TINY_SMOKE_REGIMES = ("features-last",)
#: Budgets (% of the teacher's MACs) at which Tiny-ImageNet's cpu profile compares adaptive models: around S0 + S1 and
#: the paper's 53.59%.
TINY_CPU_BUDGETS_PCT = (48.0, 53.59, 60.0)


def _tiny_imagenet_profiles() -> dict[str, Profile]:
    def arch(width: float) -> Arch:
        return Arch("resnet18", width, stem=TINY_STEM)

    return {
        "smoke": Profile("smoke", "tiny-imagenet", Arch("resnet18", 0.25), Arch("resnet18", 0.125),
                         (Arch("resnet18", 0.125),), _TINY_SMOKE, _TINY_SMOKE, equal_cost=Arch("resnet18", 0.18),
                         seeds=(0,), residual_loss="mse+ce", val_size=400, regimes=TINY_SMOKE_REGIMES,
                         budgets_pct=TINY_CPU_BUDGETS_PCT, train_subset=1000, test_subset=400,
                         notes="ResNet-18 at widths 0.25 (teacher) and 0.125 (student), one epoch on 1,000 images"),
        "cpu": Profile("cpu", "tiny-imagenet", arch(0.375), arch(0.25), (arch(0.125),), _TINY_TEACHER_CPU,
                       _TINY_STUDENT_CPU, equal_cost=arch(0.28), val_size=10_000, residual_loss="mse+ce",
                       regimes=TINY_CPU_REGIMES, adaptive_regimes=TINY_CPU_REGIMES, budgets_pct=TINY_CPU_BUDGETS_PCT,
                       stored_source="tiny-imagenet-200",
                       notes="ResNet-18s with a 64px stem on two CPU cores: teacher x0.375 (18 epochs), S0 x0.25 and "
                             "a res-student x0.125 (10 epochs), the residual loss the CIFAR-10 ablation picked"),
    }


# The ImageNet KD recipe of torchdistill and mdistiller (resnet34 -> resnet18): 100 epochs, batch 256, lr 0.1 divided
# by 10 at epochs 30, 60 and 90, weight decay 1e-4, plain momentum, KD at temperature 1.
_IMAGENET_PAPER = TrainConfig(epochs=100, batch_size=256, lr=0.1, schedule="multistep", milestones=(0.3, 0.6, 0.9),
                              weight_decay=1e-4, nesterov=False)


def _imagenet_profiles() -> dict[str, Profile]:
    """Only ``paper`` (a GPU cluster, through torchrun): nothing of ImageNet is run on this project's machines."""
    return {
        "paper": Profile("paper", "imagenet", Arch("resnet34"), Arch("resnet18"), (Arch("resnet18", 0.375),),
                         _IMAGENET_PAPER, _IMAGENET_PAPER, equal_cost=Arch("resnet18", 1.075), seeds=(0,),
                         temperature=1.0,
                         notes="resnet34 teacher, resnet18 student and a resnet18x0.375 res-student (S0 + S1 at about "
                               "57% of the teacher's MACs at 224 px, near the paper's 56.86%), 100 epochs; for GPUs"),
    }


PROFILES: dict[str, dict[str, Profile]] = {"cifar10": _cifar_profiles("cifar10"),
                                           "cifar100": _cifar_profiles("cifar100"),
                                           "tiny-imagenet": _tiny_imagenet_profiles(),
                                           "imagenet": _imagenet_profiles()}

PROFILE_TRUST = {
    "smoke": "it checks that the chapter runs, and its numbers mean nothing (they are not a reproduction)",
    "cpu": "the real runs two CPU cores afford, shorter than the paper's (compare them with each other, and with the "
           "paper's only in spirit)",
    "converged": "models trained to convergence on two CPU cores, at the accuracy the field reports for these "
                 "networks on this data",
    "paper": "paper-scale settings",
}


def profile_banner(profile: Profile, data_source: str | None = None) -> str:
    """A Markdown paragraph for a chapter's setup: which profile produced the outputs below, on which data, and how
    far its numbers can be trusted."""
    data = f" Data: {data_source}." if data_source else ""
    trust = PROFILE_TRUST.get(profile.name, "a custom profile")
    banner = f"**The outputs on this page come from the `{profile.name}` profile**: {profile.notes}; {trust}.{data}"
    if data_source and profile.stored_source and profile.stored_source not in data_source:
        banner += (f" **This run reads another data source than the committed runs** ({profile.stored_source}): their "
                   f"keys name their training data, so the models are trained anew here, and every number below "
                   f"differs from the stored page's (on CIFAR, JPEG compression alone costs accuracy).")
    default = PROFILES.get(profile.dataset, {}).get(profile.name)
    if default is not None and len(profile.seeds) < len(default.seeds):
        banner += (f" **Only seeds {list(profile.seeds)} of the profile's {list(default.seeds)} were run**, so a "
                   f"standard deviation over seeds is missing or rests on few runs.")
    return banner


def find_profile(dataset: str, profile: str) -> Profile | None:
    """The profile ``profile`` of ``dataset``, or None when that data set does not define it (yet)."""
    return PROFILES.get(dataset, {}).get(profile)


def get_profile(dataset: str, profile: str) -> Profile:
    """The profile ``profile`` (smoke, cpu, paper) of ``dataset``."""
    if dataset not in PROFILES:
        raise ValueError(f"no profiles for data set {dataset!r}; available: {', '.join(PROFILES)}.")
    if profile not in PROFILES[dataset]:
        raise ValueError(f"unknown profile {profile!r} for {dataset}; choose one of {', '.join(PROFILES[dataset])}.")
    return PROFILES[dataset][profile]
