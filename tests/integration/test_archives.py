"""Configuration packages delivered as archives: config_packages/<cfg>.zip or
<cfg>.tar.gz in place of the package directory.

A good archive is extracted into the environment's build directory and
installed from there (not editable: the archive is a snapshot); a hostile
one (a member that climbs out, a symbolic link that leads out) fails the
environment with a clear message, its runs end failed within their
attempts, and nothing lands outside the build directory.

Each test enqueues with the sample package directory (so that the rows and
the deps digest exist, as the API would make them), then replaces the
directory by an archive before the worker runs.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from adetest import (SAMPLE_CONFIG, SAMPLES, assert_results_match, completed_payload, share,
                     venv_dir)

SKIP = {"__pycache__", "build"}


def package_files(root: Path):
    """(relative name, path) of every file of a package tree, build leftovers aside."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file():
            yield rel.as_posix(), path


def write_zip(dest: Path, prefix: str = "", extra=()) -> None:
    """SAMPLE_CONFIG as a zip (members under prefix), then the extra members:
    (name, data) for files, (name, "->target") for symbolic links."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in package_files(SAMPLE_CONFIG):
            archive.write(path, prefix + name)
        for name, data in extra:
            if isinstance(data, str) and data.startswith("->"):
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o120777 << 16)
                archive.writestr(info, data[2:])
            else:
                archive.writestr(zipfile.ZipInfo(name), data)


def write_tgz(dest: Path, prefix: str = "", extra=()) -> None:
    """SAMPLE_CONFIG as a .tar.gz, with extra members as for write_zip."""
    with tarfile.open(dest, "w:gz") as archive:
        if prefix:
            info = tarfile.TarInfo(prefix.rstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, path in package_files(SAMPLE_CONFIG):
            archive.add(path, prefix + name, recursive=False)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            if isinstance(data, str) and data.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))


def swap_for_archive(dep, answer, suffix: str, writer, **kwargs) -> Path:
    """Replaces the configuration's package directory by an archive of it."""
    cfg_dir = dep.config_dir(answer["workspace_id"], answer["configuration_id"])
    assert cfg_dir.is_dir()
    shutil.rmtree(cfg_dir)
    archive = cfg_dir.parent / (cfg_dir.name + suffix)
    writer(archive, **kwargs)
    share(archive)
    return archive


def env_root(dep, answer, env) -> Path:
    digest_hex = answer["deps_digest"].split(":", 1)[1]
    return (dep.data_dir / "venvs" / answer["workspace_id"] / answer["configuration_id"]
            / f"deps-{digest_hex}" / env["id"])


def build_log(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "logs" / "events.ndjson").read_text().splitlines()]


@pytest.mark.parametrize("suffix,writer,prefix", [
    (".zip", write_zip, ""),                      # files at the archive root
    (".tar.gz", write_tgz, "sample-config-1.0/"),  # one wrapper directory
], ids=["zip", "tar.gz"])
def test_archive_package_builds_and_runs(deploy, suffix, writer, prefix):
    dep = deploy(fresh=True)
    source = SAMPLES / "people_partial.csv"
    answer = dep.enqueue(source)
    swap_for_archive(dep, answer, suffix, writer, prefix=prefix)

    result = dep.run_worker(timeout=240)
    assert result.returncode == 0, result.stderr

    (env,) = dep.environments()
    assert env["status"] == "ready", (env, result.stderr)
    root = env_root(dep, answer, env)
    records = build_log(root)
    names = [r["event"] for r in records]
    assert names.index("environment.config.extract.start") < names.index(
        "environment.config.extract.complete") < names.index("environment.complete")
    done = records[names.index("environment.config.extract.complete")]["data"]
    # the wrapper directory, when there is one, is the package root
    venv = venv_dir(root, env)
    snapshot = venv / "config" / prefix.rstrip("/") if prefix else venv / "config"
    assert done["package_root"].endswith("/config" + ("/" + prefix.rstrip("/") if prefix else ""))
    assert (snapshot / "pyproject.toml").is_file()
    # installed from the snapshot, not editable (no "-e" on the command line)
    install = [r for r in records if r["event"] == "environment.config.start"][0]["data"]["cmd"]
    assert "-e" not in install and install[-1] == done["package_root"]
    where = subprocess.run(
        [str(venv / ".venv" / "bin" / "python"), "-c",
         "import ade_config, sys; print(ade_config.__file__)"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in where, where
    assert sorted(p.name for p in root.parent.iterdir()) == [env["id"]]

    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", (row, result.stderr)
    assert row["exit_code"] == 0 and row["attempt_count"] == 1
    payload = completed_payload(dep.events(answer["run_id"]))
    assert_results_match(dep, answer["run_id"], payload)
    metrics = dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", answer["run_id"])[0]
    assert metrics["row_count_total"] == 5


def sentinels(dep, name: str) -> list[Path]:
    return [p for p in dep.root.rglob(name)]


@pytest.mark.parametrize("suffix,writer,extra,sentinel", [
    # seven ".." from <build>/config reach the deployment root
    (".zip", write_zip, [("../" * 7 + "slip-sentinel", b"pwned\n")], "slip-sentinel"),
    (".tar.gz", write_tgz, [("escape", "->" + "../" * 7),
                            ("escape/link-sentinel", b"pwned\n")], "link-sentinel"),
], ids=["zip-slip", "symlink-escape"])
def test_hostile_archive_fails_the_environment(deploy, suffix, writer, extra, sentinel):
    dep = deploy(fresh=True, backoff_base_seconds=1, backoff_max_seconds=2)
    answer = dep.enqueue(SAMPLES / "contacts.csv", max_attempts=2)
    archive = swap_for_archive(dep, answer, suffix, writer, extra=extra)

    result = dep.run_worker(timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.duration < 60, result.duration  # no venv is built for a refused archive

    (env,) = dep.environments()
    assert env["status"] == "failed", env
    message = env["error_message"]
    assert archive.name in message and "refused" in message, message
    assert ("\"..\"" if "slip" in sentinel else "symbolic link") in message, message
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "failed", row
    assert row["attempt_count"] == row["max_attempts"] == 2
    assert row["error_message"].startswith("Environment build failed: "), row
    assert "refused" in row["error_message"], row

    # nothing landed outside the build directory, nor was anything kept inside
    assert sentinels(dep, sentinel) == []
    assert not (dep.root / sentinel).exists()
    root = env_root(dep, answer, env)
    assert not (root / "config").exists() and not (root / ".venv").exists()
    assert not list(root.glob("g-*"))
    names = [r["event"] for r in build_log(root)]
    assert "environment.config.extract.failed" in names, names
    assert "environment.venv.start" not in names, names
