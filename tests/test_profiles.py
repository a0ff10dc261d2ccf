"""Profiles: every data set's settings in one table, and the paper's reference numbers."""
from pathlib import Path

import pytest

from reskd.data import SPECS
from reskd.flops import count_macs
from reskd.models import create_model
from reskd.regimes import CIFAR_REGIMES
from reskd.profiles import (CIFAR_STUDIES, PAPER_PCT_TEACHER, PROFILE_NAMES, PROFILES, Arch, find_profile,
                            get_profile, profile_banner)
from reskd.results import load_gaps


def test_every_profile_is_filed_under_its_own_data_set_and_name():
    for dataset, profiles in PROFILES.items():
        assert dataset in SPECS
        for name, profile in profiles.items():
            assert (profile.dataset, profile.name) == (dataset, name) and name in PROFILE_NAMES


def test_every_architecture_of_a_profile_exists():
    for profiles in PROFILES.values():
        for p in profiles.values():
            for arch in (p.teacher, p.student, *p.res_students, *([p.equal_cost] if p.equal_cost else [])):
                create_model(arch.name, 10, width=arch.width, **arch.options)


def _macs(arch: Arch, size: int) -> int:
    return count_macs(create_model(arch.name, 200, width=arch.width, **arch.options), (3, size, size))


def test_tiny_imagenet_cpu_profile_has_the_costs_its_notes_claim():
    p = get_profile("tiny-imagenet", "cpu")
    assert {a.stem for a in (p.teacher, p.student, *p.res_students, p.equal_cost)} == {"64px"}
    teacher, s0, s1 = _macs(p.teacher, 64), _macs(p.student, 64), _macs(p.res_students[0], 64)
    assert 40 < 100 * s0 / teacher < 50  # S0 at about 45% of the teacher
    assert abs(100 * (s0 + s1) / teacher - PAPER_PCT_TEACHER["tiny-imagenet"]) < 5  # S0 + S1 near the paper's
    assert abs(_macs(p.equal_cost, 64) / (s0 + s1) - 1) < 0.02  # the equal-cost student costs S0 + S1
    assert p.budgets_pct and PAPER_PCT_TEACHER["tiny-imagenet"] in p.budgets_pct
    assert p.val_size == 10_000 and p.seeds == (0, 1, 2)
    # pinned: runs trained on machines with and without bf16 units stay one comparable, loadable set
    assert p.teacher_train.precision == p.student_train.precision == "fp32"
    assert p.residual_loss != "auto" and set(p.regimes) <= set(CIFAR_REGIMES)
    assert find_profile("tiny-imagenet", "paper") is None and find_profile("mnist", "cpu") is None
    with pytest.raises(ValueError, match="unknown profile 'paper' for tiny-imagenet; choose one of smoke, cpu"):
        get_profile("tiny-imagenet", "paper")


def test_an_architecture_names_its_stem_only_when_it_has_one():
    assert Arch("resnet18", 0.25).label == "resnet18x0.25" and Arch("resnet18").options == {}
    arch = Arch("resnet18", 0.25, stem="64px")
    assert arch.label == "resnet18x0.25-64pxstem" and arch.options == {"stem": "64px"}


def test_paper_numbers_cover_the_data_sets_in_the_summary_order():
    assert list(PAPER_PCT_TEACHER) == ["cifar10", "cifar100", "tiny-imagenet", "imagenet"]


def test_banner_says_when_seeds_are_missing():
    cpu = get_profile("cifar10", "cpu")
    assert "Only seeds" not in profile_banner(cpu)
    assert "**Only seeds [0] of the profile's [0, 1, 2] were run**" in profile_banner(cpu.replace(seeds=(0,)), "x")


def test_imagenet_has_the_paper_profile_the_launch_commands_name():
    p = get_profile("imagenet", "paper")
    assert (p.teacher, p.student) == (Arch("resnet34"), Arch("resnet18")) and p.teacher_train.epochs == 100
    assert p.temperature == 1.0 and not p.student_train.nesterov
    assert find_profile("imagenet", "cpu") is None  # nothing of ImageNet runs on two CPU cores


def test_the_banner_says_when_the_data_source_is_not_the_stored_pages():
    cpu = get_profile("cifar10", "cpu")
    assert "another data source" not in profile_banner(cpu, "CIFAR-10 (JPEG copy, cifar10-jpeg.tar.gz)")
    other = profile_banner(cpu, "CIFAR-10 (torchvision original, cifar-10-batches-py)")
    assert "another data source than the committed runs** (JPEG copy)" in other and "trained anew" in other
    assert "another data source" not in profile_banner(get_profile("cifar10", "smoke"), "CIFAR-10 (torchvision x)")
    tiny = get_profile("tiny-imagenet", "cpu")
    assert "another data source" not in profile_banner(tiny, "Tiny-ImageNet-200 (tiny-imagenet-200.tar.gz)")


def test_the_converged_profile_takes_its_fixed_choices_from_the_cpu_profiles_val():
    # results/lengths/cifar10.json keeps what chapter 02 chose on val in each profile, whatever profile the stored
    # page comes from; the converged profile trains none of the studies behind those choices again
    cpu = load_gaps("cifar10", Path(__file__).resolve().parents[1] / "results")["cpu"]["choices"]  # the committed
    converged = get_profile("cifar10", "converged")
    assert converged.residual_loss == cpu["residual_loss"]
    assert cpu["judged_regime"] in CIFAR_REGIMES and cpu["judged_model"].startswith(cpu["judged_regime"])
    assert set(converged.regimes) == {"light-image", cpu["judged_regime"]}
    assert converged.studies == () and get_profile("cifar10", "cpu").studies == CIFAR_STUDIES


def test_a_profile_must_run_the_ablation_it_leaves_its_loss_to():
    cpu = get_profile("cifar10", "cpu")
    with pytest.raises(ValueError, match="add \"loss-ablation\" to its studies or name the loss"):
        cpu.replace(studies=())
    assert cpu.replace(studies=(), residual_loss="mse").studies == ()
    with pytest.raises(ValueError, match="without the loss ablation they start from"):
        cpu.replace(studies=("options-ablation",), residual_loss="mse")
    assert cpu.replace(studies=("plain-ensembles",), residual_loss="mse").studies == ("plain-ensembles",)
    with pytest.raises(ValueError, match="unknown studies"):
        cpu.replace(studies=("loss-ablation", "dropout"))


def test_a_length_cap_is_a_rung_of_the_ladders():
    converged = get_profile("cifar10", "converged")
    assert converged.length_cap in converged.student_lengths
    assert max(converged.student_train.epochs, converged.teacher_train.epochs) <= converged.length_cap
    with pytest.raises(ValueError, match="its length cap 100 is no rung of its ladders"):
        converged.replace(length_cap=100)
