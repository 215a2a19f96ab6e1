#!/usr/bin/env bash
# User-space instructions per purchase request of one node, counted by
# callgrind over the measured phase of a stampede only (seeding, the sell-out
# and shutdown are not counted): callgrind starts with instrumentation off, is
# switched on when the tool prints "measuring" and off when it checks the
# invariants; the node's own hawker_http_requests_total (orders route) gives
# the requests of that window over HTTP; over a socket (TRANSPORT socket),
# where the node counts no commands, the tool's count of measured attempts
# does. The node runs ~50× slower under valgrind, so
# the rate is low; BUYERS (default 20000) sets how often tokens repeat.
#
#   loadtest/callgrind-stampede.sh HAWKER LOADTEST MODE TRANSPORT OUT_DIR
#   BUYERS=1000 loadtest/callgrind-stampede.sh target/release/hawker target/release/hawker-loadtest soldout http /tmp/cg
#
# Prints "per request"; the callgrind file is in OUT_DIR (callgrind_annotate --inclusive=yes).
set -uo pipefail
bin=$1; loadtest=$2; mode=$3; transport=$4; out=$5
admin=http://127.0.0.1:29180/metrics
mkdir -p "$out"
wrapper=$out/hawker
cat > "$wrapper" <<WRAP
#!/usr/bin/env bash
if [ "\$1" = serve ]; then
  exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/callgrind.out.%p "$bin" "\$@"
fi
exec "$bin" "\$@"
WRAP
chmod +x "$wrapper"
requests() { curl -s "$admin" | awk '/^hawker_http_requests_total/ && /orders/ {s+=$2} END{print s+0}'; }
"$loadtest" stampede --spawn --hawker-bin "$wrapper" --mode "$mode" --transport "$transport" --connections 16 \
  --duration 15 --baseline-secs 0 --timeout-ms 60000 --sellout-buyers 1200 --buyers "${BUYERS:-20000}" \
  --out-dir "$out" --scenario callgrind-stampede > "$out/run.txt" 2>&1 &
run=$!
for _ in $(seq 1 1200); do grep -q "^measuring" "$out/run.txt" && break; sleep 0.1; done
pid=$(pgrep -f "callgrind.*serve" | head -1)
callgrind_control -i on "$pid" > /dev/null 2>&1
r1=$(requests)
for _ in $(seq 1 1200); do grep -q "checking the invariants" "$out/run.txt" && break; sleep 0.1; done
callgrind_control -i off "$pid" > /dev/null 2>&1
r2=$(requests)
wait "$run"
if [ "$transport" = socket ]; then
  r1=0
  r2=$(awk '/^measured/ { print $2; exit }' "$out/run.txt")
fi
file=$(ls "$out"/callgrind.out.* | head -1)
ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
grep -E "^(measured|invariants)" "$out/run.txt"
echo "window: $((r2 - r1)) purchase requests, $ir instructions"
echo "per request: $(( ir / (r2 - r1) ))"
echo "callgrind file: $file"
