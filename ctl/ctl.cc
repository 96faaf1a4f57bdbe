// ternctl's top level: the global flags, the credentials, and running the
// command the user picked. The commands are in host_cmds.cc, service_cmds.cc,
// admin_cmds.cc and rollout_cmds.cc; what they share is in ctl_internal.h.
#include "ctl/ctl.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>
#include <iostream>
#include <cstdlib>
#include <ctime>

#include <CLI/CLI.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/grpc_limits.h"
#include "core/metrics.h"
#include "core/tls.h"
#include "core/version.h"
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

namespace {

// True when a TCP connection to `address` ("host:port") opens within a
// second: the coordinator is there, whatever its gRPC or TLS then said.
bool tcp_reachable(const std::string& address) {
  auto hp = split_host_port(address);
  if (!hp.ok()) return false;
  std::string host = hp->first;
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(hp->second).c_str(), &hints, &res) != 0) return false;
  bool ok = false;
  for (addrinfo* a = res; a != nullptr && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::poll(&p, 1, 1000) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return ok;
}

bool has(const std::string& text, std::initializer_list<const char*> words) {
  const std::string lower = absl::AsciiStrToLower(text);
  return std::any_of(words.begin(), words.end(), [&](const char* w) { return lower.find(w) != std::string::npos; });
}

}  // namespace

// One line: what was asked, what failed, what to do.
int CtlContext::rpc_error(const std::string& what, const grpc::Status& st) const {
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED: {
      const std::string& m = st.error_message();
      // A refused handshake is a credential problem, not an outage: retrying
      // will not help, so it is exit 6, with what to change.
      if (has(m, {"wrong_version_number", "wrong version number", "packet_length_too_long"})) {
        err << "ternctl: " << what << ": the coordinator at " << coordinator
            << " does not speak TLS (it runs with --insecure); add --insecure, or give it a certificate\n";
        return kExitDenied;
      }
      if (has(m, {"certificate_verify_failed", "certificate verify failed"})) {
        err << "ternctl: " << what << ": the coordinator at " << coordinator
            << " presented a certificate that the CA in --ca did not sign, or that does not name " << coordinator
            << " (" << m << "); give the fleet CA as --ca, or the name in its certificate as --server-name\n";
        return kExitDenied;
      }
      if (has(m, {"alert_certificate_expired", "certificate expired"})) {
        err << "ternctl: " << what << ": the coordinator refused your certificate: it has expired; get a new one "
            << "from the fleet CA\n";
        return kExitDenied;
      }
      if (has(m, {"unknown_ca", "unknown ca", "bad_certificate", "bad certificate", "certificate_required",
                  "certificate required", "alert_handshake_failure", "handshake failure"})) {
        err << "ternctl: " << what << ": the coordinator at " << coordinator
            << " refused your certificate during the TLS handshake (" << m
            << "); it accepts only certificates from its fleet CA that are valid and not revoked\n";
        return kExitDenied;
      }
      if (has(m, {"ssl", "tls", "handshake"})) {
        err << "ternctl: " << what << ": the TLS handshake with the coordinator at " << coordinator << " failed ("
            << m << "); check --ca, --cert and --key (or --token-file)\n";
        return kExitDenied;
      }
      if (tcp_reachable(coordinator)) {
        if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
          err << "ternctl: " << what << ": timed out after " << format_duration(timeout)
              << " (--timeout); the coordinator at " << coordinator
              << " is up, and what was asked may still finish: look again, or give a longer --timeout\n";
          return kExitTimeout;
        }
        if (insecure) {
          err << "ternctl: " << what << ": the coordinator at " << coordinator
              << " accepts connections but closed this plaintext one (" << m
              << "): it requires TLS; drop --insecure and give --ca with --cert and --key, or --token-file\n";
          return kExitDenied;
        }
      }
      err << "ternctl: " << what << ": cannot reach the coordinator at " << coordinator << " (" << m
          << "); is tern-coordinator running there? Set --coordinator or TERN_COORDINATOR.\n";
      return kExitUnavailable;
    }
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

std::string when(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  std::time_t secs = static_cast<std::time_t>(t.seconds());
  std::tm tm{};
  localtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
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
  if (auto st = check_own_certificate(*tls, g.tls); !st.ok()) return st;
  if (tls->cert_pem.empty() && token.empty()) {
    return absl::InvalidArgumentError("give --cert and --key, or --token-file (or TERN_TOKEN), to say who you are");
  }
  auto creds = tls_channel_credentials(*tls);
  if (!token.empty()) creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(token));
  auto args = tls_channel_args(*tls);
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);  // long host lists: as much as the coordinator sends
  return grpc::CreateCustomChannel(g.coordinator, creds, args);
}

// Edits (insert, delete, replace, swap two neighbours) from a to b.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The one of `names` `word` most likely means: a unique prefix, or the
// closest within a third of its length in edits; "" when none is.
std::string closest(const std::string& word, const std::vector<std::string>& names) {
  std::vector<std::string> prefixed;
  for (const auto& n : names) {
    if (word.size() >= 2 && n.rfind(word, 0) == 0) prefixed.push_back(n);
  }
  if (prefixed.size() == 1) return prefixed[0];
  std::string best;
  size_t best_d = std::max<size_t>(1, word.size() / 3) + 1;
  for (const auto& n : names) {
    const size_t d = edit_distance(word, n);
    if (d < best_d) best_d = d, best = n;
  }
  return best;
}

// What a parse error was about, said with the way out: the unknown command
// or flag and the nearest real one, and the subcommand's own help.
std::string explain_parse_error(CLI::App& app, const std::vector<std::string>& args, const std::string& what) {
  CLI::App* at = &app;
  std::string path = "ternctl";
  std::vector<CLI::App*> chain{&app};
  auto option_names = [&] {
    std::vector<std::string> names;
    for (CLI::App* a : chain) {
      for (const CLI::Option* o : a->get_options()) {
        for (const auto& l : o->get_lnames()) names.push_back("--" + l);
        for (const auto& s : o->get_snames()) names.push_back("-" + s);
      }
    }
    names.push_back("--help");
    return names;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() > 1 && arg[0] == '-') {
      const std::string name = arg.substr(0, arg.find('='));
      const CLI::Option* opt = nullptr;
      for (CLI::App* a : chain) {
        if ((opt = a->get_option_no_throw(name)) != nullptr) break;
      }
      if (opt == nullptr) {
        const std::string near = closest(name, option_names());
        return absl::StrCat("unknown flag ", name, " for `", path, "`",
                            near.empty() ? "" : absl::StrCat("; did you mean ", near, "?"), " (see `", path,
                            " --help`)");
      }
      if (arg.find('=') == std::string::npos && opt->get_items_expected_max() > 0) ++i;  // its value
      continue;
    }
    std::vector<std::string> subs;
    CLI::App* next = nullptr;
    for (CLI::App* s : at->get_subcommands({})) {
      subs.push_back(s->get_name());
      if (s->get_name() == arg) next = s;
    }
    if (next != nullptr) {
      at = next;
      chain.push_back(next);
      path += " " + arg;
      continue;
    }
    if (!subs.empty() && at->get_require_subcommand_min() > 0) {
      const std::string near = closest(arg, subs);
      return absl::StrCat("unknown command \"", arg, "\" for `", path, "`",
                          near.empty() ? absl::StrCat("; it has ", absl::StrJoin(subs, ", "))
                                       : absl::StrCat("; did you mean `", path, " ", near, "`?"),
                          " (see `", path, " --help`)");
    }
  }
  return absl::StrCat(what, " (see `", path, " --help`)");
}

// A bash completion script for the command tree of `app`: subcommands and
// flags at each level, from the same definitions that parse them.
std::string bash_completion(CLI::App& app) {
  std::vector<std::pair<std::string, std::string>> nodes;  // " rollout start" -> its words
  std::function<void(CLI::App*, const std::string&)> walk = [&](CLI::App* a, const std::string& path) {
    std::vector<std::string> words;
    for (CLI::App* s : a->get_subcommands({})) words.push_back(s->get_name());
    for (const CLI::Option* o : a->get_options()) {
      for (const auto& l : o->get_lnames()) words.push_back("--" + l);
    }
    if (a != &app) {  // global flags may follow a subcommand too
      for (const CLI::Option* o : app.get_options()) {
        for (const auto& l : o->get_lnames()) words.push_back("--" + l);
      }
    }
    std::vector<std::string> unique;
    for (auto& w : words) {
      if (std::find(unique.begin(), unique.end(), w) == unique.end()) unique.push_back(std::move(w));
    }
    nodes.emplace_back(path, absl::StrJoin(unique, " "));
    for (CLI::App* s : a->get_subcommands({})) walk(s, path + " " + s->get_name());
  };
  walk(&app, "");
  std::string out =
      "# bash completion for ternctl, made by `ternctl completion bash`:\n"
      "#   ternctl completion bash | sudo tee /usr/share/bash-completion/completions/ternctl\n"
      "_ternctl() {\n"
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" path=\"\" w i words\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=\"${COMP_WORDS[i]}\"\n"
      "    case \"$path $w\" in\n";
  std::vector<std::string> paths;
  for (const auto& [path, words] : nodes) {
    if (!path.empty()) paths.push_back(absl::StrCat("\"", path, "\""));
  }
  absl::StrAppend(&out, "      ", absl::StrJoin(paths, "|"), ") path=\"$path $w\" ;;\n", "    esac\n  done\n",
                  "  case \"$path\" in\n");
  for (const auto& [path, words] : nodes) absl::StrAppend(&out, "    \"", path, "\") words=\"", words, "\" ;;\n");
  absl::StrAppend(&out, "  esac\n", "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n", "}\n",
                  "complete -F _ternctl ternctl\n");
  return out;
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

  app.set_version_flag("--version", std::string("ternctl ") + kVersion, "ternctl's version (no coordinator asked)");

  CtlCommands cmds;
  add_hosts_command(app, cmds);
  add_version_command(app, cmds);
  add_service_commands(app, cmds);
  add_admin_commands(app, cmds);
  add_host_commands(app, cmds);
  add_rollout_commands(app, cmds);
  std::string shell;
  auto* completion = app.add_subcommand("completion", "print a shell completion script (bash)");
  completion->add_option("shell", shell, "the shell")->required()->check(CLI::IsMember({"bash"}));
  cmds.push_back({completion,
                  [&app](const CtlContext& c) {
                    c.out << bash_completion(app);
                    return kExitOk;
                  },
                  [] { return true; }});

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion&) {
    out << "ternctl " << kVersion << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    // Help for a subcommand arrives as CallForHelp too, so only real errors get here.
    err << "ternctl: " << explain_parse_error(app, args, e.what()) << "\n";
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
  c.insecure = g.insecure;
  c.tty = &out == &std::cout && ::isatty(STDOUT_FILENO);
  if (&out == &std::cout && ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO)) c.in = &std::cin;
  if (picked == nullptr || !picked->offline || !picked->offline()) {
    auto channel = make_channel(g);
    if (!channel.ok()) {
      err << "ternctl: " << channel.status().message() << "\n";
      // Credentials the coordinator would refuse are refused here: exit 6.
      return channel.status().code() == absl::StatusCode::kUnauthenticated ? kExitDenied : kExitUsage;
    }
    c.channel = *std::move(channel);
  }
  if (picked != nullptr) return picked->run(c);
  err << "ternctl: no command given (see ternctl --help)\n";
  return kExitUsage;
}

}  // namespace tern
