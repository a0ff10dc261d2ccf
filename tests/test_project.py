"""The project's own files: the two environment descriptions agree, nothing names a machine path."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    return [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]


def test_environment_yml_names_the_requirements():
    pip_section = re.findall(r'^\s+- "(.+)"$', (ROOT / "environment.yml").read_text(), flags=re.M)
    assert pip_section == _requirements()


def test_requirements_cover_the_design_card():
    names = {re.split(r"[<>=!\[ ]", r)[0].lower() for r in _requirements()}
    for package in ("torch", "torchvision", "jupyterlab", "jupyter-book", "matplotlib", "seaborn", "pandas",
                    "fvcore", "papermill", "nbval", "tqdm", "pytest"):
        assert package in names, package
    assert any(r.startswith("jupyter-book") and "<2" in r for r in _requirements())


def test_make_chapters_trains_into_a_scratch_artifacts_root(tmp_path):
    """``make test``'s smoke chapters train the runs the checkout lacks: they must go to a scratch copy of
    artifacts/ (RESKD_ARTIFACTS), which holds the committed runs, so the checkout gets no untracked run folders.
    Run with a stand-in for the venv's python that records what a chapter would see and trains one run."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    seen = tmp_path / "seen.txt"
    fake = tmp_path / "python"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        root="${{RESKD_ARTIFACTS:-artifacts}}"
        echo "$root" > {seen}
        ls "$root" >> {seen}
        mkdir -p "$root/tiny-imagenet/{RUN}"
        """))
    fake.chmod(0o755)
    before = sorted(p.name for p in (ROOT / "artifacts").iterdir())
    env = {k: v for k, v in os.environ.items() if k != "RESKD_ARTIFACTS"}
    trained = ROOT / "artifacts" / "tiny-imagenet" / RUN
    try:
        done = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "chapters", f"PY={fake}"],
                              cwd=ROOT, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert not trained.exists(), "the smoke chapters trained into the checkout's artifacts/"
    finally:
        if trained.exists():
            trained.rmdir()
    scratch, *listed = seen.read_text().split()
    assert not Path(scratch).resolve().is_relative_to(ROOT.resolve())
    assert set(before) <= set(listed)  # the committed runs are there to load
    assert not Path(scratch).exists()  # removed afterwards
    assert sorted(p.name for p in (ROOT / "artifacts").iterdir()) == before


RUN = "kd-resnet18x0.25-s0-0123456789"  # a run folder the stand-in for the chapters "trains"


def test_every_package_is_installed():
    """pyproject.toml lists its packages by name: a subpackage it does not list (reskd.data) is left out of a
    (non-editable) install."""
    tomllib = pytest.importorskip("tomllib")
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "reskd").rglob("__init__.py"))
    assert sorted(listed) == found


def test_importing_the_experiment_does_not_import_the_cli():
    """No import circle cli -> experiment -> cli: reskd.experiment (and the modules built on it) never import
    reskd.cli; `python -m reskd.experiment` reaches it only when run as a script."""
    code = ("import sys, reskd.experiment, reskd.regimes, reskd.studies; "
            "print(sorted(m for m in sys.modules if m == 'reskd.cli'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    text = (ROOT / "reskd" / "experiment.py").read_text()
    module_level = text.split('\nif __name__ == "__main__":')[0]
    assert "cli" not in "".join(line for line in module_level.splitlines(keepends=True)
                                if line.startswith(("import ", "from ")))
