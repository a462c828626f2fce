#!/usr/bin/env bash
# Once the load test's log ($1) shows the line $2, puts green's embedded
# engine and the dual-write cutover into the blkio cgroup "slow" (its write
# IOPS throttled), and samples the dual-write cutover every second into $3:
# resident memory, threads, replay backlog, green's dual-write outcomes.
# Stops by itself after $4 seconds. Needs root and cgroup v1's blkio
# controller; IOPS (default 20) is the cgroup's write limit on the root disk.
set -u
slow=/sys/fs/cgroup/blkio/slow
mkdir -p "$slow"
disk=$(lsblk -ndo MAJ:MIN "$(findmnt -no SOURCE /)" | tr -d ' ')
echo "$disk ${IOPS:-20}" > "$slow/blkio.throttle.write_iops_device"
log=$1 trigger=$2 out=$3
until=$(( $(date +%s) + ${4:-600} ))
cg=$slow/cgroup.procs
echo "time,pid,rss_kib,hwm_kib,threads,backlog,green_ok,green_timeout,green_queued,applied" > "$out"
while ! grep -q -- "$trigger" "$log" 2>/dev/null; do
  [ "$(date +%s)" -lt "$until" ] || exit 0
  sleep 0.1
done
echo "$(date +%T),throttled" >> "$out"
tick=0 port=
metric() { awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}' "$out.metrics"; }
while [ "$(date +%s)" -lt "$until" ]; do
  for pid in $(pgrep -f -- '--data .*/green$'; pgrep -f -- 'serve --config .*/dual\.toml'); do
    grep -qx "$pid" "$cg" 2>/dev/null || echo "$pid" > "$cg" 2>/dev/null
  done
  if [ $((tick % 5)) -eq 0 ]; then
    pid=$(pgrep -f -- 'serve --config .*/dual\.toml') || exit 0
    s=/proc/$pid/status
    [ -r "$s" ] || exit 0
    if [ -z "$port" ]; then
      for p in $(ss -ltnpH | grep "pid=$pid," | awk '{print $4}' | sed 's/.*://'); do
        curl -sf -m 1 127.0.0.1:$p/metrics -o /dev/null && port=$p && break
      done
    fi
    curl -sf -m 1 127.0.0.1:$port/metrics -o "$out.metrics"
    rss=$(awk '/^VmRSS/{print $2}' $s); hwm=$(awk '/^VmHWM/{print $2}' $s); th=$(awk '/^Threads/{print $2}' $s)
    echo "$(date +%T),$pid,$rss,$hwm,$th,$(metric cutover_replay_backlog_records),$(metric 'cutover_dual_writes_total{protocol="grpc",route="loadtest",side="green",outcome="ok"'),$(metric 'cutover_dual_writes_total{protocol="grpc",route="loadtest",side="green",outcome="timeout"'),$(metric 'cutover_dual_writes_total{protocol="grpc",route="loadtest",side="green",outcome="queued"'),$(metric cutover_replay_applied_total)" >> "$out"
  fi
  tick=$((tick+1))
  sleep 0.2
done
