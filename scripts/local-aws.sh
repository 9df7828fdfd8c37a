#!/usr/bin/env bash
# Local AWS mode: the bot on http://localhost:3978/api/messages with its jobs in DynamoDB and
# its notifications on SQS, both served by moto on 127.0.0.1 over the real AWS wire protocol:
# no AWS account, no Docker. The bot polls the queue in-process, as the SQS function would.
#
#   scripts/local-aws.sh                 # moto on 127.0.0.1:5000 (or a free port), then cargo run
#   scripts/local-aws.sh --release       # arguments go to `cargo run`
#   MOTO_PORT=5055 scripts/local-aws.sh  # pick moto's port
#
# It creates the template's table and queues (scripts/local_resources.py, names prefixed
# "local-"), exports AWS_ENDPOINT_URL, AWS_REGION, test credentials, JOBS_TABLE_NAME,
# DELIVERY_TABLE_NAME and the two NOTIFICATIONS_* queue URLs, and runs the bot. Reminders are kept
# in DynamoDB and fired by the bot's in-process timer onto the SQS queue (REMINDERS_SCHEDULER=local):
# moto stores EventBridge schedules but never fires them. Ctrl-C stops the bot, and moto with it.
# The data lives in moto's memory: it is gone when the script ends.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

HOST=127.0.0.1
PREFIX=local
# The project's own Python environment (as the tests use), made on first use.
PYTHON="${PYTHON:-.tools/moto/bin/python}"

say() { printf '%s\n' "$*" >&2; }

# --- moto -------------------------------------------------------------------------------------

if ! "$PYTHON" -c 'import moto.server, flask, boto3, yaml' 2>/dev/null; then
    say "local-aws: making .tools/moto (a virtual environment with moto's server)"
    [ -x .tools/moto/bin/python ] || python3 -m venv .tools/moto
    .tools/moto/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-moto.txt
    PYTHON=.tools/moto/bin/python
fi

port_is_free() {
    "$PYTHON" - "$HOST" "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

free_port() {
    "$PYTHON" - "$HOST" <<'PY'
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()
PY
}

# (Not $PORT: that one is the bot's own, 3978 unless set.)
if [[ -n "${MOTO_PORT:-}" ]]; then
    port_is_free "$MOTO_PORT" || { say "local-aws: port $MOTO_PORT (MOTO_PORT) is in use"; exit 1; }
elif port_is_free 5000; then
    MOTO_PORT=5000
else
    MOTO_PORT="$(free_port)"
fi
ENDPOINT="http://$HOST:$MOTO_PORT"

MOTO_LOG="$(mktemp "${TMPDIR:-/tmp}/proactive-job-bot-moto.XXXXXX.log")"
# Started in the background of this non-interactive shell, moto ignores the terminal's Ctrl-C;
# the EXIT trap stops it once the bot has ended, however the script ends.
"$PYTHON" -m moto.server -H "$HOST" -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!

stop_moto() {
    if kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
        say "local-aws: moto stopped (its log: $MOTO_LOG)"
    fi
}
trap stop_moto EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ready=""
for _ in $(seq 1 100); do
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
        say "local-aws: moto exited at start:"; cat "$MOTO_LOG" >&2; exit 1
    fi
    if "$PYTHON" -c "import urllib.request as u; u.urlopen('$ENDPOINT/moto-api/data.json', timeout=1)" 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.2
done
[[ -n "$ready" ]] || { say "local-aws: moto did not answer on $ENDPOINT within 20 s (log: $MOTO_LOG)"; exit 1; }

# --- the template's table and queues ------------------------------------------------------------

export AWS_ENDPOINT_URL="$ENDPOINT"
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
unset AWS_SESSION_TOKEN AWS_PROFILE
# No instance metadata to ask on a workstation; skip the SDK's probe.
export AWS_EC2_METADATA_DISABLED=true

RESOURCES="$("$PYTHON" scripts/local_resources.py --endpoint-url "$ENDPOINT" --prefix "$PREFIX" --region "$AWS_REGION")"
read_resource() {
    "$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$RESOURCES" "$1"
}
JOBS_TABLE_NAME="$(read_resource JobsTable)"
DELIVERY_TABLE_NAME="$(read_resource DeliveryTable)"
NOTIFICATIONS_QUEUE_URL="$(read_resource NotificationsQueue)"
NOTIFICATIONS_DEAD_LETTER_QUEUE_URL="$(read_resource NotificationsDeadLetterQueue)"
export JOBS_TABLE_NAME DELIVERY_TABLE_NAME NOTIFICATIONS_QUEUE_URL NOTIFICATIONS_DEAD_LETTER_QUEUE_URL
# moto never fires a schedule: reminders use the in-process timer here.
export REMINDERS_SCHEDULER=local

say ""
say "local-aws: moto on $ENDPOINT (pid $MOTO_PID, log $MOTO_LOG)"
say "  JOBS_TABLE_NAME=$JOBS_TABLE_NAME"
say "  DELIVERY_TABLE_NAME=$DELIVERY_TABLE_NAME"
say "  NOTIFICATIONS_QUEUE_URL=$NOTIFICATIONS_QUEUE_URL"
say "  NOTIFICATIONS_DEAD_LETTER_QUEUE_URL=$NOTIFICATIONS_DEAD_LETTER_QUEUE_URL"
say "  REMINDERS_SCHEDULER=local (in-process timer onto the queue; moto does not fire schedules)"
say "  the bot: http://localhost:${PORT:-3978}/api/messages (Bot Framework Emulator: no app id)"
say "  see the jobs, from another terminal:"
say "    python3 scripts/show_jobs.py --endpoint-url $ENDPOINT --table $JOBS_TABLE_NAME"
say "    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test aws dynamodb scan --endpoint-url $ENDPOINT --region $AWS_REGION --table-name $JOBS_TABLE_NAME"
say ""

# --- the bot ------------------------------------------------------------------------------------

# Not `exec`: the EXIT trap has to outlive the bot to stop moto. Ctrl-C reaches the bot
# directly (it is in the terminal's foreground process group); the script then exits.
cargo run "$@"
