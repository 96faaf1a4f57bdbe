#pragma once

// An app's metrics as Prometheus serves them: the text exposition format
// (version 0.0.4), label-matcher selectors over its samples (not PromQL) and
// classic histograms. This is what canary analysis reads when it scrapes a
// slot's metrics endpoint (docs/ARCHITECTURE.md, "Canary analysis").
//
// Pure: no I/O, no clock. Every type here is a value and every function may
// run on any thread; a PromSelector shares its compiled regular expressions,
// which are immutable.
//
// The parser is strict, as a judge's input should be: anything it does not
// understand is an error that names the line, never a sample silently lost.
// It is also bounded: the text, the number of samples and the labels per
// sample have caps, and the work is linear in the size of the text.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace re2 {
class RE2;
}

namespace tern {

// Caps on one scrape. Text beyond them is refused (RESOURCE_EXHAUSTED), not
// cut: a partial scrape would read as counts that went down.
inline constexpr std::size_t kMaxPromTextBytes = 8 << 20;
inline constexpr std::size_t kMaxPromSamples = 100'000;
inline constexpr std::size_t kMaxPromLabels = 64;

// The `# TYPE` of a metric family; kUntyped when the text gives none.
enum class PromType { kUntyped, kCounter, kGauge, kHistogram, kSummary };
absl::string_view prom_type_name(PromType type);

// One sample line: `name{labels} value [timestamp]`. The timestamp, which
// scrapers ignore for counts, is checked and dropped.
struct PromSample {
  std::string name;
  // Sorted by label name; names are unique. Values are unescaped UTF-8.
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;

  // The value of label `label_name`, or nullptr when the sample has none.
  const std::string* label(absl::string_view label_name) const;
  friend bool operator==(const PromSample&, const PromSample&) = default;
};

// Family name (as written on its `# TYPE` line) -> type.
using PromFamilyTypes = std::map<std::string, PromType>;

// Parses exposition text: `# HELP` and `# TYPE` lines (a family's TYPE at
// most once and before its first sample; histogram `_bucket` samples need a
// numeric `le`), other comments and blank lines ignored, samples with label
// escapes \\ \" \n and values such as 1, -2.5e-3, +Inf, -Inf, NaN.
// Duplicate series and duplicate label names are errors. Errors are
// INVALID_ARGUMENT ("line 7: ...") or RESOURCE_EXHAUSTED for the caps.
// When `types` is given, it receives the type of every family with a TYPE line.
absl::StatusOr<std::vector<PromSample>> parse_prom_text(absl::string_view text, PromFamilyTypes* types = nullptr);

// `name{a="x",b="y"}` (or `name` without labels), escaped as the exposition
// format escapes label values: one string per series, so also a map key.
std::string format_prom_series(const PromSample& sample);
// `name{...} value`: one exposition line without its newline, which
// parse_prom_text reads back to the same sample (NaN stays NaN).
std::string format_prom_sample(const PromSample& sample);
// A value as the exposition format writes it: shortest round-trip form,
// +Inf, -Inf, NaN.
std::string format_prom_value(double value);

enum class PromMatchOp { kEqual, kNotEqual, kRegexMatch, kRegexNoMatch };

// One label matcher, with Prometheus' meaning: a label the sample does not
// have has the value "" (so `x!="y"` matches a sample without x, and
// `code=~"5.."` does not), and a regular expression (RE2 syntax, which is
// Go's) must match the whole value: `code=~"5"` does not match "500".
class PromLabelMatcher {
 public:
  // INVALID_ARGUMENT for a bad label name or a regular expression RE2 refuses.
  static absl::StatusOr<PromLabelMatcher> create(std::string label, PromMatchOp op, std::string value);

  bool matches(const PromSample& sample) const;
  const std::string& label() const { return label_; }
  PromMatchOp op() const { return op_; }
  const std::string& value() const { return value_; }
  // `code=~"5.."`, in the form parse_prom_selector reads.
  std::string to_string() const;

 private:
  PromLabelMatcher(std::string label, PromMatchOp op, std::string value, std::shared_ptr<const re2::RE2> regex);
  std::string label_;
  PromMatchOp op_;
  std::string value_;
  std::shared_ptr<const re2::RE2> regex_;  // the regex ops only
};

// A metric name and label matchers, all of which must hold:
// `http_requests_total{code=~"5..", method!="HEAD"}`.
struct PromSelector {
  std::string name;
  std::vector<PromLabelMatcher> matchers;

  // The canonical form, which parse_prom_selector reads back.
  std::string to_string() const;
};

inline constexpr std::size_t kMaxPromSelectorBytes = 4096;
inline constexpr std::size_t kMaxPromMatchers = 64;

// Parses `name`, `name{}` or `name{l="v", l!="v", l=~"re", l!~"re"}`
// (values in double or single quotes with the escapes \\ \" \' \n \t;
// whitespace between tokens; a trailing comma). The name is required.
absl::StatusOr<PromSelector> parse_prom_selector(absl::string_view text);

bool matches(const PromSelector& selector, const PromSample& sample);
// The sum of the matching samples' values: 0 when none match, NaN when one
// of them is NaN.
double sum(const PromSelector& selector, const std::vector<PromSample>& samples);

// (upper bound, cumulative count) per bucket, by bound, +Inf last.
using PromBuckets = std::vector<std::pair<double, uint64_t>>;

// The classic histogram `histogram_name`: its `<histogram_name>_bucket`
// samples that satisfy `matchers`, summed per `le` bound across every other
// label, as the exposition gives them (cumulative). Empty when no bucket
// matches. INVALID_ARGUMENT when a bucket has no numeric `le`, a count that
// is not a whole number >= 0, one series gives a bound twice, or buckets
// exist but none is +Inf.
absl::StatusOr<PromBuckets> histogram_buckets(const std::vector<PromSample>& samples,
                                              absl::string_view histogram_name,
                                              const std::vector<PromLabelMatcher>& matchers = {});

}  // namespace tern
