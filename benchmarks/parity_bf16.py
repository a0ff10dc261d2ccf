"""Does bf16 change a conclusion? One seed of the KD student and of one regime's res-student trained under bf16
autocast beside the fp32 runs of the same profile (one teacher for both: the teacher's recipe stays fp32), and the
teacher evaluated in both precisions. Run from the repository root:

    python benchmarks/parity_bf16.py cifar10 cpu [--seed 0] [--regime features-last] \
        [--out benchmarks/results/parity-bf16.json]

It prints and writes, per model and split, top-1 in fp32 and in bf16 and their difference (to hold against the seed
spread the chapter reports, about 0.2 points on CIFAR-10's cpu profile), and the training wall-clock of both
precisions. The bf16 runs have keys of their own (their recipe names the precision) and go to the artifacts root
beside the fp32 ones; only what is missing is trained. It needs a CPU with bf16 units or a GPU
(``reskd.precision.fast_bf16``): elsewhere bf16 is emulated, 6-12x slower than fp32
(``benchmarks/results/precision-no-bf16.json``), and the script stops unless ``--force`` (for a smoke check).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

from reskd.experiment import Experiment
from reskd.metrics import top1
from reskd.precision import fast_bf16
from reskd.profiles import get_profile
from reskd.regimes import CIFAR_REGIMES, regime_staged
from reskd.train import predict
from reskd.utils import machine_info, resolve_device

SPLITS = ("val", "test")


def _train_hours(exp: Experiment) -> dict[str, float]:
    return {name: float(result.history["epoch_s"].sum() / 3600) for name, result in exp.results.items()
            if "epoch_s" in result.history}


def parity(dataset: str, profile: str, *, seed: int, regime: str, data_root: str | None = None,
           artifacts: str | None = None, device: str = "auto") -> dict:
    """The parity record: rows of (model, split, precision, top-1), their fp32-bf16 differences and the training
    hours of every run involved, per precision."""
    base = get_profile(dataset, profile)
    bf16_profile = base.replace(student_train=dataclasses.replace(base.student_train, precision="bf16"))
    chain = CIFAR_REGIMES[regime]
    rows, hours = [], {}
    for precision, p in (("fp32", base), ("bf16", bf16_profile)):
        exp = Experiment(p, data_root=data_root, artifacts=artifacts, device=device, progress=True)
        kd = exp.student("kd", seed=seed)
        staged = regime_staged(exp, chain, seed)  # its res-student, trained on this precision's S0
        for split in SPLITS:
            rows.append({"model": f"KD student {p.student.label}", "split": split, "precision": precision,
                         "top1": top1(*exp.logits(kd, split))})
            rows.append({"model": f"S0 + {regime} res-student", "split": split, "precision": precision,
                         "top1": top1(staged[split].logits[-1], staged[split].labels)})
        hours[precision] = _train_hours(exp)
        if precision == "fp32":
            teacher = exp.teacher()
            for teacher_precision in ("fp32", "bf16"):
                for split in SPLITS:
                    logits, labels = predict(teacher, exp.eval_loader(split), device=exp.device,
                                             precision=teacher_precision)
                    rows.append({"model": f"teacher {p.teacher.label} (fp32-trained)", "split": split,
                                 "precision": teacher_precision, "top1": top1(logits, labels)})
    frame = pd.DataFrame(rows).pivot_table(index=["model", "split"], columns="precision", values="top1", sort=False)
    frame["bf16 - fp32"] = frame["bf16"] - frame["fp32"]
    return {"dataset": dataset, "profile": profile, "seed": seed, "regime": regime,
            "machine": machine_info(resolve_device(device)), "fast_bf16": fast_bf16(resolve_device(device)),
            "torch": torch.__version__, "top1": frame.reset_index().round(4).to_dict(orient="records"),
            "max_abs_difference": float(frame["bf16 - fp32"].abs().max()), "train_hours": hours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("profile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regime", default="features-last", help="the regime whose first res-student is compared")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--artifacts", default=None, help="artifacts root (default: the project's artifacts/)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--force", action="store_true", help="run even where bf16 is emulated (slow)")
    parser.add_argument("--out", default="benchmarks/out/parity-bf16.json")
    args = parser.parse_args()
    if not fast_bf16(resolve_device(args.device)) and not args.force:
        raise SystemExit("this machine has no bf16 units (no AVX512-BF16 or AMX flag, no bf16 GPU): bf16 would be "
                         "emulated, 6-12x slower than fp32. Run it on a machine that has them, or pass --force for a "
                         "smoke check.")
    record = parity(args.dataset, args.profile, seed=args.seed, regime=args.regime, data_root=args.data_root,
                    artifacts=args.artifacts, device=args.device)
    print(pd.DataFrame(record["top1"]).to_string(index=False))
    print(f"largest |bf16 - fp32| top-1 difference: {record['max_abs_difference']:.2f} points")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
