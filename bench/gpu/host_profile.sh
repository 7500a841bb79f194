#!/usr/bin/env bash
# Where a server's host time goes: starts hisa_server (--backend=$BACKEND,
# default cuda) on a loopback port, drives it with hisa_loadgen (one
# stream; decode messages of one row, then prefill messages of
# PROFILE_ROWS rows of one request at context PROFILE_CONTEXT, each phase
# PROFILE_SECONDS long), records the server process with perf for the
# whole run, and writes perf's
# flat profile and the callers of its top entries to
# $OUT/host_profile.txt (the loadgen's own report to $OUT/host_profile_lg.log).
#
#   OUT=/tmp/p bench/gpu/host_profile.sh                # GPU machine
#   OUT=/tmp/p BACKEND=cpu bench/gpu/host_profile.sh    # anywhere
#
# Binaries: $HISA_E2E_BIN (default .carry-e2e, filled by
# `bench/gpu_e2e.sh --prepare`, whose hisa_server_syms keeps its symbols
# for perf), or build-e2e's outputs when absent. Needs `perf`.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/host_profile}
BACKEND=${BACKEND:-cuda}
ROWS=${PROFILE_ROWS:-1024}
CONTEXT=${PROFILE_CONTEXT:-4096}
SECONDS_RECORDED=${PROFILE_SECONDS:-8}
mkdir -p "$OUT"
BIN=${HISA_E2E_BIN:-$ROOT/.carry-e2e}
LIBS=""
if [[ -x $BIN/hisa_loadgen ]]; then
  SERVER=$BIN/hisa_server_syms
  [[ -x $SERVER ]] || SERVER=$BIN/hisa_server
  LOADGEN=$BIN/hisa_loadgen
  LIBS=$BIN/lib
  # The build's libstdc++ only where the machine's own is older.
  if ! LD_LIBRARY_PATH=$LIBS "$LOADGEN" --helpshort > /dev/null 2>&1; then
    LIBS=$LIBS:$BIN/lib-stdcxx
  fi
else
  SERVER=$ROOT/build-e2e/server/hisa_server
  LOADGEN=$ROOT/build-e2e/bench/loadgen/hisa_loadgen
fi
export LD_LIBRARY_PATH="${LIBS}${LIBS:+:}${LD_LIBRARY_PATH:-}"
if ! command -v perf > /dev/null; then
  echo "host_profile: perf not found" | tee "$OUT/host_profile.txt"
  exit 1
fi

PORT_FILE=$(mktemp)
"$SERVER" --backend="$BACKEND" --listen=127.0.0.1:0 --metrics_listen= \
  --port_file="$PORT_FILE" > "$OUT/host_profile_server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2> /dev/null; rm -f "$PORT_FILE"' EXIT
for _ in $(seq 1 100); do
  grep -q grpc_port "$PORT_FILE" 2> /dev/null && break
  sleep 0.1
done
PORT=$(sed -n 's/^grpc_port=//p' "$PORT_FILE")
[[ -n $PORT ]] || { echo "host_profile: server did not start"; exit 1; }
# perf records the server for the whole loadgen run: its prefill phase
# (and the keys' appends) dominate the server's work.
perf record -g -p "$SERVER_PID" -o "$OUT/perf.data" > /dev/null 2>&1 &
PERF_PID=$!
sleep 1
"$LOADGEN" --target="127.0.0.1:$PORT" --context="$CONTEXT" \
  --prefill_rows="$ROWS" --decode_rows=1 --rounds=1 --streams=1 \
  --warmup=2 --seconds="$SECONDS_RECORDED" > "$OUT/host_profile_lg.log" 2>&1
kill -INT $PERF_PID
wait $PERF_PID
{
  echo "# hisa_server --backend=$BACKEND, prefill $ROWS rows at L=$CONTEXT:" \
       "perf over the loadgen run (phases of ${SECONDS_RECORDED} s)"
  grep -E "^(decode|prefill) " "$OUT/host_profile_lg.log"
  grep -E "server per message" "$OUT/host_profile_lg.log"
  echo
  echo "## flat (self time)"
  perf report -i "$OUT/perf.data" --no-children --sort dso,symbol -g none \
    2> /dev/null | grep -v "^#" | grep -v "^$" | sed -E "s/ +- +- *$//" | cut -c1-220 | head -45
  echo
  echo "## with callees (children), top 45"
  perf report -i "$OUT/perf.data" --children --sort symbol -g none \
    2> /dev/null | grep -v "^#" | grep -v "^$" | sed -E "s/ +- +- *$//" | cut -c1-220 | head -45
  echo
  echo "## callers of the top self entries"
  perf report -i "$OUT/perf.data" --no-children --sort symbol \
    -g caller,2,callee,function,percent --percent-limit 2 2> /dev/null |
    grep -v "^#" | grep -v "^$" | sed -E "s/ +- +- *$//" | cut -c1-220 | head -150
} > "$OUT/host_profile.txt"
rm -f "$OUT/perf.data"
tail -n +1 "$OUT/host_profile.txt" | head -70
