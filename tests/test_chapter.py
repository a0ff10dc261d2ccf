"""A chapter's parameters are checked in one place, with one message naming every bad value and the fix; the data
sets each chapter reads are known up front."""
import pytest

from reskd.chapter import CHAPTER_DATA, check_parameters, missing_data, missing_data_message

GOOD = dict(profile="cpu", data_root=None, seeds=None, retrain=False, device="auto", results_dir=None,
            train_missing=True)


def test_good_parameters_pass():
    check_parameters(**GOOD)
    check_parameters(**{**GOOD, "seeds": [0, 2], "data_root": "data", "device": "cpu", "profile": "smoke"})
    check_parameters(**GOOD, download=True, dataset=("cifar100", ("cifar10", "cifar100")))


@pytest.mark.parametrize("change, named", [
    ({"profile": "fast"}, "profile='fast'"), ({"profile": None}, "profile=None"),
    ({"seeds": [-1]}, "seeds=[-1]"), ({"seeds": []}, "seeds=[]"), ({"seeds": 3}, "seeds=3"),
    ({"seeds": [True]}, "seeds=[True]"), ({"retrain": "no"}, "retrain='no'"), ({"train_missing": 0}, "train_missing=0"),
    ({"device": "gpu0"}, "device='gpu0'"), ({"device": 1}, "device=1"), ({"data_root": 5}, "data_root=5"),
    ({"results_dir": ""}, "results_dir=''"),
])
def test_each_bad_value_is_named_with_the_fix(change, named):
    with pytest.raises(ValueError, match="bad chapter parameters") as error:
        check_parameters(**{**GOOD, **change})
    assert named in str(error.value) and "use " in str(error.value)


def test_every_problem_in_one_message():
    with pytest.raises(ValueError) as error:
        check_parameters(**{**GOOD, "profile": "x", "retrain": 1}, download="yes",
                         dataset=("mnist", ("cifar10", "cifar100")))
    message = str(error.value)
    assert all(s in message for s in ("profile='x'", "retrain=1", "download='yes'", "dataset='mnist'"))
    assert "\n" not in message


def test_missing_data_names_the_chapter_and_the_fetch(tmp_path):
    assert missing_data("05_summary", tmp_path) == []
    assert missing_data("02_cifar", tmp_path) == ["cifar10"]
    assert set(CHAPTER_DATA) >= {"01_residual_theory", "02_cifar", "03_imagenet", "04_adaptive", "05_summary"}
    message = missing_data_message({"03_imagenet": ["tiny-imagenet"]}, tmp_path)
    assert "03_imagenet needs Tiny-ImageNet" in message and str(tmp_path) in message
    assert "load_dataset('tiny-imagenet', download=True)" in message
    assert "download" not in missing_data_message({"03_imagenet": ["imagenet"]}, tmp_path)  # ImageNet cannot be
    assert "load_dataset('cifar10', download=True)" in missing_data_message({"02_cifar": ["cifar10"]}, tmp_path)


def test_missing_data_sees_a_present_data_set(make_cifar_folder):
    data = make_cifar_folder(tarball=True)
    assert missing_data("02_cifar", data.root) == []


def test_fetch_data_downloads_what_it_can_and_says_what_it_cannot(tmp_path, monkeypatch, capsys):
    import reskd.chapter as chapter

    calls = []
    monkeypatch.setattr(chapter, "load_split", lambda name, split, root, download: calls.append((name, download)))
    assert chapter.fetch_data("02_cifar", tmp_path) == ["cifar10"] and calls == [("cifar10", True)]
    assert chapter.fetch_data("03_imagenet", tmp_path) == ["tiny-imagenet"] and calls[-1] == ("tiny-imagenet", True)
    monkeypatch.setitem(chapter.CHAPTER_DATA, "03_imagenet", ("imagenet",))  # ImageNet cannot be downloaded
    assert chapter.fetch_data("03_imagenet", tmp_path) == []
    assert "ImageNet-1k is not under the data root" in capsys.readouterr().out
    assert chapter.fetch_data("05_summary", tmp_path) == []
