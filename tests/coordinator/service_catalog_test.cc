#include "coordinator/service_catalog.h"

#include <gtest/gtest.h>

#include "core/service_spec.h"

namespace tern {
namespace {

tern::v1::ServiceStatus reported(const std::string& active_version, tern::v1::SlotPhase phase, uint32_t weight) {
  tern::v1::ServiceStatus s;
  s.set_service("web");
  auto* idle = s.add_slots();
  idle->set_color(tern::v1::SLOT_COLOR_BLUE);
  idle->mutable_release()->set_version("1.0");
  auto* active = s.add_slots();
  active->set_color(tern::v1::SLOT_COLOR_GREEN);
  active->set_active(true);
  active->mutable_release()->set_version(active_version);
  active->set_phase(phase);
  active->set_weight(weight);
  return s;
}

// Also what a rollout checks an agent's "succeeded" against.
TEST(DriftTest, NoneWhenTheOrderedReleaseServesHealthyAtItsWeight) {
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 100), "");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 30), "2.0", 30), "");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 0), "") << "weight 0 is 100";
}

TEST(DriftTest, SaysWhatTheHostDoesInstead) {
  EXPECT_EQ(drift(reported("1.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 100), "runs 1.0, not 2.0");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_CRASHED, 100), "2.0", 100), "2.0 is crashed");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 77), "2.0", 100),
            "2.0 gets 77% of new connections, not 100%");
  tern::v1::ServiceStatus nothing;
  EXPECT_EQ(drift(nothing, "2.0", 100), "nothing is active, not 2.0");
}

TEST(DesiredStoreTest, WhatHostsShouldRunSurvivesAReopenAndGoesWithItsService) {
  auto db = Database::open(":memory:");
  ASSERT_TRUE(db.ok());
  auto store = ServiceStore::open(**db);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->save_desired({"h1", "web", "1.0", 100}).ok());
  ASSERT_TRUE((*store)->save_desired({"h1", "web", "2.0", 20}).ok()) << "a new order replaces the old";
  ASSERT_TRUE((*store)->save_desired({"h2", "api", "3.0", 100}).ok());
  auto again = ServiceStore::open(**db);
  ASSERT_TRUE(again.ok());
  auto all = (*again)->load_desired();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  for (const auto& d : *all) {
    if (d.host_id == "h1") {
      EXPECT_TRUE(d.service == "web" && d.version == "2.0" && d.weight == 20u);
    }
  }
  ASSERT_TRUE((*again)->delete_service("web").ok());
  all = (*again)->load_desired();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().service, "api");
}

// The catalogue on a real event loop and an in-memory database, with one
// connected host that every service selects; what it sends that host is kept.
class ServiceCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *Database::open(":memory:");
    hosts_ = *HostStore::open(*db_);
    services_ = *ServiceStore::open(*db_);
    registry_ = std::make_unique<HostRegistry>(*hosts_, clock_, HostRegistry::Options{}, &metrics_);
    ASSERT_TRUE(registry_->load().ok());
    ASSERT_TRUE(registry_->on_hello(1, "web-1", {{"role", "web"}}, "0.1.0", "peer-1").ok());
    HostCommands::Streams streams;
    streams.send = [this](uint64_t, tern::v1::CoordinatorMessage msg) {
      sent_.push_back(msg.command());
      return true;
    };
    streams.close = [](uint64_t, grpc::Status) {};
    commands_ = std::make_unique<HostCommands>(loop_, *registry_, std::move(streams), /*epoch=*/1, Millis(60'000),
                                               metrics_);
    catalog_ = std::make_unique<ServiceCatalog>(clock_, *services_, *registry_, *commands_);
    ASSERT_TRUE(catalog_->load().ok());
    loop_.start();
  }
  void TearDown() override { loop_.stop(); }

  static tern::v1::ServiceSpec spec(const std::string& name, uint32_t pub, uint32_t blue, uint32_t green) {
    tern::v1::ServiceSpec s;
    s.set_name(name);
    s.set_selector("role=web");
    auto* p = s.add_ports();
    p->set_public_port(pub);
    p->set_blue_port(blue);
    p->set_green_port(green);
    s.add_argv("{release_dir}/app");
    apply_service_defaults(s);
    return s;
  }
  absl::StatusOr<tern::v1::ApplyServiceResponse> apply(const tern::v1::ServiceSpec& s) {
    tern::v1::ApplyServiceRequest req;
    *req.mutable_spec() = s;
    absl::StatusOr<tern::v1::ApplyServiceResponse> out = absl::UnknownError("not run");
    loop_.run_sync([&] { out = catalog_->apply_service(req); });
    return out;
  }
  // What the store holds, read afresh: what a restarted coordinator would find.
  std::vector<std::string> stored() {
    std::vector<std::string> names;
    auto all = services_->load_services();
    EXPECT_TRUE(all.ok()) << all.status();
    if (all.ok()) {
      for (const auto& r : *all) names.push_back(r.spec().name());
    }
    return names;
  }

  FakeClock clock_;
  Metrics metrics_;
  EventLoop loop_{"catalog-test"};
  std::unique_ptr<Database> db_;
  std::unique_ptr<HostStore> hosts_;
  std::unique_ptr<ServiceStore> services_;
  std::unique_ptr<HostRegistry> registry_;
  std::unique_ptr<HostCommands> commands_;
  std::unique_ptr<ServiceCatalog> catalog_;
  std::vector<tern::v1::Command> sent_;
};

// An agent naming services the catalogue does not know cannot make the
// coordinator keep unbounded state for it; the services it knows are kept.
TEST_F(ServiceCatalogTest, StatusesOfUnknownServicesAreBoundedPerHost) {
  ASSERT_TRUE(apply(spec("web", 8080, 9001, 9002)).ok());
  std::size_t listed = 0;
  loop_.run_sync([&] {
    for (int i = 0; i < 1000; ++i) {
      tern::v1::ServiceStatus st;
      st.set_service("made-up-" + std::to_string(i));
      catalog_->on_status("h1", st);
    }
    tern::v1::ServiceStatus web;
    web.set_service("web");
    catalog_->on_status("h1", web);
    listed = catalog_->host_services("h1").size();
  });
  EXPECT_EQ(listed, 17u) << "16 unknown ones and web";
}

// Every agent the spec selects gets it in one message: a spec too big for
// that would make each of them drop its stream and reconnect, forever.
TEST_F(ServiceCatalogTest, ASpecTooLargeForTheAgentsIsRefusedAndNothingStoredOrSent) {
  auto big = spec("web", 8080, 9001, 9002);
  (*big.mutable_env())["BLOB"] = std::string(300 << 10, 'x');
  auto r = apply(big);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("the limit is 256 KiB"), std::string::npos) << r.status();
  EXPECT_TRUE(stored().empty());
  EXPECT_TRUE(sent_.empty());
  ASSERT_EQ(catalog_->list_services().size(), 0u);

  (*big.mutable_env())["BLOB"] = std::string(1000, 'x');
  r = apply(big);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(stored(), std::vector<std::string>{"web"});
  EXPECT_EQ(sent_.size(), 1u) << "the selected host gets the spec";
}

// Agents run all their services in one port space, and a host's labels
// change, so two services may never claim the same port: each public and
// slot port belongs to one service. The refusal names the other service.
TEST_F(ServiceCatalogTest, APortAnotherServiceUsesIsRefusedNamingIt) {
  ASSERT_TRUE(apply(spec("web", 8080, 9001, 9002)).ok());
  struct Clash {
    tern::v1::ServiceSpec spec;
    std::string says;
  };
  for (const auto& [bad, says] : {Clash{spec("api", 8080, 9101, 9102), "8080 is service \"web\"'s ports[0].public"},
                                  Clash{spec("api", 9001, 9101, 9102), "9001 is service \"web\"'s ports[0].blue"},
                                  Clash{spec("api", 8081, 8080, 9102), "8080 is service \"web\"'s ports[0].public"},
                                  Clash{spec("api", 8081, 9101, 9002), "9002 is service \"web\"'s ports[0].green"}}) {
    auto r = apply(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << says << ": " << r.status();
    EXPECT_NE(std::string(r.status().message()).find(says), std::string::npos) << r.status();
  }
  EXPECT_EQ(stored(), std::vector<std::string>{"web"});
  EXPECT_EQ(sent_.size(), 1u) << "only web's spec went out";

  EXPECT_TRUE(apply(spec("api", 8081, 9101, 9102)).ok()) << "ports of its own";
  EXPECT_TRUE(apply(spec("web", 8080, 9002, 9003)).ok()) << "a service may move its own ports around";
  EXPECT_EQ(apply(spec("api", 8081, 9101, 9001)).status().code(), absl::StatusCode::kOk) << "web gave 9001 up";
}

}  // namespace
}  // namespace tern
