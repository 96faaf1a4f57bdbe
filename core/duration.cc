#include "core/duration.h"

#include <cctype>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace tern {

absl::StatusOr<Millis> parse_duration(absl::string_view text) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid duration \"", std::string(text), "\": ", std::string(why),
                     " (write it like 500ms, 5s, 1m30s or 2h)"));
  };
  if (text.empty()) return invalid("empty");
  int64_t total_ms = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    int64_t whole = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      whole = whole * 10 + (text[i] - '0');
      if (whole > 1'000'000'000'000) return invalid("too large");
      ++i;
    }
    double frac = 0, scale = 0.1;
    if (i < text.size() && text[i] == '.') {
      ++i;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        frac += (text[i] - '0') * scale;
        scale /= 10;
        ++i;
      }
    }
    if (i == start) return invalid("expected a number");
    size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    absl::string_view unit = text.substr(unit_start, i - unit_start);
    int64_t per_unit;
    if (unit == "ms") per_unit = 1;
    else if (unit == "s") per_unit = 1000;
    else if (unit == "m") per_unit = 60'000;
    else if (unit == "h") per_unit = 3'600'000;
    else if (unit.empty()) return invalid("missing unit");
    else return invalid(absl::StrCat("unknown unit \"", std::string(unit), "\""));
    total_ms += whole * per_unit + static_cast<int64_t>(frac * static_cast<double>(per_unit));
    // 1e15 ms is some 30,000 years; checked per part so the sum never overflows.
    if (total_ms > 1'000'000'000'000'000) return invalid("too large");
  }
  return Millis(total_ms);
}

absl::StatusOr<Millis> checked_duration(const google::protobuf::Duration& d, Millis max) {
  if (d.nanos() <= -1'000'000'000 || d.nanos() >= 1'000'000'000 || (d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return absl::InvalidArgumentError("is not a valid duration (nanos out of range or of the other sign)");
  }
  if (d.seconds() < 0 || d.nanos() < 0) return absl::InvalidArgumentError("must not be negative");
  if (d.seconds() > max.count() / 1000) {
    return absl::InvalidArgumentError(absl::StrCat("must be at most ", format_duration(max)));
  }
  const Millis m(d.seconds() * 1000 + d.nanos() / 1'000'000);
  if (m > max) return absl::InvalidArgumentError(absl::StrCat("must be at most ", format_duration(max)));
  return m;
}

std::string format_duration(Millis d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  if (ms < 1000) return absl::StrCat(out, ms, "ms");
  if (ms % 3'600'000 == 0) return absl::StrCat(out, ms / 3'600'000, "h");
  if (ms % 60'000 == 0 && ms >= 60'000) {
    int64_t minutes = ms / 60'000;
    if (minutes >= 60) return absl::StrCat(out, minutes / 60, "h", minutes % 60, "m");
    return absl::StrCat(out, minutes, "m");
  }
  if (ms < 60'000) {
    if (ms % 1000 == 0) return absl::StrCat(out, ms / 1000, "s");
    std::string frac = absl::StrCat(1000 + ms % 1000).substr(1);
    while (!frac.empty() && frac.back() == '0') frac.pop_back();
    return absl::StrCat(out, ms / 1000, ".", frac, "s");
  }
  int64_t minutes = ms / 60'000;
  return absl::StrCat(out, minutes, "m", format_duration(Millis(ms % 60'000)));
}

}  // namespace tern
