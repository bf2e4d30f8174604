"""Container images: built from the bootstrapped base, content-tagged, non-root, TLS-aware.

The first session builds the images (the torch install takes a few minutes); later sessions
find them by content tag and build nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BUILD_DIR, ROOT, TEMPLATE, make_pki, template_requirements, wait_for
from rich.console import Console

from nbfed import images

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SUPERLINK_TLS = [
    "--ssl-certfile",
    "/certs/superlink.pem",
    "--ssl-keyfile",
    "/certs/superlink.key",
    "--ssl-ca-certfile",
    "/certs/ca.crt",
    "--host",
    "0.0.0.0",
    "--port",
    "8000",
    "--database",
    "/state/state.db",
    "--disable-runtime-dependency-installation",
]

# Runs inside a container of the site image: GET https://HOST:8000PATH (path sent as is),
# verified against /certs/ca.crt (the name too, unless a third argument is given); prints the
# status code.
HTTPS_STATUS = (
    "import http.client,ssl,sys;c=ssl.create_default_context(cafile='/certs/ca.crt');"
    "c.check_hostname=len(sys.argv)<4;"
    "h=http.client.HTTPSConnection(sys.argv[1],8000,context=c,timeout=10);"
    "h.request('GET',sys.argv[2]);print(h.getresponse().status)"
)


def _quiet() -> Console:
    return Console(stderr=True, width=120)


def _wheelhouses(requirements: list[str]) -> images.Wheelhouses:
    """The cpu wheelhouses for `requirements`: planning needs them prepared (it downloads nothing)."""
    return images.prepare_wheelhouses(requirements, ("cpu",), BUILD_DIR, console=_quiet())


def _run_healthcheck(container) -> int:
    """Run the image's HEALTHCHECK command inside the running container; its exit code."""
    test = container.client.api.inspect_image(container.image.id)["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    return container.exec_run(test[1:]).exit_code


def _run_output(docker_client, image: str, *args: str, entrypoint=None) -> str:
    out = docker_client.containers.run(image, list(args), entrypoint=entrypoint, remove=True, stdout=True, stderr=True)
    return out.decode()


def _endpoint(docker_client, alias: str) -> dict:
    return docker_client.api.create_endpoint_config(aliases=[alias])


# --- what is in the images -----------------------------------------------------------------


def test_three_images_build_from_the_base(built_images, base_image, docker_api):
    assert sorted(built_images) == ["aggregator", "proxy", "site"]
    base_layers = docker_api.inspect_image(base_image)["RootFS"]["Layers"]
    for image in built_images.values():
        info = docker_api.inspect_image(image.ref)
        assert info["Id"] == image.id
        assert info["RootFS"]["Layers"][: len(base_layers)] == base_layers, image.ref
    assert built_images["site"].tag.endswith("-cpu")


@pytest.mark.parametrize("kind", ["aggregator", "site", "proxy"])
def test_runs_as_uid_10001(built_images, docker_client, kind):
    image = built_images[kind].ref
    assert docker_client.api.inspect_image(image)["Config"]["User"] == "10001:10001"
    assert _run_output(docker_client, image, "-u", entrypoint="id").strip() == "10001"


@pytest.mark.parametrize(
    ("kind", "entrypoint"),
    [
        ("aggregator", ["python", "-m", "nbfed.superlink_launcher"]),
        ("site", ["python", "-m", "nbfed.warm_supernode"]),
    ],
)
def test_flower_version_inside(built_images, docker_client, kind, entrypoint):
    info = docker_client.api.inspect_image(built_images[kind].ref)
    assert info["Config"]["Entrypoint"] == entrypoint
    assert "Flower version: 1.41.0" in _run_output(docker_client, built_images[kind].ref, "--version")


@pytest.mark.parametrize("kind", ["aggregator", "site"])
def test_flower_telemetry_is_off(built_images, docker_client, kind):
    assert "FLWR_TELEMETRY_ENABLED=0" in docker_client.api.inspect_image(built_images[kind].ref)["Config"]["Env"]


@pytest.mark.parametrize("kind", ["aggregator", "site"])
def test_flower_checks_for_no_update(built_images, docker_client, kind):
    """Flower's processes ask Flower's servers for updates at every start unless told not to:
    with every HTTPS request of the container sent to a listener here (HTTPS_PROXY), a Flower
    process started from the image makes none, and with the check turned back on it does."""
    with socket.create_server(("0.0.0.0", 0)) as listener:
        listener.settimeout(0.5)
        proxy = {"HTTPS_PROXY": f"http://host.docker.internal:{listener.getsockname()[1]}"}

        def requests_seen(**env: str) -> list[bytes]:
            docker_client.containers.run(
                built_images[kind].ref, ["--help"], entrypoint="flower-superexec", environment={**proxy, **env},
                extra_hosts={"host.docker.internal": "host-gateway"}, remove=True,
            )  # fmt: skip
            seen = []
            with contextlib.suppress(TimeoutError):
                while True:
                    connection, _ = listener.accept()
                    with connection:
                        seen.append(connection.recv(200))
            return seen

        assert requests_seen() == []
        [asked] = requests_seen(FLWR_DISABLE_UPDATE_CHECK="0")  # the listener sees what a check sends
        assert asked.startswith(b"CONNECT "), asked


@pytest.mark.parametrize("kind", ["aggregator", "site"])
def test_stripped_libraries_load_and_work_inside(built_images, docker_client, kind):
    # every compiled dependency the strip stage touched: torch trains a step, the others load
    out = _run_output(
        docker_client,
        built_images[kind].ref,
        "-c",
        "import torch, numpy, grpc, uvloop, sqlalchemy.util._collections_cy, PIL._imaging, yaml; "
        "import cryptography.hazmat.bindings._rust; "
        "m = torch.nn.Conv2d(3, 4, 3); m(torch.ones(2, 3, 8, 8)).sum().backward(); "
        "print(torch.__version__, torch.cuda.is_available(), tuple(m.weight.grad.shape), "
        "numpy.linalg.inv(2 * numpy.eye(2)).trace())",
        entrypoint="python",
    )
    assert out.split() == ["2.13.0+cpu", "False", "(4,", "3,", "3,", "3)", "1.0"]


def test_images_fit_their_size_budget(built_images, docker_api):
    # issue 7's targets; the strip stage takes about 145 MB off each (images/README.md)
    budget = {"aggregator": 1.0e9, "site": 1.2e9, "proxy": 0.2e9}
    sizes = {kind: docker_api.inspect_image(image.ref)["Size"] for kind, image in built_images.items()}
    assert all(sizes[kind] <= budget[kind] for kind in budget), sizes


def test_labels(built_images, docker_client):
    for kind, image in built_images.items():
        labels = docker_client.api.inspect_image(image.ref)["Config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == f"nbfed-{kind}"
        assert labels["org.opencontainers.image.version"]
        assert labels["org.opencontainers.image.source"]
        assert labels[images.LABEL_CONTENT_TAG] == image.tag
        if kind != "proxy":
            # the notebook the image was first built for (code changes reuse the image)
            if image.built:
                assert labels[images.LABEL_NOTEBOOK] == TEMPLATE.name
                assert labels[images.LABEL_NOTEBOOK_SHA256] == "0" * 64
            assert labels[images.LABEL_NOTEBOOK] and labels[images.LABEL_NOTEBOOK_SHA256]
            assert labels[images.LABEL_FLWR_VERSION] == "1.41.0"
            assert labels[images.LABEL_FLAVOUR] == "cpu"
            assert len(labels[images.LABEL_LOCK_SHA256]) == 64


def test_healthcheck_defined(built_images, docker_client):
    for image in built_images.values():
        health = docker_client.api.inspect_image(image.ref)["Config"]["Healthcheck"]
        assert health["Test"][0] == "CMD" and len(health["Test"]) > 1, image.ref


@pytest.mark.parametrize("kind", ["aggregator", "site"])
def test_no_wheelhouse_in_the_final_image(built_images, docker_client, kind):
    out = _run_output(
        docker_client,
        built_images[kind].ref,
        "-c",
        "ls -d /wheels /lock 2>/dev/null; "
        "find / -xdev \\( -name 'torch-*.whl' -o -name 'flwr-*.whl' \\) 2>/dev/null; echo done",
        entrypoint="sh",
    )
    assert out.strip() == "done", out


def test_lock_pins_every_wheel_with_its_hash(built_images):
    locks = list((BUILD_DIR / "wheelhouse" / "cpu").glob("*/requirements.lock"))
    assert locks
    lines = [line for line in locks[0].read_text().splitlines() if line and not line.startswith("#")]
    assert lines and all("--hash=sha256:" in line for line in lines)
    assert any(line.startswith("flwr==1.41.0 ") for line in lines)
    assert any(line.startswith("torch==2.13.0+cpu ") for line in lines)


# --- content tags and caching --------------------------------------------------------------


def test_second_build_rebuilds_nothing(built_images, base_image):
    started = time.monotonic()
    again = images.build_images(
        template_requirements(),
        flavours=("cpu",),
        base_image=base_image,
        build_dir=BUILD_DIR,
        labels={"notebook": "test.ipynb"},
        console=_quiet(),
    )
    assert time.monotonic() - started < 60
    assert {i.kind: (i.ref, i.id) for i in again} == {k: (i.ref, i.id) for k, i in built_images.items()}
    assert not any(i.built for i in again)


def test_changed_requirements_change_the_tag(built_images, base_image, docker_api):
    digests = {
        "base_digest": images.base_image_digest(docker_api, base_image),
        "tools_digest": images.base_image_digest(docker_api, images.default_tools_image(base_image)),
    }
    specs = images.plan_images(
        _wheelhouses(template_requirements() + ["six==1.17.0"]), base_image=base_image, **digests
    )
    tags = {s.kind: s.tag for s in specs}
    assert tags["aggregator"] != built_images["aggregator"].tag
    assert tags["site"] != built_images["site"].tag and tags["site"].endswith("-cpu")
    assert tags["proxy"] == built_images["proxy"].tag  # the proxy has no Python dependencies
    same = images.plan_images(
        _wheelhouses(list(reversed(template_requirements())) + ["flwr>=1.0"]), base_image=base_image, **digests
    )
    assert {s.kind: s.tag for s in same} == {k: i.tag for k, i in built_images.items()}
    # A notebook that imports sympy itself keeps it in the aggregator (its own tag); the sites
    # install the same wheels as before (torch brings sympy), so their image is the same one.
    named = {
        s.kind: s
        for s in images.plan_images(_wheelhouses(template_requirements() + ["sympy"]), base_image=base_image, **digests)
    }
    assert named["aggregator"].buildargs["NBFED_KEEP"] == "sympy"
    assert named["aggregator"].tag != built_images["aggregator"].tag
    assert named["site"].tag == built_images["site"].tag and "NBFED_KEEP" not in named["site"].buildargs


def test_cpu_flavour_refuses_a_cuda_torch(tmp_path):
    # torch 2.12.0 is only a CUDA build here: refused after resolving, before any download
    with pytest.raises(images.ImagesError, match="CUDA build of torch"):
        images.prepare_wheelhouse(["torch==2.12.0"], "cpu", tmp_path, console=_quiet())
    assert not list((tmp_path / "wheelhouse" / "cpu" / "pool").glob("*.whl"))


def test_cuda_flavour_resolves_cuda_wheels_without_downloading():
    resolved = images.resolve_requirements(["torch==2.12.0"], "cuda", console=_quiet())
    names = {r.name.lower() for r in resolved}
    assert "torch" in names and "flwr" in names
    assert any(n.startswith("nvidia-") for n in names)


def test_missing_base_image_says_what_to_do(docker_api):
    with pytest.raises(images.ImagesError, match=r"images/base/build\.sh"):
        images.base_image_digest(docker_api, "nbfed/no-such-base:never")


# --- health checks and the proxy at run time -----------------------------------------------


def test_superlink_healthcheck_follows_tls(built_images, container_factory, pki):
    certs = {str(pki): {"bind": "/certs", "mode": "ro"}}
    tls = container_factory(built_images["aggregator"].ref, SUPERLINK_TLS, volumes=certs)
    plain = container_factory(
        built_images["aggregator"].ref, ["--insecure", "--host", "0.0.0.0"], environment={"NBFED_INSECURE": "1"}
    )
    wait_for(lambda: _run_healthcheck(tls) == 0, 60, what="the TLS SuperLink's health check")
    wait_for(lambda: _run_healthcheck(plain) == 0, 60, what="the insecure SuperLink's health check")
    # the TLS check is really TLS: plain http to the TLS port fails, and vice versa
    assert tls.exec_run(["sh", "-c", "NBFED_INSECURE=1 " + _health_shell(tls)]).exit_code != 0
    assert plain.exec_run(["sh", "-c", "NBFED_INSECURE=0 " + _health_shell(plain)]).exit_code != 0


def _health_shell(container) -> str:
    test = container.client.api.inspect_image(container.image.id)["Config"]["Healthcheck"]["Test"]
    return " ".join("'" + part.replace("'", "'\\''") + "'" for part in test[1:])


def _superlink_behind_proxy(built_images, container_factory, docker_client, pki):
    """SuperLink (TLS, healthy) and the proxy on a fresh network: (network, cert mounts, superlink, proxy)."""
    net = container_factory.network()
    certs = {str(pki): {"bind": "/certs", "mode": "ro"}}
    superlink = container_factory(
        built_images["aggregator"].ref,
        SUPERLINK_TLS,
        volumes=certs,
        network=net.name,
        networking_config={net.name: _endpoint(docker_client, "superlink")},
    )
    proxy = container_factory(
        built_images["proxy"].ref,
        volumes=certs,
        network=net.name,
        networking_config={net.name: _endpoint(docker_client, "proxy")},
    )
    wait_for(lambda: _run_healthcheck(superlink) == 0, 60, what="SuperLink's health check")
    return net, certs, superlink, proxy


def test_proxy_forwards_only_fleet_and_health(built_images, container_factory, docker_client, pki, tmp_path):
    net, certs, _, proxy = _superlink_behind_proxy(built_images, container_factory, docker_client, pki)
    wait_for(lambda: _run_healthcheck(proxy) == 0, 30, what="the proxy's health check")
    client = container_factory(
        built_images["site"].ref, ["infinity"], entrypoint="sleep", volumes=certs, network=net.name
    )

    def status(path: str, host: str = "proxy") -> int:
        result = client.exec_run(["python", "-c", HTTPS_STATUS, host, path])
        assert result.exit_code == 0, result.output.decode()
        return int(result.output.decode().split()[-1])

    assert status("/health") == 200
    assert status("/v1/control/list-runs") == 403
    assert status("/v1/runtime/pull-messages") == 403
    assert status("/") == 403
    assert status("/v1/fleet/../control/list-runs") == 403
    assert status("/v1/fleet/%2e%2e/control/list-runs") == 403
    assert status("/v1/fleet/..%2fcontrol/list-runs") == 403
    # reached SuperLink (its own answer to an unknown/GET fleet path, not the proxy's 403)
    assert status("/v1/fleet/no-such-endpoint") in (404, 405)
    assert status("/v1/control/list-runs", host="superlink") == 405  # direct: SuperLink itself

    # a proxy that does not trust SuperLink's certificate refuses to forward
    other = make_pki(tmp_path / "other", "some other CA")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(pki / name, mixed / name)
    shutil.copy(other / "ca.crt", mixed / "ca.crt")
    for path in [mixed, *mixed.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    container_factory(
        built_images["proxy"].ref,
        volumes={str(mixed): {"bind": "/certs", "mode": "ro"}},
        network=net.name,
        networking_config={net.name: _endpoint(docker_client, "badproxy")},
    )
    bad = ["python", "-c", HTTPS_STATUS, "badproxy", "/health", "no-name-check"]  # its cert names "proxy"
    wait_for(lambda: client.exec_run(bad).exit_code == 0, 30, what="the second proxy")
    assert client.exec_run(bad).output.decode().split()[-1] == "502"


def test_supernode_connects_through_the_proxy(built_images, container_factory, docker_client, pki):
    net, certs, _, proxy = _superlink_behind_proxy(built_images, container_factory, docker_client, pki)
    supernode = container_factory(
        built_images["site"].ref,
        ["--superlink", "proxy:8000", "--root-certificates", "/certs/ca.crt"],
        environment={"NBFED_APP_TRUST": "any"},  # the link is under test, not the site's trust
        volumes=certs,
        network=net.name,
        read_only=True,
        tmpfs={"/tmp": "", "/home/nbfed": "uid=10001,gid=10001"},
    )
    wait_for(lambda: _run_healthcheck(supernode) == 0, 60, what="SuperNode's health check")

    def fleet_ok() -> bool:
        log = proxy.logs().decode()
        return any("/v1/fleet/" in line and '" 200 ' in line for line in log.splitlines())

    wait_for(fleet_ok, 60, what="a SuperNode request answered 200 through the proxy")
    supernode.reload()
    assert supernode.status == "running", supernode.logs().decode()[-2000:]
    assert "/v1/control/" not in proxy.logs().decode()


def test_bootstrapped_base_is_reused(base_image):
    if base_image != "nbfed/base:bookworm":
        pytest.skip("the tests use another base image")
    rootfs = Path(BUILD_DIR) / "base" / "rootfs.tar"
    if not rootfs.is_file():
        pytest.skip(f"{base_image} was on the engine before this build tree existed: no rootfs cache to reuse")
    assert rootfs.stat().st_size > 50_000_000
    again = subprocess.run(
        [str(ROOT / "images" / "base" / "build.sh"), base_image],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, NBFED_BUILD_DIR=str(BUILD_DIR)),
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


# --- no engine, but a package index to resolve against (the rest is tests/unit/test_image_content.py) ----


def test_cuda_flavour_refuses_a_cpu_torch(tmp_path):
    # where pip serves torch 2.13.0 as a CPU build (as here), a cuda image must not get it
    torch = [r for r in images.resolve_requirements(["torch==2.13.0"], "cpu", console=_quiet()) if r.name == "torch"]
    if "+cpu" not in torch[0].version:
        pytest.skip("this pip configuration serves no CPU build of torch 2.13.0")
    with pytest.raises(images.ImagesError, match="cuda flavour resolved to a CPU build"):
        images.prepare_wheelhouse(["torch==2.13.0"], "cuda", tmp_path, console=_quiet())
