#!/usr/bin/env bash
# Generates a typed TypeScript client from the OpenAPI document the api serves and runs
# an end-to-end test with it (tests/openapi-client/client.test.ts): sign in with the
# password grant, create and list campaigns, read the overview, create, use and revoke
# an API key, and get 401/403/422 answers as problem+json typed as the document says.
#
# The client is openapi-typescript (types from the document) + openapi-fetch (a typed
# fetch wrapper), versions pinned in tests/openapi-client/package-lock.json. It is
# generated into the git-ignored tests/openapi-client/generated/, type-checked by tsc
# (a call or field the document does not declare fails here), then run with node's
# built-in test runner against a fresh stack (scripts/lib/api-stack.sh).
#
#   scripts/openapi-client.sh
#
# Needs Node.js 20 or later with npm (packages come from the npm registry, into
# tests/openapi-client/node_modules/). The last line says PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

harness=tests/openapi-client

finish() {
  local rc=$?
  api_stack_stop 2>/dev/null || true
  if [ "$rc" -eq 0 ]; then
    echo "openapi-client: PASS (a client generated from the served document works as the document says)"
  else
    echo "openapi-client: FAIL (exit $rc; see above)"
  fi
  exit "$rc"
}
trap finish EXIT

command -v node >/dev/null && command -v npm >/dev/null \
  || { echo "error: Node.js 20 or later with npm is required" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "error: Node.js $(node --version) is too old; 20 or later is required" >&2; exit 1; }

# shellcheck source=scripts/lib/api-stack.sh
source scripts/lib/api-stack.sh
api_stack_start # finish (the EXIT trap) stops it
api=$(api_stack_field api_url)

cd "$harness"
npm ci --no-audit --no-fund --loglevel=error
rm -rf generated build
npx --no-install openapi-typescript "$api/v1/openapi.json" --output generated/schema.d.ts
npx --no-install tsc -p .
BEACON_API_URL=$api \
  BEACON_ADMIN_EMAIL=$(api_stack_field admin_email) \
  BEACON_PASSWORD=$(api_stack_field password) \
  BEACON_CURRENCY=$(api_stack_field currency) \
  node --test --test-reporter=spec build/
