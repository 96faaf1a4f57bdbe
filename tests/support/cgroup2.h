#pragma once

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"

namespace tern::testing {

// The host's cgroup v2 mount point (from /proc/self/mountinfo), or "".
inline std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    auto dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::vector<std::string> f = absl::StrSplit(line.substr(0, dash), ' ');
    if (f.size() >= 5) return f[4];
  }
  return "";
}

}  // namespace tern::testing
