# shellcheck shell=bash
# Installs what Wattest needs on Debian/Ubuntu when it is missing: build tools and libraries,
# swtpm for the TPM tests, the PostgreSQL client (and server binaries for a disposable test
# cluster), curl, headless Chromium for the /docs page test. Sourced by scripts/test.sh and scripts/quickstart.sh.

wattest_install_packages() {
  # What building and running Wattest needs (scripts/quickstart.sh: --build-only), and what the
  # test suite adds: a software TPM, PostgreSQL's client (--with-pg-server: and its server),
  # Python for the interoperability tests, Chromium for the Swagger UI page.
  local want=(build-essential pkg-config libssl-dev libtss2-dev curl ca-certificates python3)
  case "${1:-}" in
    --build-only) ;;
    --with-pg-server) want+=(swtpm swtpm-tools tpm2-tools postgresql-client procps python3-venv chromium postgresql) ;;
    *) want+=(swtpm swtpm-tools tpm2-tools postgresql-client procps python3-venv chromium) ;;
  esac
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> Installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "==> Installing the Rust toolchain with rustup"
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
  # The workspace's rust-version (Cargo.toml): sqlx 0.9 and sea-orm 2 need Rust 1.94.
  local have
  have=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n' 1.94.0 "$have" | sort -V | head -n1)" != 1.94.0 ]; then
    if command -v rustup >/dev/null 2>&1; then
      echo "==> Rust $have is older than 1.94: rustup update stable"
      rustup update stable
    else
      echo "error: Rust $have is older than the 1.94 this workspace needs, and there is no rustup to update it" >&2
      return 1
    fi
  fi
}
