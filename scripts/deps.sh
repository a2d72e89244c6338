#!/usr/bin/env bash
# Installs the Debian packages moectl needs, if any is missing. Idempotent.
# Sourced by scripts/build, scripts/test and scripts/demo.
set -euo pipefail

MOE_DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config python3
  libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler libsqlite3-dev sqlite3
  libspdlog-dev libfmt-dev catch2 libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  libopenblas-dev libsystemd-dev systemd python3-zmq python3-protobuf python3-numpy
  libcpp-httplib-dev prometheus python3-matplotlib
)

# Only for scripts/bench (large: the PyTorch peer of the engine benchmark,
# bench/moe_peer.py, run by Debian's /usr/bin/python3). Never needed to test.
MOE_BENCH_DEBIAN_PACKAGES=(python3-torch python3-numpy)

moe_missing_packages() {  # [package...]; default: MOE_DEBIAN_PACKAGES
  local missing=()
  local wanted=("$@")
  [ "${#wanted[@]}" -eq 0 ] && wanted=("${MOE_DEBIAN_PACKAGES[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

moe_install_deps() {  # [package...]; default: MOE_DEBIAN_PACKAGES
  local missing
  missing=$(moe_missing_packages "$@")
  [ -z "$missing" ] && return 0
  echo "moectl: installing Debian packages: $missing"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "moectl: need root or sudo to install: $missing" >&2; return 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing
}

# CUDA: the toolkit ships outside Debian's packages on these machines; find nvcc
# where NVIDIA installs it so MOE_WITH_CUDA=AUTO compiles the CUDA backend.
moe_cuda_env() {
  if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
      if [ -x "$d/nvcc" ]; then export CUDACXX="$d/nvcc"; break; fi
    done
  fi
}
