"""The job CLI: train (or load, or resume) a profile's runs from the shell, ahead of the chapters.

    python -m reskd.cli cifar10 cpu teacher teacher-cache kd ablation reskd
    python -m reskd.cli cifar10 cpu teacher teacher-cache kd ablation reskd --plan   # what is left, training nothing

Data-parallel over several processes (:mod:`reskd.distributed`), the same command under torchrun:

    torchrun --nproc_per_node 2 -m reskd.cli cifar10 cpu kd
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

import pandas as pd

from . import distributed, report
from .experiment import Experiment
from .profiles import LADDER_GAIN, PROFILE_NAMES, PROFILES, get_profile
from .registry import Registry
from .runstore import RUN_STATES
from .regimes import CIFAR_REGIMES
from .studies import ablate, learnability, other_options, plain_members, reskd_runs
from .train import TrainingPaused, TurnOver

PAUSED_EXIT = 3  # the exit status of a command that paused at --hours (not finished: run it again to resume)

Job = Callable[[Experiment, Sequence[int]], None]
#: What each job trains (or loads) for the given seeds; adding a job is one :data:`JOBS` definition.
JOBS: Registry[Job] = Registry("job")


@JOBS.register("teacher", "the teacher (cross-entropy from scratch)")
def _teacher(exp: Experiment, seeds: Sequence[int]) -> None:
    exp.teacher()


@JOBS.register("teacher-cache", "the teacher's outputs on the students' training views (workers split the views)")
def _teacher_cache(exp: Experiment, seeds: Sequence[int]) -> None:
    exp.warm_teacher_cache()


def ladder_reading(runs: dict, role: str, gain: float = LADDER_GAIN, cap: int | None = None) -> str:
    """A finished ladder's curve (:func:`reskd.report.length_curve`) and the length its rule picks within the
    profile's budget ``cap`` (``Profile.length_cap``), or why none yet, with what to do next: retire the other rungs'
    weights, or train a longer rung."""
    curve = report.length_curve(runs)
    chosen = report.chosen_length(curve, gain, cap)
    if chosen is None:
        longest = int(curve["epochs"].max())
        verdict = (f"no length qualifies yet (doubling still gains {gain} val points or more): add a "
                   f"{2 * longest}-epoch rung to the profile's ladder; it forks from the {longest}-epoch rung")
    else:
        why = ("no length up to the profile's cap qualifies under the rule, so the cap sets it"
               if report.length_capped(curve, gain, cap) else f"doubling it gains under {gain} val points")
        verdict = (f"the profile trains {chosen} epochs ({why}): set the profile's {role} recipe to {chosen} epochs, "
                   "then retire the other rungs' weights (python -m reskd.runstore --retire <run folder> --reason ...)")
    return f"{role} ladder:\n{curve.to_string(index=False)}\n{verdict}"


@JOBS.register("teacher-lengths", "the teacher at each length of the profile's ladder (converged: 30, 60, 120 epochs)")
def _teacher_lengths(exp: Experiment, seeds: Sequence[int]) -> None:
    runs = exp.length_ladder("teacher")
    if not exp.plan:
        print(ladder_reading(runs, "teacher", cap=exp.profile.length_cap))


@JOBS.register("kd-lengths", "the KD student S0 (first seed) at each length of the profile's ladder")
def _kd_lengths(exp: Experiment, seeds: Sequence[int]) -> None:
    runs = exp.length_ladder("kd", seed=seeds[0])
    if not exp.plan:
        print(ladder_reading(runs, "KD student", cap=exp.profile.length_cap))


@JOBS.register("scratch", "the students trained from scratch")
def _scratch(exp: Experiment, seeds: Sequence[int]) -> None:
    for seed in seeds:
        exp.student("scratch", seed=seed)


@JOBS.register("kd", "the KD students")
def _kd(exp: Experiment, seeds: Sequence[int]) -> None:
    for seed in seeds:
        exp.student("kd", seed=seed)


@JOBS.register("ablation", "the first res-student's input, size and epochs, with the loss the validation picked")
def _ablation(exp: Experiment, seeds: Sequence[int]) -> None:
    for option in other_options(exp.profile, reskd_runs(exp).loss):
        ablate(exp, [option])


@JOBS.register("reskd", "the chain of res-students")
def _reskd(exp: Experiment, seeds: Sequence[int]) -> None:
    runs = reskd_runs(exp)
    for seed in seeds:
        runs.ensemble(list(exp.profile.res_students), seed)


@JOBS.register("equal-cost", "the larger KD student")
def _equal_cost(exp: Experiment, seeds: Sequence[int]) -> None:
    p = exp.profile
    if p.equal_cost is None:
        raise ValueError(f"profile {p.name!r} has no equal-cost architecture.")
    for seed in seeds:
        exp.student("kd", arch=p.equal_cost, seed=seed)


@JOBS.register("plain", "the plain ensemble's KD members")
def _plain(exp: Experiment, seeds: Sequence[int]) -> None:
    p = exp.profile
    for seed in seeds:
        plain_members(exp, [p.student, *p.res_students], seed)


@JOBS.register("learnability", "the theory chapter's regressors of the teacher's and S0's logits, and the first "
                               "res-students (image and S0's features) trained with plain MSE")
def _learnability(exp: Experiment, seeds: Sequence[int]) -> None:
    for seed in seeds:
        learnability(exp, exp.profile.res_students[0], seed=seed)


def _regime_job(name: str) -> Job:
    def job(exp: Experiment, seeds: Sequence[int]) -> None:
        regime = CIFAR_REGIMES[name]
        for seed in seeds:
            regime.runs(exp).ensemble(list(regime.stages), seed)
    return job


for _name in CIFAR_REGIMES:  # one job per regime of the map: regime:<name>
    JOBS.register(f"regime:{_name}", f"the res-students of regime {_name!r}: "
                                     f"{CIFAR_REGIMES.description(_name)}")(_regime_job(_name))


def _check_jobs(jobs: Sequence[str]) -> None:
    """That every name in ``jobs`` is a job of :data:`JOBS` (before anything runs)."""
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise ValueError(f"unknown job(s) {unknown}; choose from {', '.join(JOBS)}.")


def run_jobs(exp: Experiment, jobs: Sequence[str], seeds: Sequence[int] | None = None) -> None:
    """Train (or load) the runs behind ``jobs`` (see :data:`JOBS`) for ``seeds`` (default: the profile's), in the
    order given; every run is resumable, so an interrupted call picks up where it stopped."""
    _check_jobs(jobs)
    seeds = list(seeds) if seeds is not None else list(exp.profile.seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints >= 0 (the chapters take no others), got {seeds!r}.")
    for job in jobs:
        start = len(exp.planned)
        JOBS[job](exp, seeds)
        for row in exp.planned[start:]:  # with exp.plan: which job asked for each run
            row.setdefault("job", job)


def run_round_robin(exp: Experiment, jobs: Sequence[str], seeds: Sequence[int] | None = None,
                    turn: int = 1) -> int:
    """Train the runs behind ``jobs`` for ``seeds`` in rounds: in each round every (job, seed) in turn trains its next
    unfinished run for ``turn`` epochs (a run asked for by several jobs, e.g. an S0 that several regimes build on,
    trains once per round). A run whose inputs are not trained yet (a res-student before its S0) waits for them.
    Runs that read the teacher's outputs on the same training views (every KD student and res-student of a profile:
    one augmentation stream) advance together, so each view is computed once in a session; trained one after the
    other, every run would compute the views it needs again on a machine whose cache is empty. Returns the number of
    rounds; :class:`~reskd.train.TrainingPaused` (``pause_at``) ends it at an epoch boundary, losing nothing."""
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
        raise ValueError(f"turn must be a number of epochs >= 1, got {turn!r}.")
    if "teacher-cache" in jobs:
        raise ValueError("teacher-cache computes every view in one go, so it has no turns: run it as a worker of its "
                         "own, or leave it out (the runs compute the views they need, once per round).")
    if exp.retrain:
        raise ValueError("retrain=True cannot go round-robin: every turn would start its run again. Retrain the "
                         "runs without --round-robin.")
    _check_jobs(jobs)
    seeds = list(seeds) if seeds is not None else list(exp.profile.seeds)
    pending = [(job, seed) for job in jobs for seed in seeds]
    exp.turn, rounds = turn, 0
    try:
        while pending:
            exp.new_round()
            waiting = []
            for job, seed in pending:
                try:
                    run_jobs(exp, [job], [seed])
                except TurnOver:
                    waiting.append((job, seed))
            pending, rounds = waiting, rounds + 1
    finally:
        exp.turn = None
    return rounds


def plan_table(exp: Experiment) -> pd.DataFrame:
    """The runs an :class:`Experiment` with ``plan=True`` was asked for, each once (the first job that asked for it),
    with its state, epochs done and planned, hours so far (see :func:`reskd.runstore.run_status`), and an estimate of
    the hours left: the epochs left at the median epoch time of the run itself (its mean where no median was
    recorded), else the mean of its other seeds' (empty where none is timed yet; measured where they ran)."""
    columns = ["job", "run", "state", "epochs_done", "epochs", "val_top1", "hours", "epoch_hours"]
    table = pd.DataFrame(exp.planned, columns=columns).drop_duplicates("run").reset_index(drop=True)
    family = table["run"].str.replace(r"-s\d+-[0-9a-f]+$", "", regex=True)  # the run's name without seed and key
    done = table["epochs_done"].where(table["job"] != "teacher-cache", 0)
    timed = (done > 0) & (table["hours"] > 0)  # a fork's inherited epochs alone: untimed
    mean = table["hours"] / done
    per_epoch = pd.to_numeric(table["epoch_hours"], errors="coerce").fillna(mean).where(timed)
    per_epoch = per_epoch.fillna(per_epoch.groupby(family).transform("mean"))
    table["hours_left"] = (table["epochs"] - table["epochs_done"]).clip(lower=0) * per_epoch
    table.loc[table["epochs_done"] >= table["epochs"], "hours_left"] = 0.0
    return table.drop(columns="epoch_hours")


def plan_summary(table: pd.DataFrame) -> str:
    """One line on a plan: how many runs are in each state, how many epochs are left to train, and the hours left
    where an epoch of the run (or of another seed of it) has been timed."""
    counts = table["state"].value_counts()
    states = ", ".join(f"{counts[state]} {state}" for state in RUN_STATES if state in counts)
    runs = table[table["job"] != "teacher-cache"]
    left = int((runs["epochs"] - runs["epochs_done"]).clip(lower=0).sum())
    untimed = int(runs["hours_left"].isna().sum())
    hours = f"about {runs['hours_left'].sum():.1f} hours"
    if untimed:
        hours += f" plus {untimed} run{'' if untimed == 1 else 's'} not timed yet"
    return f"{len(table)} entries: {states}; {left} training epochs left ({hours})"


def _seed(text: str) -> int:
    """A ``--seeds`` value: an int >= 0 (the seeds the chapters accept)."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: give ints >= 0, e.g. --seeds 0 1 2")
    return seed


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) a profile's runs from the command line, e.g. in the background before a chapter is run:

        python -m reskd.cli cifar10 cpu teacher
        python -m reskd.cli cifar10 cpu kd ablation reskd --seeds 0 1 2
        python -m reskd.cli cifar10 cpu scratch equal-cost plain   # a second worker, on the other core
        python -m reskd.cli cifar10 cpu regime:focus-equal --seeds 0   # one regime of the map (reskd.regimes)
        torchrun --nproc_per_node 2 -m reskd.cli cifar10 cpu kd   # data-parallel: gloo on CPUs, nccl on GPUs
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(PROFILES))
    parser.add_argument("profile", choices=PROFILE_NAMES)
    parser.add_argument("jobs", nargs="+", choices=list(JOBS), metavar="job", help=f"any of: {', '.join(JOBS)}")
    parser.add_argument("--seeds", type=_seed, nargs="+", default=None,
                        help="ints >= 0 (default: the profile's seeds)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--plan", action="store_true",
                        help="train nothing: list every run the jobs need, with its state and epochs done")
    parser.add_argument("--hours", type=float, default=None,
                        help="pause after about this many hours, at the end of the last epoch that fits (nothing "
                             f"is lost; the same command resumes); exit status {PAUSED_EXIT} when paused")
    parser.add_argument("--round-robin", type=int, default=None, metavar="EPOCHS",
                        help="train the runs in rounds, each unfinished run EPOCHS epochs per round, so that the "
                             "runs reading the teacher's outputs on the same views compute each view once "
                             "(see run_round_robin)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                        help="train (and evaluate) in this precision instead of the profile's; part of every run's "
                             "key, so the chapters find these runs only with the same setting")
    args = parser.parse_args(argv)
    distributed.init_from_env(args.device)  # under torchrun: join the process group (nothing otherwise)
    try:
        exp = Experiment(get_profile(args.dataset, args.profile), data_root=args.data_root, device=args.device,
                         retrain=args.retrain, precision=args.precision, plan=args.plan,
                         progress=distributed.is_main(),
                         pause_at=None if args.hours is None else time.time() + 3600 * args.hours)
        try:
            if args.round_robin is not None and not args.plan:
                run_round_robin(exp, args.jobs, args.seeds, args.round_robin)
            else:
                run_jobs(exp, args.jobs, args.seeds)
        except TrainingPaused as paused:
            if distributed.is_main():
                print(f"{paused} (python -m reskd.cli {' '.join(argv if argv is not None else sys.argv[1:])})")
            raise SystemExit(PAUSED_EXIT)
        if args.plan and distributed.is_main():
            table = plan_table(exp)
            with pd.option_context("display.max_rows", None, "display.width", 200, "display.precision", 2):
                print(table.to_string(index=False))
            print(plan_summary(table))
            for note in exp.plan_notes:
                print(f"note: {note}")
        elif not args.plan and distributed.is_main():
            for name, result in exp.results.items():
                print(name, result.summary.get("final"))
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
