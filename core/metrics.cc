#include "core/metrics.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tern {

Metrics::Value& Metrics::cell(const std::string& name, const std::string& type, const std::string& help,
                              const std::string& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& fam = families_[name];
  if (fam.type.empty()) {
    fam.type = type;
    fam.help = help;
  }
  auto& slot = fam.cells[labels];
  if (!slot) slot = std::make_unique<Value>(0);
  return *slot;
}

Metrics::Value& Metrics::counter(const std::string& name, const std::string& help, const std::string& labels) {
  return cell(name, "counter", help, labels);
}

Metrics::Value& Metrics::gauge(const std::string& name, const std::string& help, const std::string& labels) {
  return cell(name, "gauge", help, labels);
}

std::string Metrics::render() const {
  if (collect_) collect_();
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", fam.help, "\n# TYPE ", name, " ", fam.type, "\n");
    for (const auto& [labels, value] : fam.cells) {
      if (labels.empty()) {
        absl::StrAppend(&out, name, " ", value->load(std::memory_order_relaxed), "\n");
      } else {
        absl::StrAppend(&out, name, "{", labels, "} ", value->load(std::memory_order_relaxed), "\n");
      }
    }
  }
  return out;
}

absl::StatusOr<std::pair<std::string, uint16_t>> split_host_port(const std::string& address) {
  std::string host;
  std::string port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": expected [ipv6]:port"));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": expected host:port"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  uint32_t p;
  if (!absl::SimpleAtoi(port, &p) || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("invalid address \"", address, "\": port must be 0-65535"));
  }
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, static_cast<uint16_t>(p));
}

}  // namespace tern
