#!/usr/bin/env bash
# Makes sure the PostgreSQL that the tests and the demo use is ready: a
# server on 127.0.0.1:5432 that trusts loopback TCP connections, with a
# database "test". Used by `make test`, `make demo` and .ci/run.
#
# Every step is idempotent and runs on every call, whoever started the
# server: install Debian's package if there is no PostgreSQL at all; make
# the loopback trust rule the first host rule of the cluster's pg_hba.conf
# (and reload a running cluster when that changed it); start the cluster if
# it is stopped; create the database if it is missing. When all is well it
# changes nothing and takes a fraction of a second.
#
# Local development and CI only: it makes loopback connections
# passwordless. Changes to the system need root (or sudo).
set -euo pipefail

host=127.0.0.1
port=5432
database=test
hba_rule="host all all $host/32 trust"

log() { echo "ensure-postgres: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# as_root runs a command that changes the system: as is when we are root,
# else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root or sudo to run: $*"
  fi
}

# listening: something accepts TCP connections on the port (no client tools
# needed).
listening() { timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }

# ready: the server accepts connections.
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

# cluster prints "VERSION NAME STATUS LOGFILE" of the Debian cluster
# configured for the port, or nothing.
cluster() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  pg_lsclusters --no-header 2>/dev/null | awk -v p="$port" '$3 == p { print $1, $2, $4, $7; exit }'
}

psql_admin() { psql -X -w -q -h "$host" -p "$port" -U postgres -d postgres "$@"; }

# 1. Software. A server that something else runs (no Debian cluster, but a
# listener on the port) only needs the client tools.
have_clients() { command -v pg_isready && command -v psql; } >/dev/null 2>&1
packages=
if [ -z "$(cluster)" ] && ! listening; then
  packages=postgresql
elif ! have_clients; then
  packages=postgresql-client
fi
if [ -n "$packages" ]; then
  log "installing $packages with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$packages" >/dev/null
fi

read -r version name status logfile <<<"$(cluster)" || true
if [ -n "${version:-}" ]; then
  conf=/etc/postgresql/$version/$name
  hba=$conf/pg_hba.conf

  # 2. Authentication. pg_hba.conf is read top down and the first rule
  # matching a connection wins, so the trust rule must come before every
  # other host rule. The file is only re-read on reload.
  first_host_rule=$(as_root awk '$1 ~ /^host/ { print $1, $2, $3, $4, $5; exit }' "$hba")
  if [ "$first_host_rule" != "$hba_rule" ]; then
    log "adding '$hba_rule' at the top of $hba"
    new=$(mktemp)
    trap 'rm -f "$new"' EXIT
    {
      echo "# Added by ratls scripts/ensure-postgres.sh: passwordless loopback TCP, for local development and CI only."
      echo "$hba_rule"
      as_root cat "$hba"
    } >"$new"
    # cp into the existing file keeps its owner and mode.
    as_root cp "$new" "$hba"
    if [[ $status == online* ]]; then
      log "reloading PostgreSQL $version/$name"
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
    fi
  fi

  # 3. The server.
  if [[ $status != online* ]]; then
    log "starting PostgreSQL $version/$name"
    if [ -d /run/systemd/system ]; then
      started() { as_root systemctl start "postgresql@$version-$name"; }
    else
      started() { as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start; }
    fi
    if ! started; then
      [ -r "$logfile" ] && tail -n 20 "$logfile" >&2
      die "PostgreSQL $version/$name did not start"
    fi
  fi
elif ! listening; then
  die "no PostgreSQL cluster is configured for port $port (pg_lsclusters), and nothing listens on $host:$port"
else
  log "PostgreSQL on $host:$port is not a Debian cluster: leaving its configuration alone"
fi

for _ in $(seq 1 30); do
  ready && break
  sleep 1
done
ready || die "PostgreSQL did not become ready on $host:$port"

# 4. The database.
if ! exists=$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'"); then
  die "cannot connect to $host:$port as postgres without a password: pg_hba.conf must trust host connections from $host"
fi
if [ "$exists" != 1 ]; then
  log "creating database $database"
  # Another run may create it at the same moment: only its absence is an
  # error.
  psql_admin -c "CREATE DATABASE $database" 2>/dev/null ||
    [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" = 1 ] ||
    die "could not create database $database"
fi
