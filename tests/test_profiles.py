"""Profiles: every data set's settings in one table, and the paper's reference numbers."""
import pytest

from reskd.data import SPECS
from reskd.models import create_model
from reskd.profiles import (PAPER_PCT_TEACHER, PROFILE_NAMES, PROFILES, Arch, find_profile, get_profile,
                            profile_banner)


def test_every_profile_is_filed_under_its_own_data_set_and_name():
    for dataset, profiles in PROFILES.items():
        assert dataset in SPECS
        for name, profile in profiles.items():
            assert (profile.dataset, profile.name) == (dataset, name) and name in PROFILE_NAMES


def test_every_architecture_of_a_profile_exists():
    for profiles in PROFILES.values():
        for p in profiles.values():
            for arch in (p.teacher, p.student, *p.res_students, *([p.equal_cost] if p.equal_cost else [])):
                create_model(arch.name, 10, width=arch.width)


def test_tiny_imagenet_defines_only_smoke_so_far():
    assert find_profile("tiny-imagenet", "smoke").teacher == Arch("resnet18", 0.25)
    assert find_profile("tiny-imagenet", "cpu") is None and find_profile("mnist", "cpu") is None
    with pytest.raises(ValueError, match="unknown profile 'cpu' for tiny-imagenet; choose one of smoke"):
        get_profile("tiny-imagenet", "cpu")


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
