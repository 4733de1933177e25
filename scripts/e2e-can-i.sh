#!/usr/bin/env bash
# Asks a live cluster `kubectl auth can-i`, impersonating each persona, for every line
# of `cargo xtask access can-i` (stdin), and fails on any answer the access model does
# not expect. Needs a kubeconfig allowed to impersonate (the kind admin in e2e).
#   cargo xtask access can-i | scripts/e2e-can-i.sh
set -euo pipefail
checked=0 wrong=0
while read -r expect verb resource ns user group; do
    case "$expect" in ''|'#'*) continue ;; esac
    base="${resource%%/*}"
    args=("$verb" "$base" -n "$ns" "--as=$user")
    if [ "$base" != "$resource" ]; then args+=("--subresource=${resource#*/}"); fi
    if [ "$group" != "-" ]; then args+=("--as-group=$group"); fi
    # can-i exits 1 for "no"; its stdout is the answer.
    answer="$(kubectl auth can-i "${args[@]}" 2>/dev/null || true)"
    checked=$((checked + 1))
    if [ "$answer" != "$expect" ]; then
        wrong=$((wrong + 1))
        echo "MISMATCH: kubectl auth can-i ${args[*]} -> '${answer}', the model says ${expect}"
    fi
done
echo "kubectl auth can-i: ${checked} questions, ${wrong} answers differ from the access model"
[ "$checked" -gt 0 ] && [ "$wrong" -eq 0 ]
