#!/usr/bin/env bash
# Installs Paddock on a fresh Debian 12 machine with the Rust toolchain and
# starts `paddock serve` on its embedded defaults (127.0.0.1:7070,
# /var/lib/paddock). Idempotent: run it again to upgrade and restart.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (sandboxes need namespaces, cgroups and mounts)" >&2; exit 1; }
scripts/deps.sh
scripts/build.sh
install -D -m 0755 target/release/paddock /usr/local/bin/paddock
install -D -m 0755 target/x86_64-unknown-linux-gnu/release/paddock-agent /usr/local/lib/paddock/paddock-agent
if pid=$(pgrep -x -f '/usr/local/bin/paddock serve' || true) && [ -n "$pid" ]; then
  echo "restarting paddock serve (pid $pid); its sandboxes keep running"
  kill $pid
  # Its listeners are free once it has exited.
  for _ in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
fi
mkdir -p /var/lib/paddock /var/log
nohup /usr/local/bin/paddock serve >>/var/log/paddock.log 2>&1 </dev/null &
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:7070/healthz >/dev/null 2>&1; then
    echo "paddock serve is up on http://127.0.0.1:7070 (log: /var/log/paddock.log)"
    echo "SDK dialects: hiver-py on :10000, flash-sandbox on :8080 (HTTP) and :50051 (gRPC),"
    echo "  agenttier on :8090, posthog-hogland on :8091, boxd on :9443 (gRPC and its token exchange);"
    echo "  the SSH gateway on :2222; the ingress (HTTPS, *.paddock.localhost) on :8443"
    exit 0
  fi
  sleep 0.1
done
echo "paddock serve did not come up; see /var/log/paddock.log" >&2
tail -20 /var/log/paddock.log >&2
exit 1
