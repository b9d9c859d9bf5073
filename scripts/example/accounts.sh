#!/usr/bin/env bash
# The example's accounts (scripts/run.sh runs this; so does the README quick-start test), each
# added only when missing:
# - alice, a child sending with the token alice-token, may owe us 1000.00 USD;
# - carol, a child paid at the connector: STREAM payments to her address are answered here and
#   credited to her (SPSP at http://127.0.0.1:7770/carol);
# - bob, a peer at http://127.0.0.1:3999/ilp (nothing listens there until you start a peer),
#   settled on the worker's example-claims ledger, with the route test.bob.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ilp=scripts/ilp

if ! "$ilp" accounts show alice >/dev/null 2>&1; then
    "$ilp" accounts add alice --asset-code USD --asset-scale 2 --relation child \
        --incoming-token alice-token --credit-limit 100000 >/dev/null
    echo "accounts.sh: added account alice (incoming token: alice-token)"
fi
if ! "$ilp" accounts show carol >/dev/null 2>&1; then
    "$ilp" accounts add carol --asset-code USD --asset-scale 2 --relation child \
        --stream-receiver true >/dev/null
    echo "accounts.sh: added account carol, paid here (SPSP: http://127.0.0.1:7770/carol)"
fi
if ! "$ilp" accounts show bob >/dev/null 2>&1; then
    "$ilp" accounts add bob --asset-code USD --asset-scale 2 --relation peer \
        --incoming-token bob-token --outgoing-url http://127.0.0.1:3999/ilp --outgoing-token bob-secret \
        --settle-threshold 100000 --ledger example-claims >/dev/null
    "$ilp" routes add test.bob bob >/dev/null
    echo "accounts.sh: added account bob, route test.bob -> bob"
fi
