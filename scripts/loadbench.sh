#!/usr/bin/env bash
# loadbench: whole-process ingest throughput of the agentmeter collector next
# to a do-nothing server of the same proto (nullsink), measured in one run on
# this machine, so that the ratio means something despite run-to-run noise.
#
# For each batch size it starts a fresh nullsink, loads it, stops it, then
# starts a fresh collector, waits ~2 s idle (idle RSS), loads it (CPU per event
# from /proc/PID/stat, peak RSS from VmHWM), stops it. Servers are restarted
# per batch size so the peak RSS belongs to that batch size.
#
# Environment:
#   LOADBENCH_DURATION      load per server and batch size (default 10s)
#   LOADBENCH_BATCHES       batch sizes (default "1 100 1000")
#   LOADBENCH_SUBJECT       collector (default), or nullsink to check the
#                           harness against itself (ratio ~1 within noise)
#   LOADBENCH_LOADGEN_ARGS  extra loadgen flags, e.g. "--window 8"
#   LOADBENCH_READY_SECONDS readiness deadline per server start (default 20)
#   LOADBENCH_STORAGE       1 (default): also load the collector with
#                           storage.directory set (durable mode, fsync per
#                           group commit) and report its rate beside memory
#                           mode's; 0: memory mode only
#   LOADBENCH_REPEAT        runs per batch size (default 1): each run loads
#                           every server once, in the same order, and gets a
#                           row; past 1, a last row per batch size gives the
#                           median of each column over the runs (the ratios'
#                           medians are of each run's ratio, taken in the same
#                           minute) and the highest peak RSS
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${LOADBENCH_DURATION:-10s}
batches=${LOADBENCH_BATCHES:-"1 100 1000"}
subject=${LOADBENCH_SUBJECT:-collector}
ready_seconds=${LOADBENCH_READY_SECONDS:-20}
with_storage=${LOADBENCH_STORAGE:-1}
repeat=${LOADBENCH_REPEAT:-1}
[[ $subject == collector ]] || with_storage=0
read -r -a extra_args <<<"${LOADBENCH_LOADGEN_ARGS:-}"
idle_seconds=2
# window: batches one loadgen stream keeps in flight, as deep as the
# receiver pipelines a stream (streamPipeline in receiver/receiver.go);
# LOADBENCH_LOADGEN_ARGS="--window N" overrides it (the last flag wins).
window=32
other_max=5 # % of the machine used by other processes above which a row is flagged

case "$subject" in
collector) subject_label=agentmeter ;;
nullsink) subject_label="nullsink (A/A)" ;;
*) echo "loadbench: LOADBENCH_SUBJECT must be collector or nullsink, not $subject" >&2; exit 2 ;;
esac
if ! [[ $repeat =~ ^[1-9][0-9]{0,2}$ ]]; then
	echo "loadbench: LOADBENCH_REPEAT must be a whole number of runs from 1 to 999, not '$repeat'" >&2
	exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/loadbench.XXXXXX")
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
	echo "loadbench: $*" >&2
	exit 1
}

echo "# loadbench $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "- $(go version)"
echo "- nproc: $(nproc), cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (tree has uncommitted changes)')"
echo "- load: loadgen --mode stream --streams 1 --window $window --duration $duration ${extra_args[*]}"
echo "- runs per batch size: $repeat"
echo

mkdir -p bin
go build -o bin/nullsink ./cmd/nullsink
go build -o bin/loadgen ./cmd/loadgen
if [[ $subject == collector ]]; then
	go build -o bin/collector ./cmd/collector ||
		die "cannot build ./cmd/collector; LOADBENCH_SUBJECT=nullsink checks the harness without it"
fi

clk_tck=$(getconf CLK_TCK)

# free_port [TAKEN]: prints a loopback port that nothing listens on right
# now, other than TAKEN (a port picked for the same server, not bound yet).
# If a process takes it before the server does, the server fails to start
# and wait_ready says so.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		if [[ $p != "${1:-}" ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_ready PID PORT LOG [URL]: until the port accepts connections (and URL
# answers 2xx), failing if the process exits or the deadline passes.
wait_ready() {
	local pid=$1 port=$2 log=$3 url=${4:-}
	local deadline=$((SECONDS + ready_seconds))
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "server (pid $pid) exited before it was ready"; }
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
			{ [[ -z $url ]] || curl -fsS --max-time 1 -o /dev/null "$url" 2>/dev/null; }; then
			return
		fi
		sleep 0.05
	done
	cat "$log" >&2
	die "server (pid $pid) not ready within ${ready_seconds}s"
}

# stop_server PID: SIGTERM, then SIGKILL if it has not exited within 15 s.
stop_server() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 15))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local p rest=()
	for p in "${pids[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
	pids=("${rest[@]}")
}

# cpu_ticks PID: utime+stime in clock ticks (fields 14 and 15 of stat; the
# command name in field 2 may hold spaces, so split after its closing paren).
cpu_ticks() {
	local stat rest f
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

# machine_ticks: "BUSY TOTAL" clock ticks of all CPUs so far, from /proc/stat.
machine_ticks() {
	awk '$1 == "cpu" {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6; exit}' /proc/stat
}

# other_pct BUSY0 TOTAL0 BUSY1 TOTAL1 SERVER_TICKS CLIENT_CPU_SECONDS: the
# share of the machine that processes other than the server and loadgen used.
other_pct() {
	awk -v b="$(($3 - $1))" -v t="$(($4 - $2))" -v s="$5" -v c="$6" -v hz="$clk_tck" \
		'BEGIN { o = (b - s - c * hz) / t * 100; printf "%.0f", (o < 0 ? 0 : o) }'
}

# vm_kib PID FIELD: a Vm* line of /proc/PID/status, in KiB.
vm_kib() {
	awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"
}

# start NAME TAG: starts a server, sets server_pid, server_port and server_log;
# TAG names its files (and its storage directory).
start() {
	local name=$1 tag=$2
	server_port=$(free_port)
	server_log=$tmp/$name-$tag.log
	if [[ $name == collector || $name == collector-storage ]]; then
		local http_port cfg=$tmp/$name-$tag.yaml
		http_port=$(free_port "$server_port")
		cat >"$cfg" <<EOF
receiver:
  grpc:
    endpoint: 127.0.0.1:$server_port
http:
  endpoint: 127.0.0.1:$http_port
exporters:
  otlp:
    enabled: false
EOF
		if [[ $name == collector-storage ]]; then
			printf 'storage:\n  directory: %s\n' "$tmp/state-$tag" >>"$cfg"
		fi
		bin/collector validate --config "$cfg" >/dev/null 2>"$server_log" ||
			{ cat "$server_log" >&2; die "collector rejects the benchmark config $(basename "$cfg")"; }
		bin/collector --config "$cfg" >>"$server_log" 2>&1 &
		server_pid=$!
		pids+=("$server_pid")
		wait_ready "$server_pid" "$server_port" "$server_log" "http://127.0.0.1:$http_port/readyz"
	else
		bin/nullsink --listen "127.0.0.1:$server_port" >"$server_log" 2>&1 &
		server_pid=$!
		pids+=("$server_pid")
		wait_ready "$server_pid" "$server_port" "$server_log"
	fi
}

# json_field FILE KEY: a number from loadgen's one-line JSON result.
json_field() {
	sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1"
}

# load BATCH OUT: runs loadgen against server_port; the JSON result goes to OUT.
load() {
	local batch=$1 out=$2
	if ! bin/loadgen --target "127.0.0.1:$server_port" --mode stream --streams 1 --window "$window" --batch "$batch" \
		--duration "$duration" --progress 0 --json "${extra_args[@]}" >"$out" 2>"$out.err"; then
		cat "$out.err" >&2
		echo "loadbench: loadgen failed (batch $batch, pid $server_pid); log: $(tail -5 "$server_log")" >&2
		return 1
	fi
}

# alive WHEN: fails, with the end of its log, when the server has exited.
alive() {
	kill -0 "$server_pid" 2>/dev/null || { tail -20 "$server_log" >&2; die "server (pid $server_pid) exited $1"; }
}

# measured_load BATCH OUT: load (the JSON result goes to OUT), and set
# load_ticks, the server's CPU ticks over it, and load_other, the share of
# the machine other processes used meanwhile (other_pct).
measured_load() {
	local mb0 mt0 mb1 mt1 t0 t1
	read -r mb0 mt0 < <(machine_ticks)
	t0=$(cpu_ticks "$server_pid")
	load "$1" "$2" || return 1
	alive "during the load"
	t1=$(cpu_ticks "$server_pid")
	read -r mb1 mt1 < <(machine_ticks)
	load_ticks=$((t1 - t0))
	load_other=$(other_pct "$mb0" "$mt0" "$mb1" "$mt1" "$load_ticks" "$(json_field "$2" client_cpu_seconds)")
}

# row LABEL NUMBERS...: a table row of one run's numbers (or their medians):
# nullsink events/s and CPU µs/event, the subject's events/s, ratio, CPU
# µs/event, peak and idle RSS (KiB); with storage also its events/s,
# storage / memory and CPU µs/event.
row() {
	local label=$1
	shift
	awk -v label="$label" 'BEGIN {
		printf "| %s | %.0f | %.2f | %.0f | %.2f | %.2f | %.1f | %.1f |", label, ARGV[1], ARGV[2], ARGV[3],
			ARGV[4], ARGV[5], ARGV[6] / 1024, ARGV[7] / 1024
		if (ARGC > 8) printf " %.0f | %.2f | %.2f |", ARGV[8], ARGV[9], ARGV[10]
		printf "\n"
	}' "$@"
}

# medians FILE: of the runs' numbers (a line each), each column's median; the
# highest of the peak RSS column (the 6th).
medians() {
	awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; nf = NF }
	END {
		for (i = 1; i <= nf; i++) {
			for (r = 1; r <= NR; r++) a[r] = v[i, r]
			for (x = 2; x <= NR; x++) { # insertion sort: a handful of runs
				t = a[x]
				for (y = x - 1; y > 0 && a[y] > t; y--) a[y + 1] = a[y]
				a[y + 1] = t
			}
			if (i == 6) m = a[NR]
			else if (NR % 2) m = a[(NR + 1) / 2]
			else m = (a[NR / 2] + a[NR / 2 + 1]) / 2
			printf "%s%s", (i > 1 ? " " : ""), m
		}
		printf "\n"
	}' "$1"
}

rows=()
notes=()
for batch in $batches; do
	runs=$tmp/runs-$batch
	: >"$runs"
	for ((run = 1; run <= repeat; run++)); do
		tag=$batch-$run
		label=$batch
		if ((repeat > 1)); then
			label="$batch (run $run)"
		fi
		echo "running batch $label ..." >&2

		start nullsink "$tag"
		base_out=$tmp/base-$tag.json
		measured_load "$batch" "$base_out" || die "load against nullsink failed"
		base_ticks=$load_ticks base_other=$load_other
		stop_server "$server_pid"

		start "$subject" "$tag"
		sleep "$idle_seconds" # deliberately idle: the idle RSS is measured after it
		alive "while idle"
		idle_kib=$(vm_kib "$server_pid" VmRSS)
		subj_out=$tmp/subject-$tag.json
		measured_load "$batch" "$subj_out" || die "load against $subject failed"
		ticks=$load_ticks subj_other=$load_other
		hwm_kib=$(vm_kib "$server_pid" VmHWM)
		stop_server "$server_pid"

		rate=$(json_field "$subj_out" events_per_sec)
		events=$(json_field "$subj_out" events)
		numbers=$(awk -v br="$(json_field "$base_out" events_per_sec)" -v bt="$base_ticks" \
			-v be="$(json_field "$base_out" events)" -v r="$rate" -v t="$ticks" -v e="$events" \
			-v hz="$clk_tck" -v hwm="$hwm_kib" -v idle="$idle_kib" \
			'BEGIN { printf "%f %f %f %f %f %d %d", br, bt * 1e6 / hz / be, r, r / br, t * 1e6 / hz / e, hwm, idle }')

		store_other=0
		if ((with_storage)); then
			start collector-storage "$tag"
			store_out=$tmp/storage-$tag.json
			measured_load "$batch" "$store_out" || die "load against the collector with storage failed"
			store_other=$load_other
			stop_server "$server_pid"
			numbers+=" $(awk -v r="$(json_field "$store_out" events_per_sec)" -v m="$rate" \
				-v t="$load_ticks" -v e="$(json_field "$store_out" events)" -v hz="$clk_tck" \
				'BEGIN { printf "%f %f %f", r, r / m, t * 1e6 / hz / e }')"
		fi

		rejected=$(json_field "$subj_out" rejected)
		duplicates=$(json_field "$subj_out" duplicates)
		if ((base_other > other_max || subj_other > other_max || store_other > other_max)); then
			note="batch $label: other processes used ${base_other}% of the machine during the nullsink load and ${subj_other}% during the $subject_label load"
			if ((with_storage)); then
				note+=" and ${store_other}% during the load with storage"
			fi
			notes+=("$note: this row is noisy")
		fi
		if [[ ${rejected:-0} != 0 || ${duplicates:-0} != 0 ]]; then
			notes+=("batch $label: $subject rejected $rejected and called $duplicates duplicates of $events events")
		fi
		echo "$numbers" >>"$runs"
		# shellcheck disable=SC2086 # numbers: one word each
		rows+=("$(row "$label" $numbers)")
	done
	if ((repeat > 1)); then
		# shellcheck disable=SC2046 # the medians: one word each
		rows+=("$(row "$batch, median of $repeat" $(medians "$runs"))")
	fi
done

if ((with_storage)); then
	echo "| batch | nullsink events/s | nullsink CPU µs/event | $subject_label events/s | ratio | $subject_label CPU µs/event | $subject_label peak RSS MiB | $subject_label idle RSS MiB | with storage events/s | storage / memory | with storage CPU µs/event |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
else
	echo "| batch | nullsink events/s | nullsink CPU µs/event | $subject_label events/s | ratio | $subject_label CPU µs/event | $subject_label peak RSS MiB | $subject_label idle RSS MiB |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
fi
printf '%s\n' "${rows[@]}"
echo
echo "ratio = $subject_label events/s / nullsink events/s. CPU: server utime+stime over the load / events"
echo "(tick ${clk_tck} Hz). Peak RSS: VmHWM after the load; idle RSS: VmRSS after ${idle_seconds} s idle, before it."
echo "One loadgen stream (--window $window unless overridden, as deep as the receiver pipelines a stream) shares the $(nproc) cores with the server."
if ((with_storage)); then
	echo "With storage: storage.directory in a temporary directory, storage.sync true; storage / memory = its"
	echo "events/s over the memory-mode collector's, in the same run."
fi
if ((repeat > 1)); then
	echo "Median rows: each column's median over the batch size's $repeat runs (of each run's own ratios), and the highest peak RSS."
fi
for n in "${notes[@]}"; do
	echo "note: $n"
done
