#pragma once

// What `ternctl rollout watch` shows: on a terminal, a view redrawn in place
// (per wave a bar of hosts done, failed and waiting, the bake countdown, the
// analysis, and what anything waits for); elsewhere, the event log, with the
// per-host events of a large wave folded into counts.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tern/v1/rollout.pb.h"

namespace tern {

// A host a wave waits for and is not connected: since when (Unix ms).
struct AwayHost {
  std::string state;  // "disconnected", "unreachable"
  int64_t since_ms = 0;
};

// The live view of `r` at `now_ms`: one line per row, no trailing newline.
// `recent`: the last few rollout-level event lines; `away`: hosts of the
// rollout that are not connected, by id. `color`: ANSI colours.
std::vector<std::string> rollout_view(const tern::v1::Rollout& r, int64_t now_ms,
                                      const std::vector<std::string>& recent,
                                      const std::map<std::string, AwayHost>& away, bool color);

// The plain event log: each event a line ("  12:00:01  wave_started: ..."),
// except per-host events (a host on the new release, rolled back): the
// first kFirstHostLines of one kind in a wave are printed, the rest counted
// and summed up in one line when another kind of event comes, or at flush().
class EventLog {
 public:
  static constexpr int kFirstHostLines = 3;
  std::vector<std::string> add(const tern::v1::RolloutEvent& e);
  std::vector<std::string> flush();

 private:
  struct Folded {
    int printed = 0;
    int more = 0;
    std::string last_time, last_host_message;
  };
  std::map<std::pair<int, uint32_t>, Folded> host_events_;  // (kind, wave)
};

// The event's line in the log: "  <local time>  <kind>: <message>".
std::string event_line(const tern::v1::RolloutEvent& e);

}  // namespace tern
