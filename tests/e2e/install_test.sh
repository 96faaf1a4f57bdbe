#!/usr/bin/env bash
# End to end, as an operator installs Tern: three Debian 12 hosts booted with
# systemd under systemd-nspawn (a debootstrap root filesystem, cached between
# runs), on a bridge, each with sshd. ansible-playbook, over SSH, installs
# the coordinator on one and agents on the other two from this build's Debian
# packages, with mutual TLS from a test CA. Then: the agents register, a rollout runs across them, an agent
# restart and a package upgrade (by Ansible) leave the apps running (same
# pids), and a further playbook run changes nothing. Everything but the cached root filesystem is removed at
# the end.
#
#   sudo tests/e2e/install_test.sh            # scripts/e2e.sh builds first
#
# Needs root, debootstrap, systemd-container and ansible (scripts/e2e.sh
# installs them). The first run downloads about 150 MB of Debian packages
# into /var/cache/tern-e2e (TERN_E2E_CACHE); later runs reuse it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TERN_BUILD_DIR:-$root/build}
cache=${TERN_E2E_CACHE:-/var/cache/tern-e2e}
mirror=${TERN_E2E_MIRROR:-http://deb.debian.org/debian}
net=198.18.77            # 198.18.0.0/15: reserved for benchmarks, never a real network
bridge=terne2e0
machines=(coord agent1 agent2)
declare -A ip=([coord]=$net.10 [agent1]=$net.11 [agent2]=$net.12)
declare -A zone=([agent1]=a [agent2]=b)
ternctl=$build/ctl/ternctl
app=$build/examples/demo_app/tern-demo-app
started=$(date +%s)

step() { printf '\n\033[1m==> [%3ss] %s\033[0m\n' "$(($(date +%s) - started))" "$*"; }
fail() {
  echo "e2e: FAIL: $*" >&2
  keep=1
  exit 1
}
[ "$(id -u)" -eq 0 ] || { echo "e2e: needs root (network bridge, systemd-nspawn)" >&2; exit 2; }
for tool in debootstrap systemd-nspawn ansible-playbook ssh; do
  command -v "$tool" >/dev/null || { echo "e2e: needs $tool; scripts/e2e.sh installs it" >&2; exit 2; }
done
[ -x "$ternctl" ] && [ -x "$app" ] || { echo "e2e: build first (scripts/setup.sh)" >&2; exit 2; }

work=$(mktemp -d /tmp/tern-e2e.XXXXXX)
keep=0
declare -A nspawn_pid=()
# debootstrap mounts /proc and /sys inside its target and unmounts them when
# it ends; one stopped midway leaves them mounted. Nothing is ever copied or
# removed through such a mount (a copy of the host's live /proc never ends).
umount_under() {
  local dir
  dir=$(realpath -m "$1")
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  set +e
  for m in "${!nspawn_pid[@]}"; do kill -TERM "${nspawn_pid[$m]}" 2>/dev/null; done  # orderly poweroff
  for m in "${!nspawn_pid[@]}"; do
    for _ in $(seq 100); do kill -0 "${nspawn_pid[$m]}" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "${nspawn_pid[$m]}" 2>/dev/null
    wait "${nspawn_pid[$m]}" 2>/dev/null
  done
  ip link del "$bridge" 2>/dev/null
  umount_under "$work"
  rm -rf --one-file-system "$work/machines"
  # Logs stay for any failure, an interrupt included.
  if [ "$keep" -eq 1 ] || [ "$rc" -ne 0 ]; then
    echo "e2e: logs are in $work (kept)" >&2
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "packages: cpack from $build"
(cd "$build" && cpack -B "$work/packages" >"$work/cpack.log" 2>&1) || fail "cpack (see $work/cpack.log)"
rm -rf "$work/packages/_CPack_Packages"
ls -1 "$work/packages"

# The hosts' root filesystem: Debian 12 with systemd, sshd, python3 (Ansible)
# and the libraries the packages depend on, so installing them needs no
# network. Cached by its package list.
# debootstrap takes real package names: a virtual one (libspdlog1.10-fmt9)
# becomes the package that provides it.
real_package() {
  if [ -n "$(apt-cache show --no-all-versions "$1" 2>/dev/null)" ]; then echo "$1"; return; fi
  apt-cache showpkg "$1" | sed -n '/^Reverse Provides:/{n;p;}' | awk '{print $1}'
}
deps=$(for p in "$work"/packages/*.deb; do dpkg-deb -f "$p" Depends; done | tr ',' '\n' |
  sed 's/|.*//; s/(.*)//; s/ //g' | grep -v '^$' | sort -u | while read -r d; do real_package "$d"; done |
  sort -u | tr '\n' ',')
include="systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,iproute2,nftables,iptables,conntrack,curl,ca-certificates,${deps%,}"
key=$(echo "$include" | sha256sum | cut -c1-16)
base=$cache/bookworm-$key
if [ ! -d "$base" ]; then
  step "root filesystem: debootstrap bookworm into $base (first run only; a few minutes)"
  mkdir -p "$cache"
  umount_under "$base.tmp"
  rm -rf --one-file-system "$base.tmp"
  debootstrap --variant=minbase --include="$include" bookworm "$base.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { umount_under "$base.tmp"; fail "debootstrap (see $work/debootstrap.log)"; }
  umount_under "$base.tmp"
  rm -f "$base.tmp"/etc/ssh/ssh_host_*  # each host makes its own
  mv "$base.tmp" "$base"
else
  step "root filesystem: cached $base"
  umount_under "$base"  # left by an earlier run that was stopped
fi

step "hosts: ${machines[*]} on bridge $bridge ($net.0/24), booted with systemd"
ip link del "$bridge" 2>/dev/null || true
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
ssh-keygen -q -t ed25519 -N '' -f "$work/id_ed25519"
mkdir -p "$work/machines"
for m in "${machines[@]}"; do
  d=$work/machines/$m
  cp -a --one-file-system "$base" "$d"
  echo "tern-$m" >"$d/etc/hostname"
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$d/etc/machine-id"
  mkdir -p "$d/etc/systemd/network" "$d/etc/systemd/system/multi-user.target.wants" \
    "$d/etc/systemd/system/sockets.target.wants" "$d/root/.ssh"
  printf '[Match]\nName=host0\n\n[Network]\nAddress=%s/24\n' "${ip[$m]}" >"$d/etc/systemd/network/10-host0.network"
  ln -sf /lib/systemd/system/systemd-networkd.service "$d/etc/systemd/system/multi-user.target.wants/"
  ln -sf /lib/systemd/system/systemd-networkd.socket "$d/etc/systemd/system/sockets.target.wants/"
  # sshd's host keys, made on first boot.
  printf '[Unit]\nBefore=ssh.service\n[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n[Install]\nWantedBy=multi-user.target\n' \
    >"$d/etc/systemd/system/ssh-hostkeys.service"
  ln -sf /etc/systemd/system/ssh-hostkeys.service "$d/etc/systemd/system/multi-user.target.wants/"
  install -m 0600 "$work/id_ed25519.pub" "$d/root/.ssh/authorized_keys"
  chmod 0700 "$d/root/.ssh"
  systemd-nspawn -D "$d" --boot --register=no --keep-unit --network-bridge="$bridge" -M "tern-$m" \
    --console=passive >"$work/$m.console" 2>&1 &
  nspawn_pid[$m]=$!
done
ssh_to() {  # ssh_to MACHINE COMMAND...
  local m=$1; shift
  ssh -q -i "$work/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 \
    -o BatchMode=yes "root@${ip[$m]}" "$@"
}
for m in "${machines[@]}"; do
  for _ in $(seq 120); do ssh_to "$m" true 2>/dev/null && break; sleep 0.5; done
  ssh_to "$m" true || fail "no ssh to $m (${ip[$m]}); console: $work/$m.console"
  echo "tern-$m: ${ip[$m]}, $(ssh_to "$m" systemctl is-system-running 2>/dev/null || true)"
done

# Mutual TLS as a fleet would have it: a CA, the coordinator's certificate
# for the address agents dial, one certificate per agent (its CN is the host
# id), and an admin certificate for ternctl.
pki=$work/pki
"$root/scripts/tern-pki.sh" init "$pki" >/dev/null
"$root/scripts/tern-pki.sh" coordinator "$pki" tern-coord "IP:${ip[coord]}" >/dev/null
# The labels services select hosts by are in each agent's certificate: under
# TLS the coordinator takes them from there, not from the agent's config.
for m in agent1 agent2; do "$root/scripts/tern-pki.sh" agent "$pki" "$m" "zone=${zone[$m]}" role=web >/dev/null; done
"$root/scripts/tern-pki.sh" operator "$pki" e2e-admin admin >/dev/null

cat >"$work/inventory.ini" <<EOF
[tern_coordinators]
coord ansible_host=${ip[coord]} tern_tls_cert=$pki/coordinator.crt tern_tls_key=$pki/coordinator.key

[tern_agents]
agent1 ansible_host=${ip[agent1]} tern_tls_cert=$pki/agent-agent1.crt tern_tls_key=$pki/agent-agent1.key tern_agent_labels='{"zone": "${zone[agent1]}", "role": "web"}'
agent2 ansible_host=${ip[agent2]} tern_tls_cert=$pki/agent-agent2.crt tern_tls_key=$pki/agent-agent2.key tern_agent_labels='{"zone": "${zone[agent2]}", "role": "web"}'

[all:vars]
ansible_user=root
ansible_ssh_private_key_file=$work/id_ed25519
ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'
ansible_python_interpreter=/usr/bin/python3
tern_deb_dir=$work/packages
tern_tls_ca=$pki/ca.crt
tern_agent_heartbeat_interval=1s
tern_coordinator_heartbeat_interval=1s
EOF
playbook() {  # playbook LOG [ANSIBLE-ARGS...]
  local log=$1; shift
  ANSIBLE_CONFIG=$root/ansible/ansible.cfg ANSIBLE_FORCE_COLOR=0 \
    ansible-playbook -i "$work/inventory.ini" "$root/ansible/site.yml" "$@" >"$log" 2>&1
}

step "ansible-playbook site.yml: coordinator on coord, agents on agent1 and agent2"
playbook "$work/ansible-1.log" || { tail -40 "$work/ansible-1.log"; fail "the first playbook run"; }
sed -n '/PLAY RECAP/,$p' "$work/ansible-1.log"

export TERN_COORDINATOR=${ip[coord]}:7400 TERN_CA=$pki/ca.crt TERN_CERT=$pki/operator-e2e-admin.crt \
  TERN_KEY=$pki/operator-e2e-admin.key
step "the agents register with the coordinator"
for m in coord agent1 agent2; do
  unit=tern-agent; [ "$m" = coord ] && unit=tern-coordinator
  state=$(ssh_to "$m" systemctl show "$unit" -p ActiveState -p SubState -p Type -p WatchdogUSec -p NRestarts | tr '\n' ' ')
  echo "$m: $unit $state"
  ssh_to "$m" systemctl is-active --quiet "$unit" || fail "$unit is not active on $m"
done
connected() { [ "$("$ternctl" hosts -o json | grep -c HOST_STATE_CONNECTED)" -eq 2 ]; }
for _ in $(seq 60); do connected 2>/dev/null && break; sleep 0.5; done
connected || fail "the agents did not register: $("$ternctl" hosts 2>&1)"
"$ternctl" hosts
"$ternctl" whoami

step "a rollout over the installed fleet: 1.0 everywhere, then 2.0 in waves"
# No user: in the spec: the apps run as the package's unprivileged tern-app.
sed -e 's/healthy_deadline: 30s/healthy_deadline: 15s/' "$root/examples/web.yaml" >"$work/web.yaml"
grep -q '^user:' "$work/web.yaml" && fail "the example spec names a user; this step checks the default"
"$ternctl" service apply -f "$work/web.yaml"
"$ternctl" artifact push "$app" --service web --version 1.0
"$ternctl" artifact push "$app" --service web --version 2.0
"$ternctl" rollout start web --version 1.0 --waves 100% --watch --wait 2m || fail "rollout 1.0"
"$ternctl" rollout start web --version 2.0 --waves 1,100% --bake 2s --spread zone --watch --wait 2m ||
  fail "rollout 2.0"
for m in agent1 agent2; do
  body=$(curl -s --max-time 3 "http://${ip[$m]}:8080/") || fail "no answer from $m:8080"
  echo "$m:8080 -> $body"
  [ "${body%% *}" = "2.0" ] || fail "$m serves '$body', not 2.0"
  owner=$(ssh_to "$m" "ps -o user:20= -C tern-demo-app | sort -u | tr '\n' ' '")
  [ "$owner" = "tern-app " ] || fail "$m: the slots run as '$owner', not the package's tern-app"
done

step "restarting tern-agent on agent1 leaves its app running"
pids_before=$(ssh_to agent1 "pgrep -d, -x tern-demo-app")
ssh_to agent1 systemctl restart tern-agent
for _ in $(seq 40); do connected 2>/dev/null && break; sleep 0.5; done
pids_after=$(ssh_to agent1 "pgrep -d, -x tern-demo-app")
echo "slot pids before: $pids_before, after: $pids_after"
[ -n "$pids_before" ] && [ "$pids_before" = "$pids_after" ] || fail "the slots were restarted with the agent"
body=$(curl -s --max-time 3 "http://${ip[agent1]}:8080/") || fail "agent1 stopped serving"
[ "${body%% *}" = "2.0" ] || fail "agent1 serves '$body' after the agent restart"
connected || fail "agent1 did not come back"

step "upgrading the packages with Ansible leaves the apps running"
# The same build repackaged as a newer version: what an upgrade does to the
# running daemons (postinst restarts them) is what is tested.
version=$(dpkg-deb -f "$work"/packages/tern-agent_*.deb Version)
next=$version+e2e1
for p in "$work"/packages/*_"$version"_*.deb; do
  x=$work/repack/$(basename "$p" .deb)
  mkdir -p "$work/repack"
  dpkg-deb -R "$p" "$x"
  sed -i "s/^Version: .*/Version: $next/" "$x/DEBIAN/control"
  name=$(dpkg-deb -f "$p" Package) arch=$(dpkg-deb -f "$p" Architecture)
  dpkg-deb --root-owner-group -b "$x" "$work/packages/${name}_${next}_${arch}.deb" >/dev/null
done
pids_before=$(ssh_to agent2 "pgrep -d, -x tern-demo-app")
playbook "$work/ansible-upgrade.log" -e "tern_version=$next" ||
  { tail -40 "$work/ansible-upgrade.log"; fail "the upgrade playbook run"; }
sed -n '/PLAY RECAP/,$p' "$work/ansible-upgrade.log"
for m in coord agent1 agent2; do
  pkg=tern-agent; [ "$m" = coord ] && pkg=tern-coordinator
  v=$(ssh_to "$m" "dpkg-query -W -f='\${Version}' $pkg")
  [ "$v" = "$next" ] || fail "$m runs $pkg $v after the upgrade, not $next"
done
for _ in $(seq 40); do connected 2>/dev/null && break; sleep 0.5; done
connected || fail "the agents did not come back after the upgrade"
pids_after=$(ssh_to agent2 "pgrep -d, -x tern-demo-app")
echo "agent2 slot pids before the upgrade: $pids_before, after: $pids_after"
[ -n "$pids_before" ] && [ "$pids_before" = "$pids_after" ] || fail "the upgrade restarted the slots"
body=$(curl -s --max-time 3 "http://${ip[agent2]}:8080/") || fail "agent2 stopped serving"
[ "${body%% *}" = "2.0" ] || fail "agent2 serves '$body' after the upgrade"

step "ansible-playbook site.yml again: nothing changes"
playbook "$work/ansible-2.log" -e "tern_version=$next" ||
  { tail -40 "$work/ansible-2.log"; fail "the second playbook run"; }
sed -n '/PLAY RECAP/,$p' "$work/ansible-2.log"
if grep -A10 'PLAY RECAP' "$work/ansible-2.log" | grep -E 'changed=[1-9]'; then
  fail "the second run changed something (see $work/ansible-2.log)"
fi

step "done in $(($(date +%s) - started))s: installed, registered, rolled out, restarted, upgraded, idempotent; tearing down"
