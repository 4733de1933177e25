# Sourced by the scripts that need a running API (schemathesis.sh, openapi-validate.sh,
# openapi-client.sh): starts the whole stack in one process, the test-only `api-stack`
# binary of the beacon-e2e crate (a fresh database on the PostgreSQL at DATABASE_URL,
# seeded through the real ingest path), waits until it has printed its JSON line, and
# stops it, which drops its database, when the script exits.
#
#   source scripts/lib/api-stack.sh
#   api_stack_start                  # builds, starts, waits; stops on EXIT
#   api=$(api_stack_field api_url)   # a field of the JSON line (see tests/bin/api_stack.rs)
#
# A script with an EXIT trap of its own calls api_stack_stop from it.

API_STACK_WAIT_SECONDS=${API_STACK_WAIT_SECONDS:-300}

api_stack_start() {
    local bin
    # Cargo says where it put the binary (CARGO_TARGET_DIR, build.target-dir, …).
    bin=$(cargo build --quiet --locked -p beacon-e2e --bin api-stack \
        --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "api-stack":
        print(m["executable"])')
    [ -x "$bin" ] || { echo "cargo build made no api-stack executable" >&2; return 1; }

    API_STACK_DIR=$(mktemp -d)
    mkfifo "$API_STACK_DIR/stdin"
    "$bin" <"$API_STACK_DIR/stdin" >"$API_STACK_DIR/info.json" 2>"$API_STACK_DIR/stack.log" &
    API_STACK_PID=$!
    exec {API_STACK_FD}>"$API_STACK_DIR/stdin" # the stack runs until this is closed
    # Stop it on exit, unless the script has an EXIT trap of its own that does.
    [ -n "$(trap -p EXIT)" ] || trap api_stack_stop EXIT

    local _
    for _ in $(seq 1 "$API_STACK_WAIT_SECONDS"); do
        [ -s "$API_STACK_DIR/info.json" ] && return 0
        if ! kill -0 "$API_STACK_PID" 2>/dev/null; then
            cat "$API_STACK_DIR/stack.log" >&2
            echo "api-stack failed" >&2
            return 1
        fi
        sleep 1
    done
    tail -n 50 "$API_STACK_DIR/stack.log" >&2
    echo "api-stack did not start within ${API_STACK_WAIT_SECONDS}s" >&2
    return 1
}

# The value of one field of the stack's JSON line.
api_stack_field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "$API_STACK_DIR/info.json" "$1"
}

# Closes the stack's stdin (it stops and drops its database), waits, cleans up. Idempotent.
api_stack_stop() {
    [ -n "${API_STACK_DIR:-}" ] || return 0
    if [ -n "${API_STACK_FD:-}" ]; then
        exec {API_STACK_FD}>&- || true
        API_STACK_FD=
    fi
    wait "$API_STACK_PID" 2>/dev/null || true
    rm -rf "$API_STACK_DIR"
    API_STACK_DIR=
}
