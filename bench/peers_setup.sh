#!/usr/bin/env bash
# Installs the peers that bench/peers.py compares a11i against, OUTSIDE the project's venv:
# LiteLLM's proxy in a venv of its own and Portkey's gateway as an npm package, both under
# ${A11I_CACHE:-$HOME/.cache/a11i}/peers/. Idempotent: a pinned version already there is kept.
# Prints what it pinned. Never run by `make test`.
set -euo pipefail

# 1.102.4: its dependencies resolve from the package index reachable here; 1.104.9 and later
# (1.109.1 included, whose price list the built-in rate card cites) require certifi>=2026.10.19,
# which that index does not have yet.
LITELLM_VERSION="${LITELLM_VERSION:-1.102.4}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
PEERS="${A11I_CACHE:-$HOME/.cache/a11i}/peers"
PYTHON="${PEERS_PYTHON:-python3.11}"

mkdir -p "$PEERS"

# LiteLLM proxy: its own venv (its dependency pins would fight the project's). matplotlib (the
# chart) and py-spy (the profile of a11i) come along; the project's venv stays as it is.
if [ ! -x "$PEERS/litellm/bin/python" ]; then
    "$PYTHON" -m venv "$PEERS/litellm"
fi
installed="$("$PEERS/litellm/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
if [ "$installed" != "$LITELLM_VERSION" ] || ! "$PEERS/litellm/bin/python" -c 'import matplotlib' 2>/dev/null \
    || [ ! -x "$PEERS/litellm/bin/py-spy" ]; then
    "$PEERS/litellm/bin/python" -m pip install --quiet --upgrade pip
    "$PEERS/litellm/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION" matplotlib py-spy
fi

# Portkey gateway: an npm install in a folder of its own.
mkdir -p "$PEERS/portkey"
[ -f "$PEERS/portkey/package.json" ] || echo '{"private": true}' > "$PEERS/portkey/package.json"
version_of() {
    node -e "try{console.log(require('$PEERS/portkey/node_modules/$1/package.json').version)}catch(e){}" 2>/dev/null || true
}
if [ "$(version_of @portkey-ai/gateway)" != "$PORTKEY_VERSION" ]; then
    (cd "$PEERS/portkey" && npm install --silent --no-audit --no-fund "@portkey-ai/gateway@$PORTKEY_VERSION")
fi
# Its streamed chat answers fail on Node with "TypeError: immutable" (the gateway appends its
# x-portkey-* headers to a fetch() response whose headers are immutable; Portkey-AI/gateway issues
# 1389 and 1550). Applied here: the fix proposed upstream (PR 1551), which copies such a response
# into a new one before adding headers. One copy per streamed call; nothing else changes.
SERVER="$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"
if grep -q 'return r?(i=t,c=s)' "$SERVER"; then
    sed -i 's/return r?(i=t,c=s)/return r?(i=new Response(t.body,{status:t.status,statusText:t.statusText,headers:new Headers(t.headers)}),c=s)/' "$SERVER"
    echo "patched $SERVER (streamed answers: copy the response before adding headers)"
fi

echo "peers in $PEERS:"
echo "  litellm[proxy]==$("$PEERS/litellm/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))') ($("$PEERS/litellm/bin/python" --version))"
echo "  @portkey-ai/gateway@$(version_of @portkey-ai/gateway) (streaming fix applied: $(grep -q 'i=new Response(t.body' "$SERVER" && echo yes || echo no)) (node $(node --version))"
