"""Every number the README quotes from a results file, recomputed from that file: when a results file changes (a
chapter re-executed, a benchmark rerun) and the README is not updated, the quoted text no longer appears and the test
names it. Each claim is the README's exact wording with the numbers formatted from the file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reskd import report, runstore
from reskd.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAPER_BUDGET = "53.59% budget"


def _results(name: str) -> dict:
    return json.loads((ROOT / "results" / f"{name}.json").read_text())


def _model(record: dict, name: str) -> dict:
    found = [m for m in record["models"] if m["name"] == name]
    assert len(found) == 1, f"results/{record['dataset']}.json has {len(found)} models named {name!r}"
    return found[0]


def _mean_std(m: dict) -> str:
    return f"{m['top1_mean']:.2f} +- {m['top1_std']:.2f}"


def tiny_claims() -> list[str]:
    tiny = _results("tiny-imagenet")
    m = lambda name: _model(tiny, name)  # noqa: E731
    teacher = m("teacher resnet18x0.375-64pxstem")
    equal = m("student resnet18x0.28-64pxstem (KD, equal cost)")
    target = tiny["extra"]["target"]
    chosen, cascade = m(target["reskd"]), m(f"cascade (adaptive, {PAPER_BUDGET})")
    summary = json.loads(next((ROOT / "artifacts" / "tiny-imagenet").glob(
        "teacher-resnet18x0.375-64pxstem-s0-*/summary.json")).read_text())

    def static_adaptive(regime: str) -> str:
        static, adaptive = m(f"{regime}: S0..S1"), m(f"{regime} (adaptive, {PAPER_BUDGET})")
        return (f"{static['top1_mean']:.2f} / {adaptive['top1_mean']:.2f} | {static['pct_teacher']:.1f} / "
                f"{adaptive['pct_teacher']:.1f}")

    cascades = [m(f"cascade (adaptive, {b} budget)") for b in ("48%", "53.59%", "60%")]
    paired = next(v for v in tiny["extra"]["chain_to_teacher"]["verdicts"]  # the chosen chain against the cascade
                  if report.chain_to_teacher_name(v["regime"], v["thresholds_mode"], v["budget_pct"])
                  == target["reskd"])
    return [
        f"it reached {summary['final']['val_top1']:.2f}% val and {teacher['top1_mean']:.2f}% test top-1",
        f"| teacher x0.375 | {teacher['top1_mean']:.2f} | 100 |",
        f"| scratch x0.25 | {_mean_std(m('student resnet18x0.25-64pxstem (scratch)'))} |",
        f"| KD x0.25 (S0) | {_mean_std(m('student resnet18x0.25-64pxstem (KD)'))} |",
        f"| equal-cost KD x0.28 | **{_mean_std(equal)}** | {equal['pct_teacher']:.1f} |",
        f"| S0 + S1 (chain), static / adaptive at 53.59% | {static_adaptive('chain')} |",
        f"| S0 + features-last head, static / adaptive | {static_adaptive('features-last')} |",
        f"| S0 + features-deep head, static / adaptive | {static_adaptive('features-deep')} |",
        "| cascade S0 -> teacher at a 48 / 53.59 / 60% budget | "
        + " / ".join(f"{c['top1_mean']:.2f}" for c in cascades) + " | "
        + " / ".join(f"{c['pct_teacher']:.1f}" for c in cascades) + " |",
        f"reaches {target['reskd_top1']:.2f}%, {target['drop']:.2f}\npoints below the teacher; the equal-cost KD "
        f"student is {equal['top1_mean'] - chosen['top1_mean']:.2f} ahead (standard error "
        f"{report.standard_error(equal, chosen):.2f}, "
        f"{report.noise_verdict(equal['top1_mean'] - chosen['top1_mean'], report.standard_error(equal, chosen))}) and the\ncascade to the teacher level with it "
        f"(paired difference {paired['difference'] + 0.0:+.2f}, standard error {paired['std. error']:.2f})",
        f"The 19 runs took {tiny['extra']['train_hours']:.1f} hours of run time",
    ]


def answer_claims() -> list[str]:
    cifar, tiny = _results("cifar10"), _results("tiny-imagenet")
    judged = report.judged_at_budget(cifar, 18.04)
    versus = {v["against"]: v for v in judged["versus"]}
    equal, cascade = versus["equal-cost KD student"], versus["cascade to the teacher"]
    return [
        f"is {cifar['extra']['target']['drop']:.2f} points\nbelow the teacher on CIFAR-10",
        f"{tiny['extra']['target']['drop']:.2f} points below it on Tiny-ImageNet",
        f"that chain is {equal['difference']:.2f} points ahead of a wider KD student of the same cost (standard error "
        f"{equal['std. error']:.2f})",
        f"cascade from S0 to the teacher ({cascade['difference']:+.2f}, paired standard error "
        f"{cascade['std. error']:.2f})",
    ]


def precision_claims() -> list[str]:
    parity = json.loads((ROOT / "benchmarks" / "results" / "parity-bf16.json").read_text())
    means = {(row["model"], row["split"]): row for row in parity["seed_means"]}
    drops = [-row["bf16 - fp32"] for (model, _), row in means.items()
             if model.startswith(("KD student", "S0 + features-last"))]
    gain = {split: means[next(k for k in means if k[0].startswith("gain") and k[1] == split)] for split in
            ("val", "test")}
    return [
        f"features-last head are {min(drops):.2f}-{max(drops):.2f} points lower in mean top-1",
        f"(+{gain['val']['bf16']:.2f} in bf16 against +{gain['val']['fp32']:.2f} in fp32 on val, "
        f"+{gain['test']['bf16']:.2f} against\n+{gain['test']['fp32']:.2f} on test)",
    ]


def cifar_claims() -> list[str]:
    teacher = _model(_results("cifar10"), "teacher resnet56")
    return [f"resnet56 teacher {teacher['top1_mean']:.2f}% after 30 epochs"]


def _ladder(**spec_match) -> dict[int, tuple[dict, dict]]:
    """The converged profile's length ladder of one model (seed 0, wsd schedule, the spec entries ``spec_match``)
    among the committed CIFAR-10 runs, by length: each finished or retired rung's spec and summary."""
    rungs = {}
    for folder in runstore.run_folders("cifar10", root=ROOT / "artifacts"):
        spec = runstore.read_spec(folder) or {}
        if (spec.get("seed") == 0 and spec.get("train", {}).get("schedule") == "wsd"
                and all(spec.get(key) == value for key, value in spec_match.items())
                and (runstore.is_finished(folder) or runstore.is_retired(folder))):
            rungs[spec["train"]["epochs"]] = spec, json.loads((folder / runstore.SUMMARY).read_text())
    return rungs


def converged_claims() -> list[str]:
    teacher = _ladder(role="teacher", arch="resnet56")
    chosen_teacher = teacher[get_profile("cifar10", "converged").teacher_train.epochs][0]
    kd = _ladder(role="kd", arch="resnet8", width=1.0, teacher=runstore.run_key(chosen_teacher))
    assert len(teacher) >= 3 and len(kd) >= 3, "the converged ladders' rungs are missing from artifacts/cifar10"

    def rows(rungs: dict[int, tuple[dict, dict]]) -> list[str]:
        lengths = sorted(rungs)
        out = []
        for shorter, epochs in zip([None, *lengths], lengths):
            summary = rungs[epochs][1]
            trained = ("from scratch" if "forked_from" not in summary else
                       f"forked from the {shorter}-epoch rung at epoch {summary['forked_from']['epoch']}")
            out.append(f"| {epochs} epochs | {trained} | {summary['final']['val_top1']:.2f} | "
                       f"{summary['final']['test_top1']:.2f} |")
        return out

    val = lambda rungs, epochs: rungs[epochs][1]["final"]["val_top1"]  # noqa: E731
    return [
        *rows(teacher), *rows(kd),
        f"retired: doubling it gained {val(teacher, 60) - val(teacher, 30):+.2f} val points",
        f"doubling 60 to 120 epochs gained {val(teacher, 120) - val(teacher, 60):+.2f} val points",
        f"Doubling 30 to 60 epochs gained {val(kd, 60) - val(kd, 30):+.2f} val points, 60 to 120 "
        f"{val(kd, 120) - val(kd, 60):+.2f} and 120 to 240 {val(kd, 240) - val(kd, 120):+.2f}",
        f"one doubling short of a length that still added {val(kd, 240) - val(kd, 120):.2f} val points to S0",
        f"caps every length at **{get_profile('cifar10', 'converged').length_cap} epochs**",
    ]


@pytest.mark.parametrize("claims", [answer_claims, tiny_claims, precision_claims, cifar_claims, converged_claims])
def test_the_readme_quotes_the_results_files(claims):
    missing = [claim for claim in claims() if claim not in README]
    assert not missing, ("README.md no longer matches its results files; update these passages (recomputed from "
                         "the files):\n" + "\n".join(missing))
