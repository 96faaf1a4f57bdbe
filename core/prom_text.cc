#include "core/prom_text.h"

#include <re2/re2.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/charconv.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "core/text.h"

namespace tern {
namespace {

bool blank(char c) { return c == ' ' || c == '\t'; }
bool name_start(char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }
bool name_char(char c) { return name_start(c) || absl::ascii_isdigit(static_cast<unsigned char>(c)); }
bool label_start(char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool label_char(char c) { return label_start(c) || absl::ascii_isdigit(static_cast<unsigned char>(c)); }

bool is_metric_name(absl::string_view s) {
  return !s.empty() && name_start(s.front()) && std::all_of(s.begin() + 1, s.end(), name_char);
}
bool is_label_name(absl::string_view s) {
  return !s.empty() && label_start(s.front()) && std::all_of(s.begin() + 1, s.end(), label_char);
}

// [+-]? then digits with an optional fraction and exponent, or Inf,
// Infinity, NaN in any case: the forms Go's ParseFloat (and so every
// Prometheus client and server) reads and writes, without hex floats and
// digit separators, which no exporter writes.
std::optional<double> parse_value(absl::string_view s) {
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (absl::EqualsIgnoreCase(s, "inf") || absl::EqualsIgnoreCase(s, "infinity")) {
    return negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  if (absl::EqualsIgnoreCase(s, "nan")) return std::numeric_limits<double>::quiet_NaN();
  // from_chars would also take "inf", "nan(...)" and a leading '-' here, so
  // the shape is checked first.
  std::size_t i = 0;
  std::size_t digits = 0;
  while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t exponent_digits = 0;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exponent_digits;
    if (exponent_digits == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  double v = 0;
  auto [end, ec] = absl::from_chars(s.data(), s.data() + s.size(), v);
  if (end != s.data() + s.size()) return std::nullopt;
  // Past the largest double is refused, below the smallest is 0: Go's rule.
  if (ec == std::errc::result_out_of_range && v != 0) return std::nullopt;
  if (ec != std::errc() && ec != std::errc::result_out_of_range) return std::nullopt;
  return negative ? -v : v;
}

bool is_timestamp(absl::string_view s) {
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) s.remove_prefix(1);
  if (s.empty() || s.size() > 19) return false;
  if (!std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
    return false;
  }
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size();
}

std::optional<PromType> parse_type(absl::string_view s) {
  if (s == "counter") return PromType::kCounter;
  if (s == "gauge") return PromType::kGauge;
  if (s == "histogram") return PromType::kHistogram;
  if (s == "summary") return PromType::kSummary;
  if (s == "untyped") return PromType::kUntyped;
  return std::nullopt;
}

void append_escaped(std::string& out, absl::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// One line of exposition text, read left to right. Errors name the line.
class LineReader {
 public:
  LineReader(absl::string_view line, std::size_t number) : line_(line), number_(number) {}

  bool at_end() const { return pos_ >= line_.size(); }
  char peek() const { return at_end() ? '\0' : line_[pos_]; }
  void skip_blanks() {
    while (!at_end() && blank(line_[pos_])) ++pos_;
  }
  bool consume(char c) {
    if (at_end() || line_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  absl::string_view take_while(bool (*keep)(char)) {
    std::size_t start = pos_;
    while (!at_end() && keep(line_[pos_])) ++pos_;
    return line_.substr(start, pos_ - start);
  }
  absl::string_view take_token() {
    std::size_t start = pos_;
    while (!at_end() && !blank(line_[pos_])) ++pos_;
    return line_.substr(start, pos_ - start);
  }

  absl::Status error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics text line ", number_, ": ", what, " (in \"", printable(line_, 120), "\")"));
  }

  // The inside of a quoted label value, after its opening quote, up to and
  // including the closing one.
  absl::StatusOr<std::string> quoted_value(absl::string_view label) {
    std::string value;
    for (;;) {
      if (at_end()) return error(absl::StrCat("the value of label \"", label, "\" has no closing quote"));
      char c = line_[pos_++];
      if (c == '"') break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (at_end()) return error(absl::StrCat("the value of label \"", label, "\" has no closing quote"));
      char e = line_[pos_++];
      if (e == '\\') {
        value += '\\';
      } else if (e == '"') {
        value += '"';
      } else if (e == 'n') {
        value += '\n';
      } else {
        return error(absl::StrCat("the value of label \"", label, "\" has an unknown escape \"\\",
                                  printable(absl::string_view(&e, 1)), "\" (only \\\\, \\\" and \\n are escapes)"));
      }
    }
    if (!is_utf8(value)) return error(absl::StrCat("the value of label \"", label, "\" is not UTF-8"));
    return value;
  }

 private:
  absl::string_view line_;
  std::size_t number_;
  std::size_t pos_ = 0;
};

absl::StatusOr<PromSample> parse_sample_line(LineReader& in) {
  PromSample sample;
  absl::string_view name = in.take_while(name_char);
  if (!is_metric_name(name)) {
    return in.error("expected a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), a comment or a blank line");
  }
  sample.name = std::string(name);
  in.skip_blanks();
  if (in.consume('{')) {
    for (;;) {
      in.skip_blanks();
      if (in.consume('}')) break;
      absl::string_view label = in.take_while(label_char);
      if (!is_label_name(label)) return in.error("expected a label name ([a-zA-Z_][a-zA-Z0-9_]*) or '}'");
      if (label == "__name__") return in.error("the label name __name__ is reserved");
      if (sample.labels.size() == kMaxPromLabels) {
        return absl::ResourceExhaustedError(
            in.error(absl::StrCat("more than ", kMaxPromLabels, " labels on one sample")).message());
      }
      in.skip_blanks();
      if (!in.consume('=')) return in.error(absl::StrCat("expected '=' after label name \"", label, "\""));
      in.skip_blanks();
      if (!in.consume('"')) return in.error(absl::StrCat("the value of label \"", label, "\" must be in double quotes"));
      auto value = in.quoted_value(label);
      if (!value.ok()) return value.status();
      sample.labels.emplace_back(std::string(label), *std::move(value));
      in.skip_blanks();
      if (in.consume(',')) continue;
      if (in.consume('}')) break;
      return in.error("expected ',' or '}' after a label value");
    }
    std::sort(sample.labels.begin(), sample.labels.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 1; i < sample.labels.size(); ++i) {
      if (sample.labels[i].first == sample.labels[i - 1].first) {
        return in.error(absl::StrCat("label \"", sample.labels[i].first, "\" appears twice"));
      }
    }
  }
  in.skip_blanks();
  absl::string_view value = in.take_token();
  if (value.empty()) return in.error("the sample has no value");
  auto parsed = parse_value(value);
  if (!parsed) {
    return in.error(absl::StrCat("\"", printable(value, 40),
                                 "\" is not a value (a decimal number, +Inf, -Inf or NaN) or is out of range"));
  }
  sample.value = *parsed;
  in.skip_blanks();
  if (!in.at_end()) {
    absl::string_view timestamp = in.take_token();
    if (!is_timestamp(timestamp)) {
      return in.error(absl::StrCat("\"", printable(timestamp, 40),
                                   "\" is not a timestamp (integer milliseconds since the epoch)"));
    }
    in.skip_blanks();
    if (!in.at_end()) return in.error("unexpected text after the timestamp");
  }
  return sample;
}

// What the whole text has said so far, for the rules that span lines.
struct Families {
  absl::flat_hash_map<std::string, PromType> types;
  absl::flat_hash_set<std::string> helps;
  absl::flat_hash_set<std::string> sample_names;

  bool has_samples(absl::string_view family) const {
    for (absl::string_view suffix : {"", "_bucket", "_sum", "_count"}) {
      if (sample_names.contains(absl::StrCat(family, suffix))) return true;
    }
    return false;
  }
  bool is_histogram_bucket(absl::string_view name) const {
    if (!absl::EndsWith(name, "_bucket")) return false;
    auto it = types.find(name.substr(0, name.size() - 7));
    return it != types.end() && it->second == PromType::kHistogram;
  }
};

absl::Status parse_comment(LineReader& in, Families& families) {
  in.consume('#');
  in.skip_blanks();
  absl::string_view keyword = in.take_token();
  if (keyword != "HELP" && keyword != "TYPE") return absl::OkStatus();  // a comment
  in.skip_blanks();
  absl::string_view name = in.take_token();
  if (!is_metric_name(name)) {
    return in.error(absl::StrCat("# ", keyword, " needs a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"));
  }
  if (keyword == "HELP") {
    if (!families.helps.insert(std::string(name)).second) {
      return in.error(absl::StrCat("a second # HELP line for ", name));
    }
    return absl::OkStatus();  // the text itself is for people
  }
  in.skip_blanks();
  absl::string_view type_word = in.take_token();
  auto type = parse_type(type_word);
  if (!type) {
    return in.error(absl::StrCat("\"", printable(type_word, 40), "\" is not a metric type ",
                                 "(counter, gauge, histogram, summary, untyped)"));
  }
  in.skip_blanks();
  if (!in.at_end()) return in.error("unexpected text after the type");
  if (families.types.contains(name)) return in.error(absl::StrCat("a second # TYPE line for ", name));
  if (families.has_samples(name)) return in.error(absl::StrCat("the # TYPE line for ", name, " comes after its samples"));
  families.types.emplace(std::string(name), *type);
  return absl::OkStatus();
}

}  // namespace

absl::string_view prom_type_name(PromType type) {
  switch (type) {
    case PromType::kCounter: return "counter";
    case PromType::kGauge: return "gauge";
    case PromType::kHistogram: return "histogram";
    case PromType::kSummary: return "summary";
    case PromType::kUntyped: break;
  }
  return "untyped";
}

const std::string* PromSample::label(absl::string_view label_name) const {
  auto it = std::lower_bound(labels.begin(), labels.end(), label_name,
                             [](const auto& l, absl::string_view n) { return l.first < n; });
  return it != labels.end() && it->first == label_name ? &it->second : nullptr;
}

absl::StatusOr<std::vector<PromSample>> parse_prom_text(absl::string_view text, PromFamilyTypes* types) {
  if (text.size() > kMaxPromTextBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("metrics text is ", text.size(), " bytes, over the limit of ",
                                                     kMaxPromTextBytes, "; the app exposes too many series"));
  }
  std::vector<PromSample> samples;
  Families families;
  // Series -> line, to refuse a series given twice (its counts would be
  // added twice, or one would hide the other).
  absl::flat_hash_map<std::string, std::size_t> series_lines;
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    std::size_t nl = text.find('\n');
    absl::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == absl::string_view::npos ? text.size() : nl + 1);
    while (!line.empty() && (blank(line.back()) || line.back() == '\r')) line.remove_suffix(1);
    LineReader in(line, number);
    in.skip_blanks();
    if (in.at_end()) continue;
    if (in.peek() == '#') {
      if (auto s = parse_comment(in, families); !s.ok()) return s;
      continue;
    }
    if (samples.size() == kMaxPromSamples) {
      return absl::ResourceExhaustedError(absl::StrCat("metrics text line ", number, ": more than ", kMaxPromSamples,
                                                       " samples; the app exposes too many series"));
    }
    auto sample = parse_sample_line(in);
    if (!sample.ok()) return sample.status();
    if (families.is_histogram_bucket(sample->name)) {
      const std::string* le = sample->label("le");
      if (le == nullptr) return in.error("a histogram bucket without an \"le\" label");
      auto bound = parse_value(*le);
      if (!bound || std::isnan(*bound)) return in.error(absl::StrCat("le=\"", printable(*le, 40), "\" is not a bound"));
    }
    auto [at, fresh] = series_lines.emplace(format_prom_series(*sample), number);
    if (!fresh) return in.error(absl::StrCat("the series ", printable(at->first, 200), " already appeared on line ", at->second));
    families.sample_names.insert(sample->name);
    samples.push_back(*std::move(sample));
  }
  if (types != nullptr) {
    types->clear();
    types->insert(families.types.begin(), families.types.end());
  }
  return samples;
}

std::string format_prom_series(const PromSample& sample) {
  std::string out = sample.name;
  if (sample.labels.empty()) return out;
  out += '{';
  for (std::size_t i = 0; i < sample.labels.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, sample.labels[i].first, "=\"");
    append_escaped(out, sample.labels[i].second);
    out += '"';
  }
  out += '}';
  return out;
}

std::string format_prom_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

std::string format_prom_sample(const PromSample& sample) {
  return absl::StrCat(format_prom_series(sample), " ", format_prom_value(sample.value));
}

// --- Selectors ---

PromLabelMatcher::PromLabelMatcher(std::string label, PromMatchOp op, std::string value,
                                   std::shared_ptr<const re2::RE2> regex)
    : label_(std::move(label)), op_(op), value_(std::move(value)), regex_(std::move(regex)) {}

absl::StatusOr<PromLabelMatcher> PromLabelMatcher::create(std::string label, PromMatchOp op, std::string value) {
  if (!is_label_name(label)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", printable(label, 80), "\" is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
  }
  std::shared_ptr<const re2::RE2> regex;
  if (op == PromMatchOp::kRegexMatch || op == PromMatchOp::kRegexNoMatch) {
    re2::RE2::Options options;
    options.set_log_errors(false);
    options.set_dot_nl(true);  // as Prometheus: '.' matches a newline too
    // Label values are short: 1 MiB (of RE2's default 8) is plenty, and keeps
    // a selector's kMaxPromMatchers regexes within 64 MiB.
    options.set_max_mem(1 << 20);
    auto re = std::make_shared<re2::RE2>(re2::StringPiece(value.data(), value.size()), options);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat("the regular expression \"", printable(value, 200),
                                                     "\" for label ", label, " is invalid: ", re->error()));
    }
    regex = std::move(re);
  }
  return PromLabelMatcher(std::move(label), op, std::move(value), std::move(regex));
}

bool PromLabelMatcher::matches(const PromSample& sample) const {
  const std::string* found = sample.label(label_);
  absl::string_view actual = found ? absl::string_view(*found) : absl::string_view();
  switch (op_) {
    case PromMatchOp::kEqual: return actual == value_;
    case PromMatchOp::kNotEqual: return actual != value_;
    case PromMatchOp::kRegexMatch:
      return re2::RE2::FullMatch(re2::StringPiece(actual.data(), actual.size()), *regex_);
    case PromMatchOp::kRegexNoMatch:
      return !re2::RE2::FullMatch(re2::StringPiece(actual.data(), actual.size()), *regex_);
  }
  return false;
}

std::string PromLabelMatcher::to_string() const {
  absl::string_view op = op_ == PromMatchOp::kEqual      ? "="
                         : op_ == PromMatchOp::kNotEqual ? "!="
                         : op_ == PromMatchOp::kRegexMatch ? "=~"
                                                           : "!~";
  std::string out = absl::StrCat(label_, op, "\"");
  append_escaped(out, value_);
  out += '"';
  return out;
}

std::string PromSelector::to_string() const {
  if (matchers.empty()) return name;
  return absl::StrCat(name, "{",
                      absl::StrJoin(matchers, ", ",
                                    [](std::string* out, const PromLabelMatcher& m) { out->append(m.to_string()); }),
                      "}");
}

absl::StatusOr<PromSelector> parse_prom_selector(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid metric selector \"", printable(text, 200), "\": ", why,
        " (a selector is name{label=\"value\", ...} with =, !=, =~ or !~)"));
  };
  if (text.size() > kMaxPromSelectorBytes) return bad(absl::StrCat("longer than ", kMaxPromSelectorBytes, " bytes"));
  std::size_t pos = 0;
  auto skip_space = [&] {
    while (pos < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[pos]))) ++pos;
  };
  auto take = [&](bool (*keep)(char)) {
    std::size_t start = pos;
    while (pos < text.size() && keep(text[pos])) ++pos;
    return text.substr(start, pos - start);
  };
  auto consume = [&](absl::string_view s) {
    if (text.substr(pos, s.size()) != s) return false;
    pos += s.size();
    return true;
  };

  PromSelector selector;
  skip_space();
  absl::string_view name = take(name_char);
  if (!is_metric_name(name)) return bad("it must start with a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
  selector.name = std::string(name);
  skip_space();
  if (consume("{")) {
    for (;;) {
      skip_space();
      if (consume("}")) break;
      absl::string_view label = take(label_char);
      if (!is_label_name(label)) return bad("expected a label name or '}'");
      skip_space();
      PromMatchOp op;
      if (consume("=~")) {
        op = PromMatchOp::kRegexMatch;
      } else if (consume("!~")) {
        op = PromMatchOp::kRegexNoMatch;
      } else if (consume("!=")) {
        op = PromMatchOp::kNotEqual;
      } else if (consume("=")) {
        op = PromMatchOp::kEqual;
      } else {
        return bad(absl::StrCat("expected =, !=, =~ or !~ after label ", label));
      }
      skip_space();
      char quote = pos < text.size() ? text[pos] : '\0';
      if (quote != '"' && quote != '\'') return bad(absl::StrCat("the value for label ", label, " must be quoted"));
      ++pos;
      std::string value;
      for (;;) {
        if (pos >= text.size()) return bad(absl::StrCat("the value for label ", label, " has no closing quote"));
        char c = text[pos++];
        if (c == quote) break;
        if (c != '\\') {
          value += c;
          continue;
        }
        char e = pos < text.size() ? text[pos++] : '\0';
        if (e == '\\' || e == '"' || e == '\'') {
          value += e;
        } else if (e == 'n') {
          value += '\n';
        } else if (e == 't') {
          value += '\t';
        } else {
          return bad(absl::StrCat("the value for label ", label, " has an unknown escape \"\\",
                                  printable(absl::string_view(&e, 1)),
                                  "\" (write \\\\ for a backslash, as in code=~\"5\\\\d\\\\d\")"));
        }
      }
      if (selector.matchers.size() == kMaxPromMatchers) return bad(absl::StrCat("more than ", kMaxPromMatchers, " matchers"));
      auto matcher = PromLabelMatcher::create(std::string(label), op, std::move(value));
      if (!matcher.ok()) return bad(matcher.status().message());
      selector.matchers.push_back(*std::move(matcher));
      skip_space();
      if (consume(",")) continue;
      if (consume("}")) break;
      return bad("expected ',' or '}' after a label value");
    }
    skip_space();
  }
  if (pos != text.size()) return bad("unexpected text after the selector");
  return selector;
}

bool matches(const PromSelector& selector, const PromSample& sample) {
  if (sample.name != selector.name) return false;
  return std::all_of(selector.matchers.begin(), selector.matchers.end(),
                     [&](const PromLabelMatcher& m) { return m.matches(sample); });
}

double sum(const PromSelector& selector, const std::vector<PromSample>& samples) {
  double total = 0;
  for (const PromSample& s : samples) {
    if (matches(selector, s)) total += s.value;
  }
  return total;
}

absl::StatusOr<PromBuckets> histogram_buckets(const std::vector<PromSample>& samples, absl::string_view histogram_name,
                                              const std::vector<PromLabelMatcher>& matchers) {
  const std::string bucket_name = absl::StrCat(histogram_name, "_bucket");
  std::map<double, uint64_t> by_bound;
  // (the series without its le, bound): a series that gives a bound twice
  // (le="1" and le="1.0") would count its requests twice.
  absl::flat_hash_set<std::pair<std::string, double>> seen;
  for (const PromSample& s : samples) {
    if (s.name != bucket_name) continue;
    if (!std::all_of(matchers.begin(), matchers.end(), [&](const PromLabelMatcher& m) { return m.matches(s); })) {
      continue;
    }
    const std::string* le = s.label("le");
    std::optional<double> bound = le ? parse_value(*le) : std::nullopt;
    if (!bound || std::isnan(*bound)) {
      return absl::InvalidArgumentError(absl::StrCat("histogram bucket ", printable(format_prom_series(s), 200),
                                                     " has no numeric \"le\" label"));
    }
    // 2^64 is exact as a double; a count at or past it cannot be a uint64_t.
    if (!(s.value >= 0 && s.value < 18446744073709551616.0) || s.value != std::floor(s.value)) {
      return absl::InvalidArgumentError(absl::StrCat("histogram bucket ", printable(format_prom_series(s), 200),
                                                     " has the count ", format_prom_value(s.value),
                                                     ", not a whole number of observations"));
    }
    PromSample rest = s;
    rest.labels.erase(std::remove_if(rest.labels.begin(), rest.labels.end(),
                                     [](const auto& l) { return l.first == "le"; }),
                      rest.labels.end());
    if (!seen.emplace(format_prom_series(rest), *bound).second) {
      return absl::InvalidArgumentError(absl::StrCat("histogram series ", printable(format_prom_series(rest), 200),
                                                     " gives the bucket le=", format_prom_value(*bound), " twice"));
    }
    uint64_t& total = by_bound[*bound];
    if (__builtin_add_overflow(total, static_cast<uint64_t>(s.value), &total)) {
      return absl::InvalidArgumentError(absl::StrCat("histogram ", printable(histogram_name, 200), " bucket le=",
                                                     format_prom_value(*bound), " sums past 2^64 observations"));
    }
  }
  if (!by_bound.empty() && by_bound.rbegin()->first != std::numeric_limits<double>::infinity()) {
    return absl::InvalidArgumentError(absl::StrCat("histogram ", printable(histogram_name, 200),
                                                   " has no +Inf bucket among the series selected"));
  }
  return PromBuckets(by_bound.begin(), by_bound.end());
}

}  // namespace tern
