"""Fixtures of the ade-superd / ade-ctl integration tests; helpers are in adetest.py.

The binaries are taken from $ADE_BUILD_DIR (default <repo>/build) and
environments are built with $ADE_PYTHON (default /usr/bin/python3): see
BUILD_DIR and PYTHON in adetest.py.  "make integration-check" sets both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("adetest")

from adetest import CTL, SAMPLES, SUPERD, Deployment  # noqa: E402


@pytest.fixture(scope="session")
def binaries():
    for binary in (SUPERD, CTL):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} is missing: run make first (or set ADE_BUILD_DIR)")
    return SUPERD, CTL


@pytest.fixture(scope="session")
def template(tmp_path_factory, binaries) -> Path:
    """A data directory with ws/cfg registered and its environment built (ready)."""
    root = tmp_path_factory.mktemp("template")
    dep = Deployment(root)
    try:
        dep.init_db()
        answer = dep.enqueue(SAMPLES / "contacts.csv", options={"dry_run": True})
        result = dep.run_worker(timeout=300)
        assert result.returncode == 0, result.stderr
        row = dep.run_row(answer["run_id"])
        assert row["status"] == "succeeded", (row, result.stderr)
        envs = dep.environments()
        assert len(envs) == 1 and envs[0]["status"] == "ready", (envs, result.stderr)
    finally:
        dep.close()
    return dep.data_dir


@pytest.fixture
def deploy(tmp_path, request, binaries):
    """Factory: deploy(**settings) from the template; deploy(fresh=True) for an empty one."""
    made: list[Deployment] = []

    def make(fresh: bool = False, init_db: bool = True, **settings) -> Deployment:
        root = tmp_path / f"dep{len(made) + 1}"
        if fresh:
            dep = Deployment(root, settings)
            made.append(dep)
            if init_db:
                dep.init_db()
        else:
            dep = Deployment(root, settings, template=request.getfixturevalue("template"))
            made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.close()
