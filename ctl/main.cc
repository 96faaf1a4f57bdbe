// ternctl: the operator's CLI. All logic is in tern_ctl_lib.
#include <iostream>
#include <string>
#include <vector>

#include "core/runtime_init.h"
#include "ctl/ctl.h"

int main(int argc, char** argv) {
  tern::init_runtime();
  std::vector<std::string> args(argv + 1, argv + argc);
  return tern::run_ctl(args, std::cout, std::cerr);
}
