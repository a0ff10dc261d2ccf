"""Does bf16 change a conclusion? Seeds of the KD student and of one regime's res-student trained under bf16
autocast beside the fp32 runs of the same profile (one teacher for both: the teacher's recipe stays fp32), and the
teacher evaluated in both precisions. Run from the repository root:

    python benchmarks/parity_bf16.py cifar10 cpu [--seeds 0 1 2] [--regime features-last] \
        [--out benchmarks/results/parity-bf16.json]

It prints and writes, per model, split and seed, top-1 in fp32 and in bf16 and their difference, the mean over the
seeds per precision, and the fp32 seed spread to hold the difference against (about 0.2 points on CIFAR-10's cpu
profile), and the training wall-clock of both precisions. Only the precision differs between the two sides: the
bf16 res-students use the residual loss the fp32 profile resolved (``loss="auto"`` is picked once, on fp32's
first-stage ablation, not retrained in bf16). The bf16-trained KD students are also evaluated in fp32, which
separates what bf16 training changes from what bf16 inference changes (the teacher's rows: inference only). The bf16
runs have keys of their own (their recipe names the precision) and go to the artifacts root beside the fp32 ones;
only what is missing is trained. It needs a CPU with bf16 units or a GPU (``reskd.precision.fast_bf16``): elsewhere
bf16 is emulated, 6-12x slower than fp32 (``benchmarks/results/precision-no-bf16.json``), and the script stops unless
``--force`` (for a smoke check).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from reskd.experiment import Experiment
from reskd.metrics import top1
from reskd.precision import fast_bf16
from reskd.profiles import Profile, get_profile
from reskd.regimes import CIFAR_REGIMES, regime_staged
from reskd.studies import resolve_loss
from reskd.train import predict
from reskd.utils import machine_info, resolve_device

SPLITS = ("val", "test")
#: The columns of the tables: training precision (where the run was trained, and last, the evaluation's precision).
PRECISION_COLUMNS = ("fp32", "fp32, retrained here", "bf16", "bf16-trained, fp32 eval")


def _train_hours(exp: Experiment) -> dict[str, float]:
    return {name: float(result.history["epoch_s"].sum() / 3600) for name, result in exp.results.items()
            if "epoch_s" in result.history}


def _row(model: str, split: str, seed: int, precision: str, top1: float) -> dict:
    return {"model": model, "split": split, "seed": seed, "precision": precision, "top1": top1}


def _kd_model(profile: Profile) -> str:
    return f"KD student {profile.student.label}"


def _gains(runs: pd.DataFrame, regime_model: str, kd_model: str) -> pd.DataFrame:
    """The res-student's top-1 gain over its own S0, per split, seed and training precision: the conclusion the
    chapters draw, which a uniform shift of both would leave as it is."""
    top = runs.pivot_table(index=["split", "seed", "precision"], columns="model", values="top1", sort=False)
    gains = (top[regime_model] - top[kd_model]).dropna().rename("top1").reset_index()
    return gains.assign(model=f"gain of the res-student over S0 ({regime_model})")


def fp32_rerun(profile: Profile, seeds: Sequence[int], scratch: str | os.PathLike, *, data_root: str | None,
               artifacts: str | None, device: str) -> tuple[list[dict], dict[str, float]]:
    """The fp32 KD student of ``seeds`` trained again on this machine, under ``scratch`` (its own artifacts root, with
    the profile's teacher linked in from ``artifacts``): how far fp32 itself moves between machines (another CPU,
    other float rounding), the noise floor of a bf16-fp32 difference taken against runs trained elsewhere. Returns
    its rows and its training hours (on this machine, beside the bf16 runs')."""
    exp = Experiment(profile, data_root=data_root, artifacts=scratch, device=device, progress=True)
    linked = exp.teacher_path()
    if not linked.exists():
        linked.parent.mkdir(parents=True, exist_ok=True)
        linked.symlink_to(Experiment(profile, artifacts=artifacts, device=device).teacher_path().resolve())
    rows = []
    for seed in seeds:
        kd = exp.student("kd", seed=seed)
        rows += [_row(_kd_model(profile), split, seed, "fp32, retrained here", top1(*exp.logits(kd, split)))
                 for split in SPLITS]
    return rows, _train_hours(exp)


def parity(dataset: str, profile: str, *, seeds: Sequence[int] = (0,), regime: str = "features-last",
           data_root: str | None = None, artifacts: str | None = None, device: str = "auto",
           fp32_rerun_seeds: Sequence[int] = (), scratch: str | os.PathLike | None = None) -> dict:
    """The parity record: rows of (model, split, seed, precision, top-1); per model and split the fp32-bf16 difference
    of the seed means and the fp32 seed spread; and the training hours of every run involved, per precision."""
    base = get_profile(dataset, profile)
    bf16_profile = base.replace(student_train=dataclasses.replace(base.student_train, precision="bf16"))
    chain = CIFAR_REGIMES[regime]
    rows, hours = [], {}
    for precision, p in (("fp32", base), ("bf16", bf16_profile)):
        exp = Experiment(p, data_root=data_root, artifacts=artifacts, device=device, progress=True)
        if precision == "fp32":  # one loss for both sides: the one fp32's ablation picked
            chain = dataclasses.replace(chain, loss=resolve_loss(exp, chain.loss))
            kd_model, regime_model = _kd_model(p), f"S0 + {regime} res-student ({chain.loss})"
        for seed in seeds:
            kd = exp.student("kd", seed=seed)
            staged = regime_staged(exp, chain, seed)  # its res-student, trained on this precision's S0
            for split in SPLITS:
                rows.append(_row(kd_model, split, seed, precision, top1(*exp.logits(kd, split))))
                if precision == "bf16":  # which part is training, which is inference: the bf16 run in fp32
                    fp32_eval = predict(kd, exp.eval_loader(split), device=exp.device, precision="fp32")
                    rows.append(_row(kd_model, split, seed, "bf16-trained, fp32 eval", top1(*fp32_eval)))
                rows.append(_row(regime_model, split, seed, precision,
                                 top1(staged[split].logits[-1], staged[split].labels)))
        hours[precision] = _train_hours(exp)
        if precision == "fp32":
            teacher = exp.teacher()
            for teacher_precision in ("fp32", "bf16"):
                for split in SPLITS:
                    logits, labels = predict(teacher, exp.eval_loader(split), device=exp.device,
                                             precision=teacher_precision)
                    rows.append(_row(f"teacher {p.teacher.label} (fp32-trained)", split, 0,  # the one teacher
                                     teacher_precision, top1(logits, labels)))
    if fp32_rerun_seeds:
        rerun_rows, hours["fp32, retrained here"] = fp32_rerun(
            base, fp32_rerun_seeds, scratch or tempfile.mkdtemp(prefix="parity-fp32-"), data_root=data_root,
            artifacts=artifacts, device=device)
        rows += rerun_rows
    runs = pd.DataFrame(rows)
    runs = pd.concat([runs, _gains(runs, regime_model, kd_model)], ignore_index=True)
    per_seed = runs.pivot_table(index=["model", "split", "seed"], columns="precision", values="top1", sort=False)
    per_seed["bf16 - fp32"] = per_seed["bf16"] - per_seed["fp32"]
    per_seed = per_seed[[c for c in PRECISION_COLUMNS if c in per_seed] + ["bf16 - fp32"]]
    grouped = runs.groupby(["model", "split", "precision"], sort=False)["top1"]
    means = grouped.mean().unstack("precision")
    means["bf16 - fp32"] = means["bf16"] - means["fp32"]
    means = means[[c for c in PRECISION_COLUMNS if c in means] + ["bf16 - fp32"]]
    spread = runs[runs["precision"] == "fp32"].groupby(["model", "split"], sort=False)["top1"]
    means["fp32 seed std"] = spread.std()  # NaN for one seed
    means["fp32 seed range"] = spread.max() - spread.min()
    means["seeds"] = runs[runs["precision"] == "bf16"].groupby(["model", "split"], sort=False)["seed"].nunique()
    return {"dataset": dataset, "profile": profile, "seeds": list(seeds),
            "fp32_rerun_seeds": list(fp32_rerun_seeds), "regime": regime, "loss": chain.loss,
            "machine": machine_info(resolve_device(device)), "fast_bf16": fast_bf16(resolve_device(device)),
            "torch": torch.__version__, "top1": per_seed.reset_index().round(4).to_dict(orient="records"),
            "seed_means": means.reset_index().round(4).to_dict(orient="records"),
            "max_abs_difference": float(per_seed["bf16 - fp32"].abs().max()),
            "max_abs_mean_difference": float(means["bf16 - fp32"].abs().max()), "train_hours": hours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("profile")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--regime", default="features-last", help="the regime whose first res-student is compared")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--artifacts", default=None, help="artifacts root (default: the project's artifacts/)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fp32-rerun-seeds", type=int, nargs="*", default=[],
                        help="also train the fp32 KD student of these seeds again on this machine (a control)")
    parser.add_argument("--scratch", default=None, help="artifacts root of those reruns (default: a new temp folder)")
    parser.add_argument("--force", action="store_true", help="run even where bf16 is emulated (slow)")
    parser.add_argument("--out", default="benchmarks/out/parity-bf16.json")
    args = parser.parse_args()
    if not fast_bf16(resolve_device(args.device)) and not args.force:
        raise SystemExit("this machine has no bf16 units (no AVX512-BF16 or AMX flag, no bf16 GPU): bf16 would be "
                         "emulated, 6-12x slower than fp32. Run it on a machine that has them, or pass --force for a "
                         "smoke check.")
    record = parity(args.dataset, args.profile, seeds=args.seeds, regime=args.regime, data_root=args.data_root,
                    fp32_rerun_seeds=args.fp32_rerun_seeds, scratch=args.scratch,
                    artifacts=args.artifacts, device=args.device)
    print(pd.DataFrame(record["top1"]).to_string(index=False))
    print(pd.DataFrame(record["seed_means"]).to_string(index=False))
    print(f"largest |bf16 - fp32| top-1 difference: {record['max_abs_difference']:.2f} points for one seed, "
          f"{record['max_abs_mean_difference']:.2f} between the seed means")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
