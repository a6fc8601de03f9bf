#!/usr/bin/env bash
# GPU check: does the main job put a training job on the GPU, and does the
# dashboard see it?
#
#   scripts/gpu_check.sh [--example NNN] [--watch SECONDS] [--keep] [--dry-run-cpu]
#
# On a machine with an NVIDIA GPU it
#   1. starts a local Ray head of its own (token authentication on, dashboard
#      on 127.0.0.1, its own ports and temp dir, so it leaves any other Ray
#      instance on the machine alone), with the machine's GPUs;
#   2. submits the main job with `ray job submit` on a copy of the examples in
#      which only MVE NNN (default 001) is scalable; its ScalerAgent trains the
#      plan for real, asking Ray Train for the plan's GPUs (1 for 001);
#   3. reads GPU utilisation and GPU memory from the dashboard's API
#      (/nodes?view=summary) every 2 s while it trains, for --watch seconds
#      (default 180), and prints what it saw;
#   4. stops the job and the head, and removes the copy (--keep keeps it).
#
# Exit 0 when some GPU was seen busy (utilisation > 0 or a process on it), 1 when
# none was, 2 on bad usage or a machine without a GPU. --dry-run-cpu runs every
# step without a GPU (head with 0 GPUs, a CPU rehearsal) to check the script
# itself: exit 0 when the job ran and the dashboard answered. Needs the project
# installed (.venv/bin/python, or set PYTHON).
set -euo pipefail

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

EXAMPLE=001
WATCH_S=180
KEEP=0
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --example) EXAMPLE="${2:?--example needs an MVE number}"; shift 2 ;;
    --watch) WATCH_S="${2:?--watch needs seconds}"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dry-run-cpu) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "gpu_check: unknown argument: $1" >&2; usage 2 ;;
  esac
done
case "$EXAMPLE" in [0-9][0-9][0-9]) ;; *) echo "gpu_check: --example must be a three-digit MVE number, got '$EXAMPLE'" >&2; exit 2 ;; esac
case "$WATCH_S" in ''|*[!0-9]*) echo "gpu_check: --watch must be a whole number of seconds, got '$WATCH_S'" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
  echo "gpu_check: no Python at $PYTHON; install the project (README Quickstart) or set PYTHON" >&2
  exit 2
fi
RAY="$(dirname "$PYTHON")/ray"

# -- is there a GPU? ---------------------------------------------------------
if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check: dry run on CPU: no GPU is looked for or used"
  NUM_GPUS=0
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no GPU here: nvidia-smi is not installed (this check needs an NVIDIA GPU and its driver)" >&2
  exit 2
else
  if ! GPU_LIST="$(nvidia-smi -L 2>&1)" || ! grep -q '^GPU ' <<<"$GPU_LIST"; then
    echo "gpu_check: no GPU here: nvidia-smi -L says: ${GPU_LIST:-nothing}" >&2
    exit 2
  fi
  NUM_GPUS="$(grep -c '^GPU ' <<<"$GPU_LIST")"
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: nvidia-smi sees $NUM_GPUS GPU(s) but torch.cuda.is_available() is False: install a CUDA build of torch" >&2
    exit 2
  fi
  echo "gpu_check: $NUM_GPUS GPU(s):"
  echo "$GPU_LIST" | sed 's/^/  /'
fi

# -- a head of our own ----------------------------------------------------------
WORK="$(mktemp -d /tmp/gpucheck.XXXXXX)"   # short: Ray's socket paths live under it
HEAD_PID=""
JOB_ID=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$JOB_ID" ] && [ -n "$HEAD_PID" ] && kill -0 "$HEAD_PID" 2>/dev/null; then
    "$RAY" job stop --address "$DASH" "$JOB_ID" >/dev/null 2>&1
  fi
  if [ -n "$HEAD_PID" ] && kill -0 "$HEAD_PID" 2>/dev/null; then
    kill -TERM "$HEAD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$HEAD_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  # Whatever is left of our own process group, and only that (we started it with setsid).
  if [ -n "$HEAD_PID" ]; then kill -KILL -- "-$HEAD_PID" 2>/dev/null; fi
  if [ "$KEEP" = 1 ]; then
    echo "gpu_check: kept $WORK (head log: $WORK/head.log)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
GCS_PORT="$(free_port)"; DASH_PORT="$(free_port)"; METRICS_PORT="$(free_port)"; CLIENT_PORT="$(free_port)"
AGENT_PORT="$(free_port)"; AGENT_GRPC_PORT="$(free_port)"; RUNTIME_ENV_PORT="$(free_port)"
DASH="http://127.0.0.1:$DASH_PORT"

"$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/auth_token"
chmod 600 "$WORK/auth_token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WORK/auth_token"
unset RAY_AUTH_TOKEN RAY_ADDRESS

# The examples, with only MVE $EXAMPLE left to scale.
mkdir -p "$WORK/examples"
cp -r examples/experiments examples/code "$WORK/examples/"
if ! ls -d "$WORK/examples/experiments/${EXAMPLE}_"* >/dev/null 2>&1; then
  echo "gpu_check: no MVE $EXAMPLE in examples/experiments" >&2
  exit 2
fi
for d in "$WORK/examples/experiments/"[0-9][0-9][0-9]_*; do
  case "$(basename "$d")" in "${EXAMPLE}_"*) ;; *) rm -rf "$d" ;; esac
done

echo "gpu_check: starting a Ray head (dashboard $DASH, metrics on port $METRICS_PORT, temp dir $WORK/ray)"
(
  export PATH="$(dirname "$PYTHON"):$PATH" RAY_ADDRESS="127.0.0.1:$GCS_PORT" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
  export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 AUTOSCALER_METRIC_PORT="$(free_port)" DASHBOARD_METRIC_PORT="$(free_port)"
  exec setsid "$RAY" start --head --block --port "$GCS_PORT" --node-ip-address 127.0.0.1 \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT" --metrics-export-port "$METRICS_PORT" \
    --ray-client-server-port "$CLIENT_PORT" --dashboard-agent-listen-port "$AGENT_PORT" \
    --dashboard-agent-grpc-port "$AGENT_GRPC_PORT" --runtime-env-agent-port "$RUNTIME_ENV_PORT" \
    --num-gpus "$NUM_GPUS" --temp-dir "$WORK/ray" --disable-usage-stats
) >"$WORK/head.log" 2>&1 &
HEAD_PID=$!

TOKEN="$(cat "$WORK/auth_token")"
api() {  # GET a dashboard path with the token; prints the body
  curl -fsS -H "Authorization: Bearer $TOKEN" "$DASH$1"
}
for _ in $(seq 120); do
  if ! kill -0 "$HEAD_PID" 2>/dev/null; then
    echo "gpu_check: the Ray head exited while starting:" >&2; tail -20 "$WORK/head.log" >&2; exit 1
  fi
  api /api/version >/dev/null 2>&1 && break
  sleep 1
done
api /api/version >/dev/null || { echo "gpu_check: the dashboard did not come up; see $WORK/head.log" >&2; KEEP=1; exit 1; }

# -- the main job ---------------------------------------------------------------
SUBMIT_OUT="$("$RAY" job submit --address "$DASH" --no-wait --working-dir . -- \
  python -m actors.main --scalers 1 --once --no-autoresearch \
  --experiments "$WORK/examples/experiments" --code "$WORK/examples/code" --state "$WORK/state.parquet" 2>&1)"
JOB_ID="$(grep -o "raysubmit_[A-Za-z0-9]*" <<<"$SUBMIT_OUT" | head -1 || true)"
if [ -z "$JOB_ID" ]; then
  echo "gpu_check: ray job submit failed:" >&2; echo "$SUBMIT_OUT" >&2; exit 1
fi
echo "gpu_check: submitted $JOB_ID; watching the GPUs for up to ${WATCH_S}s (Ctrl-C stops)"

# -- watch the GPUs through the dashboard ---------------------------------------------
SHOW_SAMPLE='
import json, sys
for line in sys.stdin:
    s = json.loads(line)
    print("  job %-9s gpu %s %s: %s%% busy, %s/%s MB, %s process(es)" % (
        s["job"], s["gpu"], s["name"], s["util_pct"], s["mem_used_mb"], s["mem_total_mb"], s["processes"]))
'
SAMPLES="$WORK/samples.jsonl"
: >"$SAMPLES"
status=PENDING
deadline=$(( $(date +%s) + WATCH_S ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  status="$(api "/api/jobs/$JOB_ID" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["status"])' || echo UNKNOWN)"
  if api "/nodes?view=summary" >"$WORK/summary.json" 2>/dev/null; then
    "$PYTHON" - "$WORK/summary.json" "$status" >>"$SAMPLES" <<'EOF'
import json, sys, time
summary = json.load(open(sys.argv[1]))["data"]["summary"]
for node in summary:
    for gpu in node.get("gpus") or []:
        print(json.dumps({"t": round(time.time(), 1), "job": sys.argv[2], "node": node.get("ip"),
                          "gpu": gpu.get("index"), "name": gpu.get("name"),
                          "util_pct": gpu.get("utilizationGpu"), "mem_used_mb": gpu.get("memoryUsed"),
                          "mem_total_mb": gpu.get("memoryTotal"),
                          "processes": len(gpu.get("processesPids") or [])}))
EOF
    tail -n "$NUM_GPUS" "$SAMPLES" | "$PYTHON" -c "$SHOW_SAMPLE" || true
  fi
  case "$status" in SUCCEEDED|FAILED|STOPPED) echo "gpu_check: the job ended: $status"; break ;; esac
  sleep 2
done

# -- what it saw -----------------------------------------------------------------------
if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check: dry run: dashboard answered; last job status: $status; GPU samples: $(wc -l <"$SAMPLES")"
  case "$status" in RUNNING|SUCCEEDED) exit 0 ;; *) "$RAY" job logs --address "$DASH" "$JOB_ID" 2>&1 | tail -30 >&2 || true; exit 1 ;; esac
fi
echo "gpu_check: summary"
rc=0
"$PYTHON" - "$SAMPLES" <<'EOF' || rc=$?
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    print("  no GPU samples: the dashboard reported no GPUs on any node")
    sys.exit(1)
by_gpu = {}
for r in rows:
    by_gpu.setdefault((r["node"], r["gpu"], r["name"]), []).append(r)
busy_any = False
for (node, idx, name), rs in sorted(by_gpu.items(), key=lambda kv: str(kv[0])):
    utils = [r["util_pct"] for r in rs if r["util_pct"] is not None]
    mems = [r["mem_used_mb"] for r in rs if r["mem_used_mb"] is not None]
    procs = max(r["processes"] for r in rs)
    busy = (max(utils, default=0) > 0) or procs > 0
    busy_any |= busy
    print(f"  {node} gpu {idx} {name}: {len(rs)} samples, utilisation max {max(utils, default=0)}% "
          f"mean {sum(utils) / max(len(utils), 1):.0f}%, memory max {max(mems, default=0)} MB, "
          f"processes max {procs}: {'BUSY' if busy else 'idle'}")
sys.exit(0 if busy_any else 1)
EOF
if [ "$rc" -ne 0 ]; then
  echo "gpu_check: no GPU was seen busy. Job logs (tail):" >&2
  "$RAY" job logs --address "$DASH" "$JOB_ID" 2>&1 | tail -30 >&2 || true
fi
exit "$rc"
