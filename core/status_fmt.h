#pragma once

// Debian's abseil is built with its own absl::string_view (not an alias of
// absl::string_view), which is what absl::Status::message() returns. This
// teaches fmt/spdlog to print it, so `spdlog::error("{}", st.message())` works.

#include <fmt/format.h>

#include "absl/strings/string_view.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view s, FormatContext& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};
