#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <yaml-cpp/yaml.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/clock.h"

namespace tern {

// Limits for tern's YAML files (configs, specs), which may come from
// untrusted hands: the document size and the nesting depth.
inline constexpr std::size_t kMaxYamlBytes = 1 << 20;
inline constexpr std::size_t kMaxYamlDepth = 32;
// The longest duration a tern file may give (a year).
inline constexpr Millis kMaxYamlDuration{365LL * 24 * 3'600'000};

// Reads a YAML file into a node. Errors name the file and, for syntax errors,
// the line and column. Refused, with the position: documents over
// kMaxYamlBytes, nesting deeper than kMaxYamlDepth, anchors (&name) and
// aliases (*name) (the "billion laughs" expansion; tern files never need
// them), a key repeated in one mapping, a second document in the stream, and
// values that are not UTF-8 or hold a NUL character.
// The top level must be a mapping (an empty document reads as an empty one).
absl::StatusOr<YAML::Node> load_yaml_file(const std::string& path);
absl::StatusOr<YAML::Node> load_yaml_string(const std::string& text, const std::string& origin);

// Strict reader over one YAML mapping. Each get() names a key the caller
// knows; a present key of the wrong type records an error, an absent key
// leaves the output untouched (so defaults set beforehand stand). finish()
// returns the first error, or an error for any key nobody asked for. Every
// message names the file, the line and the key path.
//
//   YamlMap m(root, "agent.yaml");
//   m.get("coordinator", cfg.coordinator);
//   m.get("heartbeat_interval", cfg.heartbeat_interval);
//   if (auto st = m.finish(); !st.ok()) return st;
class YamlMap {
 public:
  YamlMap(const YAML::Node& node, std::string origin, std::string path = "");

  void get(absl::string_view key, std::string& out);
  void get(absl::string_view key, bool& out);
  void get(absl::string_view key, uint32_t& out);
  void get(absl::string_view key, int64_t& out);
  // A finite number: "1.5", "0.001", or a percentage, "0.1%" (0.001).
  void get(absl::string_view key, double& out);
  void get(absl::string_view key, Millis& out);  // a duration string: "5s", at most kMaxYamlDuration
  void get(absl::string_view key, std::map<std::string, std::string>& out);
  void get(absl::string_view key, std::vector<std::string>& out);
  // A nested mapping; nullopt when absent. Its errors surface through this
  // map's finish() once the child's finish() has been called.
  std::optional<YamlMap> child(absl::string_view key);
  // A list of mappings ("ports: [{...}, {...}]"); empty when absent. Each
  // item's path reads "ports[1]". Same error contract as child().
  std::vector<YamlMap> children(absl::string_view key);
  void absorb(absl::Status child_status);

  bool has(absl::string_view key) const;
  absl::Status finish();
  const std::string& origin() const { return origin_; }

  // "file:line:col: key a.b: reason"
  absl::Status error_at(const YAML::Node& node, absl::string_view key, absl::string_view reason) const;

 private:
  std::optional<YAML::Node> lookup(absl::string_view key);
  void fail(absl::Status st);
  std::string key_path(absl::string_view key) const;

  YAML::Node node_;
  std::string origin_;
  std::string path_;
  std::set<std::string, std::less<>> known_;
  absl::Status status_;
};

}  // namespace tern
