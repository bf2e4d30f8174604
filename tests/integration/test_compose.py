"""The compose stacks: the TLS dry run completes a federation; sites are hardened.

The dry run is the real thing on one machine: SuperLink with TLS, node authentication
and SQLite state behind the fleet-only proxy, three SuperNodes with their own keys on
synthetic data, and the one-shot runner that submits the template and writes the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, TEMPLATE

from nbfed.synth import generate

COMPOSE = ROOT / "compose"
NBFED = Path(sys.executable).parent / "nbfed"
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def compose(*args: str, env_file: Path | None = None, project: str | None = None, timeout: float = 120):
    cmd = ["docker", "compose"]
    if project:
        cmd += ["-p", project]
    if env_file:
        cmd += ["--env-file", str(env_file)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def write_env(path: Path, images: dict, **extra: str) -> Path:
    refs = {f"NBFED_{kind.upper()}_IMAGE": image.ref for kind, image in images.items()}
    path.write_text("".join(f"{k}={v}\n" for k, v in {**refs, **extra}.items()))
    return path


@pytest.fixture(scope="module")
def dry_run(built_images, tmp_path_factory):
    """`up` of the dry run on small synthetic data; the stack stays up for inspection."""
    tmp = tmp_path_factory.mktemp("dry-run")
    generate(tmp / "data", scale=0.02, seed=2)
    results = tmp / "results"
    env = write_env(
        tmp / ".env",
        built_images,
        NBFED_DATA=str(tmp / "data"),
        NBFED_RESULTS_DIR=str(results),
        NBFED_ROUNDS="3",
        NBFED_RUN_NAME="test",
    )
    project = "nbfed-test-dry-run"
    up = compose("-f", str(COMPOSE / "dry-run.yml"), "up", env_file=env, project=project, timeout=1200)
    try:
        yield up, results / "test", project, env
    finally:
        compose(
            "-f", str(COMPOSE / "dry-run.yml"), "down", "--volumes", "--timeout", "5", env_file=env, project=project
        )


def test_dry_run_completes_three_rounds_and_writes_the_report(dry_run):
    up, results, _, _ = dry_run
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    run = json.loads((results / "run.json").read_text())
    rounds = json.loads((results / "rounds.json").read_text())
    assert run["status"] == "completed" and [r["round"] for r in rounds] == [1, 2, 3]
    assert all(sorted(r["evaluate"]) == ["site-a", "site-b", "site-c"] for r in rounds)
    assert 0 < rounds[-1]["pooled"]["accuracy"] <= 1
    assert "| Accuracy |" in (results / "report.md").read_text()
    assert (results / "metrics.png").stat().st_size > 10_000
    assert "round 3/3" in up.stdout


def test_dry_run_uses_tls_and_node_authentication(dry_run):
    _, _, project, env = dry_run
    config = compose("-f", str(COMPOSE / "dry-run.yml"), "config", "--format", "json", env_file=env, project=project)
    services = json.loads(config.stdout)["services"]
    superlink = " ".join(services["superlink"]["command"])
    assert "--enable-supernode-auth" in superlink and "--ssl-certfile=/certs/server.pem" in superlink
    assert "--insecure" not in config.stdout
    for site in ("site-a", "site-b", "site-c"):
        command = " ".join(services[site]["command"])
        assert (
            "--root-certificates=/pki/ca.crt" in command
            and f"--auth-supernode-private-key=/pki/nodes/{site}" in command
        )
        assert services[site]["networks"].keys() == {"fleet"}  # sites reach only the proxy


def _container(project: str, service: str) -> str:
    return f"{project}-{service}-1"


def test_site_runs_as_non_root_cannot_write_its_data_and_publishes_no_port(dry_run, docker_client):
    _, _, project, _ = dry_run
    site = docker_client.containers.get(_container(project, "site-a"))
    assert site.status == "running"
    assert site.exec_run(["id", "-u"]).output.decode().strip() == "10001"
    write = site.exec_run(["sh", "-c", "touch /data/intruder"])
    assert write.exit_code != 0 and b"Read-only file system" in write.output
    assert not site.attrs["HostConfig"]["PortBindings"] and not any(
        site.attrs["NetworkSettings"]["Ports"].values() or []
    )
    assert site.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in site.attrs["HostConfig"]["SecurityOpt"]
    assert site.attrs["HostConfig"]["CapDrop"] == ["ALL"]


def test_unregistered_node_is_refused(dry_run, docker_client, built_images):
    """A SuperNode whose key was never registered cannot activate, even with the right CA."""
    _, _, project, _ = dry_run
    script = (
        "from cryptography.hazmat.primitives.asymmetric import ec; "
        "from cryptography.hazmat.primitives import serialization as s;"
        "k=ec.generate_private_key(ec.SECP384R1());"
        "open('/tmp/k','wb').write(k.private_bytes(s.Encoding.PEM,s.PrivateFormat.OpenSSH,s.NoEncryption()))"
    )
    intruder = docker_client.containers.run(
        built_images["site"].ref,
        entrypoint=["sh", "-c"],
        command=[
            f'python -c "{script}" && exec flower-supernode --superlink=aggregator:8000 '
            "--root-certificates=/pki/ca.crt --auth-supernode-private-key=/tmp/k --max-retries 1"
        ],
        volumes={f"{project}_pki": {"bind": "/pki", "mode": "ro"}},
        network=f"{project}_fleet",
        detach=True,
    )
    try:
        exit_code = intruder.wait(timeout=120)["StatusCode"]
        output = intruder.logs().decode()
    finally:
        intruder.remove(force=True)
    assert exit_code != 0 and "Failed to activate SuperNode" in output


def test_notebook_code_edit_rebuilds_no_image(built_images, base_image, tmp_path):
    nb = nbformat.read(TEMPLATE, as_version=4)
    train = next(c for c in nb.cells if "train" in c.metadata.get("tags", []))
    train.source = "# tuned by a researcher\n" + train.source.replace("optimizer", "optimizer", 1)
    edited = tmp_path / "edited.ipynb"
    nbformat.write(nb, edited)
    done = subprocess.run(
        [str(NBFED), "build-images", str(edited), "--base-image", base_image, "--env-file", str(tmp_path / ".env")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "building" not in done.stdout.lower() and done.stdout.count("nothing to build") == 3
    refs = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().split())
    assert refs["NBFED_AGGREGATOR_IMAGE"] == built_images["aggregator"].ref
    assert refs["NBFED_SITE_IMAGE"] == built_images["site"].ref
