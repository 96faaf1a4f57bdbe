#include "agent/state_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using tern::v1::AgentState;
using tern::v1::ServiceState;

// A state with every kind of field set, `services` services long; each
// service's operation names the state's command id, so a reader can tell a
// whole file from a mix of two.
AgentState sample_state(uint64_t command_id, int services = 2) {
  AgentState s;
  s.set_last_command_id(command_id);
  s.set_epoch(7);
  for (int i = 0; i < services; ++i) {
    ServiceState* svc = s.add_services();
    auto* spec = svc->mutable_spec();
    spec->set_name("web-" + std::to_string(i));
    auto* port = spec->add_ports();
    port->set_protocol("tcp");
    port->set_public_port(8080);
    port->set_blue_port(9001);
    port->set_green_port(9002);
    spec->add_argv("{release_dir}/app");
    spec->add_argv("--port={port}");
    (*spec->mutable_env())["MODE"] = "prod";
    svc->set_spec_generation(3);
    svc->set_active(tern::v1::SLOT_COLOR_GREEN);
    svc->set_active_weight(25);
    svc->set_operation("command " + std::to_string(command_id));
    auto* blue = svc->mutable_blue();
    blue->set_color(tern::v1::SLOT_COLOR_BLUE);
    blue->mutable_release()->set_version("1.0.0");
    blue->mutable_release()->set_signature(std::string("\x00\xff\x10", 3));
    blue->set_pid(4242);
    blue->set_start_time(18'446'744'073'709'551'000ull);  // beyond what a JSON double holds exactly
    blue->set_phase(tern::v1::SLOT_PHASE_DRAINING);
    auto* green = svc->mutable_green();
    green->set_color(tern::v1::SLOT_COLOR_GREEN);
    green->mutable_release()->set_version("1.1.0");
    green->set_release_dir("/var/lib/tern/web/releases/1.1.0");
    green->set_phase(tern::v1::SLOT_PHASE_HEALTHY);
    green->set_restarts(2);
    green->set_message("healthy since start");
  }
  return s;
}

::testing::AssertionResult same(const AgentState& want, const AgentState& got) {
  if (google::protobuf::util::MessageDifferencer::Equals(want, got)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "want:\n" << want.DebugString() << "got:\n" << got.DebugString();
}

std::vector<std::string> names_in(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

TEST(StateStoreTest, TheFileIsAgentStateJsonInTheGivenDirectory) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  EXPECT_EQ(store.path(), dir.file("agent-state.json"));
}

TEST(StateStoreTest, AMissingFileIsAnEmptyStateAndLoadingCreatesNothing) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  auto got = store.load();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(same(AgentState(), *got));
  EXPECT_TRUE(names_in(dir.path()).empty());
}

TEST(StateStoreTest, WhatIsSavedIsLoadedBackByTheNextAgent) {
  testing::TempDir dir;
  const AgentState saved = sample_state(41);
  ASSERT_TRUE(StateStore(dir.path().string()).save(saved).ok());
  // A restarted agent: a new store on the same directory.
  auto got = StateStore(dir.path().string()).load();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(same(saved, *got));
}

TEST(StateStoreTest, ASaveReplacesTheWholeStateAndLeavesOnlyTheStateFile) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  ASSERT_TRUE(store.save(sample_state(1, 3)).ok());
  const AgentState smaller = sample_state(2, 1);
  ASSERT_TRUE(store.save(smaller).ok());
  auto got = store.load();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(same(smaller, *got)) << "the second save must not be merged into the first";
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"agent-state.json"}) << "no temp file left behind";
}

TEST(StateStoreTest, SavingAnEmptyStateClearsWhatWasThere) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  ASSERT_TRUE(store.save(sample_state(5)).ok());
  ASSERT_TRUE(store.save(AgentState()).ok());
  auto got = store.load();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(same(AgentState(), *got));
}

// The file is replaced, never rewritten in place: a reader (or a crash) at
// any moment of a save sees the whole old state or the whole new one.
TEST(StateStoreTest, AReaderDuringSavesAlwaysSeesAWholeState) {
  testing::TempDir dir;
  StateStore writer(dir.path().string());
  ASSERT_TRUE(writer.save(sample_state(0, 40)).ok());
  std::atomic<bool> done{false};
  std::thread saves([&] {
    for (uint64_t id = 1; id <= 150; ++id) {
      if (!writer.save(sample_state(id, 40)).ok()) break;
    }
    done = true;
  });
  const StateStore reader(dir.path().string());
  int reads = 0;
  std::string torn;
  while (!done && torn.empty()) {
    auto got = reader.load();
    ++reads;
    if (!got.ok()) {
      torn = got.status().ToString();
    } else if (got->services_size() != 40) {
      torn = "a state with " + std::to_string(got->services_size()) + " services";
    } else {
      for (const auto& svc : got->services()) {
        if (svc.operation() != "command " + std::to_string(got->last_command_id())) torn = "a mix of two states";
      }
    }
  }
  saves.join();
  EXPECT_EQ(torn, "") << "after " << reads << " reads";
  EXPECT_GT(reads, 0);
  auto last = reader.load();
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->last_command_id(), 150u);
}

TEST(StateStoreTest, ACorruptFileIsAnErrorNamingIt) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  dir.write("agent-state.json", "this is { not json");
  auto got = store.load();
  ASSERT_FALSE(got.ok()) << "a corrupt file must not read as an empty state";
  EXPECT_NE(got.status().message().find(store.path()), std::string::npos) << got.status();
}

TEST(StateStoreTest, ATruncatedFileIsAnError) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  ASSERT_TRUE(store.save(sample_state(9)).ok());
  const std::string whole = testing::read_file(store.path());
  ASSERT_GT(whole.size(), 20u);
  for (size_t keep : {whole.size() / 2, whole.size() - 2, size_t{0}}) {
    dir.write("agent-state.json", whole.substr(0, keep));
    auto got = store.load();
    EXPECT_FALSE(got.ok()) << "kept " << keep << " of " << whole.size() << " bytes";
    if (!got.ok()) {
      EXPECT_NE(got.status().message().find(store.path()), std::string::npos) << got.status();
    }
  }
}

TEST(StateStoreTest, AFileThatCannotBeReadIsAnErrorNotAnEmptyState) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  std::filesystem::create_directory(store.path());
  auto got = store.load();
  EXPECT_FALSE(got.ok());
}

// An agent rolled back to an older version reads the newer one's file.
TEST(StateStoreTest, FieldsFromANewerAgentAreIgnored) {
  testing::TempDir dir;
  StateStore store(dir.path().string());
  const AgentState saved = sample_state(3, 1);
  ASSERT_TRUE(store.save(saved).ok());
  std::string json = testing::read_file(store.path());
  const auto brace = json.find('{');
  ASSERT_NE(brace, std::string::npos);
  json.insert(brace + 1, "\"field_from_the_future\": {\"x\": 1},");
  dir.write("agent-state.json", json);
  auto got = store.load();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(same(saved, *got));
}

TEST(StateStoreTest, ASaveThatCannotWriteFailsNamingWhere) {
  testing::TempDir dir;
  const std::string missing = dir.file("no-such-dir");
  StateStore store(missing);
  auto st = store.save(sample_state(1));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(missing), std::string::npos) << st;
}

}  // namespace
}  // namespace tern
