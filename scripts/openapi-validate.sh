#!/usr/bin/env bash
# Validates the OpenAPI document the api serves at /v1/openapi.json with
# openapi-spec-validator (pinned in .ci/tools.sh): the OpenAPI 3.1 schema plus the rules
# a schema cannot state (unique operation ids, resolvable references, declared path
# parameters). Prints every invalid point and exits non-zero when there is one.
#
# It fetches the document from a running stack (scripts/lib/api-stack.sh: a fresh
# database on the PostgreSQL at DATABASE_URL), so what is checked is what clients get.
#
#   scripts/openapi-validate.sh
#
# Needs python3 (venv). The validator is installed once under ~/.cache/beacon-ci, as
# .ci/run's other check tools; .ci/run passes its path in OPENAPI_SPEC_VALIDATOR.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${OPENAPI_SPEC_VALIDATOR:-}" ]; then
  # shellcheck source=.ci/tools.sh
  source .ci/tools.sh
  install_openapi_spec_validator
fi

# shellcheck source=scripts/lib/api-stack.sh
source scripts/lib/api-stack.sh
api_stack_start
api=$(api_stack_field api_url)

doc="$API_STACK_DIR/openapi.json"
python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=30).read())' \
  "$api/v1/openapi.json" "$doc"
echo "GET $api/v1/openapi.json: $(wc -c <"$doc") bytes"
"$OPENAPI_SPEC_VALIDATOR" --schema 3.1 --validation-errors all "$doc"
