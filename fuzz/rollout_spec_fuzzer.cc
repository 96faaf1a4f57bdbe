// libFuzzer target: rollout spec YAML (`ternctl rollout start -f`). Nothing
// may crash, throw or hang, and whatever parses must pass validation again.

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/rollout_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = tern::parse_rollout_spec(text, "fuzz.yaml");
  if (!spec.ok()) return 0;
  if (!tern::validate_rollout_spec(*spec).ok()) {
    std::fprintf(stderr, "tern fuzz: invariant broken: a parsed rollout spec fails validation\n");
    std::abort();
  }
  return 0;
}
