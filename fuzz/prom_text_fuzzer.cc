// libFuzzer target: Prometheus exposition text, as the agent scrapes it from
// an app it does not control, and metric selectors from specs. The first line
// of the input is a selector, the rest is exposition text. Nothing may crash,
// throw or hang; whatever parses must keep the parser's promises (labels
// sorted and unique, within the caps), print back to text that parses to the
// same samples, and a scrape compared with itself must have grown by nothing.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/counter_delta.h"
#include "core/prom_text.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tern fuzz: invariant broken: %s\n", what);
  std::abort();
}

bool same_value(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

}  // namespace

// Every input allocates and frees many strings of many sizes; with ASan's
// default 256 MB quarantine the freed chunks pile up per size class and RSS
// climbs past 900 MB in three minutes (no leak: the same inputs in a loop
// without ASan hold steady at 9 MB), so a long run would hit scripts/fuzz.sh's
// RSS limit. A smaller quarantine keeps it near 270 MB; ASAN_OPTIONS can
// still override it.
extern "C" const char* __asan_default_options() { return "quarantine_size_mb=64"; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = input.find('\n');
  const std::string selector_text = input.substr(0, nl);
  const std::string text = nl == std::string::npos ? "" : input.substr(nl + 1);

  auto selector = tern::parse_prom_selector(selector_text);
  if (selector.ok()) {
    auto again = tern::parse_prom_selector(selector->to_string());
    require(again.ok(), "a selector's to_string() does not parse");
    require(again->to_string() == selector->to_string(), "a selector's to_string() does not read back the same");
  }

  tern::PromFamilyTypes types;
  auto samples = tern::parse_prom_text(text, &types);
  if (!samples.ok()) return 0;
  require(samples->size() <= tern::kMaxPromSamples, "more samples than the cap");
  std::string printed;
  for (const tern::PromSample& s : *samples) {
    require(s.labels.size() <= tern::kMaxPromLabels, "more labels than the cap");
    for (std::size_t i = 1; i < s.labels.size(); ++i) {
      require(s.labels[i - 1].first < s.labels[i].first, "labels not sorted or not unique");
    }
    printed += tern::format_prom_sample(s);
    printed += '\n';
  }
  auto reread = tern::parse_prom_text(printed);
  require(reread.ok(), "printed samples do not parse");
  require(reread->size() == samples->size(), "printed samples parse to a different count");
  for (std::size_t i = 0; i < samples->size(); ++i) {
    const auto& a = (*samples)[i];
    const auto& b = (*reread)[i];
    require(a.name == b.name && a.labels == b.labels && same_value(a.value, b.value),
            "a printed sample parses to a different sample");
  }

  if (!selector.ok()) return 0;
  (void)tern::sum(*selector, *samples);
  (void)tern::histogram_buckets(*samples, selector->name, selector->matchers);
  tern::CounterDelta delta;
  if (samples->size() > tern::CounterDelta::Options{}.max_series) return 0;
  require(delta.observe(*samples).ok(), "a parsed scrape is refused as a baseline");
  require(!delta.has_delta(), "the first scrape has a delta");
  require(delta.observe(*samples).ok(), "a parsed scrape is refused the second time");
  require(delta.has_delta(), "the second scrape has no delta");
  for (const tern::PromSample& s : delta.increases()) {
    require(s.value == 0 || std::isnan(s.value), "a scrape compared with itself grew");
  }
  const double grown = delta.increase(*selector);
  require(grown == 0 || std::isnan(grown), "a selector's increase between equal scrapes is not 0");
  auto buckets = delta.increase_buckets(selector->name, selector->matchers);
  if (buckets.ok()) {
    for (const auto& [bound, count] : *buckets) require(count == 0, "a bucket grew between equal scrapes");
  }
  return 0;
}
