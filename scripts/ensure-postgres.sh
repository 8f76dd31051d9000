#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432, installing and
# starting Debian's package when it is missing. Idempotent; used by `make
# test`, `make demo` and .ci/run.
set -euo pipefail

host=127.0.0.1
port=5432

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if command -v pg_isready >/dev/null 2>&1 && ready; then
  exit 0
fi

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-postgres: PostgreSQL not installed; installing it with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
conf=/etc/postgresql/$version/main
# Local development and CI only: trust authentication on loopback.
if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
  sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\)\S\+/\1trust/; s/^\(host\s\+all\s\+all\s\+::1\/128\s\+\)\S\+/\1trust/' "$conf/pg_hba.conf"
fi

echo "ensure-postgres: starting PostgreSQL $version" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true

for _ in $(seq 1 30); do
  if ready; then
    psql -h "$host" -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 ||
      psql -h "$host" -p "$port" -U postgres -d postgres -qc 'CREATE DATABASE test'
    exit 0
  fi
  sleep 1
done
echo "ensure-postgres: PostgreSQL did not become ready on $host:$port" >&2
exit 1
