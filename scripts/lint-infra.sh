#!/usr/bin/env bash
# Lint the infrastructure: template.yaml (cfn-lint, and `sam validate --lint` when the
# SAM CLI is installed) and both state machines (asl-validator from package.json).
# Usage: scripts/lint-infra.sh            (from anywhere; exits non-zero on any finding)
set -euo pipefail
export SAM_CLI_TELEMETRY=0
cd "$(dirname "$0")/.."

cfn_lint=.venv/bin/cfn-lint
[ -x "$cfn_lint" ] || cfn_lint=cfn-lint
echo "== cfn-lint template.yaml"
"$cfn_lint" template.yaml

[ -x node_modules/.bin/asl-validator ] || npm install --no-audit --no-fund --loglevel=error
for definition in statemachines/*.asl.json; do
  echo "== asl-validator $definition"
  npx --no-install asl-validator --json-path "$definition"
done

sam=""
if [ -x .venv-sam/bin/sam ]; then sam=.venv-sam/bin/sam
elif command -v sam >/dev/null 2>&1; then sam=sam
fi
if [ -n "$sam" ]; then
  echo "== sam validate --lint"
  # SAM needs a region to validate; nothing is sent to AWS for --lint.
  AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$sam" validate --lint --template template.yaml
else
  echo "== sam validate skipped (no SAM CLI: python3.12 -m venv .venv-sam && .venv-sam/bin/pip install aws-sam-cli)"
fi
