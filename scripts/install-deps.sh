#!/usr/bin/env bash
# Installs what sovdb needs, by set: `run` (build and run: `make run`) and `test` (what
# only the tests need: `make test` installs both). Debian's packages through apt-get, and
# two programs from crates.io that Debian lacks (s3s-fs, cargo-nextest; see below).
# Idempotent and quiet: when everything is there it prints nothing and takes well under a
# second. Needs root (or sudo) only when something is missing.
#
#   scripts/install-deps.sh [run] [test] [--check]
#
# With no set, `run`. --check installs nothing: it exits non-zero, naming what is
# missing (CI runs it after installing, so a package the tests need can't hide in a
# machine's leftovers).
set -euo pipefail
cd "$(dirname "$0")/.."

want_run=false want_test=false check=false
for arg in "$@"; do
  case $arg in
    run) want_run=true ;;
    test) want_test=true ;;
    --check) check=true ;;
    *) echo "usage: scripts/install-deps.sh [run] [test] [--check]" >&2; exit 2 ;;
  esac
done
$want_run || $want_test || want_run=true

# The PostgreSQL version Debian 12 ships, the one the engine's package list is read with.
readonly PG_VERSION=15

# The engines' packages: the same list the agent installs on a host (the engine reads it
# too, compiled in: crates/postgres/packages.list), every role, so that a first cluster on
# this machine doesn't wait for apt and nothing rests on a Recommends.
engine_packages() {
  sed -n 's/^[a-z][a-z0-9_-]*:[[:space:]]*//p' crates/postgres/packages.list | tr ' ' '\n' |
    sed "s/{version}/$PG_VERSION/" | grep -v '^$'
}

# run: a C compiler and make for the build (the bundled SQLite); setpriv (util-linux) to
# run engines as their users; the engines.
RUN_PACKAGES=(gcc libc6-dev make util-linux)
mapfile -t -O "${#RUN_PACKAGES[@]}" RUN_PACKAGES < <(engine_packages)

# test: sshd, ssh, ip and ping for the test hosts (scripts/testhosts), which run an sshd
# in each network namespace; slapd and ldap-utils for the directory logins' tests (a slapd
# of their own); prometheus for the test that scrapes /metrics with a real Prometheus;
# rsyslog and rsyslog-gnutls for the syslog forwarding tests (an rsyslogd of their own on a
# loopback port, over TCP and over TLS); python3-aiosmtpd for the alert email test (an SMTP
# server with STARTTLS of its own); chromium and chromium-driver for the web console's
# browser test (headless, via WebDriver), with two packages Chromium recommends (packages
# here come without recommends, and the test must not depend on what a machine happens to
# have): fonts-liberation, so its screenshots show text as people see it, and
# libgl1-mesa-dri. The store conformance suite's PostgreSQL server is postgresql-15, of the
# run set.
TEST_PACKAGES=(openssh-server openssh-client iproute2 iputils-ping
  slapd ldap-utils prometheus rsyslog rsyslog-gnutls python3-aiosmtpd chromium chromium-driver fonts-liberation libgl1-mesa-dri)

# Programs from crates.io, pinned: newer ones may need a newer Rust than
# rust-toolchain.toml's. The S3 tests need an S3 server and Debian has none that fits, so
# they run s3s-fs, which keeps objects as files (about three minutes to build, once). The
# suite runs under cargo-nextest: its test groups and timeouts (.config/nextest.toml) exist
# only there.
readonly S3S_FS_VERSION=0.14.1
readonly NEXTEST_VERSION=0.9.143

PACKAGES=()
$want_run && PACKAGES+=("${RUN_PACKAGES[@]}")
$want_test && PACKAGES+=("${TEST_PACKAGES[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
have_s3s_fs() { command -v s3s-fs >/dev/null || [[ -x "$cargo_bin/s3s-fs" ]]; }
have_nextest() { [[ "$(cargo nextest --version 2>/dev/null | head -n 1)" == "cargo-nextest $NEXTEST_VERSION"* ]]; }

if $check; then
  problems=()
  ((${#missing[@]})) && problems+=("Debian packages not installed: ${missing[*]}")
  command -v cargo >/dev/null || problems+=("cargo is not on PATH")
  if $want_test; then
    have_s3s_fs || problems+=("s3s-fs $S3S_FS_VERSION is not installed")
    have_nextest || problems+=("cargo-nextest $NEXTEST_VERSION is not installed (found: $(cargo nextest --version 2>/dev/null | head -n 1 || echo none))")
  fi
  if ((${#problems[@]})); then
    printf 'install-deps --check: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  exit 0
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null; then
    as_root=(sudo)
  else
    echo "error: missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  # Debian's postgresql package would create and start a default cluster on port 5432;
  # sovdb runs its own clusters, so switch that off before the package is installed.
  if [[ " ${missing[*]} " == *" postgresql-$PG_VERSION "* ]]; then
    "${as_root[@]}" mkdir -p /etc/postgresql-common
    if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
      echo 'create_main_cluster = false' | "${as_root[@]}" tee -a /etc/postgresql-common/createcluster.conf >/dev/null
    fi
  fi
  # Debian's openssh-server would start its own sshd on 0.0.0.0:22; the test hosts run
  # their own, one per namespace. The package's init script (and systemd unit) honour this
  # file and leave sshd off. Only when we install the package: a machine's own sshd stays.
  installs_sshd=false
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    installs_sshd=true
    "${as_root[@]}" mkdir -p /etc/ssh
    "${as_root[@]}" touch /etc/ssh/sshd_not_to_be_run
  fi
  # Debian's slapd starts a directory of its own on port 389; the tests run their own
  # slapd on a free port, so it is stopped again below (only when we install it).
  installs_slapd=false
  [[ " ${missing[*]} " == *" slapd "* ]] && installs_slapd=true
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if $installs_slapd && [[ -s /run/slapd/slapd.pid ]]; then
    echo "stopping the slapd that Debian's slapd package started"
    "${as_root[@]}" kill "$(cat /run/slapd/slapd.pid)" 2>/dev/null || true
  fi
  # Check that the package did not start sshd anyway, and stop it if it did.
  if $installs_sshd; then
    listening=$(ss -Hltn 'sport = :22')
    if [[ -n $listening && -s /run/sshd.pid ]]; then
      echo "stopping the sshd that Debian's openssh-server package started"
      "${as_root[@]}" kill "$(cat /run/sshd.pid)"
    elif [[ -n $listening ]]; then
      echo "warning: something listens on port 22 after installing openssh-server; the tests do not need it" >&2
    fi
  fi
  # Where systemd runs, Debian starts etcd, HAProxy and Patroni as services of their own;
  # sovdb runs its own instances under its agent, so keep the packaged ones off.
  if [[ -d /run/systemd/system ]]; then
    for unit in etcd haproxy patroni pgbouncer prometheus prometheus-node-exporter; do
      "${as_root[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install the Rust toolchain named in rust-toolchain.toml (rustup), then run this again" >&2
  exit 1
fi

if $want_test; then
  # The tests look for s3s-fs in PATH, then in cargo's bin directory, which is where this
  # puts it.
  if ! have_s3s_fs; then
    echo "installing s3s-fs $S3S_FS_VERSION (the S3 server of the tests) with cargo install; this takes a few minutes"
    cargo install --quiet --locked s3s-fs --version "$S3S_FS_VERSION" --features binary
  fi
  if ! have_nextest; then
    echo "installing cargo-nextest $NEXTEST_VERSION (the test runner) with cargo install; this takes a few minutes"
    cargo install --quiet --locked cargo-nextest --version "$NEXTEST_VERSION" \
      --no-default-features --features default-no-update
  fi
fi
