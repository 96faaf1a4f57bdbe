// libFuzzer target: a tern.v1.Command from the coordinator, as the agent
// receives it, through the checks the agent makes before it acts: the spec
// of ApplyServiceSpec (validate_service_spec), service names, release
// versions and digests (ArtifactStager), weights (ServiceSupervisor).
// Nothing here starts a process or touches the host.
//
// Beyond "no crash": a spec the agent accepts must survive the JSON round
// trip of its state file (agent/state_store.h) unchanged and still valid,
// or an agent restart would lose or reject it.

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/artifact_stager.h"
#include "core/service_spec.h"
#include "core/sha256.h"
#include "tern/v1/agent.pb.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tern fuzz: invariant broken: %s\n", what);
  std::abort();
}

// With the options StateStore uses. Fields this agent does not know (a newer
// coordinator's) are not kept in the state file, by design.
void check_accepted_spec(const tern::v1::ServiceSpec& accepted) {
  tern::v1::ServiceSpec spec = accepted;
  spec.DiscardUnknownFields();
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.preserve_proto_field_names = true;
  const auto printed = google::protobuf::util::MessageToJsonString(spec, &json, print);
  if (!printed.ok()) std::fprintf(stderr, "tern fuzz: %s\n", printed.ToString().c_str());
  require(printed.ok(), "a spec the agent accepts cannot be written to its state file (JSON)");
  tern::v1::ServiceSpec back;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;
  require(google::protobuf::util::JsonStringToMessage(json, &back, parse).ok(),
          "the agent cannot read back the JSON it wrote for an accepted spec");
  require(google::protobuf::util::MessageDifferencer::Equals(spec, back),
          "an accepted spec changes on its way through the state file");
  require(tern::validate_service_spec(back).ok(), "an accepted spec is refused after the state file round trip");
}

bool weight_ok(uint32_t w) { return w <= 100; }

}  // namespace

// protobuf logs every string that is not UTF-8; at thousands of runs a
// second that is noise.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  tern::v1::Command cmd;
  if (!cmd.ParseFromArray(data, static_cast<int>(size))) return 0;
  switch (cmd.action_case()) {
    case tern::v1::Command::kApplyService: {
      const auto& spec = cmd.apply_service().spec();
      if (tern::validate_service_spec(spec).ok()) check_accepted_spec(spec);
      break;
    }
    case tern::v1::Command::kDeploy: {
      const auto& d = cmd.deploy();
      (void)tern::is_valid_service_name(d.service());
      (void)tern::is_valid_version(d.release().version());
      (void)tern::is_sha256_hex(d.release().sha256());
      (void)weight_ok(d.weight());
      break;
    }
    case tern::v1::Command::kSwitchTraffic:
      (void)tern::is_valid_service_name(cmd.switch_traffic().service());
      (void)weight_ok(cmd.switch_traffic().weight());
      break;
    case tern::v1::Command::kRollback:
      (void)tern::is_valid_service_name(cmd.rollback().service());
      if (!cmd.rollback().to_version().empty()) (void)tern::is_valid_version(cmd.rollback().to_version());
      break;
    case tern::v1::Command::kStopSlot:
      (void)tern::is_valid_service_name(cmd.stop_slot().service());
      break;
    case tern::v1::Command::kRemoveService:
      (void)tern::is_valid_service_name(cmd.remove_service().service());
      break;
    default:
      break;
  }
  return 0;
}
