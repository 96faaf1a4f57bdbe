#pragma once

namespace tern {

// Runs the one-time initialisations of the libraries underneath (today:
// abseil's CPU-frequency probe, and switching off absl::Mutex's deadlock
// detector, which Debian's debug-mode abseil leaves on) on the calling thread, before any other
// thread or gRPC channel exists. Idempotent and thread-safe.
//
// Why: the first contended absl::Mutex makes abseil probe
// /sys/devices/system/cpu/cpu0/tsc_freq_khz, which leaves errno = ENOENT on
// most kernels. gRPC 1.51 (Debian 12) reads errno a few calls after its
// non-blocking connect(), so if that probe lands in between, a healthy
// connect is reported as "No such file or directory": a spurious failed
// health probe, coordinator connection or ternctl call. Doing it up front
// closes the window.
void init_runtime();

}  // namespace tern
