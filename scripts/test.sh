#!/usr/bin/env bash
# Builds lowbit and runs every test: a Release build, an AddressSanitizer + UndefinedBehaviorSanitizer
# build, an AArch64 cross build under qemu-user, and each fuzz target for LOWBIT_FUZZ_SECONDS
# (default 30). Installs what it needs from Debian's archive when run as root.
# Tests read ../shared beside the project (or $LOWBIT_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export LOWBIT_SHARED="${LOWBIT_SHARED:-$(cd "$root/.." && pwd)/shared}"
fuzz_seconds="${LOWBIT_FUZZ_SECONDS:-30}"
jobs=$(nproc)

install_tools() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v gcc >/dev/null || missing+=(gcc make libc6-dev)
  command -v clang >/dev/null || missing+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev)
  command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  # the classifier tests train and evaluate on the real Fashion-MNIST images
  [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "missing tools: ${missing[*]} (run as root to install them)" >&2
      exit 1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

passed=0
failed=0
# Runs ctest in a build folder and adds its counts to the totals.
run_ctest() {
  local dir=$1 log
  log=$(mktemp)
  set +e
  (cd "$dir" && ctest --output-on-failure -j"$jobs") 2>&1 | tee "$log"
  set -e
  local line total bad
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
  else
    bad=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
    total=$(echo "$line" | sed -E 's/.* failed out of ([0-9]+).*/\1/')
    passed=$((passed + total - bad))
    failed=$((failed + bad))
  fi
  rm -f "$log"
}

stage() { printf '\n==== %s ====\n' "$1"; }

install_tools
[ -d "$LOWBIT_SHARED" ] || { echo "shared folder $LOWBIT_SHARED is missing: tests need it" >&2; }

stage "Release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$jobs"
run_ctest build/release

stage "AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOWBIT_SANITIZE=ON >/dev/null
cmake --build build/sanitize -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 run_ctest build/sanitize

stage "AArch64 cross build, tests under qemu-user"
cmake -S . -B build/aarch64 -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" >/dev/null
cmake --build build/aarch64 -j"$jobs"
# under emulation the heaviest tests run a representative subset (LOWBIT_TEST_QUICK)
LOWBIT_TEST_QUICK=1 run_ctest build/aarch64

stage "Fuzz targets, ${fuzz_seconds}s each"
CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOWBIT_FUZZ=ON >/dev/null
cmake --build build/fuzz -j"$jobs"
for target in build/fuzz/tests/fuzz/fuzz_*; do
  [ -x "$target" ] || continue
  corpus=$(mktemp -d)
  name=$(basename "$target")
  # seeds: the target's own small fixtures, and for the GGUF reader the golden files (read only)
  seeds=("$root/tests/fuzz/seeds/$name")
  [ "$name" = fuzz_gguf ] && seeds+=("$LOWBIT_SHARED/golden")
  if "$target" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 "$corpus" "${seeds[@]}" \
      > "$corpus.log" 2>&1; then
    echo "$(basename "$target"): $(grep -E '^#[0-9]+.*(DONE|pulse)' "$corpus.log" | tail -1)"
    passed=$((passed + 1))
  else
    tail -40 "$corpus.log"
    echo "$(basename "$target"): FAILED"
    failed=$((failed + 1))
  fi
  rm -rf "$corpus" "$corpus.log"
done

printf '\n%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
