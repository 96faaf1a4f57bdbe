// The method table that both authorization and the audit trail read, held
// against the services the protos define.
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/auth.h"
#include "tern/v1/admin.pb.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tern/v1/rollout.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {
namespace {

std::set<std::string> served_methods() {
  const google::protobuf::ServiceDescriptor* services[] = {
      tern::v1::AgentMessage::descriptor()->file()->FindServiceByName("AgentService"),
      tern::v1::ListHostsRequest::descriptor()->file()->FindServiceByName("FleetService"),
      tern::v1::ServiceSpec::descriptor()->file()->FindServiceByName("ServiceService"),
      tern::v1::RolloutSpec::descriptor()->file()->FindServiceByName("RolloutService"),
      tern::v1::Principal::descriptor()->file()->FindServiceByName("AdminService"),
  };
  std::set<std::string> out;
  for (const auto* svc : services) {
    EXPECT_NE(svc, nullptr);
    if (svc == nullptr) continue;
    for (int i = 0; i < svc->method_count(); ++i) {
      out.insert(absl::StrCat("/", svc->full_name(), "/", svc->method(i)->name()));
    }
  }
  return out;
}

TEST(MethodRulesTest, EveryServedMethodHasExactlyOneRuleAndEveryRuleAMethod) {
  const auto methods = served_methods();
  ASSERT_GT(methods.size(), 20u);
  std::set<std::string> ruled;
  for (const auto& r : method_rules()) {
    EXPECT_TRUE(ruled.insert(r.path).second) << r.path << " has two rows";
    EXPECT_EQ(methods.count(r.path), 1u) << r.path << " is in the table but no proto defines it";
  }
  for (const auto& m : methods) EXPECT_EQ(ruled.count(m), 1u) << m << " has no rule: nobody could call it";
}

TEST(MethodRulesTest, RuleAndFindRuleAgreeForEveryRpc) {
  for (const auto& r : method_rules()) {
    EXPECT_EQ(&rule(r.rpc), &r);
    EXPECT_EQ(find_rule(r.path), &r);
  }
  EXPECT_EQ(find_rule("/grpc.health.v1.Health/Check"), nullptr);
}

// Reads are never audited (a viewer's `ternctl hosts` every second would
// fill the trail); everything else is, allowed or refused.
TEST(MethodRulesTest, ExactlyTheMethodsThatChangeStateAreAudited) {
  const char* read_prefixes[] = {"Get", "List", "Watch", "Plan", "WhoAmI", "Connect", "FetchArtifact"};
  for (const auto& r : method_rules()) {
    const std::string name = std::string(r.path).substr(std::string(r.path).rfind('/') + 1);
    bool read = false;
    for (const char* p : read_prefixes) read = read || absl::StartsWith(name, p);
    EXPECT_EQ(r.audited, !read) << r.path;
  }
}

TEST(MethodRulesTest, WhatEachMethodNeeds) {
  EXPECT_EQ(rule(Rpc::kListHosts).permission, Permission::kRead);
  EXPECT_EQ(rule(Rpc::kWatchRollout).permission, Permission::kRead);
  EXPECT_EQ(rule(Rpc::kDeployHost).permission, Permission::kOperate);
  EXPECT_EQ(rule(Rpc::kAbortRollout).permission, Permission::kOperate);
  EXPECT_EQ(rule(Rpc::kApplyService).permission, Permission::kAdmin);
  EXPECT_EQ(rule(Rpc::kUploadArtifact).permission, Permission::kAdmin);
  EXPECT_EQ(rule(Rpc::kListAudit).permission, Permission::kAdmin);
  EXPECT_EQ(rule(Rpc::kConnect).permission, Permission::kAgent);
  EXPECT_EQ(rule(Rpc::kFetchArtifact).permission, Permission::kAgent);
  EXPECT_EQ(rule(Rpc::kWhoAmI).permission, Permission::kAnyone);
  // Nothing an agent key can call is meant for people, and the reverse.
  for (const auto& r : method_rules()) {
    EXPECT_EQ(r.permission == Permission::kAgent, absl::StartsWith(r.path, "/tern.v1.AgentService/")) << r.path;
  }
}

}  // namespace
}  // namespace tern
