// ternctl: the operator's CLI. All logic is in tern_ctl_lib.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/runtime_init.h"
#include "ctl/ctl.h"

int main(int argc, char** argv) {
  // gRPC's own log lines (a key that does not load, a handshake that fails)
  // are not for a person at a terminal: ternctl says what went wrong itself.
  ::setenv("GRPC_VERBOSITY", "NONE", /*overwrite=*/0);
  tern::init_runtime();
  std::vector<std::string> args(argv + 1, argv + argc);
  return tern::run_ctl(args, std::cout, std::cerr);
}
