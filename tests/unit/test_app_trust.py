"""Signed apps and the site's verdict on them, with real keys, a real FAB of the template and
Flower's own parsing of the signed run config (what SuperLink hands a SuperNode)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from nbfed.site_review import Operator, ReviewError, describe, listing
from nbfed.site_trust import SiteTrust
from nbfed.submit import prepare_signed, sign_run

TEMPLATE = Path(__file__).resolve().parents[2] / "notebook" / "template.ipynb"


def keypair(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """The template signed by a consortium key; a site directory trusting that key."""
    root = tmp_path_factory.mktemp("signed")
    key = keypair(root / "signing.key")
    run, statement = sign_run(TEMPLATE, root / "run", {"num_rounds": 2, "nbfed.results-dir": "/results/r"}, key)
    return root, run, statement


def site(root: Path, policy: str, *keys: Path) -> SiteTrust:
    trust = SiteTrust(root / f"site-{policy}", policy)
    trust.keys.mkdir(parents=True, exist_ok=True)
    for key in keys:
        shutil.copy(key.with_name(key.name + ".pub"), trust.keys / f"{key.stem}.pub")
    return trust


def as_sent(run) -> tuple[bytes, str, dict]:
    """The FAB, its announced hash and the run config, as a SuperNode receives them."""
    fab = run.fab.read_bytes()
    return fab, hashlib.sha256(fab).hexdigest(), parse_config_args([str(run.overrides)])


def test_a_signed_app_is_accepted_with_the_aggregators_bookkeeping_changed(signed) -> None:
    root, run, statement = signed
    trust = site(root, "consortium", root / "signing.key")
    fab, fab_hash, config = as_sent(run)
    assert trust.verdict(fab, fab_hash, config).accepted
    resumed = {**config, "nbfed.resume": True, "nbfed.results-dir": "/elsewhere"}  # not signed: the ServerApp's
    verdict = trust.verdict(fab, fab_hash, resumed)
    assert verdict.accepted and verdict.statement.app_id == statement.app_id


@pytest.mark.parametrize(
    "attack, reason",
    [
        ("unsigned", "it is not signed"),
        ("changed config", "is not over this app and run config"),
        ("tampered FAB", "is not over this app and run config"),
        ("FAB not as announced", "not 7"),  # the announced hash is checked against the bytes
    ],
)
def test_every_attack_on_a_signed_app_is_refused_and_named(signed, attack, reason) -> None:
    root, run, _ = signed
    trust = site(root, "consortium", root / "signing.key")
    fab, fab_hash, config = as_sent(run)
    if attack == "unsigned":
        config.pop("nbfed.signature")
    elif attack == "changed config":
        config["num_rounds"] = 50
    elif attack == "tampered FAB":
        fab = fab[:200] + bytes([fab[200] ^ 1]) + fab[201:]
        fab_hash = hashlib.sha256(fab).hexdigest()
    else:
        fab, reason = fab + b"\0", f"not {fab_hash[:12]} as announced"
    verdict = trust.verdict(fab, fab_hash, config)
    assert not verdict.accepted and not verdict.waiting
    assert reason in verdict.message("site-a") and "refused app" in verdict.message("site-a")


def test_a_key_the_site_does_not_trust_is_refused(signed, tmp_path) -> None:
    root, run, _ = signed
    other = keypair(tmp_path / "other.key")
    trust = site(tmp_path, "consortium", other)
    verdict = trust.verdict(*as_sent(run))
    assert not verdict.accepted and "which this site does not trust" in verdict.reason


def test_manual_approval_waits_then_approve_lets_it_run_and_revoke_stops_it(signed, tmp_path) -> None:
    root, run, statement = signed
    trust = site(tmp_path, "manual", keypair(tmp_path / "trust-approver.key"))
    shutil.copy(tmp_path / "trust-approver.key", trust.root / "approver.key")
    fab, fab_hash, config = as_sent(run)
    verdict = trust.verdict(fab, fab_hash, config)  # signed by the consortium, which this site does not trust
    assert verdict.waiting and f"nbfed approve {statement.app_id}" in verdict.message("site-b")
    trust.record(verdict, fab, 7, "site-b")
    operator = Operator(trust, "dr-who")
    assert "1 app(s) wait for a decision" in listing(operator)
    shown = describe(operator, operator.find(statement.app_id[:6]))
    assert "def build_model" in shown and "torch" in shown and statement.fab_sha256 in shown

    operator.approve(statement.app_id)
    assert trust.verdict(fab, fab_hash, config).accepted
    operator.revoke(statement.app_id)
    refused = trust.verdict(fab, fab_hash, config)
    assert not refused.accepted and not refused.waiting and "revoked" in refused.reason

    audit = [json.loads(line) for line in (trust.root / "audit.log").read_text().splitlines()]
    assert [(a["decision"], a["operator"], a["app"]) for a in audit] == [
        ("approved", "dr-who", statement.app_id),
        ("revoked", "dr-who", statement.app_id),
    ]
    assert audit[0]["notebook-sha256"] == hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()
    with pytest.raises(ReviewError, match="no app here starts with"):
        operator.find("ffff")


def test_the_listing_says_what_became_of_each_app_and_counts_only_those_that_wait(signed, tmp_path) -> None:
    """An app a trusted key signed ran: it waits for nothing when the site turns to manual
    review, and the app that came since is the one pending."""
    root, run, _ = signed
    ran = site(tmp_path, "consortium", root / "signing.key")
    fab, fab_hash, config = as_sent(run)
    ran.record(ran.verdict(fab, fab_hash, config), fab, 1, "site-b")
    changed = {**config, "num_rounds": 50}  # the signature is not over it
    ran.record(ran.verdict(fab, fab_hash, changed), fab, 2, "site-b")
    waits = SiteTrust(ran.root, "manual")  # the same site, now reviewing every app itself
    unsigned = {k: v for k, v in config.items() if k != "nbfed.signature"}
    verdict = waits.verdict(fab, fab_hash, {**unsigned, "num_rounds": 1})
    waits.record(verdict, fab, 3, "site-b")

    rows = listing(Operator(waits, "dr-who")).splitlines()
    assert rows[0].startswith("1 app(s) wait for a decision"), rows
    states = {row.split()[0]: row.split()[1] for row in rows[1:]}
    assert states[verdict.statement.app_id] == "pending", rows
    assert sorted(states.values()) == ["pending", "refused", "signed"], rows


def test_an_approval_of_one_config_does_not_cover_another(signed, tmp_path) -> None:
    root, run, statement = signed
    trust = site(tmp_path, "manual", keypair(tmp_path / "trust-approver.key"))
    shutil.copy(tmp_path / "trust-approver.key", trust.root / "approver.key")
    fab, fab_hash, config = as_sent(run)
    trust.record(trust.verdict(fab, fab_hash, config), fab, 1, "site-b")
    Operator(trust, "dr-who").approve(statement.app_id)
    assert trust.verdict(fab, fab_hash, {**config, "local_epochs": 9}).waiting


def test_the_runner_submits_the_signed_fab_and_keeps_its_app(signed, tmp_path) -> None:
    root, run, _ = signed
    results = tmp_path / "results"
    results.mkdir()
    for name in ("app.fab", "overrides.toml"):  # what the run role copies to the aggregator
        shutil.copy(run.results / name, results / name)
    prepared = prepare_signed(results)
    assert prepared.fab == results / "app.fab" and prepared.num_rounds == 2
    task = next(run.app_dir.glob("*/task.py")).relative_to(run.app_dir)
    assert (results / "app" / task).read_bytes() == (run.app_dir / task).read_bytes()
