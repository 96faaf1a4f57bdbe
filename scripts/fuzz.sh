#!/usr/bin/env bash
# Builds tern's libFuzzer targets (fuzz/) with clang-14, AddressSanitizer and
# UndefinedBehaviorSanitizer in their own build dir, and runs each for a
# bounded time. Exits non-zero if any target finds a crash, a leak, a timeout
# or runs out of memory, and says where the input that did it was saved.
#
#   scripts/fuzz.sh                          # every target, 30 s each
#   scripts/fuzz.sh fuzz_bundle              # one target
#   TERN_FUZZ_SECONDS=600 scripts/fuzz.sh    # longer
#
# Environment: TERN_FUZZ_SECONDS (per target, default 30), TERN_FUZZ_RSS_MB
# (memory limit per target, default 2048), TERN_FUZZ_BUILD_DIR (default
# build-fuzz/), TERN_FUZZ_JOBS (build parallelism, default nproc).
#
# Inputs that find new code are kept in <build dir>/corpus/<target>/ (the
# seeds in fuzz/corpus/ are only read), crashes go to
# <build dir>/artifacts/<target>/. Reproduce one with
#   <build dir>/fuzz/<target> <build dir>/artifacts/<target>/crash-...
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${TERN_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${TERN_FUZZ_SECONDS:-30}
rss_mb=${TERN_FUZZ_RSS_MB:-2048}
jobs=${TERN_FUZZ_JOBS:-$(nproc)}
all_targets=(fuzz_service_spec fuzz_rollout_spec fuzz_prom_text fuzz_bundle fuzz_command fuzz_agent_messages)
if (($#)); then targets=("$@"); else targets=("${all_targets[@]}"); fi
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "error: unknown fuzz target $t (known: ${all_targets[*]})" >&2; exit 2; }
done

# What building the fuzzers needs: the compiler and libFuzzer, and the
# libraries tern_core, tern_agent_lib and tern_coordinator_lib link (the
# rest of scripts/setup.sh's list is for the daemons' tests and packaging).
packages=(
  clang-14 libclang-rt-14-dev cmake ninja-build pkg-config
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libre2-dev
  libboost-dev libboost-filesystem-dev libspdlog-dev libfmt-dev
  libsqlite3-dev libyaml-cpp-dev libcli11-dev libssl-dev libsystemd-dev zlib1g-dev libcurl4-openssl-dev
)
# shellcheck source=scripts/apt_install.sh
. "$root/scripts/apt_install.sh"
apt_install "${packages[@]}"

# Every library the fuzzers link is instrumented (sanitizers and coverage);
# -fsanitize=fuzzer itself is added to the fuzzer executables only. Warnings
# are not errors here: the GCC build (scripts/setup.sh) is the one that gates.
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link"
if [ ! -f "$build_dir/build.ninja" ]; then
  echo "==> configuring $build_dir (clang-14, ASan + UBSan + libFuzzer)"
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS="$sanitize" \
    -DTERN_FUZZ=ON -DTERN_BUILD_TESTS=OFF -DTERN_WERROR=OFF >/dev/null
fi
echo "==> building ${targets[*]}"
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}" -- --quiet

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

declare -A dict=([fuzz_service_spec]=yaml.dict [fuzz_rollout_spec]=yaml.dict [fuzz_prom_text]=prom.dict [fuzz_bundle]=tar.dict
                [fuzz_agent_messages]=agent.dict)
declare -A max_len=([fuzz_bundle]=16384)
# fuzz_agent_messages keeps one coordinator whose state (hosts, their
# history, timers) grows with every input by design: libFuzzer's leak check
# after each input that allocates more than it frees would only find that,
# and costs most of a short run before it gives up. LeakSanitizer still
# checks at exit.
declare -A extra=([fuzz_agent_messages]=-detect_leaks=0)
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="$build_dir/corpus/$t"
  artifacts="$build_dir/artifacts/$t"
  log="$build_dir/logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  args=(-max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  [ -n "${dict[$t]:-}" ] && args+=(-dict="$root/fuzz/dict/${dict[$t]}")
  [ -n "${max_len[$t]:-}" ] && args+=(-max_len="${max_len[$t]}")
  [ -n "${extra[$t]:-}" ] && args+=("${extra[$t]}")
  echo "==> $t for ${seconds}s (log: $log)"
  status=0
  "$build_dir/fuzz/$t" "${args[@]}" "$corpus" "$root/fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    saved=$(grep -o "Test unit written to .*" "$log" | sed 's/^Test unit written to //' | tail -1)
    echo "!!! $t failed (exit $status); the input is saved in ${saved:-$artifacts/}"
    # What broke: a tern invariant, an exception, a sanitizer report.
    grep -m3 -E "tern fuzz:|what\(\):|ERROR: (AddressSanitizer|LeakSanitizer)|runtime error|SUMMARY: libFuzzer: (timeout|out-of-memory)" \
      "$log" | sed 's/^/    /' || true
    echo "    reproduce: $build_dir/fuzz/$t ${saved:-<input>}"
    summary+=("$(printf '%-20s FAILED  %10s runs  %8s exec/s' "$t" "${runs:-?}" "${rate:-?}")")
  else
    summary+=("$(printf '%-20s ok      %10s runs  %8s exec/s' "$t" "${runs:-?}" "${rate:-?}")")
  fi
done

echo "==> summary"
printf '    %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "error: ${#failed[@]} fuzz target(s) failed: ${failed[*]} (logs in $build_dir/logs/)" >&2
  exit 1
fi
