#!/usr/bin/env bash
# Builds every plantmon image for linux/amd64 and linux/arm64 (the Raspberry Pi 5) with buildx
# and pushes them to REGISTRY (a registry you can push to; multi-platform images cannot be loaded
# into a local engine's image store, they must go to a registry):
#
#   REGISTRY=registry.example.org/plant PLANTMON_VERSION=1.4.0 ci/build-multiarch.sh
#
# Needs Docker with the buildx plugin, and QEMU's binfmt handlers for the other architecture
# (installed below with the tonistiigi/binfmt image) unless the builder has native nodes of both.
# The targets, Dockerfiles and tags are in ci/docker-bake.json; the compose files name the same tags.
# Not run in this project's own CI (no registry and no buildx there): tests/deploy/test_ci_folder.py
# checks that the bake file builds exactly the compose file's images.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${REGISTRY:?set REGISTRY to the registry and namespace to push to}"
export REGISTRY PLANTMON_VERSION="${PLANTMON_VERSION:-dev}"

docker buildx version >/dev/null || { echo "docker buildx is missing: install docker-buildx-plugin" >&2; exit 1; }
if [ "${SKIP_BINFMT:-0}" != 1 ]; then
  docker run --privileged --rm tonistiigi/binfmt --install arm64,amd64
fi
docker buildx inspect plantmon-multiarch >/dev/null 2>&1 ||
  docker buildx create --name plantmon-multiarch --driver docker-container >/dev/null
docker buildx bake --builder plantmon-multiarch -f ci/docker-bake.json --push "$@"
echo "pushed ${REGISTRY}/{migrate,sensors,opc-server,scraper,alerts}:${PLANTMON_VERSION} for linux/amd64 and linux/arm64"
