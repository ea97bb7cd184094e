#!/usr/bin/env bash
# Start a Docker engine for the image tests if none answers, networked the only way allowed here: no bridge,
# no iptables rules, containers on the host's network only (`docker run --network host`).
#
#   usage: deploy/start-dockerd.sh      exit 0 when `docker info` answers, 1 when no engine could start
#   env:   DOCKERD_LOG (default /tmp/nnserve-dockerd.log); the pid is written to ${DOCKERD_LOG%.log}.pid
set -u
LOG="${DOCKERD_LOG:-/tmp/nnserve-dockerd.log}"

if docker info >/dev/null 2>&1; then
    echo "start-dockerd: an engine already answers"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-dockerd: no dockerd (apt-get install docker.io); image tests will skip"
    exit 1
fi
nohup dockerd --bridge=none --iptables=false --ip-masq=false >"$LOG" 2>&1 &
pid=$!
echo "$pid" >"${LOG%.log}.pid"
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "start-dockerd: dockerd pid $pid is up (log $LOG)"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
echo "start-dockerd: dockerd did not come up; image tests will skip. Last log lines:"
tail -5 "$LOG"
kill "$pid" 2>/dev/null
exit 1
