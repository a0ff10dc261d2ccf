"""What a profile's runs cost, recomputed from the committed run folders (``reskd.runstore.cost_table``): one Markdown
row per architecture and role, with the number of runs, wall-clock per run (training plus the per-epoch evaluation,
less any wait for another worker's teacher outputs), training images per second, precision, and the CPU and threads
the runs finished on ("not recorded" for runs trained before the summary kept them). Run from the repository root;
paste the output into the README:

    python benchmarks/cost_table.py cifar10 --epochs 15 30 --batch-size 128 --train-samples 45000
"""
from __future__ import annotations

import argparse

from reskd.runstore import cost_table

NOT_RECORDED = "not recorded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--epochs", type=int, nargs="+", default=None, help="keep runs of these lengths (a profile's)")
    parser.add_argument("--batch-size", type=int, default=None, help="keep runs of this batch size")
    parser.add_argument("--train-samples", type=int, default=None,
                        help="training-set size for runs that did not record it (45,000 on CIFAR's cpu profile)")
    args = parser.parse_args()
    table = cost_table(args.dataset, train_samples=args.train_samples)
    if args.epochs:
        table = table[table["epochs"].isin(args.epochs)]
    if args.batch_size:
        table = table[table["batch_size"] == args.batch_size]
    table["arch"] = table["run"].str.rsplit("-", n=2).str[0]  # name-seed-key -> name (role and architecture)
    table["cpu"] = table["cpu"].fillna(NOT_RECORDED)
    table["threads"] = [NOT_RECORDED if t is None or t != t else str(int(t)) for t in table["threads"]]
    rows = table.groupby(["arch", "precision", "cpu", "threads"], as_index=False).agg(
        runs=("run", "size"), epochs=("epochs", "first"), hours=("hours", "mean"), hours_min=("hours", "min"),
        hours_max=("hours", "max"), images_per_s=("images_per_s", "mean"))
    print("| run (role-architecture) | runs | epochs | precision | hours per run (min-max) | images/s | CPU, threads |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows.itertuples():
        spread = f" ({r.hours_min:.2f}-{r.hours_max:.2f})" if r.runs > 1 else ""
        speed = f"{r.images_per_s:.0f}" if r.images_per_s == r.images_per_s else ""
        print(f"| {r.arch} | {r.runs} | {r.epochs} | {r.precision} | {r.hours:.2f}{spread} | {speed} | "
              f"{r.cpu}, {r.threads} |")
    print(f"\nTotal: {len(table)} runs, {table['hours'].sum():.1f} hours of run time (summed over runs that often shared the "
          f"cores, so more than the wall-clock of the whole profile).")


if __name__ == "__main__":
    main()
