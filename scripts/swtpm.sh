#!/usr/bin/env bash
# Starts or stops a disposable software TPM 2.0 (swtpm) for development and tests.
#
#   scripts/swtpm.sh start PORT DIR   # prints the TCTI: swtpm:host=127.0.0.1,port=PORT
#   scripts/swtpm.sh stop DIR
#
# The TPM state, its EK certificate authority and the logs all live in DIR, so runs never touch
# /var/lib/swtpm-localca and can run side by side. After `start`:
#   DIR/localca/swtpm-localca-rootca-cert.pem  self-signed root CA (trust anchor in tests)
#   DIR/localca/issuercert.pem                 intermediate CA that signed the EK certificate
# The control channel listens on PORT+1. Needs: apt-get install swtpm swtpm-tools
set -euo pipefail

usage() {
	echo "usage: $0 start PORT DIR | stop DIR" >&2
	exit 2
}

need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "error: $1 not found; install it with: apt-get install -y swtpm swtpm-tools" >&2
		exit 3
	fi
}

start() {
	local port=$1 dir=$2
	need swtpm
	need swtpm_setup
	need swtpm_localca
	mkdir -p "$dir/state" "$dir/localca"
	dir=$(cd "$dir" && pwd)
	# A private CA configuration: swtpm_localca creates the root and the issuer on first use.
	cat >"$dir/swtpm-localca.conf" <<CONF
statedir = $dir/localca
signingkey = $dir/localca/signkey.pem
issuercert = $dir/localca/issuercert.pem
certserial = $dir/localca/certserial
CONF
	cat >"$dir/swtpm-localca.options" <<CONF
--platform-manufacturer Wattest
--platform-version 2.1
--platform-model swtpm
CONF
	cat >"$dir/swtpm_setup.conf" <<CONF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $dir/swtpm-localca.conf
create_certs_tool_options = $dir/swtpm-localca.options
active_pcr_banks = sha256
CONF
	swtpm_setup --tpm2 --tpmstate "$dir/state" --config "$dir/swtpm_setup.conf" \
		--createek --create-ek-cert --create-platform-cert --lock-nvram --overwrite \
		--logfile "$dir/swtpm_setup.log" >/dev/null
	swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
		--server "type=tcp,port=$port,bindaddr=127.0.0.1" \
		--ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
		--flags not-need-init,startup-clear --daemon \
		--pid "file=$dir/swtpm.pid" --log "file=$dir/swtpm.log"
	echo "swtpm:host=127.0.0.1,port=$port"
}

stop() {
	local dir=$1
	if [[ -f "$dir/swtpm.pid" ]]; then
		kill "$(cat "$dir/swtpm.pid")" 2>/dev/null || true
		rm -f "$dir/swtpm.pid"
	fi
}

case "${1:-}" in
start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
*) usage ;;
esac
