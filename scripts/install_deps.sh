#!/usr/bin/env bash
# Installs kvsim's build and test dependencies from Debian packages.
# Idempotent: only packages that are not installed yet are fetched, so a second run is a no-op.
# Needs root (or sudo) on Debian 12 (bookworm).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libeigen3-dev          # dense linear algebra for attention and the reference transformer
  libhdf5-dev            # trace files (C and C++ API)
  libtbb-dev             # parallel sweeps
  libboost-dev libboost-graph-dev  # containers, min-cost flow for the pure-eviction optimum
  libgtest-dev libgmock-dev googletest
  libcli11-dev           # command-line parsing
  nlohmann-json3-dev     # JSON metadata and the reference-output fixtures
  libtomlplusplus-dev    # sweep files
  libfmt-dev             # formatting
  gnuplot-nox            # plots (PNG via pngcairo, SVG)
  python3 python3-h5py python3-numpy  # interop tests: traces written/read by plain h5py
  clang-format
  clang libclang-rt-14-dev  # libFuzzer + sanitizer runtimes for scripts/fuzz.sh
  ccache                 # compiler cache: rebuilds and the sanitizer pass reuse objects
  libopenmpi-dev openmpi-bin  # MPI sweeps (optional at build time; the tests run mpirun)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
