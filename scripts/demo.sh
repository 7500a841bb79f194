#!/usr/bin/env bash
# The README's main job: sets up, builds, starts the server (CUDA backend when
# a usable GPU is present, else CPU) and runs the demo client against it: a
# realistic disaggregated-serving workload (prefill, then batched decode
# steps, one Select message per layer), printing selections, latency and
# where the metrics are. The server is stopped with SIGTERM (drain) at the end.
#   scripts/demo.sh [extra hisa_demo flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build -- hisa_server hisa_demo hisa_cli

port_file=$(mktemp)
log=build/hisa_server.log
build/server/hisa_server --listen=127.0.0.1:0 --port_file="$port_file" \
  --metrics_listen=127.0.0.1:9464 --backend=auto >"$log" 2>&1 &
server_pid=$!
trap 'kill -TERM $server_pid 2>/dev/null; wait $server_pid 2>/dev/null; rm -f "$port_file"' EXIT
for _ in $(seq 100); do
  grep -q '^grpc_port=' "$port_file" 2>/dev/null && break
  kill -0 $server_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/^grpc_port=//p' "$port_file")
echo "== hisa_server pid $server_pid on 127.0.0.1:$port (log: $log), metrics http://127.0.0.1:9464/metrics"
build/client/hisa_demo --target=127.0.0.1:"$port" --keep "$@"
echo "== server info (hisa_cli info):"
build/client/hisa_cli info --target=127.0.0.1:"$port" --all_requests | head -20
echo "== a few metrics:"
curl -s http://127.0.0.1:9464/metrics | grep -E '^hisa_(selected_rows_total|cache_used_bytes|cache_budget_bytes|live_requests|rpc_duration_seconds_count)' | head -12 || true
