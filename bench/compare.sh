#!/usr/bin/env bash
# bench/compare.sh: the dialin bridge and a Kamailio reference, side by side,
# in one run, under the same SIPp flow (bench/sipp/info_dtmf.xml: INVITE, 200,
# ACK, 7 digits and # by SIP INFO, BYE) at increasing rates; then `dialin load`
# as the generator against the bridge, if this build has it.
#
# For each server and rate it records completed and failed calls, SIPp's
# retransmissions, the server's CPU per call and SIPp's. A rate is held only
# with every call completed, zero failed and zero retransmissions. It prints a
# table, the highest held rate per server, the CPU per call at the highest
# rate both held, and the ratios dialin/kamailio. Read bench/README.md.
#
# Settings (environment):
#   QUICK=1          a smoke run in about a minute: low rates, few calls
#   RATES            calls/s to try, increasing ("500 1000 2000 ... 6000")
#   STEP_SECONDS     seconds of calls per rate (10); CALLS_PER_STEP overrides
#   USERS            valid conference IDs to spread the calls over (1000)
#   HOLD_MS          how long the caller stays after # before its BYE (0)
#   SERVERS          which servers to measure ("bridge kamailio")
#   STOP_AFTER       stop raising a server's rate after this many unheld rates (1)
#   KAM_CHILDREN     Kamailio UDP worker processes (2)
#   SIPP_EXTRA       more SIPp arguments, e.g. "-lost 2" to inject loss
#   LOAD=0           skip the `dialin load` leg
#   DIALIN           a dialin binary to use instead of building one
#   OUT              where logs and results.tsv go (a new temporary folder)
#   BASE_PORT        first of the loopback ports used (15060)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    RATES=${RATES:-"20 50 100"}
    STEP_SECONDS=${STEP_SECONDS:-2}
    USERS=${USERS:-50}
    SETTLE=${SETTLE:-0.3}
else
    RATES=${RATES:-"500 1000 2000 3000 4000 5000 5500 6000"}
    STEP_SECONDS=${STEP_SECONDS:-10}
    USERS=${USERS:-1000}
    SETTLE=${SETTLE:-1}
fi
CALLS_PER_STEP=${CALLS_PER_STEP:-}
HOLD_MS=${HOLD_MS:-0}
SERVERS=${SERVERS:-"bridge kamailio"}
STOP_AFTER=${STOP_AFTER:-1}
KAM_CHILDREN=${KAM_CHILDREN:-2}
SIPP_EXTRA=${SIPP_EXTRA:-}
LOAD=${LOAD:-1}
BASE_PORT=${BASE_PORT:-15060}
SERVICE=14255550100

BRIDGE_SIP_PORT=$((BASE_PORT + 1))
KAMAILIO_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
SIPP_PORT=$((BASE_PORT + 10))
SIPP_MEDIA_PORT=$((BASE_PORT + 20))
# One even RTP port per bridge call (10,000 here); the bridge refuses calls past --max-calls
# with 503, which SIPp counts as failed: both far above the calls open at once
# at any rate that is held.
RTP_PORTS=20000-39999
MAX_CALLS=10000
# dialin load plays SIPp's flow (INFO keys back to back, no RTP); calls last
# milliseconds, but a slow moment piles them up: room for a few seconds'
# worth, far above its default of 500.
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-8000}

die() {
    echo "compare.sh: $*" >&2
    exit 1
}
note() { echo "== $*"; }

for setting in STEP_SECONDS USERS HOLD_MS STOP_AFTER KAM_CHILDREN BASE_PORT; do
    [[ ${!setting} =~ ^[0-9]+$ ]] || die "$setting='${!setting}' is not a whole number"
done
[[ -z $CALLS_PER_STEP || $CALLS_PER_STEP =~ ^[1-9][0-9]*$ ]] ||
    die "CALLS_PER_STEP='$CALLS_PER_STEP' is not a positive whole number"
for rate in $RATES; do
    [[ $rate =~ ^[1-9][0-9]*$ ]] || die "RATES has '$rate': give whole calls per second, e.g. RATES=\"500 1000\""
done
((USERS >= 1 && USERS <= 100000)) || die "USERS=$USERS: give 1 to 100000"
for server in $SERVERS; do
    [[ $server == bridge || $server == kamailio ]] || die "SERVERS has '$server': use bridge and/or kamailio"
done

command -v sipp >/dev/null || die "sipp is not installed (Debian package sip-tester)"
if [[ " $SERVERS " == *" kamailio "* ]] && ! command -v kamailio >/dev/null; then
    echo "compare.sh: kamailio is not installed (Debian packages kamailio, kamailio-extra-modules): its leg is skipped" >&2
    SERVERS=${SERVERS//kamailio/}
fi

OUT=${OUT:-$(mktemp -d -t dialin-compare.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# SIPp writes its error logs into the working folder.
cd "$OUT"
RESULTS=$OUT/results.tsv

# ---------------------------------------------------------------- cleanup
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: kamailio and dialin stop within a second or two.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
# utime + stime, in clock ticks, of a process and its direct children
# (Kamailio's workers are children of its main process; dialin is one process).
cpu_ticks() {
    local pid=$1 total=0 p ticks
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
        # Fields after the command name, which may hold spaces: 12 and 13
        # there are utime and stime (proc(5) fields 14 and 15).
        ticks=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + ticks))
    done
    echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Runs a command bounded by `timeout`, in the background so that the traps can
# stop it (timeout passes the signal on). Sets RUN_RC and RUN_CPU_S (the CPU
# seconds of the command and what it waited for). Call it directly, never
# inside $(...): the PID list and `times` belong to this shell.
RUN_RC=0
RUN_CPU_S=0
run_timed() {
    local limit=$1 log=$2
    shift 2
    times >"$OUT/.times0"
    timeout -k 5 "$limit" "$@" >"$log" 2>&1 &
    local child=$!
    PIDS+=("$child")
    RUN_RC=0
    wait "$child" || RUN_RC=$?
    unset 'PIDS[-1]'
    times >"$OUT/.times1"
    RUN_CPU_S=$(awk 'FNR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
        if (FILENAME ~ /times0$/) t0 = t; else t1 = t
    } END { printf "%.3f", t1 - t0 }' "$OUT/.times0" "$OUT/.times1")
}

server_port() {
    case $1 in
    bridge) echo "$BRIDGE_SIP_PORT" ;;
    kamailio) echo "$KAMAILIO_PORT" ;;
    esac
}

sipp_args() {
    echo -i 127.0.0.1 -p "$SIPP_PORT" -mp "$SIPP_MEDIA_PORT" -s "$SERVICE" -nostdin -trace_err -buff_size 4194304
}

# One SIPp run of a scenario, one call; fails the script's check when SIPp does.
check() {
    local server=$1 scenario=$2 inf=${3:-}
    local log
    log=$OUT/check-$server-$(basename "$scenario" .xml).log
    local -a extra=()
    [[ -n $inf ]] && extra=(-inf "$inf")
    # shellcheck disable=SC2046
    run_timed 40 "$log" sipp -sf "$scenario" "${extra[@]}" $(sipp_args) \
        -m 1 -timeout 30s -timeout_error "127.0.0.1:$(server_port "$server")"
    if [[ $RUN_RC != 0 ]]; then
        echo "check failed: $server, $(basename "$scenario") (SIPp exit $RUN_RC); see $log and $OUT/*errors.log" >&2
        return 1
    fi
    echo "   $server: $(basename "$scenario") ok"
}

# Waits (bounded) until a server answers OPTIONS.
wait_ready() {
    local server=$1 pid=$2
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || die "$server exited at start; see $OUT/$server.log"
        # shellcheck disable=SC2046
        if (timeout 5 sipp -sf "$ROOT/tests/sipp/options.xml" $(sipp_args) -m 1 \
            -timeout 1s -timeout_error "127.0.0.1:$(server_port "$server")" >/dev/null 2>&1); then
            return 0
        fi
        sleep 0.2
    done
    die "$server does not answer OPTIONS on 127.0.0.1:$(server_port "$server"); see $OUT/$server.log"
}

# ---------------------------------------------------------------- build
if [[ -z ${DIALIN:-} ]]; then
    note "building dialin (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin dialin) || die "cargo build --release failed"
    DIALIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/dialin
fi
[[ -x $DIALIN ]] || die "no dialin binary at $DIALIN: set DIALIN=PATH or CARGO_TARGET_DIR"

# ---------------------------------------------------------------- the IDs
# USERS distinct 7-digit IDs (i * 7919 is distinct modulo 9000000 because 7919
# is a prime that does not divide it), the same for every server:
#   users.csv  for `dialin admin user import`
#   ids.csv    SIPp's injection file, one digit a field
#   kamailio-db/ids   the db_text table the Kamailio script loads into htable `ids`
#   ids.txt    one ID a line (`dialin load --ids`)
note "writing $USERS conference IDs to $OUT"
mkdir -p "$OUT/kamailio-db" "$OUT/kamailio-run"
awk -v n="$USERS" -v out="$OUT" 'BEGIN {
    print "email,conference_id" > (out "/users.csv")
    print "SEQUENTIAL" > (out "/ids.csv")
    print "key_name(string) key_type(int) value_type(int) key_value(string) expires(int)" > (out "/kamailio-db/ids")
    for (i = 0; i < n; i++) {
        id = 1000000 + (i * 7919) % 9000000
        printf "bench%d@example.com,%d\n", i, id > (out "/users.csv")
        print id > (out "/ids.txt")
        digits = ""
        for (d = 1; d <= 7; d++) digits = digits substr(id, d, 1) ";"
        print digits > (out "/ids.csv")
        printf "%d:0:0:1:0\n", id > (out "/kamailio-db/ids")
    }
}'

# ---------------------------------------------------------------- servers
# What a server burns doing nothing (timers, housekeeping), over IDLE_SECONDS:
# at low rates it is a visible part of the CPU per call.
IDLE_SECONDS=${IDLE_SECONDS:-2}
idle_cpu() {
    local server=$1 pid=${SERVER_PID[$1]} before after
    before=$(cpu_ticks "$pid")
    sleep "$IDLE_SECONDS"
    after=$(cpu_ticks "$pid")
    echo "   $server: idle CPU $(((after - before) * TICK_US / 1000 / IDLE_SECONDS)) ms/s"
}
declare -A SERVER_PID
start_bridge() {
    local data=$OUT/bridge-data
    rm -rf "$data"
    "$DIALIN" admin --data "$data" user import "$OUT/users.csv" --no-email >"$OUT/bridge-import.log" 2>&1 ||
        die "importing the users into the bridge failed; see $OUT/bridge-import.log"
    DIALIN_LOG=${DIALIN_LOG:-warn} "$DIALIN" serve --data "$data" --admin "127.0.0.1:$ADMIN_PORT" \
        --sip "127.0.0.1:$BRIDGE_SIP_PORT" --rtp-ports "$RTP_PORTS" --max-calls "$MAX_CALLS" \
        --mute-prompts --guard off --calls-per-source 0 --tcp-per-source 0 >"$OUT/bridge.log" 2>&1 &
    SERVER_PID[bridge]=$!
    PIDS+=("$!")
    wait_ready bridge "${SERVER_PID[bridge]}"
    idle_cpu bridge
}
start_kamailio() {
    kamailio -f "$BENCH/kamailio/bridge.cfg" -DD -E -l "udp:127.0.0.1:$KAMAILIO_PORT" \
        -Y "$OUT/kamailio-run" -m 256 -M 16 \
        -A "IDS_DB_URL=\"text://$OUT/kamailio-db\"" -A "KAM_CHILDREN=$KAM_CHILDREN" \
        >"$OUT/kamailio.log" 2>&1 &
    SERVER_PID[kamailio]=$!
    PIDS+=("$!")
    wait_ready kamailio "${SERVER_PID[kamailio]}"
    idle_cpu kamailio
}

note "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
note "$(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1)"
[[ $SERVERS != *kamailio* ]] || note "$(kamailio -v | head -1)"
CHECK_FAILED=0
for server in $SERVERS; do
    note "starting $server on 127.0.0.1:$(server_port "$server")"
    "start_$server"
    check "$server" "$BENCH/sipp/info_dtmf.xml" "$OUT/ids.csv" || CHECK_FAILED=1
    check "$server" "$BENCH/sipp/check_retry.xml" "$OUT/ids.csv" || CHECK_FAILED=1
    check "$server" "$ROOT/tests/sipp/info_invalid_three.xml" || CHECK_FAILED=1
done
((CHECK_FAILED == 0)) || die "a server does not play the flow; no load was run"

# ---------------------------------------------------------------- SIPp steps
printf 'generator\tserver\trate\tcalls\tcompleted\tfailed\tretrans\tcps\tserver_us_per_call\tgenerator_us_per_call\theld\n' >"$RESULTS"

# One rate against one server: prints the row it appends to results.tsv and
# sets HELD.
HELD=no
sipp_step() {
    local server=$1 rate=$2
    local calls=${CALLS_PER_STEP:-$((rate * STEP_SECONDS))}
    local limit=$((calls / rate + 30))
    local stat=$OUT/stat-$server-$rate.csv log=$OUT/sipp-$server-$rate.log
    local pid=${SERVER_PID[$server]}
    rm -f "$stat"
    local before after
    before=$(cpu_ticks "$pid")
    # -l: open calls at most; -d: the hold after #; -fd 1: a stat line a second.
    # shellcheck disable=SC2046,SC2086
    run_timed "$((limit + 10))" "$log" sipp -sf "$BENCH/sipp/info_dtmf.xml" \
        -inf "$OUT/ids.csv" $(sipp_args) -r "$rate" -m "$calls" -l "$MAX_CALLS" -d "$HOLD_MS" \
        -timeout "${limit}s" -timeout_error -trace_stat -stf "$stat" -fd 1 $SIPP_EXTRA \
        "127.0.0.1:$(server_port "$server")"
    sleep "$SETTLE" # work the server deferred (timers, call records) belongs to this step
    after=$(cpu_ticks "$pid")
    local rc=$RUN_RC sipp_s=$RUN_CPU_S
    # The last line of the stat file holds the cumulative (C) counters.
    local completed=0 failed=$calls retrans=- cps=0
    if [[ -s $stat ]]; then
        read -r completed failed retrans cps < <(awk -F';' '
            NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
            { last = $0 }
            END {
                n = split(last, f, ";")
                print f[col["SuccessfulCall(C)"]] + 0, f[col["FailedCall(C)"]] + 0,
                      f[col["Retransmissions(C)"]] + 0, f[col["CallRate(C)"]] + 0
            }' "$stat")
    fi
    local server_us=- sipp_us=-
    HELD=no
    if ((completed > 0)); then
        server_us=$(((after - before) * TICK_US / completed))
        sipp_us=$(awk -v s="$sipp_s" -v n="$completed" 'BEGIN { printf "%d", s * 1e6 / n }')
    fi
    # SIPp must also have offered the rate: below 90% of it, SIPp itself (or
    # its -l cap on open calls) was the limit. Its rate counts the hold too.
    local expected_cps
    expected_cps=$(awk -v n="$calls" -v r="$rate" -v h="$HOLD_MS" 'BEGIN { printf "%.1f", n / (n / r + h / 1000) }')
    if [[ $rc == 0 && $completed == "$calls" && $failed == 0 && $retrans == 0 ]] &&
        awk -v c="$cps" -v e="$expected_cps" 'BEGIN { exit !(c >= 0.9 * e) }'; then
        HELD=yes
    fi
    printf 'sipp\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\n' "$server" "$rate" "$calls" "$completed" \
        "$failed" "$retrans" "$cps" "$server_us" "$sipp_us" "$HELD" | tee -a "$RESULTS"
}

note "SIPp steps: rates $RATES, ${CALLS_PER_STEP:-$STEP_SECONDS s of} calls each, hold ${HOLD_MS} ms${SIPP_EXTRA:+, SIPp extra: $SIPP_EXTRA}"
printf 'generator\tserver\trate\tcalls\tcompleted\tfailed\tretrans\tcps\tserver_us_per_call\tgenerator_us_per_call\theld\n'
declare -A UNHELD
for server in $SERVERS; do UNHELD[$server]=0; done
# Rates interleave the servers, so both see the same machine at each rate.
for rate in $RATES; do
    for server in $SERVERS; do
        ((UNHELD[$server] < STOP_AFTER)) || continue
        sipp_step "$server" "$rate"
        [[ $HELD == yes ]] || UNHELD[$server]=$((UNHELD[$server] + 1))
    done
done

# ---------------------------------------------------------------- dialin load
# `dialin load` as the generator against the bridge, if this build has it.
load_step() {
    local rate=$1
    local calls=${CALLS_PER_STEP:-$((rate * STEP_SECONDS))}
    local limit=$((calls / rate + 60))
    local json=$OUT/load-bridge-$rate.json log=$OUT/load-bridge-$rate.log
    local pid=${SERVER_PID[bridge]}
    rm -f "$json"
    local before after
    before=$(cpu_ticks "$pid")
    run_timed "$limit" "$log" "$DIALIN" load --target "sip:$SERVICE@127.0.0.1:$BRIDGE_SIP_PORT" \
        --admin "http://127.0.0.1:$ADMIN_PORT" --token "$(cat "$OUT/bridge-data/admin-token")" \
        --rate "$rate" --calls "$calls" --dtmf info --dtmf-duration 0 --dtmf-gap 0 --workers 1 \
        --concurrency "$LOAD_CONCURRENCY" --no-progress --json "$json"
    sleep "$SETTLE"
    after=$(cpu_ticks "$pid")
    local rc=$RUN_RC gen_s=$RUN_CPU_S completed=0 failed=$calls cps=0 retrans=- started=0
    if [[ -s $json ]]; then
        read -r total failed cps retrans started < <(jq -r '[(.calls // 0), (.outcomes.failed // .failed // 0),
            (.calls_per_second // 0), (.retransmissions // "-"), (.started_per_second // 0)] | @tsv' "$json")
        completed=$((total - failed))
    fi
    local server_us=- gen_us=-
    HELD=no
    if ((completed > 0)); then
        server_us=$(((after - before) * TICK_US / completed))
        gen_us=$(awk -v s="$gen_s" -v n="$completed" 'BEGIN { printf "%d", s * 1e6 / n }')
    fi
    # Held as for SIPp: every call, none failed, no retransmission, and
    # calls started at 90% of the rate or more.
    if [[ $rc == 0 && $completed == "$calls" && $failed == 0 && $retrans == 0 ]] &&
        awk -v s="$started" -v r="$rate" 'BEGIN { exit !(s >= 0.9 * r) }'; then
        HELD=yes
    fi
    printf 'load\tbridge\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\n' "$rate" "$calls" "$completed" "$failed" \
        "$retrans" "$cps" "$server_us" "$gen_us" "$HELD" | tee -a "$RESULTS"
}

if [[ $LOAD == 1 && " $SERVERS " == *" bridge "* ]]; then
    if "$DIALIN" load --help >/dev/null 2>&1; then
        note "dialin load steps against the bridge"
        unheld=0
        for rate in $RATES; do
            ((unheld < STOP_AFTER)) || break
            load_step "$rate"
            [[ $HELD == yes ]] || unheld=$((unheld + 1))
        done
    else
        note "dialin load: skipped (this dialin has no \`load\` command)"
    fi
fi

cleanup

# ---------------------------------------------------------------- summary
note "results ($RESULTS)"
column -t -s $'\t' "$RESULTS"
awk -F'\t' '
    NR == 1 { next }
    {
        key = $1 " " $2
        if (!(key in seen)) { seen[key] = 1; order[++n] = key }
        if ($11 == "yes") {
            if ($3 + 0 > best[key] + 0) best[key] = $3
            held[key, $3] = 1; us[key, $3] = $9; gus[key, $3] = $10
        }
    }
    END {
        print ""
        print "highest rate held (all calls completed, 0 failed, 0 retransmissions):"
        for (i = 1; i <= n; i++) {
            k = order[i]
            printf "  %-16s %s\n", k, (k in best) ? best[k] " calls/s" : "none"
        }
        b = "sipp bridge"; r = "sipp kamailio"; l = "load bridge"
        if ((b in best) && (l in best)) {
            c = common_rate(b, l)
            print ""
            printf "generators against the bridge at %d calls/s (the highest rate both held):\n", c
            printf "  SIPp         bridge %6s us, generator %6s us per call\n", us[b, c], gus[b, c]
            printf "  dialin load  bridge %6s us, generator %6s us per call\n", us[l, c], gus[l, c]
            if (gus[b, c] > 0) printf "  generator CPU per call, dialin load/SIPp: %.2f\n", gus[l, c] / gus[b, c]
        }
        if (!(b in best) || !(r in best)) { print ""; print "ratios dialin/kamailio: need a held rate for both servers"; exit }
        # The highest rate both held: CPU per call compared at the same load.
        common = common_rate(b, r)
        print ""
        if (common > 0) {
            printf "CPU per call at %d calls/s (the highest rate both held):\n", common
            printf "  dialin bridge  %6s us   (SIPp %s us)\n", us[b, common], gus[b, common]
            printf "  kamailio       %6s us   (SIPp %s us)\n", us[r, common], gus[r, common]
        }
        print ""
        print "ratios dialin/kamailio, this run:"
        printf "  highest held rate  %.2f\n", best[b] / best[r]
        if (common > 0 && us[r, common] > 0)
            printf "  CPU per call       %.2f  (at %d calls/s)\n", us[b, common] / us[r, common], common
    }
    function common_rate(x, y,    key, kr, c) {
        c = 0
        for (key in held) {
            split(key, kr, SUBSEP)
            if (kr[1] == x && ((y, kr[2]) in held) && kr[2] + 0 > c) c = kr[2] + 0
        }
        return c
    }' "$RESULTS"
echo
note "logs in $OUT"
