#!/usr/bin/env bash
# User-space instructions per delivery of one hub node, counted by callgrind
# over a window of steady fan-out only (connects, seeding and shutdown are
# not counted): callgrind starts with instrumentation off, is switched on for
# WINDOW seconds once events flow, and the node's own counter
# hawker_hub_events_out_total gives the deliveries of that window.
#
#   loadtest/callgrind-window.sh BIN [VIEWERS] [RATE] [WINDOW] [CONFIG_DIR]
#
# BIN is a release `hawker`; the load tool is target/release/hawker-loadtest
# (or $LOADTEST). Prints "Ir per delivery". Needs valgrind.
# FANOUT_ARGS adds arguments to the load tool (many small rooms:
# FANOUT_ARGS="--rooms 100 --chat-rate 500"); the window opens once the node
# has written 2 × VIEWERS × RATE frames (or $START_AFTER).
set -euo pipefail
bin=${1:?hawker binary}
viewers=${2:-200}
rate=${3:-10}
window=${4:-10}
config=${5:-config}
loadtest=${LOADTEST:-target/release/hawker-loadtest}
admin=http://127.0.0.1:29080/metrics
out=$(mktemp -d)
wrapper=$out/hawker
cat > "$wrapper" <<WRAP
#!/usr/bin/env bash
if [ "\$1" = serve ]; then
  exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/callgrind.out.%p "$bin" "\$@"
fi
exec "$bin" "\$@"
WRAP
chmod +x "$wrapper"
ulimit -n 20000
"$loadtest" fanout --spawn 1 --hawker-bin "$wrapper" --config-dir "$config" --scenario callgrind-window \
  --viewers "$viewers" --host-rate "$rate" ${FANOUT_ARGS:-} --duration $((window + 10)) --settle-secs 2 > "$out/run.txt" 2>&1 &
run=$!
delivered() { curl -s "$admin" | awk '$1 == "hawker_hub_events_out_total" { print $2 }'; }
published() { curl -s "$admin" | awk '$1 == "hawker_hub_publications_total" { print $2 }'; }
# Wait for the node, then for events to flow.
for _ in $(seq 1 600); do
  n=$(delivered || true)
  if [ -n "$n" ] && [ "${n%.*}" -gt "${START_AFTER:-$((viewers * rate * 2))}" ]; then break; fi
  sleep 0.2
done
pid=$(pgrep -f "callgrind.*$bin serve" | head -1)
callgrind_control -i on "$pid" > /dev/null 2>&1
a=$(delivered)
pa=$(published); pa=${pa:-0}
sleep "$window"
callgrind_control -i off "$pid" > /dev/null 2>&1
b=$(delivered)
pb=$(published); pb=${pb:-0}
wait "$run" || true
file=$(ls "$out"/callgrind.out.* | head -1)
ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
grep -E "^(deliveries|host lane)" "$out/run.txt" || true
echo "window: $((${b%.*} - ${a%.*})) deliveries, $ir instructions"
echo "Ir per delivery: $(( ir / (${b%.*} - ${a%.*}) ))"
if [ "${pb%.*}" -gt "${pa%.*}" ]; then
  echo "publications: $((${pb%.*} - ${pa%.*})); Ir per publication: $(( ir / (${pb%.*} - ${pa%.*}) ))"
fi
echo "callgrind file: $file"
