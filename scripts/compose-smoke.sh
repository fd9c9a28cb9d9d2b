#!/usr/bin/env bash
# Compose smoke test: the whole stack from docker-compose.yml, on a real Docker engine.
#
#   make compose-smoke        (or: bash scripts/compose-smoke.sh)
#
# Needs only Docker with Compose v2 (no curl, no Python on the host: HTTP from the
# host goes through bash's /dev/tcp, the JSON work runs in the image's Python).
# It uses a compose project of its own (-p) on free host ports, so it can run
# next to a stack you already have up, and it always ends with `down -v`.
#
# Seven stacks, side by side (SMOKE_PARALLEL), each in a project of its own, each
# ended with `down -v`. On the Redis, RabbitMQ and both production stacks, no
# process of any container has a password in its command line (/proc/*/cmdline).
#
# 1. Celery on Redis (docker-compose.yml): `up -d --build --wait`; the published
#    ports answer (/health, /ready), no experiment-only route is mounted, Redis is
#    not published and refuses a client without its
#    password; both APIs take the chapter's requests (202) and their tasks succeed;
#    Flower lists the Celery task with basic auth and refuses the request without
#    (its /metrics answers without); Beat's task shows up in the ledger; SIGKILL the
#    worker mid-notification, start it again: the task completes (redelivered, the
#    verdict of shared/verdict.py); SIGKILL bg-api mid-notification: its tasks are
#    lost; `up --scale worker=3`: three healthy workers share the queue, Flower
#    lists three, Beat stays one.
# 2. Celery on RabbitMQ (+ docker-compose.rabbitmq.yml): healthy; the management UI
#    answers only with the credentials from the environment (no guest), AMQP is not
#    published; both APIs work; SIGKILL the worker mid-notification, start it again:
#    redelivered, not lost.
# 3. The production override (+ docker-compose.prod.yml): compose refuses to start
#    without REDIS_PASSWORD; healthy, every container restarts unless stopped; the
#    development credentials are refused (Redis, Flower); Redis, bg-api and Flower
#    each refuse to start with the development default (change-me), naming the
#    variable; Redis has a maxmemory and noeviction; no experiment routes; a task runs.
# 3b. Celery on RabbitMQ in production (+ docker-compose.rabbitmq.yml,
#    docker-compose.prod.yml, docker-compose.rabbitmq.prod.yml): compose refuses to
#    start without RABBITMQ_PASSWORD; healthy, restarting unless stopped; RabbitMQ
#    refuses to start with the development default; its UI refuses the development
#    credentials; its memory alarm is the absolute one; a task runs.
# 4. The broker on a Sentinel group (+ docker-compose.ha.yml): healthy; a
#    notification is accepted and running when the primary is SIGKILLed for good;
#    the sentinels promote the replica; a notification accepted after the
#    promotion and the one from before both complete (the worker under its restart
#    policy: it may exit on the failover).
# 5. A partition (+ docker-compose.partition.yml): worker-2 runs a notification
#    when broker-link, its way to Redis, is paused; the other worker gets it past
#    the visibility timeout; one line in log.txt; after the heal worker-2 runs a
#    task again.
# 6. Every further queue (--profile taskiq --profile dramatiq --profile rq): healthy,
#    no secret on a command line; each API's task runs; rq-dashboard answers only
#    with the credentials from the environment; each worker's container SIGKILLed
#    mid-notification and started again: taskiq's and dramatiq's notification
#    completes, RQ's is abandoned (or completed, with Retry).
#
# Settings (environment): SMOKE_BROKERS (the stacks: "redis rabbitmq prod rabbitmq-prod ha
# partition queues", the default, or some of them); SMOKE_PARALLEL (1, the default: the stacks side by
# side; 0: one after the other); SMOKE_PROJECT (default bgcelery-smoke, -rabbitmq for the second); BG_API_PORT,
# CELERY_API_PORT, FLOWER_PORT (default: free ports); SMOKE_DELAY,
# SMOKE_VISIBILITY_TIMEOUT, SMOKE_RESTORE_INTERVAL, SMOKE_BEAT_INTERVAL (the demo
# values, shortened so the run takes about a minute after the build);
# SMOKE_WAIT_TIMEOUT (seconds for `up --wait`, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PROJECT=${SMOKE_PROJECT:-bgcelery-smoke}
PROJECT=$BASE_PROJECT
FILES=(-f docker-compose.yml)
WAIT_TIMEOUT=${SMOKE_WAIT_TIMEOUT:-300}
BROKERS=${SMOKE_BROKERS:-redis rabbitmq prod rabbitmq-prod ha partition queues}

say() { printf '%s\n' "$*"; }
ok() { CHECKS=$((CHECKS + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
CHECKS=0

command -v docker >/dev/null || fail "docker not found"
docker compose version >/dev/null 2>&1 || fail "Docker Compose v2 (docker compose) not found"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset})"

# --- the stacks side by side --------------------------------------------------------
#
# Each stack is a project of its own on ports of its own, and most of a stack's
# time is waiting (healthchecks, a redelivery, a failover): with SMOKE_PARALLEL=1
# (the default) the image is built once (each child's `up --build` then finds
# every layer in the cache), then each stack runs in a child of this script at the
# same time, in a port range of its own; their outputs are printed in
# order, and the run fails if any of them failed.
if [ "${SMOKE_PARALLEL:-1}" = 1 ] && [ "$(wc -w <<<"$BROKERS")" -gt 1 ]; then
  say "== docker compose build (once, for every stack)"
  docker compose -p "$BASE_PROJECT" -f docker-compose.yml build >"${TMPDIR:-/tmp}/$BASE_PROJECT-build.log" 2>&1 \
    || { tail -40 "${TMPDIR:-/tmp}/$BASE_PROJECT-build.log"; fail "docker compose build failed"; }
  STARTED=$(date +%s)
  # At most SMOKE_JOBS stacks at once (3): five on two cores can starve a worker's
  # healthcheck or its redelivery past the smoke's deadlines (seen in CI).
  jobs=${SMOKE_JOBS:-3}
  # The stacks of a wave pick host ports each in a slice of its own of 10000-32767:
  # below the kernel's ephemeral range (no clash with a connection's own port), and
  # never past 65535 however many stacks there are.
  span=$(((32768 - 10000) / jobs))
  pids=() failed=0 i=0
  # Ctrl-C or a TERM: each child gets a TERM, its own trap brings its stack down.
  trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM
  read -r -a all <<<"$BROKERS"
  for ((start = 0; start < ${#all[@]}; start += jobs)); do
    wave=("${all[@]:start:jobs}") logs=() pids=()
    for broker in "${wave[@]}"; do
      logs+=("$(mktemp "${TMPDIR:-/tmp}/smoke-$broker.XXXXXX")")
      SMOKE_PARALLEL=0 SMOKE_BROKERS=$broker SMOKE_PORT_BASE=$((10000 + (i % jobs) * span)) \
        SMOKE_PORT_SPAN=$span bash "$0" >"${logs[-1]}" 2>&1 &
      pids+=($!)
      i=$((i + 1))
    done
    for k in "${!wave[@]}"; do
      rc=0
      wait "${pids[$k]}" || rc=$?
      say "== stack ${wave[$k]} (exit $rc)"
      cat "${logs[$k]}"
      rm -f "${logs[$k]}"
      [ "$rc" = 0 ] || failed=$((failed + 1))
    done
  done
  [ "$failed" = 0 ] || fail "$failed of $i stacks failed"
  say "== PASS: $i stacks, $jobs at a time, in $(($(date +%s) - STARTED))s after the build"
  exit 0
fi

# --- ports ----------------------------------------------------------------------

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {  # a port nothing listens on, and not one already picked
  local p _
  for _ in $(seq 100); do
    p=$((${SMOKE_PORT_BASE:-20000} + RANDOM % ${SMOKE_PORT_SPAN:-7000}))
    case " ${PICKED:-} " in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then PICKED="${PICKED:-} $p"; echo "$p"; return 0; fi
  done
  fail "no free port found"
}

BG_API_PORT=${BG_API_PORT:-$(pick_port)}
PICKED="$BG_API_PORT"
CELERY_API_PORT=${CELERY_API_PORT:-$(pick_port)}
PICKED="$PICKED $CELERY_API_PORT"
FLOWER_PORT=${FLOWER_PORT:-$(pick_port)}
PICKED="$PICKED $FLOWER_PORT"
RABBITMQ_UI_PORT=${RABBITMQ_UI_PORT:-$(pick_port)}
export BG_API_PORT CELERY_API_PORT FLOWER_PORT RABBITMQ_UI_PORT
export PUBLISH_ADDRESS=127.0.0.1

# --- settings for this run --------------------------------------------------------

export NOTIFICATION_DELAY_SECONDS=${SMOKE_DELAY:-5}
export CELERY_VISIBILITY_TIMEOUT=${SMOKE_VISIBILITY_TIMEOUT:-12}
export CELERY_RESTORE_INTERVAL=${SMOKE_RESTORE_INTERVAL:-1}
export BEAT_INTERVAL_SECONDS=${SMOKE_BEAT_INTERVAL:-5}
export NOTIFICATION_FAIL_FIRST_ATTEMPTS=0 CELERY_ACKS_LATE=true
# Credentials of this run only: proves they come from the environment.
export FLOWER_USER=smoke
FLOWER_PASSWORD=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
export FLOWER_PASSWORD
REDIS_PASSWORD=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
export REDIS_PASSWORD
export RABBITMQ_USER=smoke-rabbit
RABBITMQ_PASSWORD=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
export RABBITMQ_PASSWORD

compose() { docker compose -p "$PROJECT" "${FILES[@]}" "$@"; }

# --- teardown, always ---------------------------------------------------------------

STARTED=$(date +%s)
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    say "== FAILED (exit $rc): state and last logs"
    compose ps -a 2>&1 || true
    compose logs --no-color --tail 40 2>&1 || true
  fi
  if [ -n "$PROJECT" ]; then
    say "== docker compose -p $PROJECT down -v"
    compose down -v --remove-orphans >/dev/null 2>&1 || say "!! down -v failed: remove project $PROJECT by hand"
  fi
  if [ "$rc" -eq 0 ]; then
    say "== PASS: $CHECKS checks in $(($(date +%s) - STARTED))s"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ------------------------------------------------------------------------

# GET from the host through a published port; prints the status code (000: no answer).
http_status() {  # port path [base64 credentials]
  local port=$1 path=$2 auth=${3:-} code=000 header=""
  [ -n "$auth" ] && header="Authorization: Basic $auth\r\n"
  if exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n%bConnection: close\r\n\r\n' \
      "$path" "$port" "$header" >&3 2>/dev/null || true
    IFS=' ' read -r -t 10 _ code _ <&3 || code=000
    exec 3<&- 3>&-
  fi
  echo "${code:-000}"
}

# The JSON work, run by the image's Python inside the celery-api container (it is
# never killed here), against the services by their compose names. What became of
# a task is decided by shared/verdict.py, the same rule the crash experiment and the
# lab count with. Every wait has a deadline; a failed expectation exits 1 with the
# evidence.
PROBE=$(
  cat <<'PY'
import json, sys, time, urllib.error, urllib.request
from shared.models import RunnerRecord, TaskRecord
from shared.settings import get_settings
from shared.services import IMPLEMENTATIONS, SERVICES, declared
from shared.redelivery import Redelivery
from shared.verdict import Observation, judge

# Every declared API, by its compose name and its port in the container.
URLS = {i.value: f"http://{s.api}:{SERVICES[s.api].port}" for i, s in IMPLEMENTATIONS.items()}
cmd, args = sys.argv[1], sys.argv[2:]

class Answer:
    """An HTTP answer, from the standard library (the image has no HTTP client library)."""
    def __init__(self, status, body):
        self.status_code, self.text = status, body.decode()
    def json(self):
        return json.loads(self.text)

def http(method, url, body=None, auth=None, timeout=5):
    headers = {"content-type": "application/json"} if body is not None else {}
    if auth:
        import base64
        headers["authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Answer(r.status, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read())

HTTPError = (OSError, ValueError)  # a refused connection, a timeout, a body that is not JSON

def die(msg):
    print(msg)
    sys.exit(1)

def record(side, task_id):
    # The ledger is shared: read it through celery-api, which stays up while bg-api is killed.
    r = http("GET", f"{URLS['celery']}/tasks/{task_id}")
    return r.json() if r.status_code == 200 else None

def poll(what, timeout, fn, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
        except HTTPError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            die(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)

def brief(rec):
    return f"state={rec['state']} attempts={rec['attempts']} runner={rec.get('runner')}"

def verdict(side, task_id):
    """The task's verdict now: its record, the runners' heartbeats, this stack's settings."""
    rec = record(side, task_id)
    if rec is None:
        return None
    runners = http("GET", f"{URLS['celery']}/runners").json()
    settings = get_settings()  # the container's own: the stack's settings
    obs = Observation(
        now=time.time(),
        records=[TaskRecord.model_validate(rec)],
        runners=[RunnerRecord.model_validate(r) for r in runners],
        redelivery=Redelivery.of(settings),
        redeliveries={i: declared(s.redelivery)(settings)
                      for i, s in IMPLEMENTATIONS.items() if s.redelivery},
        stale_after=3 * settings.runner_heartbeat_seconds,
    )
    return judge(obs).tasks[task_id]

if cmd == "post":  # side path [json body] -> task ids, after every one has succeeded
    side, path = args[0], args[1]
    body = json.loads(args[2]) if len(args) > 2 and args[2] else None
    r = http("POST", URLS[side] + path, body, timeout=10)
    if r.status_code != 202:
        die(f"POST {path} -> {r.status_code} {r.text[:300]}")
    done = []
    for task_id in r.json()["task_ids"]:
        rec = poll(f"{task_id} to succeed", float(args[3]) if len(args) > 3 else 60,
                   lambda: (x := record(side, task_id)) and x["state"] == "succeeded" and x)
        done.append(f"{rec['kind']} {task_id}")
    print(f"{r.status_code}; " + ", ".join(done))
elif cmd == "start-notification":  # side -> "notification_id log_id state...", once it runs
    side = args[0]
    r = http("POST", f"{URLS[side]}/send-notification/smoke-{side}@example.com", timeout=10)
    if r.status_code >= 300:
        die(f"POST /send-notification -> {r.status_code} {r.text[:300]}")
    notification, log = r.json()["task_ids"]
    def running():
        x = record(side, notification)
        if x and x["state"] == "succeeded":
            die(f"{notification} finished before it was seen running: raise SMOKE_DELAY")
        return x if x and x["state"] == "running" else None
    rec = poll(f"{notification} to be running", 30, running)
    print(notification, log, brief(rec))
elif cmd == "state":  # side task_id -> one line
    rec = record(args[0], args[1])
    print(brief(rec) if rec else "unknown")
elif cmd == "verdict":  # side task_id timeout verdict[|verdict]: until the task has one
    side, task_id, timeout, wanted = args[0], args[1], float(args[2]), args[3].split("|")
    def reached():
        v = verdict(side, task_id)
        if v is not None and v.verdict.value in ("completed", "failed", "lost", "skipped",
                "abandoned", "dead-lettered") and v.verdict.value not in wanted:
            die(f"{task_id}: {v.verdict.value} ({v.why}), expected {args[3]}")
        return v if v is not None and v.verdict.value in wanted else None
    v = poll(f"{task_id} to be {wanted}", timeout, reached, 0.25)
    rec = record(side, task_id)
    print(f"verdict={v.verdict.value} executions={v.executions} {brief(rec)}"
          + (f" ({v.why})" if v.why else ""))
elif cmd == "new-runner":  # side old_runner -> the new process's runner id
    print(poll("a restarted process on /health", 60, lambda: (
        r := http("GET", URLS[args[0]] + "/health", timeout=2).json()["runner"]) != args[1] and r, 0.25))
elif cmd == "beat":  # timeout -> a succeeded beat task
    rec = poll("a beat task in the ledger", float(args[0]), lambda: next((
        x for x in http("GET", URLS["celery"] + "/tasks?implementation=celery").json()
        if x["kind"] == "beat" and x["state"] == "succeeded"), None), 0.5)
    print(rec["task_id"], brief(rec))
elif cmd == "workers":  # user password count timeout -> Flower lists that many workers
    auth, want = (args[0], args[1]), int(args[2])
    def listed():
        r = http("GET", "http://flower:5555/api/workers?refresh=1", auth=auth, timeout=15)
        names = sorted(r.json()) if r.status_code == 200 else []
        return names if len(names) == want else None
    print(" ".join(poll(f"Flower to list {want} workers", float(args[3]), listed, 1.0)))
elif cmd == "spread":  # n -> the worker containers that ran n log tasks
    ids = []
    for i in range(int(args[0])):
        r = http("POST", URLS["celery"] + "/items/", {"name": f"spread {i}", "price": i})
        if r.status_code != 202:
            die(f"POST /items/ -> {r.status_code} {r.text[:300]}")
        ids += r.json()["task_ids"]
    recs = [poll(f"{t} to succeed", 60,
                 lambda t=t: (x := record("celery", t)) and x["state"] == "succeeded" and x, 0.1)
            for t in ids]
    print(" ".join(sorted({rec["runner"].split(":")[0] for rec in recs})))
elif cmd == "routes":  # side -> the experiment-only paths in the app's OpenAPI (none: "")
    doc = http("GET", URLS[args[0]] + "/openapi.json").json()
    print(" ".join(path for path, ops in doc["paths"].items()
                   if any("experiments" in (op.get("tags") or []) for op in ops.values())))
elif cmd == "flower":  # task_id user password timeout -> the task as Flower shows it
    task_id, auth = args[0], (args[1], args[2])
    def seen():
        r = http("GET", "http://flower:5555/api/tasks", auth=auth)
        return r.json().get(task_id) if r.status_code == 200 else None
    task = poll(f"{task_id} in Flower's /api/tasks", float(args[3]), seen, 0.5)
    print(f"{task['name']}[{task_id}] {task['state']} on {task.get('worker')}")
else:
    die(f"unknown probe command {cmd}")
PY
)
probe() { compose exec -T celery-api python -c "$PROBE" "$@"; }

up_stack() {  # what it is, how many services
  say "== docker compose ${FILES[*]} -p $PROJECT up -d --build --wait"
  t0=$(date +%s)
  if ! compose up -d --build --wait --wait-timeout "$WAIT_TIMEOUT" >"${TMPDIR:-/tmp}/$PROJECT-up.log" 2>&1; then
    tail -40 "${TMPDIR:-/tmp}/$PROJECT-up.log"
    fail "docker compose up --wait did not get every service healthy"
  fi
  UP_SECONDS=$(($(date +%s) - t0))
  healthy=$(compose ps --format '{{.Service}} {{.Status}}' | sort)
  [ "$(printf '%s\n' "$healthy" | grep -c 'Up')" -eq "$2" ] || fail "not $2 services up: $healthy"
  ok "$1: up --build --wait: $2 services up in ${UP_SECONDS}s, build included ($(printf '%s\n' "$healthy" | grep -c healthy) with a healthcheck, all healthy)"
}

no_experiment_routes() {  # the APIs' OpenAPI holds the contract alone
  for side in bg celery; do
    out=$(probe routes "$side") || fail "$side-api: GET /openapi.json: $out"
    [ -z "$out" ] || fail "$side-api: experiment-only routes mounted: $out"
  done
  ok "no experiment-only route on either API (EXPERIMENT_ROUTES off)"
}

# No process of any running container of the project has a secret in its command line
# (what `ps` shows anyone on the host, or in the container).
no_secret_in_argv() {  # the secrets' values
  local cid name out processes=0 containers=0 secret
  for cid in $(compose ps -q); do
    name=$(docker inspect --format '{{index .Config.Labels "com.docker.compose.service"}}' "$cid")
    out=$(docker exec "$cid" sh -c 'for f in /proc/[0-9]*/cmdline; do tr "\0" " " <"$f"; echo; done' 2>/dev/null) \
      || fail "argv: could not read the processes of $name"
    for secret in "$@"; do
      case "$out" in *"$secret"*) fail "argv: a process of $name has a password on its command line" ;; esac
    done
    processes=$((processes + $(grep -c . <<<"$out")))
    containers=$((containers + 1))
  done
  ok "argv: no password in the command line of any of $processes processes in $containers containers"
}

refused_at_start() {  # service variable [VAR=value...]: a one-off container with them exits, naming it
  local service=$1 variable=$2 rc=0
  shift 2
  out=$(env "$@" timeout 120 docker compose -p "$PROJECT" "${FILES[@]}" run --rm --no-deps -T "$service" 2>&1) || rc=$?
  [ "$rc" != 0 ] || fail "$service started with $*"
  case "$out" in *"$variable"*) ;; *) fail "$service refused $* without naming $variable: $(tail -3 <<<"$out")" ;; esac
  line=$(grep -m1 "$variable" <<<"$out")
  ok "$service refuses to start with $* (exit $rc): ${line:0:160}"
}

both_apis() {
  for port in "$BG_API_PORT" "$CELERY_API_PORT"; do
    code=$(http_status "$port" /health)
    [ "$code" = 200 ] || fail "GET http://127.0.0.1:$port/health -> $code"
    code=$(http_status "$port" /ready)
    [ "$code" = 200 ] || fail "GET http://127.0.0.1:$port/ready -> $code"
    ok "GET http://127.0.0.1:$port/health and /ready -> 200 (published port)"
  done
  item='{"name": "노트북", "price": 1500000}'
  for side in bg celery; do
    out=$(probe post "$side" /items/ "$item") || fail "$side POST /items/: $out"
    ok "$side-api: POST /items/ -> $out succeeded"
    out=$(probe post "$side" /send-notification/user@example.com "" 60) || fail "$side POST /send-notification: $out"
    ok "$side-api: POST /send-notification/user@example.com -> $out succeeded"
  done
  celery_notification=$(printf '%s' "$out" | sed -n 's/.*notification \([0-9a-f-]*\).*/\1/p')
  [ -n "$celery_notification" ] || fail "no notification task id in: $out"
}

kill_the_worker() {  # SIGKILL the worker mid-task: redelivered, completes
  out=$(probe start-notification celery) || fail "celery notification did not start: $out"
  read -r task _ before <<<"$out"
  compose kill -s SIGKILL worker >/dev/null 2>&1
  after=$(probe state celery "$task")
  case "$after" in *state=running*) ;; *) fail "worker: the notification was not running at the kill ($after); raise SMOKE_DELAY" ;; esac
  ok "worker: SIGKILL while notification $task ran ($before)"
  t1=$(date +%s)
  compose start worker >/dev/null 2>&1
  deadline=$((CELERY_VISIBILITY_TIMEOUT + CELERY_RESTORE_INTERVAL + NOTIFICATION_DELAY_SECONDS + 90))
  out=$(probe verdict celery "$task" "$deadline" completed) || fail "worker: task not completed after the restart: $out"
  case "$out" in *executions=2\ *) ;; *) fail "worker: completed without a second delivery ($out)" ;; esac
  lines=$(compose exec -T worker grep -c "\[$task\]" /data/log/log.txt || true)
  [ "$lines" = 1 ] || fail "worker: $lines lines for $task in log.txt (expected exactly 1)"
  ok "worker: started again -> redelivered and succeeded $(($(date +%s) - t1))s later ($out), one line in log.txt: NOT LOST"
}

no_password_is_refused() {  # a client without Redis's password gets NOAUTH; with it, PONG
  out=$(compose exec -T redis env -u REDISCLI_AUTH redis-cli ping 2>&1 || true)
  case "$out" in *NOAUTH*) ;; *) fail "redis: a client without the password got '$out', not NOAUTH" ;; esac
  out=$(compose exec -T redis redis-cli ping 2>&1 || true)
  [ "$out" = PONG ] || fail "redis: with the password: '$out'"
  ok "redis: a client without the password is refused (NOAUTH); with REDIS_PASSWORD, PONG"
}

# --- 1. Celery on Redis ----------------------------------------------------------------

redis_stack() {
  PROJECT=$BASE_PROJECT
  FILES=(-f docker-compose.yml)
  say "== compose smoke, Celery on Redis: project $PROJECT; host ports bg-api $BG_API_PORT, celery-api $CELERY_API_PORT, flower $FLOWER_PORT"
  say "== $(docker compose version), engine $(docker version --format '{{.Server.Version}}'), base image ${BASE_IMAGE:-python:3.12-slim}, redis image ${REDIS_IMAGE:-redis:7-alpine}"
  say "== demo values: notification ${NOTIFICATION_DELAY_SECONDS}s, visibility timeout ${CELERY_VISIBILITY_TIMEOUT}s, restore every ${CELERY_RESTORE_INTERVAL}s, beat every ${BEAT_INTERVAL_SECONDS}s"
  up_stack "redis stack" 6
  redis_ports=$(compose port redis 6379 2>/dev/null || true)
  [ -z "$redis_ports" ] || fail "redis is published on the host: $redis_ports"
  ok "redis: not published on the host"
  no_password_is_refused
  both_apis
  no_experiment_routes
  no_secret_in_argv "$REDIS_PASSWORD" "$FLOWER_PASSWORD"
  # One logging setup: bg-api's own INFO lines reach `docker compose logs`, with
  # time, level and logger.
  line=$(compose logs --no-color bg-api | grep -E '[0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} INFO shared\.app: bg API starting' | head -1 || true)
  [ -n "$line" ] || fail "docker compose logs bg-api: no INFO line from the app"
  ok "docker compose logs bg-api: ${line#*| }"

  code=$(http_status "$FLOWER_PORT" /api/tasks)
  [ "$code" = 401 ] || fail "flower: GET /api/tasks without credentials -> $code (expected 401)"
  ok "flower: GET http://127.0.0.1:$FLOWER_PORT/api/tasks without credentials -> 401"
  code=$(http_status "$FLOWER_PORT" /api/tasks "$(printf '%s' "$FLOWER_USER:wrong" | base64)")
  [ "$code" = 401 ] || fail "flower: wrong password -> $code (expected 401)"
  ok "flower: wrong password -> 401"
  auth=$(printf '%s' "$FLOWER_USER:$FLOWER_PASSWORD" | base64)
  code=$(http_status "$FLOWER_PORT" /api/workers "$auth")
  [ "$code" = 200 ] || fail "flower: GET /api/workers with credentials -> $code"
  out=$(probe flower "$celery_notification" "$FLOWER_USER" "$FLOWER_PASSWORD" 30) || fail "flower: $out"
  ok "flower: with basic auth (credentials from the environment): GET /api/workers -> 200; /api/tasks lists $out"
  code=$(http_status "$FLOWER_PORT" /metrics)
  [ "$code" = 200 ] || fail "flower: GET /metrics without credentials -> $code (docs/compose.md says 200)"
  ok "flower: /metrics answers without credentials (Prometheus; documented beside /healthcheck)"

  out=$(probe beat $((BEAT_INTERVAL_SECONDS * 3 + 30))) || fail "beat: $out"
  ok "beat: the periodic log task scheduled by beat, run by the worker, in the ledger: $out"

  kill_the_worker

  # SIGKILL bg-api mid-task: lost.
  out=$(probe start-notification bg) || fail "bg notification did not start: $out"
  read -r task log_task _ <<<"$out"
  old_runner=${out##*runner=}
  compose kill -s SIGKILL bg-api >/dev/null 2>&1
  after=$(probe state bg "$task")
  case "$after" in *state=running*) ;; *) fail "bg-api: the notification was not running at the kill ($after); raise SMOKE_DELAY" ;; esac
  ok "bg-api: SIGKILL while notification $task ran ($after)"
  compose start bg-api >/dev/null 2>&1
  new_runner=$(probe new-runner bg "$old_runner") || fail "bg-api did not come back: $new_runner"
  out=$(probe verdict bg "$task" 30 lost) || fail "bg-api: $out"
  log_verdict=$(probe verdict bg "$log_task" 30 lost) || fail "bg-api: its log task: $log_verdict"
  ok "bg-api: started again (now $new_runner) -> $out; its log task: $log_verdict: LOST"

  # Scale-out: three workers share the queue; Beat stays one.
  compose up -d --no-recreate --scale worker=3 --wait --wait-timeout "$WAIT_TIMEOUT" >/dev/null 2>&1 \
    || fail "docker compose up --scale worker=3 did not get three healthy workers"
  workers=$(compose ps --format '{{.Service}} {{.Status}}' | grep -c '^worker .*(healthy)' || true)
  [ "$workers" = 3 ] || fail "scale: $workers healthy workers, not 3"
  beats=$(compose ps -q beat | wc -l)
  [ "$beats" = 1 ] || fail "scale: $beats beat containers, not 1"
  out=$(probe workers "$FLOWER_USER" "$FLOWER_PASSWORD" 3 60) || fail "scale: Flower: $out"
  ok "scale: up --scale worker=3: three healthy workers, one beat; Flower lists $out"
  out=$(probe spread 40) || fail "scale: $out"
  hosts=$(wc -w <<<"$out")
  [ "$hosts" -ge 2 ] || fail "scale: 40 tasks all ran in one container ($out)"
  ok "scale: 40 tasks from one queue ran in $hosts worker containers ($out)"
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

# --- 2. Celery on RabbitMQ ---------------------------------------------------------------

rabbitmq_stack() {
  PROJECT=$BASE_PROJECT-rabbitmq
  FILES=(-f docker-compose.yml -f docker-compose.rabbitmq.yml)
  say "== compose smoke, Celery on RabbitMQ: project $PROJECT; RabbitMQ image ${RABBITMQ_IMAGE:-rabbitmq:4-management}, management UI on port $RABBITMQ_UI_PORT"
  up_stack "rabbitmq stack" 7
  amqp_ports=$(compose port rabbitmq 5672 2>/dev/null || true)
  [ -z "$amqp_ports" ] || fail "rabbitmq's AMQP port is published on the host: $amqp_ports"
  ok "rabbitmq: AMQP not published on the host"
  code=$(http_status "$RABBITMQ_UI_PORT" /api/overview)
  [ "$code" = 401 ] || fail "rabbitmq UI: without credentials -> $code (expected 401)"
  code=$(http_status "$RABBITMQ_UI_PORT" /api/overview "$(printf '%s' "guest:guest" | base64)")
  [ "$code" = 401 ] || fail "rabbitmq UI: guest:guest -> $code (expected 401: no guest account)"
  code=$(http_status "$RABBITMQ_UI_PORT" /api/overview "$(printf '%s' "$RABBITMQ_USER:$RABBITMQ_PASSWORD" | base64)")
  [ "$code" = 200 ] || fail "rabbitmq UI: with the credentials from the environment -> $code"
  ok "rabbitmq UI on 127.0.0.1:$RABBITMQ_UI_PORT: 401 without credentials and for guest, 200 with the environment's"
  both_apis
  out=$(probe workers "$FLOWER_USER" "$FLOWER_PASSWORD" 1 60) || fail "flower on RabbitMQ: $out"
  ok "flower on RabbitMQ: lists $out"
  no_secret_in_argv "$RABBITMQ_PASSWORD" "$REDIS_PASSWORD" "$FLOWER_PASSWORD"
  kill_the_worker
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

# --- 3. The production override ------------------------------------------------------------

prod_stack() {
  PROJECT=$BASE_PROJECT-prod
  FILES=(-f docker-compose.yml -f docker-compose.prod.yml)
  say "== compose smoke, the production override: project $PROJECT"
  # Its secrets are required: without them compose refuses to start anything.
  if out=$(env -u REDIS_PASSWORD docker compose -p "$PROJECT" "${FILES[@]}" config -q 2>&1); then
    fail "prod: docker compose config without REDIS_PASSWORD succeeded"
  fi
  case "$out" in *"REDIS_PASSWORD must be set"*) ;; *) fail "prod: without REDIS_PASSWORD: $out" ;; esac
  ok "prod: without REDIS_PASSWORD compose refuses to start: ${out##*: }"
  up_stack "prod stack" 6
  restarts=$(compose ps -q | xargs docker inspect --format '{{.HostConfig.RestartPolicy.Name}}' | sort -u)
  [ "$restarts" = unless-stopped ] || fail "prod: restart policies: $restarts"
  ok "prod: every container restarts unless stopped"
  no_password_is_refused
  out=$(compose exec -T redis env REDISCLI_AUTH=change-me redis-cli ping 2>&1 || true)
  case "$out" in *WRONGPASS*|*invalid*) ;; *) fail "prod: redis took the development password: '$out'" ;; esac
  code=$(http_status "$FLOWER_PORT" /api/workers "$(printf '%s' "admin:change-me" | base64)")
  [ "$code" = 401 ] || fail "prod: flower took the development credentials -> $code"
  ok "prod: the development defaults are refused (redis: WRONGPASS; flower admin:change-me: 401)"
  # ENVIRONMENT=production: each refuses to start with the development default.
  refused_at_start redis REDIS_PASSWORD REDIS_PASSWORD=change-me
  refused_at_start bg-api REDIS_URL REDIS_PASSWORD=change-me
  refused_at_start flower FLOWER_BASIC_AUTH FLOWER_PASSWORD=change-me
  no_secret_in_argv "$REDIS_PASSWORD" "$FLOWER_PASSWORD"
  maxmemory=$(compose exec -T redis redis-cli config get maxmemory | sed -n 2p | tr -d '\r')
  policy=$(compose exec -T redis redis-cli config get maxmemory-policy | sed -n 2p | tr -d '\r')
  if [ "${maxmemory:-0}" -le 0 ] || [ "$policy" != noeviction ]; then
    fail "prod: redis maxmemory '$maxmemory', policy '$policy' (expected > 0, noeviction)"
  fi
  ok "prod: redis maxmemory $maxmemory bytes, policy $policy"
  no_experiment_routes
  out=$(probe post celery /items/ '{"name": "prod", "price": 1}') || fail "prod: $out"
  ok "prod: celery-api: POST /items/ -> $out succeeded"
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

# --- 3b. Celery on RabbitMQ, in production ----------------------------------------------

rabbitmq_prod_stack() {
  PROJECT=$BASE_PROJECT-rabbitmq-prod
  FILES=(-f docker-compose.yml -f docker-compose.rabbitmq.yml -f docker-compose.prod.yml -f docker-compose.rabbitmq.prod.yml)
  say "== compose smoke, Celery on RabbitMQ in production: project $PROJECT"
  if out=$(env -u RABBITMQ_PASSWORD docker compose -p "$PROJECT" "${FILES[@]}" config -q 2>&1); then
    fail "rabbitmq-prod: docker compose config without RABBITMQ_PASSWORD succeeded"
  fi
  case "$out" in *"RABBITMQ_PASSWORD must be set"*) ;; *) fail "rabbitmq-prod: without RABBITMQ_PASSWORD: $out" ;; esac
  ok "rabbitmq-prod: without RABBITMQ_PASSWORD compose refuses to start: ${out##*: }"
  up_stack "rabbitmq-prod stack" 7
  restarts=$(compose ps -q | xargs docker inspect --format '{{.HostConfig.RestartPolicy.Name}}' | sort -u)
  [ "$restarts" = unless-stopped ] || fail "rabbitmq-prod: restart policies: $restarts"
  ok "rabbitmq-prod: every container restarts unless stopped"
  code=$(http_status "$RABBITMQ_UI_PORT" /api/overview "$(printf '%s' "celery:change-me" | base64)")
  [ "$code" = 401 ] || fail "rabbitmq-prod: the UI took the development credentials -> $code"
  code=$(http_status "$RABBITMQ_UI_PORT" /api/overview "$(printf '%s' "$RABBITMQ_USER:$RABBITMQ_PASSWORD" | base64)")
  [ "$code" = 200 ] || fail "rabbitmq-prod: the UI with the environment's credentials -> $code"
  ok "rabbitmq-prod: the UI refuses celery:change-me (401), takes the environment's (200)"
  refused_at_start rabbitmq RABBITMQ_PASSWORD RABBITMQ_PASSWORD=change-me
  no_secret_in_argv "$RABBITMQ_PASSWORD" "$REDIS_PASSWORD" "$FLOWER_PASSWORD"
  line=$(compose logs --no-color rabbitmq | grep -m1 'Memory high watermark set to' || true)
  case "$line" in *"512 MiB"*) ;; *) fail "rabbitmq-prod: the memory alarm is not the absolute 512 MiB: '$line'" ;; esac
  ok "rabbitmq-prod: ${line##*] }"
  out=$(probe post celery /items/ '{"name": "rabbitmq-prod", "price": 1}') || fail "rabbitmq-prod: $out"
  ok "rabbitmq-prod: celery-api: POST /items/ -> $out succeeded"
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

# --- 4. The broker's machine lost: a Sentinel group ---------------------------------------

ha_stack() {
  PROJECT=$BASE_PROJECT-ha
  FILES=(-f docker-compose.yml -f docker-compose.ha.yml)
  say "== compose smoke, Celery on a Redis Sentinel group: project $PROJECT"
  up_stack "ha stack" 11
  for s in broker-primary broker-replica sentinel-1; do
    [ -z "$(compose port "$s" 6379 2>/dev/null || true)$(compose port "$s" 26379 2>/dev/null || true)" ] \
      || fail "ha: $s is published on the host"
  done
  out=$(compose exec -T sentinel-1 env -u REDISCLI_AUTH redis-cli -p 26379 sentinel masters 2>&1 || true)
  case "$out" in *NOAUTH*) ;; *) fail "ha: a sentinel answered a client without the password: '$out'" ;; esac
  ok "ha: nothing published on the host; a sentinel refuses a client without the password (NOAUTH)"
  primary=$(compose exec -T sentinel-1 redis-cli -p 26379 sentinel get-master-addr-by-name broker | sed -n 1p | tr -d '\r')
  out=$(probe start-notification celery) || fail "ha: notification did not start: $out"
  read -r before _ <<<"$out"
  compose kill -s SIGKILL broker-primary >/dev/null 2>&1
  t1=$(date +%s)
  ok "ha: notification $before accepted and running; SIGKILL broker-primary ($primary), for good"
  promoted=""
  for _ in $(seq 60); do  # 60 tries, a second apart (each an exec: a little more than 60 s)
    promoted=$(compose exec -T sentinel-1 redis-cli -p 26379 sentinel get-master-addr-by-name broker | sed -n 1p | tr -d '\r')
    [ -n "$promoted" ] && [ "$promoted" != "$primary" ] && break
    sleep 1  # the sentinels decide in seconds (down-after-milliseconds 2000)
  done
  if [ -z "$promoted" ] || [ "$promoted" = "$primary" ]; then
    fail "ha: the sentinels promoted nobody in 60s (primary still $promoted)"
  fi
  ok "ha: the sentinels promoted $promoted $(($(date +%s) - t1))s after the kill"
  for attempt in $(seq 15); do  # the API may answer 503 for a moment after the promotion
    if out=$(probe post celery /send-notification/after-failover@example.com "" 90); then break; fi
    [ "$attempt" = 15 ] && fail "ha: after the failover: $out"
    sleep 2
  done
  ok "ha: a notification accepted after the failover -> $out succeeded $(($(date +%s) - t1))s after the kill"
  deadline=$((CELERY_VISIBILITY_TIMEOUT + CELERY_RESTORE_INTERVAL + NOTIFICATION_DELAY_SECONDS + 90))
  out=$(probe verdict celery "$before" "$deadline" completed) || fail "ha: the notification from before the kill: $out"
  ok "ha: the notification accepted before the kill completed ($out)"
  restarts=$(docker inspect --format '{{.RestartCount}}' "$(compose ps -q worker)")
  ok "ha: the worker's restart policy started it again $restarts time(s) (a worker may exit on the failover: docs/brokers.md)"
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

# --- 5. A partition: worker-2 cut off Redis --------------------------------------------------

partition_stack() {
  PROJECT=$BASE_PROJECT-partition
  FILES=(-f docker-compose.yml -f docker-compose.partition.yml)
  say "== compose smoke, a partition (docker compose pause broker-link): project $PROJECT"
  up_stack "partition stack" 8
  compose stop worker >/dev/null 2>&1  # worker-2 takes the notification
  out=$(probe start-notification celery) || fail "partition: notification did not start: $out"
  read -r task _ <<<"$out"
  cut=$(compose ps -q worker-2 | cut -c1-12)
  case "$out" in *"runner=$cut"*) ;; *) fail "partition: the notification is not on worker-2 ($cut): $out" ;; esac
  compose pause broker-link >/dev/null 2>&1
  t1=$(date +%s)
  ok "partition: notification $task running on worker-2; broker-link paused (its connections open, nothing crosses)"
  compose start worker >/dev/null 2>&1
  deadline=$((CELERY_VISIBILITY_TIMEOUT + CELERY_RESTORE_INTERVAL + NOTIFICATION_DELAY_SECONDS + 90))
  out=$(probe verdict celery "$task" "$deadline" completed) || fail "partition: $out"
  case "$out" in *executions=2\ *) ;; *) fail "partition: completed without a second delivery ($out)" ;; esac
  case "$out" in *"runner=$cut"*) fail "partition: the cut worker's run is the last ($out)" ;; esac
  ok "partition: redelivered to the other worker past the visibility timeout, $(($(date +%s) - t1))s into the cut ($out)"
  lines=$(compose exec -T worker grep -c "\[$task\]" /data/log/log.txt || true)
  [ "$lines" = 1 ] || fail "partition: $lines lines for $task in log.txt (expected exactly 1)"
  ok "partition: it ran twice and log.txt has one line for it"
  compose unpause broker-link >/dev/null 2>&1
  compose stop worker >/dev/null 2>&1
  out=$(probe post celery /items/ '{"name": "after the heal", "price": 1}' 60) || fail "partition: after the heal: $out"
  ok "partition: healed; worker-2 alone runs a task again -> $out"
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

# --- 6. The further queues (--profile taskiq --profile dramatiq --profile rq) -------

queues_stack() {
  PROJECT="${BASE_PROJECT}-queues"
  FILES=(-f docker-compose.yml)
  export COMPOSE_PROFILES=taskiq,dramatiq,rq
  TASKIQ_API_PORT=$(pick_port) DRAMATIQ_API_PORT=$(pick_port) RQ_API_PORT=$(pick_port)
  RQ_DASHBOARD_PORT=$(pick_port)
  export TASKIQ_API_PORT DRAMATIQ_API_PORT RQ_API_PORT RQ_DASHBOARD_PORT RQ_DASHBOARD_USERNAME=smoke
  RQ_DASHBOARD_PASSWORD=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
  export RQ_DASHBOARD_PASSWORD
  say "== compose smoke, every queue: project $PROJECT, profiles $COMPOSE_PROFILES"
  up_stack "queues stack" 15
  no_secret_in_argv "$REDIS_PASSWORD" "$FLOWER_PASSWORD" "$RQ_DASHBOARD_PASSWORD"
  for impl in taskiq dramatiq rq; do
    out=$(probe post "$impl" /items/ '{"name": "queues", "price": 1}' 90) || fail "$impl-api: $out"
    ok "$impl-api: POST /items/ -> $out"
  done
  code=$(http_status "$RQ_DASHBOARD_PORT" /)
  [ "$code" = 401 ] || fail "rq-dashboard: GET / without credentials -> $code (expected 401)"
  code=$(http_status "$RQ_DASHBOARD_PORT" / "$(printf '%s' "$RQ_DASHBOARD_USERNAME:$RQ_DASHBOARD_PASSWORD" | base64)")
  [ "$code" = 200 ] || fail "rq-dashboard: GET / with credentials -> $code (expected 200)"
  ok "rq-dashboard: 401 without credentials, 200 with those from the environment"
  # Each worker's container SIGKILLed mid-notification (its every process: RQ's work
  # horse too), then started again: what the demo settings make of it.
  declare -A task=()
  for impl in taskiq dramatiq rq; do
    out=$(probe start-notification "$impl") || fail "$impl notification did not start: $out"
    read -r task[$impl] _ <<<"$out"
  done
  compose kill -s SIGKILL taskiq-worker dramatiq-worker rq-worker >/dev/null 2>&1
  t1=$(date +%s)
  compose start taskiq-worker dramatiq-worker rq-worker >/dev/null 2>&1
  ok "the taskiq, dramatiq and rq workers SIGKILLed mid-notification, started again"
  for impl in taskiq dramatiq rq; do
    wanted=completed
    [ "$impl" = rq ] && wanted="completed|abandoned"  # abandoned, or run again with Retry
    out=$(probe verdict "$impl" "${task[$impl]}" 120 "$wanted") || fail "$impl-worker: $out"
    ok "$impl-worker: $(($(date +%s) - t1))s after the restart: $out"
  done
  say "== docker compose -p $PROJECT down -v"
  compose down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed for $PROJECT"
}

for broker in $BROKERS; do
  case "$broker" in
    queues) queues_stack ;;
    partition) partition_stack ;;
    redis) redis_stack ;;
    rabbitmq) rabbitmq_stack ;;
    prod) prod_stack ;;
    rabbitmq-prod) rabbitmq_prod_stack ;;
    ha) ha_stack ;;
    *) fail "unknown stack in SMOKE_BROKERS: $broker" ;;
  esac
done
PROJECT=""
