#include "coordinator/webhook.h"

#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/words.h"

namespace tern {
namespace {

constexpr size_t kMaxSecretBytes = 64 << 10;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

bool plain_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// "http(s)://host[:port][/path][?query]": a scheme, a host, nothing that
// would hide credentials in a config others read.
absl::Status check_url(const std::string& url) {
  const std::string lower = absl::AsciiStrToLower(url);
  std::string rest;
  if (absl::StartsWith(lower, "http://")) {
    rest = url.substr(7);
  } else if (absl::StartsWith(lower, "https://")) {
    rest = url.substr(8);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("\"", url, "\" must start with http:// or https://"));
  }
  const std::string authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty() || authority[0] == ':') {
    return absl::InvalidArgumentError(absl::StrCat("\"", url, "\" names no host"));
  }
  if (authority.find('@') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", url, "\" holds credentials; the receiver checks X-Tern-Signature instead (secret_file)"));
  }
  if (url.find('#') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", url, "\" has a fragment, which is never sent"));
  }
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat("\"", url, "\" holds a space or control character"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> read_secret(const std::string& key, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    return absl::FailedPreconditionError(absl::StrCat("key \"", key, "\": ", path, " cannot be read: ",
                                                      errno_text(err)));
  }
  absl::Cleanup closer = [fd] { ::close(fd); };
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("key \"", key, "\": ", path, " is not a regular file"));
  }
  if ((st.st_mode & S_IROTH) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "key \"%s\": %s is readable by everyone (mode %04o), and it signs what the coordinator says; run: chmod "
        "o-rwx %s",
        key, path, st.st_mode & 07777, path));
  }
  std::string content;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return absl::FailedPreconditionError(absl::StrCat("key \"", key, "\": ", path, " cannot be read: ",
                                                        errno_text(err)));
    }
    if (n == 0) break;
    content.append(buf, static_cast<size_t>(n));
    if (content.size() > kMaxSecretBytes) {
      return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\": ", path, " is over 64 KiB"));
    }
  }
  // A trailing newline from `echo` or an editor is not part of the key.
  std::string secret(absl::StripTrailingAsciiWhitespace(content));
  if (secret.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\": ", path,
                                                   " is empty; put the HMAC key in it (e.g. openssl rand -hex 32)"));
  }
  return secret;
}

}  // namespace

std::string webhook_event_name(tern::v1::RolloutEventKind kind) {
  std::string name = word(kind);
  std::replace(name.begin(), name.end(), ' ', '_');
  return name;
}

std::optional<tern::v1::RolloutEventKind> webhook_event_kind(const std::string& name) {
  std::string w = name;
  std::replace(w.begin(), w.end(), '_', ' ');
  // Words that have "_" in them ("wave_started") are looked up as written.
  for (const std::string& candidate : {name, w}) {
    if (auto k = rollout_event_kind(candidate); k && *k != tern::v1::ROLLOUT_EVENT_KIND_END) return k;
  }
  return std::nullopt;
}

const std::set<tern::v1::RolloutEventKind>& webhook_default_events() {
  static const std::set<tern::v1::RolloutEventKind> kinds = {
      tern::v1::ROLLOUT_EVENT_KIND_STARTED,          tern::v1::ROLLOUT_EVENT_KIND_RUNNING,
      tern::v1::ROLLOUT_EVENT_KIND_PAUSED,           tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED,
      tern::v1::ROLLOUT_EVENT_KIND_FAILED,           tern::v1::ROLLOUT_EVENT_KIND_ROLLING_BACK,
      tern::v1::ROLLOUT_EVENT_KIND_ROLLED_BACK,      tern::v1::ROLLOUT_EVENT_KIND_ABORTED,
      tern::v1::ROLLOUT_EVENT_KIND_WAVE_STARTED,     tern::v1::ROLLOUT_EVENT_KIND_AWAITING_APPROVAL,
      tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT, tern::v1::ROLLOUT_EVENT_KIND_HOST_FAILED,
  };
  return kinds;
}

absl::Status validate_webhooks(const CoordinatorConfig& cfg) {
  if (cfg.webhook_max_age < Millis(1000)) {
    return absl::InvalidArgumentError("key \"webhook_max_age\": must be at least 1s");
  }
  if (!cfg.webhooks.empty() && cfg.database == ":memory:") {
    return absl::InvalidArgumentError(
        "key \"webhooks\": deliveries are kept in the database, and its sender reads them over a connection of its "
        "own, which an in-memory database cannot share; give a database file");
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < cfg.webhooks.size(); ++i) {
    const auto& w = cfg.webhooks[i];
    const std::string key = absl::StrCat("webhooks[", i, "]");
    if (!plain_name(w.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key \"", key, ".name\": \"", w.name,
          "\" must be 1-64 letters, digits, '-', '_' or '.' (rollout specs and metrics name the webhook by it)"));
    }
    if (!names.insert(w.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("key \"", key, ".name\": a webhook named \"", w.name, "\" is already declared; names are unique"));
    }
    if (auto st = check_url(w.url); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key \"", key, ".url\": ", st.message()));
    }
    if (w.secret_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key \"", key, ".secret_file\": is required; receivers check each body's HMAC-SHA256 with that key"));
    }
    for (const auto& e : w.events) {
      if (!webhook_event_kind(e)) {
        std::vector<std::string> known;
        for (auto k : webhook_default_events()) known.push_back(webhook_event_name(k));
        return absl::InvalidArgumentError(absl::StrCat("key \"", key, ".events\": unknown event \"", e,
                                                       "\"; rollout-level events are: ", absl::StrJoin(known, ", "),
                                                       " (docs/API.md lists every event)"));
      }
    }
    if (w.timeout < Millis(100) || w.timeout > Millis(300'000)) {
      return absl::InvalidArgumentError(absl::StrCat("key \"", key, ".timeout\": must be from 100ms to 5m"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WebhookTarget>> load_webhook_targets(const CoordinatorConfig& cfg) {
  std::vector<WebhookTarget> out;
  for (std::size_t i = 0; i < cfg.webhooks.size(); ++i) {
    const auto& w = cfg.webhooks[i];
    auto secret = read_secret(absl::StrCat("webhooks[", i, "].secret_file"), w.secret_file);
    if (!secret.ok()) return secret.status();
    WebhookTarget t{w.name, w.url, *std::move(secret), {}, w.ca_file, w.timeout};
    if (w.events.empty()) {
      t.events = webhook_default_events();
    } else {
      for (const auto& e : w.events) {
        if (auto k = webhook_event_kind(e)) t.events.insert(*k);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::string webhook_delivery_id(const std::string& rollout_id, uint64_t sequence) {
  return absl::StrCat(rollout_id, ":", sequence);
}

std::string webhook_payload(const std::string& id, tern::v1::RolloutEventKind kind, const tern::v1::Rollout& summary,
                            const std::string& message, int64_t time_ms) {
  using google::protobuf::Struct;
  Struct body;
  auto& f = *body.mutable_fields();
  f["id"].set_string_value(id);
  f["event"].set_string_value(webhook_event_name(kind));
  f["rollout"].set_string_value(summary.id());
  f["service"].set_string_value(summary.spec().service());
  f["release"].set_string_value(summary.spec().release().version());
  f["wave"].set_number_value(summary.current_wave());
  f["phase"].set_string_value(word(summary.phase()));
  f["message"].set_string_value(message);
  f["time"].set_string_value(
      google::protobuf::util::TimeUtil::ToString(google::protobuf::util::TimeUtil::MillisecondsToTimestamp(time_ms)));
  std::string out;
  // A Struct of strings and a small integer always prints.
  (void)google::protobuf::util::MessageToJsonString(body, &out);
  return out;
}

std::string webhook_signature(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ::HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 0xf];
  }
  return out;
}

}  // namespace tern
