#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/clock.h"
#include "tern/v1/service.pb.h"

namespace tern {

// Service specs: the YAML an operator writes, and the checks every copy of a
// spec passes before anyone acts on it (ternctl before sending, the
// coordinator before storing, the agent before running).
//
//   name: web
//   selector: role=web
//   ports: [{name: http, protocol: tcp, public: 8080, blue: 9001, green: 9002}]
//   argv: ["{release_dir}/demo-app", "--port", "{port}"]
//   user: tern-app
//   env: {LOG_LEVEL: info}
//   working_dir: "{release_dir}"
//   health: {http: {path: /healthz}, interval: 500ms, timeout: 1s, healthy_deadline: 30s}
//   drain: 10s
//   grace: 5s
//   keep_warm: true
//   restart: {policy: on-failure, max_restarts: 3, delay: 1s}
//   split: client
//   templates: [{source: conf/app.conf.tmpl, dest: app.conf, mode: "0640"}]
//   hooks:
//     pre_traffic: {argv: ["{release_dir}/bin/smoke", "http://127.0.0.1:{port}/"], timeout: 30s}
//     post_rollback: {argv: ["{release_dir}/bin/announce"], on_failure: warn, idempotent: true}

// Parses YAML text; errors name the origin, line and key. The result is validated.
absl::StatusOr<tern::v1::ServiceSpec> parse_service_spec(const std::string& yaml, const std::string& origin);
absl::StatusOr<tern::v1::ServiceSpec> load_service_spec_file(const std::string& path);

// The largest spec, serialized, that the coordinator stores: every agent the
// spec selects receives it whole in one gRPC message, so it stays far below
// kMaxGrpcMessageBytes (core/grpc_limits.h). Large data belongs in the release.
inline constexpr size_t kMaxServiceSpecBytes = 256 << 10;

// Checks a spec from any source; the error names the field and the reason:
// "field ports[0].green: 9001 is already used by ports[0].blue". A spec over
// kMaxServiceSpecBytes is refused first, saying its size and the limit.
absl::Status validate_service_spec(const tern::v1::ServiceSpec& spec);

// OK when none of `spec`'s public and slot ports is a public or slot port of
// `other`, another service; otherwise FAILED_PRECONDITION naming both fields
// and the other service. Selectors are not consulted: hosts' labels change,
// and a port is the service's on every host it may ever run on.
absl::Status check_ports_free(const tern::v1::ServiceSpec& spec, const tern::v1::ServiceSpec& other);

// Fills defaults the agent relies on (drain, grace, health kind, restart policy).
void apply_service_defaults(tern::v1::ServiceSpec& spec);

bool is_valid_service_name(const std::string& name);

// "SIGTERM", "TERM" or "term" -> SIGTERM, for the signals a spec may name
// (TERM, INT, QUIT, HUP, USR1, USR2, WINCH, KILL); nullopt otherwise.
std::optional<int> parse_signal_name(const std::string& name);
// The stop signal a spec asks for (SIGTERM when it names none).
int stop_signal(const tern::v1::ServiceSpec& spec);
// "512MiB", "2G", "1048576" -> bytes (K, M, G, T are powers of 1024 as in
// cgroupfs, with or without "iB"/"B"); nullopt for anything else or 0.
std::optional<uint64_t> parse_byte_size(const std::string& text);
// A number of CPUs ("1.5", "0.25", at least 0.01, at most 1024) -> µs of CPU
// time per 100 ms period; nullopt for anything else.
std::optional<uint64_t> parse_cpu_quota_us(const std::string& text);
// Versions name directories: 1-64 of [A-Za-z0-9._+-], not starting with '.' or '-'.
bool is_valid_version(const std::string& version);

// The most templates (config files rendered per slot) a spec may list.
inline constexpr int kMaxTemplates = 64;
// The most bytes of a template path (source or dest).
inline constexpr size_t kMaxTemplatePathBytes = 1024;

// A path that must stay below some directory by its text alone (a template's
// source in the release, its dest in the render dir): relative, '/'-separated
// components that are neither empty, "." nor "..", no control characters, at
// most kMaxTemplatePathBytes. INVALID_ARGUMENT with the reason otherwise.
// Symlinks are the reader's business (the agent resolves and checks them).
absl::Status check_relative_path(const std::string& path);

// A template's mode, the one place its text is read: "" is 0640; otherwise 3
// or 4 octal digits, at most 0777 (no setuid, setgid or sticky bits) and
// readable by its owner (the slot's user). INVALID_ARGUMENT with the reason.
absl::StatusOr<uint32_t> parse_template_mode(const std::string& mode);

// restart.policy, the one place its words are read: "on-failure" or "never".
enum class RestartPolicy { kOnFailure, kNever };
// nullopt for any other word (an empty policy is not a word either: the
// defaults fill it in before anyone acts on it).
std::optional<RestartPolicy> parse_restart_policy(const std::string& word);
// What the agent does: restarts only on "on-failure"; anything else, never.
RestartPolicy restart_policy(const tern::v1::RestartPolicy& restart);

// split, the one place its words are read: how a canary weight divides the
// public port's new connections. kConnection ("connection", or empty: the
// default) draws each new connection at random; kClient ("client") hashes the
// client's source address, so a client keeps its side.
enum class TrafficSplit { kConnection, kClient };
// nullopt for any other word.
std::optional<TrafficSplit> parse_traffic_split(const std::string& word);
// What the agent does: kClient only for "client".
TrafficSplit traffic_split(const tern::v1::ServiceSpec& spec);

// The lifecycle hooks by their key in the spec, in the order a deploy meets them.
inline constexpr const char* kHookNames[] = {"pre_start", "pre_traffic", "post_switch", "pre_stop",
                                             "post_rollback"};
// The hook `name` (one of kHookNames) of `hooks`; nullptr for any other name.
// A hook the spec does not give has no argv.
const tern::v1::Hook* find_hook(const tern::v1::Hooks& hooks, absl::string_view name);
tern::v1::Hook* find_mutable_hook(tern::v1::Hooks& hooks, absl::string_view name);

// on_failure, the one place its words are read. kFail stops the step the
// hook guards (pre_start, pre_traffic) or fails the command without undoing
// what already happened (the others); kWarn reports and goes on.
enum class HookFailure { kFail, kWarn };
std::optional<HookFailure> parse_hook_failure(const std::string& word);
// What the agent does for hook `name`: its on_failure, or the default when
// empty: kFail for the hooks that guard a step (pre_start, pre_traffic),
// kWarn for those that follow one (post_switch, pre_stop, post_rollback).
HookFailure hook_failure(absl::string_view name, const tern::v1::Hook& hook);
// A hook's timeout: its own, or kDefaultHookTimeout when unset.
inline constexpr Millis kDefaultHookTimeout{60'000};
Millis hook_timeout(const tern::v1::Hook& hook);

}  // namespace tern
