#!/usr/bin/env bash
# Installs what sovdb needs to build, run and test: Debian's packages, and one program
# from crates.io that Debian lacks (s3s-fs, see below). Idempotent and quiet: when everything is there it prints nothing and takes well under a
# second. Needs root (or sudo) only when something is missing.
set -euo pipefail

# Build: a C compiler for the bundled SQLite. Tests: a PostgreSQL server for the store
# conformance suite; setpriv (util-linux) to run it as an unprivileged user; sshd, ssh,
# ip and ping for the test hosts (scripts/testhosts), which run an sshd in each network
# namespace. The postgres engine's packages (Patroni, etcd, HAProxy, PgBouncer, pgBackRest):
# the agent installs them on a host at its first cluster (pgBackRest at its first backup
# repository), but the tests start many servers at once and shouldn't each wait for that
# install. Tests: slapd and ldap-utils for the directory logins' tests (a slapd of their own);
# prometheus for the test that scrapes /metrics with a real Prometheus (one of its own);
# rsyslog and rsyslog-gnutls for the syslog forwarding tests (an rsyslogd of their own on a
# loopback port, over TCP and over TLS);
# python3-aiosmtpd for the alert email test (an SMTP server with STARTTLS of its own);
# chromium and chromium-driver for the web console's browser test (headless, via WebDriver),
# with two packages Chromium recommends (packages here come without recommends, and the
# test must not depend on what a machine happens to have): fonts-liberation, so its
# screenshots show text as people see it, and libgl1-mesa-dri.
PACKAGES=(gcc libc6-dev make util-linux postgresql-15 openssh-server openssh-client iproute2 iputils-ping
  patroni python3-psycopg2 python3-etcd etcd-server etcd-client haproxy pgbouncer pgbackrest
  slapd ldap-utils prometheus rsyslog rsyslog-gnutls python3-aiosmtpd chromium chromium-driver fonts-liberation libgl1-mesa-dri)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

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
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]]; then
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

# The S3 tests need an S3 server. Debian has none that fits, so they run s3s-fs, which
# keeps objects as files, built from crates.io (about three minutes, once). The version is
# pinned: newer ones need a newer Rust than rust-toolchain.toml's. The tests look for it in
# PATH, then in cargo's bin directory, which is where this puts it.
S3S_FS_VERSION=0.14.1
if ! command -v s3s-fs >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]]; then
  echo "installing s3s-fs $S3S_FS_VERSION (the S3 server of the tests) with cargo install; this takes a few minutes"
  cargo install --quiet --locked s3s-fs --version "$S3S_FS_VERSION" --features binary
fi
