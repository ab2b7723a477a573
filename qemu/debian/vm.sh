# qemu/debian/vm.sh — sourced by qemu/debian/test, qemu/boot --debian and
# tests/bench/debian: one way to boot target/debian/disk.img under an init and
# to talk to it. Needs $root (the repository); uses target/debian/.
#
#   vm_start INIT LOG [EXTRA_KERNEL_ARGS]  INIT: keel | systemd | sysvinit |
#                                          sbin-init (no init=: whatever
#                                          /sbin/init is, keel with keel-sysv) |
#                                          floor (the benchmark's disk only:
#                                          qemu/debian/floor-init); QEMU in
#                                          the background, console into LOG;
#                                          sets vm_pid, vm_port, vm_t0
#   vm_wait_console REGEX SECS             the console shows REGEX (1: timeout or
#                                          QEMU gone; 2: a kernel panic)
#   vm_wait_banner SECS                    sshd's banner on the forwarded port
#                                          (knocks on a closed port until the
#                                          guest has its address, then one SSH
#                                          connection at a time); sets
#                                          vm_address_at, vm_banner_at (usec)
#                                          and vm_probe_starts (each SSH try)
#   vm_banner_once SECS                    one connection: sshd's banner within SECS
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
vm_knock_port=
vm_log=
vm_t0=
vm_banner_at=
vm_address_at=
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
	floor) init="init=/usr/local/sbin/keel-bench-floor-init" ;;
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
		-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$vm_port-:22${vm_knock_port:+,hostfwd=tcp:127.0.0.1:$vm_knock_port-:1}"
		-device virtio-net-pci,netdev=net0)
}

vm_start() {
	local init=$1
	vm_log=$2
	vm_port=$(vm_free_port) || return 1
	# Port 1 of the guest: nothing listens there (vm_wait_banner's knocks).
	vm_knock_port=$vm_port
	while [[ $vm_knock_port == "$vm_port" ]]; do
		vm_knock_port=$(vm_free_port) || return 1
	done
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
	local deadline=$(($(usec) + $1 * 1000000)) seen last=0 p
	local -a knocks=()
	vm_banner_at=
	vm_address_at=
	vm_probe_starts=()
	seen=$(mktemp)
	# Until the guest has its address: knocks on a closed port. QEMU's user
	# network accepts every connection on the host side at once, then sends its
	# SYN to the guest, retried with back-off while the guest has no address; once
	# it has one, the guest's kernel refuses the knock and QEMU closes it (EOF
	# here). So a knock waits a second at most, and a new one starts every 0.2 s
	# (at most 3 in flight). A knock costs the guest no process.
	while (($(usec) < deadline)) && [[ ! -s $seen ]]; do
		kill -0 "$vm_pid" 2>/dev/null || break
		local alive=()
		for p in "${knocks[@]}"; do
			kill -0 "$p" 2>/dev/null && alive+=("$p")
		done
		knocks=("${alive[@]}")
		if ((${#knocks[@]} < 3 && $(usec) - last >= 200000)); then
			last=$(usec)
			(
				exec 3<>"/dev/tcp/127.0.0.1/$vm_knock_port" || exit 0
				# read's status: 1 at end of file (refused), over 128 on timeout.
				read -r -t 1 _ <&3
				(($? == 1)) && usec >>"$seen"
			) 2>/dev/null &
			knocks+=($!)
		fi
		sleep 0.02
	done
	for p in "${knocks[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	[[ -s $seen ]] && vm_address_at=$(head -n1 "$seen")
	rm -f "$seen"
	# Then sshd, one connection at a time: refused (not listening yet) ends at
	# once and is tried again 50 ms later; accepted, sshd forks for it (seconds
	# under TCG) and sends its banner.
	while [[ -n $vm_address_at ]] && (($(usec) < deadline)); do
		kill -0 "$vm_pid" 2>/dev/null || break
		vm_probe_starts+=("$(usec)")
		if vm_banner_once 30; then
			vm_banner_at=$(usec)
			break
		fi
		sleep 0.05
	done
	[[ -n ${vm_banner_at:-} ]]
}

# vm_banner_once SECS: one connection to sshd's forwarded port; true if sshd's
# banner came within SECS (false when refused, closed or silent).
vm_banner_once() {
	local fd line=
	if exec {fd}<>"/dev/tcp/127.0.0.1/$vm_port"; then
		IFS= read -r -t "$1" line <&"$fd" || true
		exec {fd}>&-
	fi 2>/dev/null
	[[ $line == SSH-* ]]
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
