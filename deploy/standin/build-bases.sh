#!/usr/bin/env bash
# Build the stand-in base images where no container registry can be reached (this project's
# machines and CI): a Debian bookworm root from debootstrap, imported into podman, then
#   localhost/ser-standin/python:3.11-bookworm   for the Dockerfile's PYTHON_IMAGE
#   localhost/ser-standin/nginx:bookworm         for docker-compose.yml's gateway (compose.yml)
# An imported Debian root already in podman's storage is reused; `podman rmi
# localhost/ser-standin/debian:bookworm` starts again from debootstrap.
#
# Usage (as root, from anywhere): deploy/standin/build-bases.sh [DEBIAN_MIRROR]
# The mirror defaults to SER_STANDIN_MIRROR, else http://deb.debian.org/debian.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
mirror=${1:-${SER_STANDIN_MIRROR:-http://deb.debian.org/debian}}
debian=localhost/ser-standin/debian:bookworm

if ! podman image exists "$debian"; then
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
    # The image gets the release's updates and security fixes when apt runs in it, as the
    # official bookworm images do; the host's resolver, name and package caches stay out.
    cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    : > "$rootfs/etc/resolv.conf"
    : > "$rootfs/etc/hostname"
    tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$debian"
fi

podman build --format docker --build-arg DEBIAN_IMAGE="$debian" \
    -t localhost/ser-standin/python:3.11-bookworm -f "$here/python.Containerfile" "$here"
podman build --format docker --build-arg DEBIAN_IMAGE="$debian" \
    -t localhost/ser-standin/nginx:bookworm -f "$here/gateway.Containerfile" "$here"
