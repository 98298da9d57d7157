#!/usr/bin/env bash
# A real Slurm on this one machine, for the tests: N emulated nodes n1..nN.
#
#   scripts/slurm-cluster.sh install                    apt-get the Debian packages (root, only if missing)
#   scripts/slurm-cluster.sh start  [--nodes 4] [--dir D]  start munged, slurmctld, N x slurmd; wait for idle
#   scripts/slurm-cluster.sh stop   [--dir D]           stop exactly the daemons that `start` recorded
#   scripts/slurm-cluster.sh status [--dir D]           exit 0 when every recorded daemon is alive
#
# Everything lives under one directory (default /tmp/gfm-slurm): slurm.conf, a private munge key and
# socket, spool, logs and the pid list. Nothing in /etc is touched, so clients need
# SLURM_CONF=$DIR/slurm.conf (`start` prints it). Every emulated node is a separate slurmd on its own
# port of 127.0.0.1 (`slurmd -N nX`), so `hostname` is the same everywhere: use $SLURMD_NODENAME.
set -euo pipefail

die() { echo "slurm-cluster: $*" >&2; exit 1; }

cmd=${1:-}
[ $# -gt 0 ] && shift
nodes=4
dir=/tmp/gfm-slurm
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a path}; shift 2 ;;
    *) die "unknown argument '$1' (usage: $0 {install|start|stop|status} [--nodes N] [--dir DIR])" ;;
  esac
done
[[ $nodes =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] && [ "$nodes" -le 64 ] || die "--nodes must be 1..64, got '$nodes'"

conf=$dir/slurm.conf
pids=$dir/pids              # one "name pid" line per daemon this script started
ctld_port=6817
slurmd_port0=17001          # slurmd of node nX listens on slurmd_port0 + X - 1
packages="slurm-wlm slurmctld slurmd munge slurm-client"

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v srun >/dev/null \
                && command -v munged >/dev/null && command -v mungekey >/dev/null; }

do_install() {
  if installed; then echo "slurm-cluster: Slurm and munge are installed ($(slurmctld -V))"; return 0; fi
  [ "$(id -u)" -eq 0 ] || die "Slurm is not installed and installing it needs root (apt-get install $packages)"
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get to install it ($packages)"
  echo "slurm-cluster: installing $packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  installed || die "apt-get finished but slurmctld/slurmd/srun/munged are still missing"
}

# A pid is "ours" when it is alive and still runs the program we recorded (pids get reused).
alive() { local name=$1 pid=$2 exe
  [ -d "/proc/$pid" ] || return 1
  exe=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $name in munged) [[ $exe == *munged* ]] ;; slurmctld) [[ $exe == *slurmctld* ]] ;; *) [[ $exe == *"slurmd -D -N $name "* ]] ;; esac
}

recorded() { [ -f "$pids" ] && cat "$pids" || true; }
pid_of() { recorded | awk -v n="$1" '$1 == n {print $2}' | tail -n1; }
record() { echo "$1 $2" >> "$pids"; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && alive "$1" "$pid"; }

write_conf() {
  local last=$((slurmd_port0 + nodes - 1))
  cat > "$conf.tmp" <<EOF
# Written by scripts/slurm-cluster.sh: a throwaway test cluster, $nodes emulated nodes on 127.0.0.1.
ClusterName=gfmtest
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port0
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# mpi4py on the mpich wheel gets its world from PMI2; with --mpi=none every rank is alone.
MpiDefault=pmi2
ReturnToService=1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# The emulated nodes all share this machine: trust the node lines below rather than draining
# nodes whose slurmd sees fewer cores or less memory than declared (oversubscription is intended).
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=n[1-$nodes] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$slurmd_port0-$last] CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n[1-$nodes] Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$conf.tmp" "$conf"
}

# Something answers on the port: bash's /dev/tcp needs no extra tool (iproute2 may be missing).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_munged() {
  running munged && return 0
  mkdir -p "$dir/munge"
  chown munge:munge "$dir/munge"; chmod 0755 "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null
  fi
  chown munge:munge "$dir/munge/munge.key"; chmod 0600 "$dir/munge/munge.key"
  rm -f "$dir/munge/munge.socket" "$dir/munge/munge.socket.lock"
  setsid setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
    --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" \
    --log-file="$dir/munge/munged.log" </dev/null >>"$dir/log/munged.out" 2>&1 9>&- &
  record munged $!
  for _ in $(seq 100); do [ -S "$dir/munge/munge.socket" ] && return 0; sleep 0.05; done
  die "munged did not create its socket; see $dir/munge/munged.log"
}

start_slurmctld() {
  running slurmctld && return 0
  # -c: start from a clean state; this cluster is throwaway and old jobs or DOWN nodes would confuse tests.
  setsid /usr/sbin/slurmctld -D -c -f "$conf" </dev/null >>"$dir/log/slurmctld.out" 2>&1 9>&- &
  record slurmctld $!
}

start_slurmd() { local name=$1
  running "$name" && return 0
  mkdir -p "$dir/spool/$name"
  setsid /usr/sbin/slurmd -D -N "$name" -f "$conf" </dev/null >>"$dir/log/slurmd-$name.out" 2>&1 9>&- &
  record "$name" $!
}

wait_idle() {
  local states
  for _ in $(seq 300); do
    states=$(SLURM_CONF=$conf sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
    if [ "$(grep -c ' idle$' <<<"$states" || true)" -eq "$nodes" ]; then return 0; fi
    sleep 0.1
  done
  die "nodes did not become idle within 30 s: $(tr '\n' ' ' <<<"$states"); logs in $dir/log"
}

do_start() {
  installed || die "Slurm is not installed (run: $0 install, as root)"
  [ "$(id -u)" -eq 0 ] || die "starting the daemons needs root (slurmd runs tasks as their owner)"
  mkdir -p "$dir"/{ctld,spool,run,log}
  chmod 0755 "$dir"
  exec 9>"$dir/lock"; flock 9          # two test sessions starting at once must not race
  if running slurmctld; then
    grep -q "n\[1-$nodes\] " "$conf" || die "already running with other nodes than n[1-$nodes]; run: $0 stop --dir $dir"
  else
    write_conf
  fi
  # Check every port first, so that a clash leaves nothing half-started behind.
  running slurmctld || port_free "$ctld_port" \
    || die "port $ctld_port is taken by another program: is another slurmctld running? (stop it, or its --dir)"
  for i in $(seq "$nodes"); do
    running "n$i" || port_free $((slurmd_port0 + i - 1)) || die "port $((slurmd_port0 + i - 1)) (slurmd of n$i) is taken by another program"
  done
  start_munged
  start_slurmctld
  for i in $(seq "$nodes"); do start_slurmd "n$i"; done
  wait_idle
  echo "slurm-cluster: $nodes nodes idle; export SLURM_CONF=$conf"
}

stop_pid() { local name=$1 pid=$2
  alive "$name" "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$name" "$pid" || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

do_stop() {
  [ -f "$pids" ] || { echo "slurm-cluster: nothing recorded in $pids"; return 0; }
  exec 9>"$dir/lock"; flock 9
  # Cancel what still runs so no job step outlives its slurmd.
  if running slurmctld; then
    SLURM_CONF=$conf scancel --quiet --partition=debug 2>/dev/null || true
  fi
  # slurmd first, then the controller, then munge, which both of them need to the end.
  local name pid kind
  for kind in node slurmctld munged; do
    while read -r name pid; do
      case $kind:$name in node:n[0-9]*|slurmctld:slurmctld|munged:munged) stop_pid "$name" "$pid" ;; esac
    done < "$pids"
  done
  rm -f "$pids"
  echo "slurm-cluster: stopped"
}

do_status() {
  [ -f "$pids" ] || { echo "slurm-cluster: not started (no $pids)"; return 3; }
  local name pid bad=0
  while read -r name pid; do
    if alive "$name" "$pid"; then echo "$name $pid running"; else echo "$name $pid dead"; bad=1; fi
  done < "$pids"
  [ $bad -eq 0 ] && SLURM_CONF=$conf sinfo -N -o '%N %T %E' || true
  return $((bad * 3))
}

case $cmd in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) die "usage: $0 {install|start|stop|status} [--nodes N] [--dir DIR]" ;;
esac
