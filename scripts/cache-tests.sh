#!/usr/bin/env bash
# Run the HTTP cache tests behind cache-tests.fyi against egressd and Squid
# (memory cache), both as forward proxies, and write both scores and
# egressd's remaining failures (with their reasons, from
# scripts/cache-tests/reasons.tsv) into docs/cache-conformance.md.
#
#   make cache-tests                   about 2-3 minutes
#   CACHE_TESTS_ID=vary-match make cache-tests   one test, with the requests and
#                                      responses the client saw (no docs written)
#
# What it does, all on loopback:
#   - takes the suite from CACHE_TESTS_DIR, or clones it at the pinned commit
#     into the scratch directory; installs its own dependencies there with
#     `npm install` (undici is the one the client needs);
#   - builds egressd; starts the suite's origin server (node), Squid and
#     egressd, each allowed to reach only that origin;
#   - runs the suite's command-line client against each proxy in turn, with
#     scripts/cache-tests/proxy.mjs preloaded so that every request goes to the
#     proxy as an absolute-URI request;
#   - stops everything it started, by PID, on exit.
#
# Environment:
#   CACHE_TESTS_DIR=DIR       a checkout of github.com/http-tests/cache-tests (default: cloned at
#                             $SUITE_COMMIT into the scratch directory)
#   CACHE_TESTS_PROXIES="..." which proxies (default "egressd squid")
#   CACHE_TESTS_SCRATCH=DIR   scratch directory (default /tmp/egressd-cache-tests); outside the repo
#   CACHE_TESTS_DOCS=DIR      where cache-conformance.md goes (default docs)
#   CACHE_TESTS_ID=ID         run one test and print what the client saw
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SCRATCH=${CACHE_TESTS_SCRATCH:-/tmp/egressd-cache-tests}
SUITE_REPO=https://github.com/http-tests/cache-tests
SUITE_COMMIT=b55b8bda3dbb8c927c04e85bd8d496a8caa3e4ba
SUITE=${CACHE_TESTS_DIR:-$SCRATCH/cache-tests}
PROXIES=${CACHE_TESTS_PROXIES:-egressd squid}
DOCS=${CACHE_TESTS_DOCS:-$ROOT/docs}
TEST_ID=${CACHE_TESTS_ID:-}
export PATH=/usr/local/go/bin:$PATH

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'cache-tests.sh: %s\n' "$*" >&2; exit 1; }

case $SCRATCH in
"$ROOT" | "$ROOT"/*) die "CACHE_TESTS_SCRATCH must be outside the repository" ;;
esac
command -v node >/dev/null || die "node is missing (the suite is Node.js)"
command -v npm >/dev/null || die "npm is missing"
for p in $PROXIES; do
	case $p in
	squid) command -v squid >/dev/null || die "squid is missing (scripts/setup.sh installs it)" ;;
	egressd) ;;
	*) die "unknown proxy $p (want egressd, squid)" ;;
	esac
done

# --- everything this script starts, stopped by PID on exit -----------------
STARTED=()
stop_pid() { # pid
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local pid
	for pid in "${STARTED[@]}"; do
		stop_pid "$pid"
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL [PROXY]: until URL answers (any status), at most 10 s.
wait_http() {
	local i
	for ((i = 0; i < 100; i++)); do
		if curl -s -o /dev/null --max-time 1 ${2:+-x "$2"} "$1"; then
			return 0
		fi
		sleep 0.1
	done
	die "$1 did not answer${2:+ through $2}"
}

mkdir -p "$SCRATCH/bin" "$SCRATCH/results"
rm -f "$SCRATCH"/results/*

# --- the suite ---------------------------------------------------------------
if [[ ! -f $SUITE/tests/index.mjs ]]; then
	[[ -z ${CACHE_TESTS_DIR:-} ]] || die "$SUITE is not a cache-tests checkout"
	log "git clone $SUITE_REPO at $SUITE_COMMIT into $SUITE"
	rm -rf "$SUITE"
	git init -q "$SUITE"
	git -C "$SUITE" fetch -q --depth 1 "$SUITE_REPO" "$SUITE_COMMIT" ||
		die "cannot fetch $SUITE_REPO; set CACHE_TESTS_DIR to a checkout of commit $SUITE_COMMIT"
	git -C "$SUITE" checkout -q FETCH_HEAD
fi
if [[ ! -d $SUITE/node_modules/undici ]]; then
	log "npm install (the suite's own dependencies) in $SUITE"
	(cd "$SUITE" && npm install --no-audit --no-fund --omit=dev --no-save) >"$SCRATCH/npm.log" 2>&1 ||
		die "npm install failed; see $SCRATCH/npm.log"
fi
suite_rev=$(git -C "$SUITE" rev-parse HEAD 2>/dev/null || echo unknown)

# --- build, ports, configs ---------------------------------------------------
log "go build ./cmd/egressd ./cmd/egressbench"
go build -trimpath -o "$SCRATCH/bin/egressd" ./cmd/egressd
go build -trimpath -o "$SCRATCH/bin/egressbench" ./cmd/egressbench
read -r P_ORIGIN P_SQUID P_EGRESSD P_ADMIN < <("$SCRATCH/bin/egressbench" ports -n 4)
ORIGIN=http://127.0.0.1:$P_ORIGIN

CONF=$SCRATCH/conf
rm -rf "$CONF"
mkdir -p "$CONF/squid" "$CONF/egressd"
cat >"$CONF/egressd/egressd.yaml" <<EOF
listen:
  http: "127.0.0.1:$P_EGRESSD"
  socks5: ""
  admin: "127.0.0.1:$P_ADMIN"
policy:
  mode: enforce
  allow_ranges: ["127.0.0.1/32"]
  rules:
    - name: cache-tests-origin
      cidrs: ["127.0.0.1/32"]
      ports: [$P_ORIGIN]
cache:
  http:
    max_bytes: 256MiB
timeouts:
  drain: 1s
  drain_delay: 0s
EOF
# Squid as a forward proxy with its memory cache (Debian's default has no
# cache_dir): allowed to reach only the origin's port.
cat >"$CONF/squid/squid.conf" <<EOF
http_port 127.0.0.1:$P_SQUID
pid_filename $CONF/squid/squid.pid
access_log stdio:$CONF/squid/access.log
cache_log $CONF/squid/cache.log
coredump_dir $CONF/squid
cache_mem 256 MB
maximum_object_size_in_memory 8 MB
pinger_enable off
visible_hostname cache-tests
shutdown_lifetime 1 seconds
acl origin_port port $P_ORIGIN
acl origin_ip dst 127.0.0.1/32
acl clients src 127.0.0.0/8
http_access deny !origin_port
http_access allow clients origin_ip
http_access deny all
EOF
touch "$CONF/squid/access.log" "$CONF/squid/cache.log"
chown -R proxy:proxy "$CONF/squid" 2>/dev/null || true

# --- run ---------------------------------------------------------------------
(cd "$SUITE" && npm_config_port=$P_ORIGIN npm_config_protocol=http npm_config_pidfile=$SCRATCH/origin.pid \
	exec node test-engine/server/server.mjs) >"$SCRATCH/origin.log" 2>&1 &
STARTED+=($!)
wait_http "$ORIGIN/"

run_client() { # label proxy-url
	log "cache tests through $1 ($2)"
	(cd "$SUITE" && CACHE_TESTS_PROXY=$2 npm_config_base=$ORIGIN npm_package_config_id=$TEST_ID \
		exec node --no-warnings --import "$ROOT/scripts/cache-tests/proxy.mjs" test-engine/cli.mjs) \
		>"$SCRATCH/results/$1.json" 2>"$SCRATCH/results/$1.err"
}

META=$SCRATCH/results/meta.txt
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "suite:    $SUITE_REPO at $suite_rev"
	echo "node:     $(node --version)"
	echo "egressd:  $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown), cache.http.max_bytes 256MiB"
} >"$META"
ARGS=()
for p in $PROXIES; do
	case $p in
	egressd)
		"$SCRATCH/bin/egressd" serve --config "$CONF/egressd/egressd.yaml" \
			>"$SCRATCH/results/egressd-access.log" 2>"$SCRATCH/results/egressd-diag.log" &
		pid=$!
		STARTED+=("$pid")
		wait_http "http://127.0.0.1:$P_ADMIN/readyz"
		run_client egressd "http://127.0.0.1:$P_EGRESSD"
		stop_pid "$pid"
		;;
	squid)
		squid -N -f "$CONF/squid/squid.conf" >"$SCRATCH/results/squid-stdout.log" 2>&1 &
		pid=$!
		STARTED+=("$pid")
		wait_http "$ORIGIN/" "http://127.0.0.1:$P_SQUID"
		run_client squid "http://127.0.0.1:$P_SQUID"
		stop_pid "$pid"
		echo "squid:    $(squid -v | head -1), cache_mem 256 MB, maximum_object_size_in_memory 8 MB" >>"$META"
		;;
	esac
	ARGS+=("$p=$SCRATCH/results/$p.json")
done

if [[ -n $TEST_ID ]]; then
	for p in $PROXIES; do
		printf '\n==== %s\n' "$p"
		cat "$SCRATCH/results/$p.json"
	done
	exit 0
fi
log "writing $DOCS/cache-conformance.md"
status=0
node "$ROOT/scripts/cache-tests/report.mjs" "$SUITE" "$ROOT/scripts/cache-tests/reasons.tsv" "$META" "${ARGS[@]}" \
	>"$SCRATCH/results/cache-conformance.md" || status=$?
cp "$SCRATCH/results/cache-conformance.md" "$DOCS/cache-conformance.md"
exit $status
