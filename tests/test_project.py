"""The project's own files: the two environment descriptions agree, nothing names a machine path."""
import re
from pathlib import Path

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
