"""The hospitals stay in control, tried from the aggregator as an attacker holding it would:
runs of an unsigned app, of an app signed by a key no site trusts, of a signed FAB changed
after signing and of a signed app with another run config are refused at every site, named
in the run's record; a site that reviews apps itself holds the run until its operator
approves, and its audit log says who did. And what runs is boxed in: a hostile notebook's
attempts fail while it trains, the SuperNode reaches only the aggregator's fleet port, and
the containers have their limits.

Shares the session's consortium (conftest.py) and puts back what it changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from consortium import AGGREGATOR_DIR, ROOT, SITE_DIR, SITES, submitted_run
from hostile import hostile_notebook

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NOTEBOOK = "/notebooks/template.ipynb"  # on the aggregator, where every run stage copies it
QUICK = ["--set=num_rounds=1", "--set=nbfed.round-timeout=120"]


def attack(consortium, name: str, *args: str, volumes: tuple[str, ...] = ()) -> dict:
    """Submit through the aggregator's own runner; the run's record (run.json) afterwards."""
    done = consortium.runner(
        "submit", NOTEBOOK, "--superlink=superlink:8000", "--ca=/certs/ca.crt", "--results-root=/results",
        f"--name={name}", "--timeout=300", *args, volumes=volumes,
    )  # fmt: skip
    said = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode != 0, said  # the run failed: no site ran it
    record = consortium.hosts.exec("aggregator", "cat", f"{AGGREGATOR_DIR}/results/{name}/run.json", check=False)
    assert record.returncode == 0, f"the run left no record: {said}"
    return json.loads(record.stdout) | {"runner": done.stdout + done.stderr}


def place(consortium, name: str, fab: bytes, overrides: str) -> None:
    """Put a prepared run where the aggregator's runner takes signed runs from."""
    staged = consortium.root / "attacks" / name
    staged.mkdir(parents=True)
    (staged / "app.fab").write_bytes(fab)
    (staged / "overrides.toml").write_text(overrides)
    target = f"{AGGREGATOR_DIR}/results/{name}"
    consortium.hosts.copy_to("aggregator", staged, target)
    consortium.hosts.exec("aggregator", "chown", "-R", "10001:10001", target)


@pytest.fixture(scope="module")
def signed_run(consortium, deployed) -> Path:
    """The deploy's run on the control node: the FAB and run config its key signed."""
    return consortium.results / submitted_run(deployed.output)


def assert_refused_everywhere(record: dict, why: str) -> None:
    assert record["status"] == "failed", record
    for site in SITES:
        assert f"site {site} refused app" in record["error"], record["error"]
    assert why in record["error"], record["error"]


def test_an_unsigned_app_is_refused_at_every_site(consortium, deployed) -> None:
    record = attack(consortium, "evil-unsigned", *QUICK)
    assert_refused_everywhere(record, "it is not signed")
    log = consortium.hosts.exec("site-a", "docker", "logs", "nbfed-e2e-site-site-a-supernode-1").stderr
    assert "site site-a refused app" in log and "it is not signed" in log, log[-3000:]


def test_an_app_signed_by_a_key_no_site_trusts_is_refused(consortium, deployed) -> None:
    consortium.hosts.exec(
        "aggregator", "sh", "-c",
        "rm -rf /tmp/evil && mkdir /tmp/evil && ssh-keygen -q -t ed25519 -N '' -f /tmp/evil/key "
        "&& chown -R 10001:10001 /tmp/evil",
    )  # fmt: skip
    signed = consortium.runner(
        "sign", NOTEBOOK, "--out=/results/evil-key", "--key=/evil/key", "--results-dir=/results/evil-key", *QUICK,
        volumes=("/tmp/evil:/evil:ro",),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stdout + signed.stderr
    record = attack(consortium, "evil-key", "--signed")
    assert_refused_everywhere(record, "which this site does not trust")


def test_a_signed_fab_changed_after_signing_is_refused(consortium, signed_run) -> None:
    """One byte of the notebook's module changed, and the FAB's manifest (.info/CONTENT) made to
    match, as an attacker would, so that Flower itself takes the FAB."""
    original = (signed_run / "app.fab").read_bytes()
    tampered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as fab, zipfile.ZipFile(tampered, "w", zipfile.ZIP_DEFLATED) as out:
        files = {info.filename: fab.read(info) for info in fab.infolist()}
        [task] = [name for name in files if name.endswith("/task.py")]
        code = files[task]
        at = code.index(b"# ") + 1  # a byte that keeps the module valid (the ServerApp imports it too)
        files[task] = code[:at] + b"!" + code[at + 1 :]
        manifest = files[".info/CONTENT"].decode().splitlines()
        files[".info/CONTENT"] = "\n".join(
            f"{task},{hashlib.sha256(files[task]).hexdigest()},{len(files[task]) * 8}" if line.startswith(f"{task},")
            else line
            for line in manifest
        ).encode()  # fmt: skip
        for info in fab.infolist():
            out.writestr(info, files[info.filename])
    overrides = (signed_run / "overrides.toml").read_text()
    place(consortium, "evil-fab", tampered.getvalue(), results_dir(overrides, "evil-fab"))
    record = attack(consortium, "evil-fab", "--signed")
    assert_refused_everywhere(record, "is not over this app and run config")


def test_a_signed_app_with_another_run_config_is_refused(consortium, signed_run) -> None:
    overrides = results_dir((signed_run / "overrides.toml").read_text(), "evil-config")
    changed = overrides.replace('"nbfed.fraction-train" = 1.0', '"nbfed.fraction-train" = 0.5')
    assert changed != overrides
    place(consortium, "evil-config", (signed_run / "app.fab").read_bytes(), changed)
    record = attack(consortium, "evil-config", "--signed")
    assert_refused_everywhere(record, "is not over this app and run config")


def results_dir(overrides: str, name: str) -> str:
    """The run config with its results directory moved (the aggregator's own bookkeeping: not
    signed, so changing it alone does not make the sites refuse)."""
    lines = [line for line in overrides.splitlines() if not line.startswith('"nbfed.results-dir"')]
    return "\n".join([f'"nbfed.results-dir" = "/results/{name}"', *lines]) + "\n"


def test_a_site_that_reviews_apps_holds_the_run_until_its_operator_approves(consortium, deployed) -> None:
    hosts, manual = consortium.hosts, {"site-c": {"site_approval": "manual"}}
    hosts.write_inventory(consortium.inventory, SITES, consortium.group_vars, manual)
    try:
        done = consortium.playbook("playbooks/sites.yml", "--limit", "site-c,aggregator")
        assert done.returncode == 0, done.output[-5000:]
        run = consortium.start_playbook("playbooks/submit.yml")  # the run stage, as run.yml ends
        review = f"{SITE_DIR}/nbfed"
        deadline = time.monotonic() + 180
        while "pending" not in (listed := hosts.exec("site-c", review, "review", check=False).stdout):
            assert time.monotonic() < deadline and run.poll() is None, listed
            time.sleep(2)
        app = next(line.split()[0] for line in listed.splitlines() if " pending " in line)
        shown = hosts.exec("site-c", review, "review", app).stdout
        assert "def build_model" in shown and "requirements:" in shown, shown
        approved = hosts.exec("site-c", "env", "SUDO_USER=dr-olsen", "nbfed", "approve", app)
        assert f"approved app {app} as dr-olsen" in approved.stdout

        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, output[-5000:]
        said = " ".join(output.split())
        assert f"On site-c, run `nbfed review {app}` and then `nbfed approve {app}`" in said, said[-3000:]
        results = consortium.results / submitted_run(output)
        rounds = json.loads((results / "rounds.json").read_text())
        assert all("site-c" in r["train"] for r in rounds), rounds
        audit = hosts.exec("site-c", "cat", f"{SITE_DIR}/trust/audit.log").stdout
        [decision] = [json.loads(line) for line in audit.splitlines()]
        notebook = hashlib.sha256((ROOT / "notebook" / "template.ipynb").read_bytes()).hexdigest()
        assert decision | {"time": ""} == {
            "time": "", "operator": "dr-olsen", "decision": "approved", "app": app,
            "fab-sha256": decision["fab-sha256"], "notebook": "template.ipynb", "notebook-sha256": notebook,
        }  # fmt: skip
    finally:  # site-c trusts the consortium's key again
        hosts.write_inventory(consortium.inventory, SITES, consortium.group_vars)
        done = consortium.playbook("playbooks/sites.yml", "--limit", "site-c,aggregator")
        assert done.returncode == 0, done.output[-5000:]


def test_the_notebooks_code_is_boxed_in_while_it_trains(consortium, deployed) -> None:
    """A notebook the consortium signed (so it runs) that tries to read the node key and the
    trust list, write its data, reach the intruder, the aggregator or the site host's sshd,
    and fork without bound:
    every attempt fails, and it trains at every site all the same."""
    hosts = consortium.hosts
    notebook = hostile_notebook(
        consortium.root / "hostile.ipynb", hosts.address["intruder"], hosts.address["aggregator"]
    )
    done = consortium.playbook("playbooks/submit.yml", "-e", f"nbfed_notebook={notebook}")
    assert done.returncode == 0, done.output[-5000:]
    [round_1] = json.loads((consortium.results / submitted_run(done.output) / "rounds.json").read_text())
    for site in SITES:
        tried = {k: v for k, v in round_1["train"][site].items() if k.startswith("tried_")}
        forks = tried.pop("tried_forks")
        assert tried == dict.fromkeys(tried, 0.0) and len(tried) == 6, (site, tried)
        assert 0 < forks < 1024, (site, forks)  # stopped by the ClientApp container's pids limit


def test_the_supernode_reaches_the_aggregator_and_nothing_else(consortium, deployed) -> None:
    hosts = consortium.hosts
    probe = "import socket,sys;socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5).close()"

    def connect(site: str, host: str, port: int) -> int:
        argv = ["docker", "exec", f"nbfed-e2e-site-{site}-supernode-1", "python", "-c", probe]
        return hosts.exec(site, *argv, hosts.address[host], str(port), check=False, timeout=60).returncode

    for site in SITES:
        assert connect(site, "aggregator", 8000) == 0, site
        assert connect(site, "intruder", 22) != 0, site  # the site host's egress allow-list
        assert connect(site, "aggregator", 22) != 0, site  # the aggregator's other ports too


def test_the_sites_containers_have_their_limits(consortium, deployed) -> None:
    for site in SITES:
        for service in ("supernode", "clientapp"):
            name = f"nbfed-e2e-site-{site}-{service}-1"
            host = json.loads(consortium.hosts.exec(site, "docker", "inspect", name).stdout)[0]["HostConfig"]
            assert host["Memory"] > 0 and host["PidsLimit"] > 0 and host["NanoCpus"] > 0, (name, host)
            assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"], name
