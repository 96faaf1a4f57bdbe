// libFuzzer target: service spec YAML, as `ternctl service apply -f` and the
// coordinator read it. Nothing may crash, throw or hang, and whatever parses
// must pass validation on its own and survive the protobuf round trip the
// coordinator and the agent put it through.

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/service_spec.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tern fuzz: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = tern::parse_service_spec(text, "fuzz.yaml");
  if (!spec.ok()) return 0;
  require(tern::validate_service_spec(*spec).ok(), "a parsed spec fails validation");
  tern::v1::ServiceSpec copy;
  require(copy.ParseFromString(spec->SerializeAsString()), "a parsed spec does not survive protobuf encoding");
  require(tern::validate_service_spec(copy).ok(), "a parsed spec fails validation after protobuf encoding");
  return 0;
}
