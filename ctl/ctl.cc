// ternctl's top level: the global flags, the credentials, and running the
// command the user picked. The commands are in host_cmds.cc, service_cmds.cc,
// admin_cmds.cc and rollout_cmds.cc; what they share is in ctl_internal.h.
#include "ctl/ctl.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <iostream>
#include <cstdlib>
#include <ctime>

#include <CLI/CLI.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/grpc_limits.h"
#include "core/tls.h"
#include "ctl/ctl_internal.h"

namespace tern {

std::string to_json(const google::protobuf::Message& msg, bool compact) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = !compact;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
  return out;
}

void CtlContext::set_deadline(grpc::ClientContext& ctx) const {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

// One line: what was asked, what failed, what to do.
int CtlContext::rpc_error(const std::string& what, const grpc::Status& st) const {
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "ternctl: " << what << ": cannot reach the coordinator at " << coordinator << " ("
          << st.error_message() << "); is tern-coordinator running there? Set --coordinator or TERN_COORDINATOR.\n";
      return kExitUnavailable;
    case grpc::StatusCode::NOT_FOUND:
      err << "ternctl: " << what << ": " << st.error_message() << "\n";
      return kExitNotFound;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      err << "ternctl: " << what << ": refused: " << st.error_message() << "\n";
      return kExitDenied;
    case grpc::StatusCode::UNIMPLEMENTED:
      err << "ternctl: " << what << ": the coordinator at " << coordinator
          << " does not support this call; upgrade tern-coordinator\n";
      return kExitFailed;
    default:
      err << "ternctl: " << what << ": " << st.error_message() << "\n";
      return kExitFailed;
  }
}

int CtlContext::usage_error(absl::string_view what, absl::string_view why) const {
  err << "ternctl: " << what << ": " << why << "\n";
  return kExitUsage;
}

std::optional<Millis> duration_flag(const CtlContext& c, absl::string_view what, const std::string& text) {
  auto d = parse_duration(text);
  if (!d.ok()) {
    c.usage_error(what, d.status().message());
    return std::nullopt;
  }
  return *d;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  std::ostringstream o;
  o << std::fixed << std::setprecision(u == 0 ? 0 : 1) << v << " " << units[u];
  return o.str();
}

std::string ago(const google::protobuf::Timestamp& t, int64_t now_ms) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  int64_t d = now_ms - google::protobuf::util::TimeUtil::TimestampToMilliseconds(t);
  if (d < 0) d = 0;
  d -= d % 1000;  // whole seconds are enough for a table
  return d == 0 ? "now" : format_duration(Millis(d)) + " ago";
}

std::string clock_time(const google::protobuf::Timestamp& t) {
  std::time_t secs = static_cast<std::time_t>(t.seconds());
  std::tm tm{};
  localtime_r(&secs, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

namespace {

// The global flags as given, before they become a CtlContext.
struct GlobalFlags {
  std::string coordinator;
  std::string output = "table";
  std::string timeout = "10s";
  TlsFiles tls;
  std::string token;
  std::string token_file;
  bool insecure = false;
};

std::string env_or(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// The token in `path`: its one word, surrounding whitespace (the newline
// an editor or `echo` adds) dropped.
absl::StatusOr<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("--token-file ", path, ": cannot read it (", std::strerror(errno),
                                                   "); give the file you saved the token of `ternctl token create` in"));
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string token(absl::StripAsciiWhitespace(text.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--token-file ", path, " is empty; save the token "
                                                   "`ternctl token create` printed in it"));
  }
  if (std::any_of(token.begin(), token.end(), [](char ch) { return absl::ascii_isspace(ch); })) {
    return absl::InvalidArgumentError(absl::StrCat("--token-file ", path, " holds more than one word; it must hold "
                                                   "the token alone"));
  }
  return token;
}

// TLS with a client certificate, or TLS with a bearer token, or (only when
// asked for) plaintext.
absl::StatusOr<std::shared_ptr<grpc::Channel>> make_channel(const GlobalFlags& g) {
  if (g.insecure) {
    if (!g.tls.empty() || !g.token.empty() || !g.token_file.empty()) {
      return absl::InvalidArgumentError("--insecure cannot be combined with --ca/--cert/--key/--token/--token-file");
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
    return grpc::CreateCustomChannel(g.coordinator, grpc::InsecureChannelCredentials(), args);
  }
  std::string token = g.token;
  if (!g.token_file.empty()) {
    auto from_file = read_token_file(g.token_file);
    if (!from_file.ok()) return from_file.status();
    token = *std::move(from_file);
  }
  if (g.tls.ca.empty()) {
    return absl::InvalidArgumentError(
        "no credentials: give --ca (the fleet CA) with --cert/--key or --token-file (or TERN_CA, TERN_CERT, "
        "TERN_KEY, TERN_TOKEN), or --insecure for a coordinator running without TLS");
  }
  auto tls = load_tls(g.tls, /*need_cert=*/false, "ternctl");
  if (!tls.ok()) return tls.status();
  if (tls->cert_pem.empty() && token.empty()) {
    return absl::InvalidArgumentError("give --cert and --key, or --token-file (or TERN_TOKEN), to say who you are");
  }
  auto creds = tls_channel_credentials(*tls);
  if (!token.empty()) creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(token));
  auto args = tls_channel_args(*tls);
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);  // long host lists: as much as the coordinator sends
  return grpc::CreateCustomChannel(g.coordinator, creds, args);
}

}  // namespace

int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  GlobalFlags g;
  const char* env = std::getenv("TERN_COORDINATOR");
  g.coordinator = env && *env ? env : "127.0.0.1:7400";

  CLI::App app{"ternctl: drive tern blue/green and canary rollouts"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand: `ternctl hosts -o json`
  app.add_option("--coordinator", g.coordinator, "coordinator address (env TERN_COORDINATOR; default 127.0.0.1:7400)");
  app.add_option("-o,--output", g.output, "output format")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--timeout", g.timeout, "deadline for each call (e.g. 10s)");
  g.tls.ca = env_or("TERN_CA");
  g.tls.cert = env_or("TERN_CERT");
  g.tls.key = env_or("TERN_KEY");
  g.token = env_or("TERN_TOKEN");
  g.insecure = env_or("TERN_INSECURE") == "1";
  app.add_option("--ca", g.tls.ca, "fleet CA certificate (PEM) (env TERN_CA)");
  app.add_option("--cert", g.tls.cert, "your client certificate (PEM); its OU is your role (env TERN_CERT)");
  app.add_option("--key", g.tls.key, "your private key (PEM) (env TERN_KEY)");
  auto* token = app.add_option("--token", g.token,
                               "a bearer token instead of a certificate; visible to every local user in `ps`, so "
                               "prefer --token-file or TERN_TOKEN (env TERN_TOKEN)");
  app.add_option("--token-file", g.token_file, "a file holding the bearer token (overrides TERN_TOKEN)")
      ->excludes(token);
  app.add_option("--server-name", g.tls.server_name, "name to expect in the coordinator's certificate");
  app.add_flag("--insecure", g.insecure, "plaintext, for a coordinator started with --insecure (env TERN_INSECURE=1)");

  CtlCommands cmds;
  add_hosts_command(app, cmds);
  add_version_command(app, cmds);
  add_service_commands(app, cmds);
  add_admin_commands(app, cmds);
  add_host_commands(app, cmds);
  add_rollout_commands(app, cmds);

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    // Help for a subcommand arrives as CallForHelp too, so only real errors get here.
    err << "ternctl: " << e.what() << " (see ternctl --help)\n";
    return kExitUsage;
  }
  auto timeout = parse_duration(g.timeout);
  if (!timeout.ok()) {
    err << "ternctl: --timeout: " << timeout.status().message() << "\n";
    return kExitUsage;
  }
  const CtlCommand* picked = nullptr;
  for (const auto& cmd : cmds) {
    if (*cmd.cmd) {
      picked = &cmd;
      break;
    }
  }
  CtlContext c{out, err, g.coordinator, g.output == "json", *timeout, nullptr};
  if (&out == &std::cout && ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO)) c.in = &std::cin;
  if (picked == nullptr || !picked->offline || !picked->offline()) {
    auto channel = make_channel(g);
    if (!channel.ok()) {
      err << "ternctl: " << channel.status().message() << "\n";
      return kExitUsage;
    }
    c.channel = *std::move(channel);
  }
  if (picked != nullptr) return picked->run(c);
  err << "ternctl: no command given (see ternctl --help)\n";
  return kExitUsage;
}

}  // namespace tern
