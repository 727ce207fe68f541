# Sourced by scripts/run and scripts/test: reach Postgres at DATABASE_URL or, when none
# answers, start a throwaway local cluster under .pg/ with this machine's PostgreSQL
# binaries. Exports DATABASE_URL pointing at database "$1" (created if missing).

mercato_postgres() {
  local database="$1"
  local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$database}"
  local server="${url%/*}"
  local bin
  bin="$(pg_config --bindir 2>/dev/null || true)"
  [[ -x "$bin/initdb" ]] || bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"

  if ! pg_isready -q -d "$server/postgres" 2>/dev/null; then
    if [[ -n "${DATABASE_URL:-}" ]]; then
      echo "postgres: nothing answers at DATABASE_URL ($server); starting a local cluster instead" >&2
    fi
    [[ -x "$bin/initdb" ]] || { echo "postgres: no server answers and no PostgreSQL binaries (initdb, pg_ctl) were found; install PostgreSQL or set DATABASE_URL" >&2; return 1; }
    local data="$root/.pg/data" port="${MERCATO_PG_PORT:-54329}"
    local run_as=()
    if [[ "$(id -u)" == 0 ]]; then
      # PostgreSQL refuses to run as root.
      id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
      run_as=(runuser -u postgres --)
    fi
    mkdir -p "$root/.pg" && chmod 755 "$root/.pg"
    [[ "$(id -u)" == 0 ]] && chown postgres "$root/.pg"
    if [[ ! -f "$data/PG_VERSION" ]]; then
      "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! "${run_as[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$root/.pg/server.log" -w \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
    fi
    server="postgres://postgres@127.0.0.1:$port"
    echo "postgres: local cluster running at $server (data in .pg/, log in .pg/server.log)" >&2
  fi

  if [[ "$(psql "$server/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]]; then
    psql "$server/postgres" -qc "CREATE DATABASE \"$database\"" >/dev/null
  fi
  export DATABASE_URL="$server/$database"
}
