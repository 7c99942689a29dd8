#!/usr/bin/env bash
# FOR DEVELOPMENT ONLY: a local issuer's key pair for the auth walk-through.
#   examples/auth/make-keys.sh [DIR]      # default DIR: examples/auth/keys
# writes DIR/dev-issuer.pem (the private key, mode 0600: keep it) and DIR/jwks.json (the public key the
# gateway verifies with). Run it again to rotate: the running gateway picks up the new jwks.json by itself.
set -euo pipefail
dir=${1:-examples/auth/keys}
xds-control dev-token --keys "$dir" --init --audience unused >/dev/null
echo "keys in $dir: mint a token with" >&2
echo "  xds-control dev-token -c examples/auth/gateway.yaml --keys $dir --sub alice --groups ops --scope mcp" >&2
