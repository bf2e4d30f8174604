#!/usr/bin/env bash
# Build the nbfed base image (Debian bookworm + python3 3.11 + venv) from Debian packages,
# for hosts that cannot pull python:3.11-slim-bookworm from a registry.
#
#   images/base/build.sh [IMAGE]        default IMAGE: nbfed/base:bookworm (or $NBFED_BASE_IMAGE)
#
# Makes IMAGE and IMAGE-tools (IMAGE plus binutils: the nbfed images strip their libraries in it).
# Steps, each skipped when its result already exists:
#   1. the image IMAGE exists                -> go to 4
#   2. build/base/rootfs.tar exists         -> docker import it (seconds)
#   3. otherwise debootstrap --variant=minbase a rootfs (about a minute), tar it to
#      build/base/rootfs.tar, then import.
#   4. IMAGE-tools missing                  -> build it FROM IMAGE with apt-get install binutils
#      (from the same Debian mirror; seconds).
# Environment: NBFED_BUILD_DIR (default: <repo>/build), DEBIAN_MIRROR, DEBIAN_SUITE (bookworm),
# FORCE=1 to re-import even if the image exists.
# Needs root (debootstrap) and a Docker Engine (.ci/docker-engine starts one).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${1:-${NBFED_BASE_IMAGE:-nbfed/base:bookworm}}
build_dir=${NBFED_BUILD_DIR:-$repo/build}
suite=${DEBIAN_SUITE:-bookworm}
cache=$build_dir/base/rootfs.tar

say() { printf 'base: %s\n' "$*"; }
die() { printf 'base: ERROR: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this host's own apt uses (first non-security source), unless DEBIAN_MIRROR says.
host_mirror() {
    { grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'
      grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'; } |
        grep -v -- '-security' | head -n 1
}
mirror=${DEBIAN_MIRROR:-$(host_mirror)}

docker info >/dev/null 2>&1 || die "the Docker Engine does not answer; start it (as root: .ci/docker-engine)"

tools=$image-tools
# IMAGE plus binutils, for the nbfed images' strip stage (only the build uses it; nothing ships it)
make_tools() {
    if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tools" >/dev/null 2>&1; then
        say "$tools already exists; nothing to do"
        return
    fi
    say "building $tools ($image + binutils)"
    printf '%s\n' "FROM $image" \
        "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null && rm -rf /var/lib/apt/lists/* && strip --version | head -n 1" |
        { out=$(docker build -q -t "$tools" - 2>&1) || { printf '%s\n' "$out" >&2; die "building $tools failed (apt-get install binutils inside $image)"; }; }
    say "$tools built ($(docker run --rm "$tools" strip --version | head -n 1))"
}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    say "$image already exists ($(docker image inspect --format '{{.Id}}' "$image" | cut -c1-19))"
    make_tools
    exit 0
fi

if [ ! -s "$cache" ]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (apt-get install debootstrap)"
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
    [ -n "$mirror" ] || die "no Debian mirror in this host's apt sources: set DEBIAN_MIRROR"
    mkdir -p "$(dirname "$cache")"
    rootfs=$(mktemp -d "$build_dir/base/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs" "$cache.partial"' EXIT
    say "debootstrap $suite (minbase + python3, python3-venv, ca-certificates) from $mirror"
    start=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$build_dir/base/debootstrap.log" 2>&1 || {
        tail -n 30 "$build_dir/base/debootstrap.log" >&2
        die "debootstrap failed (full log: $build_dir/base/debootstrap.log)"
    }
    # apt sources like the official images (updates + security), then apply the updates
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    say "applying $suite-updates and $suite-security"
    { chroot "$rootfs" apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get -y -qq upgrade && \
      chroot "$rootfs" apt-get clean; } >>"$build_dir/base/debootstrap.log" 2>&1 || {
        tail -n 30 "$build_dir/base/debootstrap.log" >&2
        die "apt-get upgrade inside the rootfs failed (full log: $build_dir/base/debootstrap.log)"
    }
    # slim it the way the official slim images are: no apt lists, caches, docs or man pages
    r=${rootfs:?}  # never empty: the globs below must not reach the host
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
        "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/*.log \
        "$r"/tmp/* "${r:?}"/dev/* "$r"/etc/resolv.conf "$r"/etc/hostname
    [ -e "$rootfs/usr/bin/python3" ] || die "the rootfs has no /usr/bin/python3"
    tar --numeric-owner -C "$rootfs" -cf "$cache.partial" .
    mv "$cache.partial" "$cache"
    rm -rf "$rootfs"
    trap - EXIT
    say "rootfs cached at $cache ($(du -h "$cache" | cut -f1), $((SECONDS - start)) s)"
else
    say "reusing cached rootfs $cache"
fi

say "importing $image"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "nbfed base: debootstrap $suite minbase + python3" \
    "$cache" "$image" >/dev/null
say "$image built ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'), $(docker run --rm "$image" python3 --version))"
make_tools
