#include "core/label_selector.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace tern {
namespace {

bool label_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/';
}

}  // namespace

bool is_valid_label_key(absl::string_view key) {
  if (key.empty() || key.size() > 63) return false;
  for (char c : key) {
    if (!label_char(c)) return false;
  }
  return true;
}

bool is_valid_label_value(absl::string_view value) {
  if (value.size() > 255) return false;
  for (char c : value) {
    if (!label_char(c)) return false;
  }
  return true;
}

bool is_valid_host_id(absl::string_view id) {
  if (id.empty() || id.size() > 63 || !std::isalnum(static_cast<unsigned char>(id.front()))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

absl::StatusOr<LabelSelector> LabelSelector::parse(absl::string_view text) {
  LabelSelector sel;
  for (absl::string_view raw : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    absl::string_view item = absl::StripAsciiWhitespace(raw);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid label selector \"", text, "\": term \"", item, "\" ", why,
          " (terms are k=v, k!=v, k or !k, joined by commas)"));
    };
    Term term;
    if (auto pos = item.find("!="); pos != absl::string_view::npos) {
      term = {std::string(absl::StripAsciiWhitespace(item.substr(0, pos))), Op::kNotEquals,
              std::string(absl::StripAsciiWhitespace(item.substr(pos + 2)))};
    } else if (auto eq = item.find('='); eq != absl::string_view::npos) {
      absl::string_view value = item.substr(eq + 1);
      if (!value.empty() && value.front() == '=') value.remove_prefix(1);  // accept k==v
      term = {std::string(absl::StripAsciiWhitespace(item.substr(0, eq))), Op::kEquals,
              std::string(absl::StripAsciiWhitespace(value))};
    } else if (absl::ConsumePrefix(&item, "!")) {
      term = {std::string(absl::StripAsciiWhitespace(item)), Op::kAbsent, ""};
    } else {
      term = {std::string(item), Op::kExists, ""};
    }
    if (!is_valid_label_key(term.key)) return bad("has an invalid key");
    if (!is_valid_label_value(term.value)) return bad("has an invalid value");
    sel.terms_.push_back(std::move(term));
  }
  return sel;
}

bool LabelSelector::matches(const Labels& labels) const {
  for (const Term& t : terms_) {
    auto it = labels.find(t.key);
    switch (t.op) {
      case Op::kEquals:
        if (it == labels.end() || it->second != t.value) return false;
        break;
      case Op::kNotEquals:
        if (it != labels.end() && it->second == t.value) return false;
        break;
      case Op::kExists:
        if (it == labels.end()) return false;
        break;
      case Op::kAbsent:
        if (it != labels.end()) return false;
        break;
    }
  }
  return true;
}

std::string LabelSelector::to_string() const {
  return absl::StrJoin(terms_, ",", [](std::string* out, const Term& t) {
    switch (t.op) {
      case Op::kEquals: absl::StrAppend(out, t.key, "=", t.value); break;
      case Op::kNotEquals: absl::StrAppend(out, t.key, "!=", t.value); break;
      case Op::kExists: absl::StrAppend(out, t.key); break;
      case Op::kAbsent: absl::StrAppend(out, "!", t.key); break;
    }
  });
}

absl::StatusOr<Labels> parse_label_assignments(const std::vector<std::string>& items) {
  Labels labels;
  for (const std::string& item : items) {
    auto eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == std::string::npos || !is_valid_label_key(key) || !is_valid_label_value(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid label \"", item, "\": write key=value with letters, digits, '-', '_', '.' or '/'"));
    }
    labels[key] = value;
  }
  return labels;
}

std::string format_labels(const Labels& labels) {
  return absl::StrJoin(labels, ",", absl::PairFormatter("="));
}

}  // namespace tern
