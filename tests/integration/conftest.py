"""Fixtures of the ade-superd / ade-ctl integration tests; helpers are in adetest.py.

The binaries are taken from $ADE_BUILD_DIR (default <repo>/build) and
environments are built with $ADE_PYTHON (default /usr/bin/python3): see
BUILD_DIR and PYTHON in adetest.py.  "make integration-check" sets both.

Every test that uses a deployment runs once per database backend:
test_x[sqlite], test_x[pgsql] and test_x[mssql].  The PostgreSQL cases
share one private server per session (tests/lib/pgserver.py, started by
the first of them, stopped at the end of the session however it ends)
and get a database of their own each.  The SQL Server cases run against
the server named by ADE_TEST_MSSQL_HOST, _PORT, _USER and _PASSWORD,
each in a throw-away database (tests/lib/mssqlserver.py); with no server
named they are reported as skipped.  Markers narrow the backends of a test:

    @pytest.mark.sqlite_only("why")   the test is about SQLite itself
    @pytest.mark.backends("pgsql")    the test is about PostgreSQL
"""

from __future__ import annotations

import atexit
import os

import pytest

pytest.register_assert_rewrite("adetest")

from adetest import (  # noqa: E402
    BACKENDS, CTL, SAMPLES, SUPERD, Deployment, mssql_unavailable, mssqlserver, new_db_name,
    pgserver, pgsql_unavailable, share,
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backends(*names): run the test against these database backends only")
    config.addinivalue_line(
        "markers", "sqlite_only(reason): the test is about SQLite itself; the reason says why")


def backends_of(definition) -> list[str]:
    """The backends a test function runs against, from its markers."""
    names = list(BACKENDS)
    only = definition.get_closest_marker("sqlite_only")
    if only is not None:
        assert only.args and only.args[0].strip(), \
            f"{definition.name}: sqlite_only needs a reason"
        names = ["sqlite"]
    chosen = definition.get_closest_marker("backends")
    if chosen is not None:
        unknown = set(chosen.args) - set(BACKENDS)
        assert not unknown, f"{definition.name}: unknown backends {unknown}"
        names = [n for n in names if n in chosen.args]
    return names


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends_of(metafunc.definition), indirect=True)


def pytest_terminal_summary(terminalreporter):
    """Says so, even under -q, when the pgsql or mssql cases could not run here."""
    for name, reason in (("pgsql", pgsql_unavailable()), ("mssql", mssql_unavailable())):
        skipped = [r for r in terminalreporter.stats.get("skipped", [])
                   if f"[{name}" in r.nodeid]
        if reason is not None and skipped:
            terminalreporter.write_line(
                f"NOTE: {len(skipped)} {name} cases were skipped: {reason}",
                yellow=True, bold=True)


@pytest.fixture(scope="session")
def binaries():
    for binary in (SUPERD, CTL):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} is missing: run make first (or set ADE_BUILD_DIR)")
    return SUPERD, CTL


@pytest.fixture(scope="session")
def pg_server():
    """The session's private PostgreSQL server; the pgsql cases are skipped, with
    the reason, where it cannot run."""
    reason = pgsql_unavailable()
    if reason is not None:
        pytest.skip(f"pgsql cases skipped: {reason}")
    server = pgserver.PgServer()
    atexit.register(server.stop)  # should the session end without finalizers
    try:
        try:
            server.start()
        except Exception as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            pytest.fail(f"cannot start PostgreSQL: {exc}\n{stderr.decode(errors='replace')}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ms_server():
    """The SQL Server named by ADE_TEST_MSSQL_*; the mssql cases are skipped,
    with the reason, when none is named."""
    reason = mssql_unavailable()
    if reason is not None:
        pytest.skip(f"mssql cases skipped: {reason}")
    server = mssqlserver.MssqlServer()
    atexit.register(server.drop_all)  # should the session end without finalizers
    try:
        server.check()
    except Exception as exc:  # noqa: BLE001 - the driver's own words
        pytest.fail(f"cannot log in to the SQL Server of ADE_TEST_MSSQL_*: {exc}")
    try:
        yield server
    finally:
        server.drop_all()


SERVERS = {"pgsql": "pg_server", "mssql": "ms_server"}


@pytest.fixture
def backend(request) -> str:
    """The database backend of this case ("sqlite", "pgsql" or "mssql")."""
    name = request.param
    if name in SERVERS:
        request.getfixturevalue(SERVERS[name])  # skips when the server cannot be had
    return name


def build_template(root, backend: str, pg=None, ms=None):
    """A deployment with ws/cfg registered and its environment built (ready)."""
    dep = Deployment(root, backend=backend, pg=pg, ms=ms,
                     db_name=new_db_name("template_") if backend != "sqlite" else None)
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
        dep.close()  # no session may stay on a template database
    return dep.template()


@pytest.fixture(scope="session")
def template_sqlite(tmp_path_factory, binaries):
    return build_template(tmp_path_factory.mktemp("template-sqlite"), "sqlite")


@pytest.fixture(scope="session")
def template_pgsql(tmp_path_factory, binaries, pg_server):
    return build_template(tmp_path_factory.mktemp("template-pgsql"), "pgsql", pg_server)


@pytest.fixture(scope="session")
def template_mssql(tmp_path_factory, binaries, ms_server):
    return build_template(tmp_path_factory.mktemp("template-mssql"), "mssql", ms=ms_server)


@pytest.fixture
def template(request, backend):
    """The session template of this case's backend (built once per backend)."""
    return request.getfixturevalue(f"template_{backend}")


@pytest.fixture
def deploy(tmp_path, request, binaries, backend):
    """Factory: deploy(**settings) from the template; deploy(fresh=True) for an empty one."""
    made: list[Deployment] = []
    share(tmp_path)     # engines (run as the service user) write here too
    pg = request.getfixturevalue("pg_server") if backend == "pgsql" else None
    ms = request.getfixturevalue("ms_server") if backend == "mssql" else None

    def make(fresh: bool = False, init_db: bool = True, **settings) -> Deployment:
        root = tmp_path / f"dep{len(made) + 1}"
        template = None if fresh else request.getfixturevalue("template")
        dep = Deployment(root, settings, template=template, backend=backend, pg=pg, ms=ms)
        made.append(dep)
        if fresh and init_db:
            dep.init_db()
        return dep

    yield make
    for dep in made:
        dep.close()
    for dep in made:
        dep.drop_database()
