#include "agent/traffic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

namespace tern {
namespace {

using tern::v1::ServiceState;

// ---- routes_for ----

ServiceState two_port_service(tern::v1::SlotColor active, uint32_t weight) {
  ServiceState s;
  s.mutable_spec()->set_name("web");
  auto* http = s.mutable_spec()->add_ports();
  http->set_protocol("tcp");
  http->set_public_port(80);
  http->set_blue_port(8001);
  http->set_green_port(8002);
  auto* dns = s.mutable_spec()->add_ports();
  dns->set_protocol("udp");
  dns->set_public_port(53);
  dns->set_blue_port(5301);
  dns->set_green_port(5302);
  s.set_active(active);
  s.set_active_weight(weight);
  return s;
}

// A route's backends by port, without those of weight 0, which the mapper
// treats as absent (agent/port_mapper.h).
std::vector<PortRoute::Backend> live(const PortRoute& r) {
  std::vector<PortRoute::Backend> out;
  for (const auto& b : r.backends) {
    if (b.weight > 0) out.push_back(b);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.port < b.port; });
  return out;
}

using Backends = std::vector<PortRoute::Backend>;

TEST(RoutesForTest, NoActiveSlotMapsNothing) {
  EXPECT_TRUE(routes_for(two_port_service(tern::v1::SLOT_COLOR_UNSPECIFIED, 100)).empty());
  EXPECT_TRUE(routes_for(two_port_service(tern::v1::SLOT_COLOR_UNSPECIFIED, 30)).empty());
}

TEST(RoutesForTest, EveryPortOfTheSpecGoesToTheActiveSlot) {
  for (auto [active, http_port, dns_port] : {std::tuple{tern::v1::SLOT_COLOR_BLUE, 8001, 5301},
                                             std::tuple{tern::v1::SLOT_COLOR_GREEN, 8002, 5302}}) {
    const auto routes = routes_for(two_port_service(active, 100));
    ASSERT_EQ(routes.size(), 2u);
    EXPECT_EQ(routes[0].service, "web");
    EXPECT_EQ(routes[0].protocol, "tcp");
    EXPECT_EQ(routes[0].public_port, 80);
    EXPECT_EQ(live(routes[0]), (Backends{{static_cast<uint16_t>(http_port), 100}}));
    EXPECT_EQ(routes[1].service, "web");
    EXPECT_EQ(routes[1].protocol, "udp");
    EXPECT_EQ(routes[1].public_port, 53);
    EXPECT_EQ(live(routes[1]), (Backends{{static_cast<uint16_t>(dns_port), 100}}));
  }
}

TEST(RoutesForTest, WeightZeroMeansAllTraffic) {
  const auto routes = routes_for(two_port_service(tern::v1::SLOT_COLOR_GREEN, 0));
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(live(routes[0]), (Backends{{8002, 100}}));
}

TEST(RoutesForTest, ACanaryWeightSplitsBetweenTheActiveAndTheOtherSlot) {
  const auto blue = routes_for(two_port_service(tern::v1::SLOT_COLOR_BLUE, 10));
  ASSERT_EQ(blue.size(), 2u);
  EXPECT_EQ(live(blue[0]), (Backends{{8001, 10}, {8002, 90}}));
  EXPECT_EQ(live(blue[1]), (Backends{{5301, 10}, {5302, 90}}));
  const auto green = routes_for(two_port_service(tern::v1::SLOT_COLOR_GREEN, 75));
  ASSERT_EQ(green.size(), 2u);
  EXPECT_EQ(live(green[0]), (Backends{{8001, 25}, {8002, 75}}));
}

TEST(RoutesForTest, EveryWeightGivesAMappingTheMapperAccepts) {
  for (uint32_t w = 0; w <= 150; ++w) {
    const auto routes = routes_for(two_port_service(tern::v1::SLOT_COLOR_BLUE, w));
    EXPECT_TRUE(validate(DesiredMapping{routes}).ok()) << "weight " << w << ": " << validate(DesiredMapping{routes});
    ASSERT_EQ(routes.size(), 2u);
    uint32_t sum = 0;
    for (const auto& b : routes[0].backends) sum += b.weight;
    EXPECT_EQ(sum, 100u) << "weight " << w;
    if (w >= 1 && w < 100) {
      EXPECT_EQ(live(routes[0]), (Backends{{8001, w}, {8002, 100 - w}})) << "weight " << w;
    }
  }
}

TEST(RoutesForTest, TheIdleSlotIsListedAtWeightZeroSoItsConnectionsAreCounted) {
  const auto routes = routes_for(two_port_service(tern::v1::SLOT_COLOR_GREEN, 100));
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].backends, (Backends{{8002, 100}, {8001, 0}}));
  EXPECT_EQ(routes[1].backends, (Backends{{5302, 100}, {5301, 0}}));
}

TEST(RoutesForTest, EveryPortTakesTheSpecsSplitWithTheCanaryFirst) {
  ServiceState s = two_port_service(tern::v1::SLOT_COLOR_GREEN, 10);
  for (const auto& r : routes_for(s)) EXPECT_EQ(r.split, TrafficSplit::kConnection) << "the default";
  s.mutable_spec()->set_split("connection");
  for (const auto& r : routes_for(s)) EXPECT_EQ(r.split, TrafficSplit::kConnection);
  s.mutable_spec()->set_split("client");
  const auto routes = routes_for(s);
  ASSERT_EQ(routes.size(), 2u);
  for (const auto& r : routes) EXPECT_EQ(r.split, TrafficSplit::kClient);
  // The active slot comes first, so it holds the lowest buckets and a client
  // it holds at 10% it still holds as the weight grows (weight_slots()).
  EXPECT_EQ(routes[0].backends, (Backends{{8002, 10}, {8001, 90}}));
}

TEST(SlotConnectionsTest, SumsEachSlotOverTheServicesPortsAndProtocols) {
  const ServiceState s = two_port_service(tern::v1::SLOT_COLOR_BLUE, 90);
  const std::vector<BackendConnections> counts = {
      {"web", "tcp", 80, 8001, 90},  {"web", "tcp", 80, 8002, 10},  {"web", "udp", 53, 5301, 900},
      {"web", "udp", 53, 5302, 100}, {"web", "tcp", 53, 5302, 7},   // not a port of the spec: tcp/53
      {"web", "tcp", 80, 9999, 5}};                                 // not a slot of the spec
  const SlotConnections got = slot_connections(s.spec(), counts);
  EXPECT_TRUE(got.counted);
  EXPECT_EQ(got.blue, 990u);
  EXPECT_EQ(got.green, 110u);
  EXPECT_EQ(got.of(tern::v1::SLOT_COLOR_GREEN), 110u);
  EXPECT_FALSE(slot_connections(s.spec(), {{"web", "tcp", 81, 8001, 3}}).counted);
}

TEST(RoutesForTest, AnUnsetProtocolIsTcp) {
  ServiceState s = two_port_service(tern::v1::SLOT_COLOR_BLUE, 100);
  s.mutable_spec()->mutable_ports(0)->clear_protocol();
  const auto routes = routes_for(s);
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].protocol, "tcp");
}

TEST(RoutesForTest, ASpecWithoutPortsMapsNothing) {
  ServiceState s = two_port_service(tern::v1::SLOT_COLOR_BLUE, 100);
  s.mutable_spec()->clear_ports();
  EXPECT_TRUE(routes_for(s).empty());
}

// ---- TrafficMap ----

// Records every mapping it is given; fails while `fail` is set; notices two
// calls at once (PortMapper is not thread-safe: its owner serialises calls).
class RecordingMapper final : public PortMapper {
 public:
  absl::Status apply(const DesiredMapping& desired) override {
    Entered e(*this);
    std::lock_guard lock(mu_);
    applied.push_back(desired);
    if (!fail.ok()) return fail;
    current_ = desired;
    return absl::OkStatus();
  }
  absl::StatusOr<bool> reconcile() override {
    Entered e(*this);
    return reconcile_result;
  }
  absl::Status remove_all() override {
    current_ = {};
    return absl::OkStatus();
  }
  const DesiredMapping& current() const override { return current_; }
  std::string name() const override { return "recording"; }
  absl::StatusOr<std::vector<BackendConnections>> connection_counts() override { return connections; }
  std::vector<BackendConnections> connections;

  std::vector<DesiredMapping> applied;
  absl::Status fail;
  absl::StatusOr<bool> reconcile_result = false;
  std::atomic<bool> overlapped{false};

 private:
  struct Entered {
    explicit Entered(RecordingMapper& m) : m_(m) {
      if (m_.inside_.fetch_add(1) != 0) m_.overlapped = true;
      std::this_thread::yield();  // widen the window a racing caller would hit
    }
    ~Entered() { m_.inside_.fetch_sub(1); }
    RecordingMapper& m_;
  };
  std::mutex mu_;  // guards `applied` only, so that overlap stays visible
  std::atomic<int> inside_{0};
  DesiredMapping current_;
};

PortRoute route(const std::string& service, uint16_t public_port, uint16_t backend) {
  return PortRoute{service, "tcp", public_port, {{backend, 100}}};
}

// The routes in a canonical order: the mapping is a set of routes.
std::vector<PortRoute> sorted(std::vector<PortRoute> routes) {
  std::sort(routes.begin(), routes.end(), [](const PortRoute& a, const PortRoute& b) {
    return std::tie(a.service, a.protocol, a.public_port) < std::tie(b.service, b.protocol, b.public_port);
  });
  return routes;
}

TEST(TrafficMapTest, EachServiceSetsItsOwnRoutesAndTheMapperGetsThemAll) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  ASSERT_TRUE(traffic.set_routes("web", {route("web", 80, 8001)}).ok());
  ASSERT_TRUE(traffic.set_routes("api", {route("api", 443, 9001), route("api", 444, 9003)}).ok());
  const std::vector<PortRoute> all = {route("api", 443, 9001), route("api", 444, 9003), route("web", 80, 8001)};
  ASSERT_EQ(mapper.applied.size(), 2u) << "one apply per change";
  EXPECT_EQ(sorted(mapper.applied.back().routes), all);
  EXPECT_EQ(sorted(traffic.desired().routes), all);
}

TEST(TrafficMapTest, NewRoutesReplaceTheServicesOldOnes) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  ASSERT_TRUE(traffic.set_routes("web", {route("web", 80, 8001), route("web", 81, 8101)}).ok());
  ASSERT_TRUE(traffic.set_routes("api", {route("api", 443, 9001)}).ok());
  ASSERT_TRUE(traffic.set_routes("web", {route("web", 80, 8002)}).ok());
  const std::vector<PortRoute> want = {route("api", 443, 9001), route("web", 80, 8002)};
  EXPECT_EQ(sorted(mapper.applied.back().routes), want);
  EXPECT_EQ(sorted(traffic.desired().routes), want);
}

TEST(TrafficMapTest, EmptyRoutesUnmapOnlyThatService) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  ASSERT_TRUE(traffic.set_routes("web", {route("web", 80, 8001)}).ok());
  ASSERT_TRUE(traffic.set_routes("api", {route("api", 443, 9001)}).ok());
  ASSERT_TRUE(traffic.set_routes("web", {}).ok());
  EXPECT_EQ(mapper.applied.back().routes, std::vector<PortRoute>{route("api", 443, 9001)});
  EXPECT_EQ(traffic.desired().routes, std::vector<PortRoute>{route("api", 443, 9001)});
  ASSERT_TRUE(traffic.set_routes("api", {}).ok());
  EXPECT_TRUE(mapper.applied.back().routes.empty());
}

TEST(TrafficMapTest, AFailedApplyKeepsThePreviousRoutes) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  ASSERT_TRUE(traffic.set_routes("web", {route("web", 80, 8001)}).ok());
  mapper.fail = absl::UnavailableError("nft: table busy");
  const absl::Status st = traffic.set_routes("web", {route("web", 80, 8002)});
  EXPECT_EQ(st, mapper.fail) << "the mapper's error, unchanged";
  EXPECT_EQ(traffic.desired().routes, std::vector<PortRoute>{route("web", 80, 8001)});
  // The next change for another service carries web's routes in force, not the refused ones.
  mapper.fail = absl::OkStatus();
  ASSERT_TRUE(traffic.set_routes("api", {route("api", 443, 9001)}).ok());
  EXPECT_EQ(sorted(mapper.applied.back().routes),
            (std::vector<PortRoute>{route("api", 443, 9001), route("web", 80, 8001)}));
}

TEST(TrafficMapTest, AFailedUnmapKeepsTheService) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  ASSERT_TRUE(traffic.set_routes("web", {route("web", 80, 8001)}).ok());
  mapper.fail = absl::InternalError("iptables-restore failed");
  EXPECT_FALSE(traffic.set_routes("web", {}).ok());
  EXPECT_EQ(traffic.desired().routes, std::vector<PortRoute>{route("web", 80, 8001)});
}

TEST(TrafficMapTest, ReconcileIsTheMappersAnswer) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  mapper.reconcile_result = true;
  auto restored = traffic.reconcile();
  ASSERT_TRUE(restored.ok());
  EXPECT_TRUE(*restored);
  mapper.reconcile_result = false;
  EXPECT_FALSE(*traffic.reconcile());
  mapper.reconcile_result = absl::PermissionDeniedError("nft: Operation not permitted");
  EXPECT_EQ(traffic.reconcile().status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(TrafficMapTest, ServicesChangingAtOnceNeverCallTheMapperTwiceAtOnce) {
  RecordingMapper mapper;
  TrafficMap traffic(&mapper);
  constexpr int kServices = 4;
  constexpr int kChanges = 100;
  std::vector<std::thread> threads;
  for (int s = 0; s < kServices; ++s) {
    threads.emplace_back([&, s] {
      const std::string name = "svc-" + std::to_string(s);
      for (int i = 0; i < kChanges; ++i) {
        EXPECT_TRUE(traffic.set_routes(name, {route(name, static_cast<uint16_t>(1000 + s), static_cast<uint16_t>(2000 + i))}).ok());
        if (i % 10 == 0) {
          EXPECT_TRUE(traffic.reconcile().ok());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(mapper.overlapped) << "TrafficMap let two calls into the mapper at once";
  EXPECT_EQ(mapper.applied.size(), static_cast<size_t>(kServices * kChanges));
  std::vector<PortRoute> want;
  for (int s = 0; s < kServices; ++s) {
    const std::string name = "svc-" + std::to_string(s);
    want.push_back(route(name, static_cast<uint16_t>(1000 + s), static_cast<uint16_t>(2000 + kChanges - 1)));
  }
  EXPECT_EQ(sorted(traffic.desired().routes), want);
  EXPECT_EQ(sorted(mapper.applied.back().routes), want);
}

}  // namespace
}  // namespace tern
