#!/usr/bin/env bash
# Fuzzes the public API with schemathesis against the OpenAPI document it serves,
# with a valid tenant-admin token, and fails on any 5xx or schema violation.
#
# It starts the whole stack in one process (scripts/lib/api-stack.sh: a fresh database
# on the PostgreSQL at DATABASE_URL, seeded through the real ingest path), runs
# schemathesis from a venv, then stops the stack, which drops its database.
#
#   scripts/schemathesis.sh                 # defaults
#   SCHEMATHESIS_MAX_EXAMPLES=100 scripts/schemathesis.sh
#
# Needs python3 (venv). The venv is created on first use in .venv-schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-.venv-schemathesis}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-30}

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

# shellcheck source=scripts/lib/api-stack.sh
source scripts/lib/api-stack.sh
api_stack_start
api=$(api_stack_field api_url)
token=$(api_stack_field admin_token)

# Checks excluded, and why:
# - positive_data_acceptance: some valid-by-schema inputs are refused by rules a
#   schema cannot state, answered 400/409/422 with a documented problem: a date range
#   longer than 731 days, duplicate API-key scopes, control characters in names, an
#   e-mail address that is empty or has no domain, or is already registered, and unknown fields in the token request (an internally
#   tagged enum, for which the generated schema does not say additionalProperties:
#   false). Measured with this check on: only those cases fail (no 5xx).
# - use_after_free: DELETE /v1/api-keys/{id} revokes; the key stays readable (with
#   revoked_at) on purpose, so the audit trail keeps it.
"$VENV/bin/schemathesis" run "$api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks positive_data_acceptance,use_after_free \
  --max-examples "$MAX_EXAMPLES" \
  --seed 1 \
  --workers 2 \
  --request-timeout 10 \
  --warnings off
