# qemu/debian/vm.sh — sourced by qemu/debian/test, qemu/boot --debian and
# tests/bench/debian: one way to boot target/debian/disk.img under an init and
# to talk to it. Needs $root (the repository); uses target/debian/.
#
#   vm_start INIT LOG [EXTRA_KERNEL_ARGS]  INIT: keel | systemd | sysvinit |
#                                          sbin-init (no init=: whatever
#                                          /sbin/init is, keel with keel-sysv); QEMU in
#                                          the background, console into LOG;
#                                          sets vm_pid, vm_port, vm_t0
#   vm_wait_console REGEX SECS             the console shows REGEX (1: timeout or
#                                          QEMU gone; 2: a kernel panic)
#   vm_wait_banner SECS                    sshd's banner on the forwarded port
#                                          (at most 3 probe connections in
#                                          flight); sets vm_banner_at (usec)
#                                          and vm_probe_starts (each probe's start)
#   vm_ssh CMD...                          run CMD as root in the guest
#   vm_wait_exit SECS                      QEMU has exited (the guest powered off
#                                          or rebooted: -no-reboot)
#   vm_stop                                kill QEMU (by its pid) if it still runs
#   usec                                   microseconds now (EPOCHREALTIME)

vm_dir=$root/target/debian
# The initrd QEMU loads: the image's own, or initrd-lean.img (tests/bench/debian --lean).
vm_initrd=$vm_dir/initrd.img
vm_pid=
vm_port=
vm_log=
vm_t0=
vm_banner_at=
vm_probe_starts=()

usec() {
	local t=${1:-$EPOCHREALTIME}
	t=${t/,/.}
	echo $((${t%.*} * 1000000 + 10#${t#*.}))
}

# A loopback port nothing listens on.
vm_free_port() {
	local p
	for _ in {1..50}; do
		p=$((20000 + RANDOM % 20000))
		ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || {
			echo "$p"
			return 0
		}
	done
	return 1
}

# The kernel command line of each init. net.ifnames=0: the NIC is eth0, as
# /etc/network/interfaces says. panic=-1 and -no-reboot: a panic ends QEMU.
vm_cmdline() {
	local init
	case "$1" in
	keel) init="init=/sbin/keel-init" ;;
	systemd) init="init=/lib/systemd/systemd" ;;
	sysvinit) init="init=/sbin/init" ;;
	sbin-init) init= ;;
	*) return 1 ;;
	esac
	echo "root=/dev/vda console=ttyS0 net.ifnames=0 panic=-1${init:+ $init} ${2:-}"
}

# vm_qemu_args INIT [EXTRA]: QEMU's arguments but the console's.
vm_qemu_args() {
	local cmdline
	cmdline=$(vm_cmdline "$1" "${2:-}") || return 1
	vm_args=(-accel tcg -machine pc -m "${KEEL_QEMU_MEM:-1G}" -smp "${KEEL_QEMU_SMP:-2}"
		-nodefaults -no-user-config -no-reboot -display none
		-kernel "$vm_dir/vmlinuz" -initrd "$vm_initrd" -append "$cmdline"
		-drive "file=$vm_dir/disk.img,format=raw,if=virtio"
		-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$vm_port-:22"
		-device virtio-net-pci,netdev=net0)
}

vm_start() {
	local init=$1
	vm_log=$2
	vm_port=$(vm_free_port) || return 1
	vm_qemu_args "$init" "${3:-}" || return 1
	rm -f "$vm_log"
	vm_t0=$(usec)
	qemu-system-x86_64 "${vm_args[@]}" -serial "file:$vm_log" </dev/null >"$vm_log.qemu" 2>&1 &
	vm_pid=$!
}

vm_wait_console() {
	local regex=$1 deadline=$(($(usec) + $2 * 1000000))
	while (($(usec) < deadline)); do
		grep -saqE -- "$regex" "$vm_log" && return 0
		grep -saq 'Kernel panic - not syncing' "$vm_log" && return 2
		kill -0 "$vm_pid" 2>/dev/null || {
			grep -saqE -- "$regex" "$vm_log" && return 0
			return 1
		}
		sleep 0.05
	done
	return 1
}

vm_wait_banner() {
	local deadline=$(($(usec) + $1 * 1000000)) got last=0 p
	local -a probes=()
	vm_banner_at=
	vm_probe_starts=()
	got=$(mktemp)
	# QEMU's user network accepts at once whether or not anything listens in the
	# guest, then retries its SYN to the guest with back-off while the guest has
	# no address yet; and a listening sshd may take seconds to send its banner
	# under TCG. So a probe waits up to 6 s for the banner, and a new one starts
	# every second while fewer than 3 are in flight (each costs the guest a fork).
	while (($(usec) < deadline)); do
		if [[ -s $got ]]; then
			vm_banner_at=$(head -n1 "$got")
			break
		fi
		kill -0 "$vm_pid" 2>/dev/null || break
		local alive=()
		for p in "${probes[@]}"; do
			kill -0 "$p" 2>/dev/null && alive+=("$p")
		done
		probes=("${alive[@]}")
		if ((${#probes[@]} < 3 && $(usec) - last >= 1000000)); then
			last=$(usec)
			vm_probe_starts+=("$last")
			(
				exec 3<>"/dev/tcp/127.0.0.1/$vm_port" || exit 0
				IFS= read -r -t 6 line <&3 || exit 0
				[[ $line == SSH-* ]] && usec >>"$got"
			) 2>/dev/null &
			probes+=($!)
		fi
		sleep 0.05
	done
	for p in "${probes[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	[[ -s $got ]] && vm_banner_at=$(head -n1 "$got")
	rm -f "$got"
	[[ -n ${vm_banner_at:-} ]]
}

vm_ssh() {
	ssh -q -i "$vm_dir/id_ed25519" -p "$vm_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o LogLevel=ERROR root@127.0.0.1 "$@"
}

vm_wait_exit() {
	local deadline=$(($(usec) + $1 * 1000000))
	while kill -0 "$vm_pid" 2>/dev/null; do
		(($(usec) < deadline)) || return 1
		sleep 0.05
	done
	wait "$vm_pid" 2>/dev/null || true
	vm_pid=
}

vm_stop() {
	[[ -n $vm_pid ]] || return 0
	if kill -0 "$vm_pid" 2>/dev/null; then
		kill -TERM "$vm_pid" 2>/dev/null || true
		for _ in {1..20}; do
			kill -0 "$vm_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$vm_pid" 2>/dev/null || true
	fi
	wait "$vm_pid" 2>/dev/null || true
	vm_pid=
}

# The state of the image's filesystem: "clean" only when dumpe2fs says clean and
# no needs_recovery (a journal still to replay).
vm_disk_state() {
	local h
	h=$(dumpe2fs -h "$vm_dir/disk.img" 2>/dev/null) || {
		echo "unreadable"
		return
	}
	if grep -q '^Filesystem state: *clean$' <<<"$h" && ! grep -q needs_recovery <<<"$h"; then
		echo clean
	else
		grep -E '^Filesystem (state|features):' <<<"$h" | tr -s ' ' | paste -sd';'
	fi
}
