#!/bin/sh
# Start sshd, then the Docker Engine in the foreground (cgroups under /<hostname>, so the
# host containers' engines do not step on each other or on the outer engine).
set -e
mkdir -p /run/sshd
ssh-keygen -A >/dev/null
/usr/sbin/sshd -E /var/log/sshd.log
exec dockerd --cgroup-parent="/nbfed-e2e-$(hostname)" >/var/log/dockerd.log 2>&1
