#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include <google/protobuf/duration.pb.h>

#include "absl/status/statusor.h"
#include "core/clock.h"

namespace tern {

// Parses "250ms", "5s", "1m30s", "2h". A bare number is refused: the unit is
// never guessed.
absl::StatusOr<Millis> parse_duration(absl::string_view text);
// The shortest exact form: 1500 -> "1.5s", 60000 -> "1m", 0 -> "0s".
std::string format_duration(Millis d);

// A protobuf Duration from the wire, checked before it is converted (the
// conversion itself overflows or aborts on out-of-range values): nanos within
// a second, no mixed signs, and 0 <= d <= max. The error says which rule
// failed; callers prefix the field name.
absl::StatusOr<Millis> checked_duration(const google::protobuf::Duration& d, Millis max);

}  // namespace tern
