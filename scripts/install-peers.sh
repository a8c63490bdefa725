#!/usr/bin/env bash
# install-peers.sh: install the real peers that the e2e tests run against (Debian 12).
#
#   chrony, ntpsec-ntpdig, faketime, prometheus (+promtool), prometheus-alertmanager,
#   iproute2 (network namespaces), sqlite3, libcap2-bin (setcap), and the libraries of ntpd
#
# and unpack NTPsec's ntpd, which conflicts with chrony and so is never installed, into
# $NTPEXP_NTPSEC_DIR (default /var/cache/ntpexp-peers/ntpsec; ntpd is DIR/usr/sbin/ntpd).
#
# Idempotent. Quiet on success, fast (no apt) when everything is already there.
# Runs apt-get update only when the package lists are missing or an install fails on them.
# No daemon is left running: the Debian packages' services are kept from starting during the
# install, and a chrony service (which would discipline the clock and hold UDP 123) is stopped.
#
# Usage: sudo scripts/install-peers.sh          install what is missing
#        scripts/install-peers.sh --where       print the NTPsec directory and exit
set -euo pipefail

NTPSEC_DIR="${NTPEXP_NTPSEC_DIR:-/var/cache/ntpexp-peers/ntpsec}"
PKGS=(chrony ntpsec-ntpdig faketime prometheus prometheus-alertmanager iproute2 sqlite3 libcap2-bin strace systemd git make
	# the unpacked ntpd links these; as it is not installed, apt does not pull them in
	libbsd0 libcap2 libssl3)

if [[ "${1:-}" == "--where" ]]; then
	echo "$NTPSEC_DIR"
	exit 0
fi

die() { echo "install-peers: $*" >&2; exit 1; }

missing_pkgs() {
	local p st
	for p in "${PKGS[@]}"; do
		st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[[ "$st" == installed ]] || echo "$p"
	done
}

ntpdig_version() { dpkg-query -W -f='${Version}' ntpsec-ntpdig 2>/dev/null || true; }

ntpsec_ok() {
	[[ -x "$NTPSEC_DIR/usr/sbin/ntpd" && -f "$NTPSEC_DIR/.version" ]] || return 1
	# Keep the unpacked ntpd at the version of the installed ntpdig (same source package).
	[[ "$(cat "$NTPSEC_DIR/.version")" == "$(ntpdig_version)" ]]
}

# chronyd_system_pids prints the pids of chronyd processes that are not run by tests, i.e. that
# do not have clock control off (-x) and are not one-shot (-q/-Q): the package's service.
chronyd_system_pids() {
	local pid args
	for pid in $(pgrep -x chronyd 2>/dev/null || true); do
		args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
		[[ -n "$args" ]] || continue
		[[ " $args " == *" -x "* || " $args " == *" -Q "* || " $args " == *" -q "* ]] && continue
		echo "$pid"
	done
}

stop_chrony_service() {
	local pids pid i
	pids=$(chronyd_system_pids)
	[[ -n "$pids" ]] || return 0
	if [[ -d /run/systemd/system ]]; then
		systemctl stop chrony.service >/dev/null 2>&1 || true
		# On CI machines keep it from coming back at boot; a developer's machine keeps its time service.
		[[ "${CI:-}" == true ]] && systemctl disable chrony.service >/dev/null 2>&1 || true
	elif command -v invoke-rc.d >/dev/null; then
		invoke-rc.d --force chrony stop >/dev/null 2>&1 || true
	fi
	pids=$(chronyd_system_pids)
	for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
	for i in $(seq 50); do
		[[ -z "$(chronyd_system_pids)" ]] && return 0
		sleep 0.1
	done
	die "a chronyd that disciplines the clock is still running: $(chronyd_system_pids | tr '\n' ' ')"
}

missing=$(missing_pkgs)
if [[ -z "$missing" ]] && ntpsec_ok; then
	# Fast path. In CI (or when asked) still make sure the chrony service is not running.
	pids=$(chronyd_system_pids)
	if [[ -n "$pids" ]]; then
		if [[ "${CI:-}" == true || "$(id -u)" == 0 && "${NTPEXP_STOP_CHRONY:-}" == 1 ]]; then
			stop_chrony_service
		else
			echo "install-peers: warning: a system chronyd (pid $(echo $pids)) disciplines the clock and holds UDP 123;" \
				"tests that need port 123 will fail or skip. Stop it, or rerun with NTPEXP_STOP_CHRONY=1 as root." >&2
		fi
	fi
	exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
	if command -v sudo >/dev/null; then
		exec sudo -E "$0" "$@"
	fi
	die "must run as root to install: $(echo $missing) ${NTPSEC_DIR}"
fi

export DEBIAN_FRONTEND=noninteractive
LOG=$(mktemp /tmp/install-peers.XXXXXX.log)
POLICY=/usr/sbin/policy-rc.d
made_policy=0
cleanup() {
	local rc=$?
	[[ $made_policy == 1 ]] && rm -f "$POLICY"
	if [[ $rc != 0 ]]; then
		echo "install-peers: failed (exit $rc); log:" >&2
		tail -n 40 "$LOG" >&2 || true
	else
		rm -f "$LOG"
	fi
}
trap cleanup EXIT

mkdir -p "$(dirname "$NTPSEC_DIR")"
exec 9>"$(dirname "$NTPSEC_DIR")/.install.lock"
flock 9

have_lists() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
updated=0
apt_update() {
	[[ $updated == 1 ]] && return 1
	updated=1
	apt-get update -q >>"$LOG" 2>&1
}

missing=$(missing_pkgs)
installed_chrony=0
if [[ -n "$missing" ]]; then
	[[ " $(echo $missing) " == *" chrony "* ]] && installed_chrony=1
	have_lists || apt_update
	# Keep the packages' services (chronyd, prometheus, alertmanager) from starting during the install.
	if [[ ! -e "$POLICY" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$POLICY"
		chmod 0755 "$POLICY"
		made_policy=1
	fi
	# shellcheck disable=SC2086
	if ! apt-get install -y -q --no-install-recommends $missing >>"$LOG" 2>&1; then
		apt_update || die "apt-get install failed"
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $missing >>"$LOG" 2>&1
	fi
	if [[ $made_policy == 1 ]]; then rm -f "$POLICY"; made_policy=0; fi
fi

if [[ $installed_chrony == 1 || "${CI:-}" == true || "${NTPEXP_STOP_CHRONY:-}" == 1 ]]; then
	stop_chrony_service
fi

if ! ntpsec_ok; then
	ver=$(ntpdig_version)
	[[ -n "$ver" ]] || die "ntpsec-ntpdig is not installed"
	work=$(mktemp -d "$(dirname "$NTPSEC_DIR")/dl.XXXXXX")
	chmod 0755 "$work"
	id _apt >/dev/null 2>&1 && chown _apt "$work"
	dl() { (cd "$work" && apt-get download -q "ntpsec=$ver" >>"$LOG" 2>&1); }
	if ! dl; then
		apt_update || die "apt-get download ntpsec=$ver failed"
		dl
	fi
	dpkg -x "$work"/ntpsec_*.deb "$work/root"
	"$work/root/usr/sbin/ntpd" --version >>"$LOG" 2>&1 || die "unpacked ntpd does not run"
	echo "$ver" >"$work/root/.version"
	rm -rf "$NTPSEC_DIR"
	mv "$work/root" "$NTPSEC_DIR"
	rm -rf "$work"
	echo "install-peers: NTPsec ntpd $ver unpacked: $NTPSEC_DIR/usr/sbin/ntpd"
fi
