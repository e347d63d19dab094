# Shared by scripts/test, scripts/build-arm and scripts/package (sourced, not run).
# Installs what a cross build needs when it is missing: Debian's cross gcc and C library for
# the target, qemu-user-static to run its tests, and the Rust standard library for it.

# apt_need PKG...: installs the packages that are not installed yet (one apt run).
apt_need() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  printf '\n== installing %s\n' "${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# deb_arch TRIPLE: the Debian architecture of a Rust target triple.
deb_arch() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo amd64 ;;
    aarch64-unknown-linux-gnu) echo arm64 ;;
    armv7-unknown-linux-gnueabihf) echo armhf ;;
    *) echo "unsupported target $1" >&2; return 1 ;;
  esac
}

# rust_target DEBARCH: the Rust target triple of a Debian architecture.
rust_target() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unsupported architecture $1 (amd64, arm64, armhf)" >&2; return 1 ;;
  esac
}

# gnu_prefix TRIPLE: the prefix of Debian's cross binutils (empty for the host).
gnu_prefix() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu- ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf- ;;
    *) echo "" ;;
  esac
}

# cross_ready TRIPLE: cross compiler, C library, qemu-user and the Rust target for TRIPLE.
# The linker, runner and CC_/AR_ settings themselves live in .cargo/config.toml.
cross_ready() {
  case "$1" in
    x86_64-unknown-linux-gnu) return 0 ;;
    aarch64-unknown-linux-gnu) apt_need gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static ;;
    armv7-unknown-linux-gnueabihf) apt_need gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static ;;
    *) echo "unsupported target $1" >&2; return 1 ;;
  esac
  rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}

# glibc_floor BINARY: the highest GLIBC_x.y symbol version BINARY needs (its glibc floor).
glibc_floor() {
  objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n -u | tail -1
}
