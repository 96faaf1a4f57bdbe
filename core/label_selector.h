#pragma once

#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace tern {

using Labels = std::map<std::string, std::string>;

// A conjunction of label terms: "role=web,zone!=c,canary,!drained".
// Empty matches everything. Immutable; safe to share across threads.
class LabelSelector {
 public:
  static absl::StatusOr<LabelSelector> parse(absl::string_view text);
  bool matches(const Labels& labels) const;
  bool empty() const { return terms_.empty(); }
  std::string to_string() const;

 private:
  enum class Op { kEquals, kNotEquals, kExists, kAbsent };
  struct Term {
    std::string key;
    Op op;
    std::string value;
  };
  std::vector<Term> terms_;
};

// Parses "k=v" items (flags such as --label zone=a).
absl::StatusOr<Labels> parse_label_assignments(const std::vector<std::string>& items);
std::string format_labels(const Labels& labels);

// Label keys and values: letters, digits, '-', '_', '.', '/'; keys non-empty.
bool is_valid_label_key(absl::string_view key);
bool is_valid_label_value(absl::string_view value);
// Host ids: 1-63 letters, digits, '-', '_' or '.', starting with a letter or
// digit (no '/', so an id is always safe as a file or metric name).
bool is_valid_host_id(absl::string_view id);

}  // namespace tern
