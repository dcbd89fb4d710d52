#!/usr/bin/env bash
# Installs what plantmon needs on a fresh Debian/Ubuntu machine. Idempotent and quick when done.
#
#   scripts/bootstrap.sh venv     the Python venv (.venv) with every package, pinned with hashes
#   scripts/bootstrap.sh system   + PostgreSQL, nginx and Prometheus binaries (apt) for `task up`
#   scripts/bootstrap.sh test     + what the test suite needs (docker-compose 1.29, docker.io, debootstrap, npm,
#                                 chromium, PortAudio)
#
# System packages are installed with apt-get when running as root, with sudo when it works
# without a password prompt, and otherwise named in a clear message. The local stack never uses
# the system's nginx, PostgreSQL or Prometheus services: it runs its own on its own ports.
set -euo pipefail
cd "$(dirname "$0")/.."
level="${1:-system}"

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  local packages=("$@")
  [ ${#packages[@]} -eq 0 ] && return 0
  say "installing ${packages[*]} with apt-get"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
     ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
    say "cannot install ${packages[*]}: run as root, or as a user with passwordless sudo, or install them yourself:"
    say "  sudo apt-get install ${packages[*]}"
    exit 1
  fi
}

python_ok() { python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

venv() {
  if ! python_ok; then
    command -v apt-get >/dev/null && apt_install python3 python3-venv python3-pip
    python_ok || { say "Python 3.11 or newer with venv is required"; exit 1; }
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  local stamp=.venv/.plantmon-installed want
  want="$(cat requirements/dev.txt */*/pyproject.toml db/pyproject.toml devtools/pyproject.toml | sha256sum | cut -c1-64)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python packages into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q --require-hashes -r requirements/dev.txt
    .venv/bin/python -m pip install -q --no-deps \
      -e services/common -e services/sensors -e services/opc_server -e services/opc_scraper \
      -e services/alert_worker -e db -e devtools
    echo "$want" > "$stamp"
  fi
}

system() {
  local missing=()
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
  if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    if apt-cache show nginx-light >/dev/null 2>&1; then missing+=(nginx-light); else missing+=(nginx); fi
  fi
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v promtool >/dev/null || missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || { say "missing ${missing[*]} and no apt-get here: install them yourself"; exit 1; }
    [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' 2>/dev/null | head -1)" ] || as_root apt-get update -qq || true
    apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
  fi
}

testdeps() {
  local missing=()
  command -v docker-compose >/dev/null || missing+=(docker-compose)   # compose config checks, container suite
  command -v dockerd >/dev/null || missing+=(docker.io)                # the container suite's own engine
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)   # its base image
  command -v ip >/dev/null || missing+=(iproute2)                     # the engine bridge's address
  command -v npm >/dev/null || missing+=(npm)                          # compose schema, WASM TimescaleDB
  command -v chromium >/dev/null || missing+=(chromium)                # operator page in a real browser
  ldconfig -p 2>/dev/null | grep -q libportaudio || missing+=(libportaudio2)   # sounddevice's PortAudio
  apt_install "${missing[@]}"
}

case "$level" in
  venv) venv ;;
  system) venv; system ;;
  test) venv; system; testdeps ;;
  *) say "unknown level '$level' (venv, system or test)"; exit 2 ;;
esac
