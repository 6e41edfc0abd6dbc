"""Task runner: ``nox -s tests``, ``lint``, ``docs``, ``bench_smoke``.

Sessions use virtualenv + pip (not uv) so that the CPU build of torch on this machine's
disk is found; on a GPU machine install your own torch build first.
"""

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["tests", "lint"]

TORCH_CPU = "torch==2.13.0"


@nox.session(default=True)
def tests(session):
    """Run the test suite (the README's command)."""
    session.install(TORCH_CPU, "-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", "-m", "not slow", *session.posargs)


@nox.session(default=True)
def lint(session):
    """Ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "dasim", "tests", "examples")
    session.run("ruff", "format", "--check", "dasim", "tests", "examples")


@nox.session(default=False)
def docs(session):
    """Build the Sphinx documentation with warnings as errors."""
    session.install(TORCH_CPU, "-e", ".[docs,plot]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(default=False)
def bench_smoke(session):
    """Seconds-long versions of every benchmark."""
    session.install(TORCH_CPU, "-e", ".[plot]")
    cases = [
        *("l63-full", "l96-40", "l96-10", "l96-20"),  # B1
        *("l63-z", "l63-atan", "l96-10-atan", "l96-20-atan", "l96-40-half"),  # B2
        *("b3-lo", "b3-hi", "b3-sin", "b3-atan"),  # B3
        *("speed-l96-40", "speed-l63-full", "kde-score", "learned"),  # B4
    ]
    for case in cases:
        session.run("dasim", "bench", case, "--smoke", "--out", "results/smoke")
