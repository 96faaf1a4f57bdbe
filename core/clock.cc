#include "core/clock.h"

namespace tern {

SystemClock& SystemClock::instance() {
  static SystemClock clock;
  return clock;
}

}  // namespace tern
