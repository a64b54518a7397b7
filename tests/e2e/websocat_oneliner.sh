#!/usr/bin/env bash
# The seed README's websocat one-liner, in the form README.md gives (`-n`: keep the
# socket open when stdin ends), against the server at $CLAWSOCKET_WS: the streamed
# answer and the final chat.response must be printed.
set -uo pipefail
URL="${CLAWSOCKET_WS:?CLAWSOCKET_WS is not set}?senderId=websocat-e2e"
output="$(echo '{"type":"chat.send","content":"Hello!"}' | timeout 5 websocat -n "$URL")"
if printf '%s\n' "$output" | grep -q '"type":"chat.response","messageId":"[^"]*","content":"echo: Hello!"'; then
  echo "PASS websocat one-liner: the streamed answer and chat.response arrived"
else
  echo "FAIL websocat one-liner: no chat.response in:"
  printf '%s\n' "$output" | sed 's/^/  | /'
  exit 1
fi
