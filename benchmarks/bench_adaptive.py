"""Does sample-adaptive inference really save time? Wall-clock latency of masked execution vs all stages vs teacher.

A resnet8 student with two resnet8x0.5 res-students (the CIFAR ResKD ensemble) and a resnet56 teacher, on CPU, in
eval mode. Weights are random: timing does not depend on them, while the share of samples that stop early does, so
the threshold is set to stop a chosen fraction (``--stop-frac``) after each stage. The realised speedup of adaptive
over all-stages execution is compared with the speedup its mean MACs promise. Run from the repository root:

    python benchmarks/bench_adaptive.py [--stop-frac 0.6] [--out benchmarks/out/adaptive.json]
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from reskd.adaptive import AdaptiveEnsemble, Policy, StagedOutputs, compare_latency, confidence, evaluate_policy
from reskd.flops import count_macs
from reskd.models import create_model
from reskd.reskd import ResKDEnsemble

WARMUP = 1  # untimed passes before timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-frac", type=float, default=0.6, help="share of active samples stopping per stage")
    parser.add_argument("--large-batch", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="samples timed one at a time")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model (the median is reported)")
    parser.add_argument("--out", default="benchmarks/out/adaptive.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    C = 10
    ens = ResKDEnsemble(create_model("resnet8", C), [create_model("resnet8", C, width=0.5) for _ in range(2)]).eval()
    teacher = create_model("resnet56", C).eval()
    size = (3, 32, 32)
    x = torch.randn(args.large_batch, *size)
    with torch.no_grad():
        cum = torch.stack(ens.cumulative_logits(x))
    staged = StagedOutputs(cum, torch.zeros(len(x), dtype=torch.long), ens.stage_macs(size))
    # one threshold per stage so that `stop_frac` of the samples still active stop there
    thresholds, active = [], torch.ones(len(x), dtype=torch.bool)
    for k in range(staged.num_stages - 1):
        conf = confidence(cum[k], "max_prob")
        tau = torch.quantile(conf[active], 1 - args.stop_frac).item()
        thresholds.append(tau)
        active &= conf < tau
    policy = Policy("max_prob", thresholds)
    m = evaluate_policy(staged, policy)
    adaptive = AdaptiveEnsemble(ens, policy)
    full_macs, teacher_macs = sum(staged.stage_macs), count_macs(teacher, size)

    fns = {"teacher": teacher, "all_stages": ens, "adaptive": adaptive}
    # models timed in rotation on the same inputs (reskd.adaptive.compare_latency); at batch 1 each sample's exit
    # decides its cost, and the result is the mean over the samples
    large = compare_latency(fns, x, batch_size=len(x), repeats=args.repeats, warmup=WARMUP)
    single = compare_latency(fns, x[: args.single], batch_size=1, repeats=args.repeats, warmup=WARMUP)
    rows = {name: {"large_batch_ms_per_image": 1000 * large[name], "batch1_ms": 1000 * single[name]} for name in fns}
    macs_speedup = full_macs / m["avg_macs"]
    report = {
        "what": "resnet8 + 2 x resnet8x0.5 ResKD ensemble vs resnet56 teacher, CIFAR-size inputs, eval mode",
        "device": f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        "exit_fractions": [round(m[f"exit_frac_{k}"], 3) for k in range(staged.num_stages)],
        "macs": {"teacher": teacher_macs, "all_stages": full_macs, "adaptive_mean": round(m["avg_macs"])},
        "latency": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in rows.items()},
        "macs_speedup_adaptive_vs_all": round(macs_speedup, 3),
    }
    for mode in ("large_batch_ms_per_image", "batch1_ms"):
        realised = rows["all_stages"][mode] / rows["adaptive"][mode]
        report[f"realised_speedup_{mode}"] = round(realised, 3)
        report[f"realised_over_macs_speedup_{mode}"] = round(realised / macs_speedup, 3)
        report[f"speedup_vs_teacher_{mode}"] = round(rows["teacher"][mode] / rows["adaptive"][mode], 2)
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
