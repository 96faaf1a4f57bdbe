#include "agent/artifact_stager.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "agent/exec.h"
#include "core/sha256.h"
#include "tests/support/agent_fakes.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

using testing::FakeFetcher;

std::string sha_of(const std::string& s) {
  Sha256 h;
  h.update(s.data(), s.size());
  return h.hex_digest();
}

tern::v1::ReleaseRef release(const std::string& version, const std::string& sha, const std::string& name = "app") {
  tern::v1::ReleaseRef r;
  r.set_version(version);
  r.set_sha256(sha);
  r.set_name(name);
  return r;
}

const auto kQuiet = [](const std::string&) {};

TEST(ArtifactStagerTest, AReleaseWithAUrlComesThroughTheUrlFetcher) {
  testing::TempDir dir;
  FakeFetcher store, web;
  web.bytes = "#!/bin/sh\necho hi\n";
  ArtifactStager stager(dir.path().string(), &store, BundleLimits(), &web);
  auto r = release("1.0", sha_of(web.bytes));
  r.set_url("https://artifacts.example/app");
  auto got = stager.stage("web", r, kQuiet);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(web.last_source, "https://artifacts.example/app");
  EXPECT_EQ(store.calls, 0);
  // Only http and https, refused before anything is fetched.
  r.set_version("1.1");
  r.set_url("ftp://artifacts.example/app");
  auto refused = stager.stage("web", r, kQuiet);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(web.calls, 1);
}

TEST(ArtifactStagerTest, InstallsAnExecutableAndReusesIt) {
  testing::TempDir dir;
  FakeFetcher f;
  f.bytes = "#!/bin/sh\necho hi\n";
  ArtifactStager stager(dir.path().string(), &f);
  auto got = stager.stage("web", release("1.0", sha_of(f.bytes)), kQuiet);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, stager.release_dir("web", "1.0"));
  struct stat st;
  ASSERT_EQ(::stat((*got + "/app").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR);
  // Staged once: the second time nothing is fetched.
  ASSERT_TRUE(stager.stage("web", release("1.0", sha_of(f.bytes)), kQuiet).ok());
  EXPECT_EQ(f.calls, 1);
}

TEST(ArtifactStagerTest, AWrongChecksumInstallsNothing) {
  testing::TempDir dir;
  FakeFetcher f;
  f.bytes = "real bytes";
  ArtifactStager stager(dir.path().string(), &f);
  auto got = stager.stage("web", release("1.0", sha_of("other bytes")), kQuiet);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(got.status().message()).find("failed its checksum"), std::string::npos);
  EXPECT_FALSE(fs::exists(stager.release_dir("web", "1.0")));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path() / "web" / "releases"), fs::directory_iterator()), 0)
      << "no temp dir left behind";
}

TEST(ArtifactStagerTest, ATruncatedTransferInstallsNothing) {
  testing::TempDir dir;
  FakeFetcher f;
  f.bytes = std::string(100'000, 'x');
  f.cut_at = 5'000;
  ArtifactStager stager(dir.path().string(), &f);
  auto got = stager.stage("web", release("1.0", sha_of(f.bytes)), kQuiet);
  ASSERT_FALSE(got.ok());
  EXPECT_FALSE(fs::exists(stager.release_dir("web", "1.0")));
}

TEST(ArtifactStagerTest, VersionsAreImmutable) {
  testing::TempDir dir;
  FakeFetcher f;
  f.bytes = "one";
  ArtifactStager stager(dir.path().string(), &f);
  ASSERT_TRUE(stager.stage("web", release("1.0", sha_of("one")), kQuiet).ok());
  f.bytes = "two";
  auto got = stager.stage("web", release("1.0", sha_of("two")), kQuiet);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(std::string(got.status().message()).find("immutable"), std::string::npos) << got.status();
}

TEST(ArtifactStagerTest, UnpacksABundle) {
  testing::TempDir dir;
  fs::create_directories(dir.path() / "src" / "bin");
  std::ofstream(dir.path() / "src" / "bin" / "app") << "#!/bin/sh\n";
  std::ofstream(dir.path() / "src" / "config.yaml") << "a: 1\n";
  auto tar = run_command({"tar", "-czf", dir.file("b.tar.gz"), "-C", dir.file("src"), "bin", "config.yaml"});
  ASSERT_TRUE(tar.ok() && tar->exit_code == 0);
  FakeFetcher f;
  f.bytes = testing::read_file(dir.file("b.tar.gz"));
  ArtifactStager stager((dir.path() / "state").string(), &f);
  auto got = stager.stage("web", release("2.0", sha_of(f.bytes)), kQuiet);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(fs::exists(*got + "/bin/app"));
  EXPECT_EQ(testing::read_file(*got + "/config.yaml"), "a: 1\n");
}

TEST(ArtifactStagerTest, RefusesBadVersionsAndChecksumsBeforeFetching) {
  testing::TempDir dir;
  FakeFetcher f;
  ArtifactStager stager(dir.path().string(), &f);
  EXPECT_EQ(stager.stage("web", release("../etc", std::string(64, 'a')), kQuiet).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stager.stage("web", release("1.0", "abc"), kQuiet).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.calls, 0);
}

TEST(ArtifactStagerTest, RemovesStagingsAbandonedByACrash) {
  testing::TempDir dir;
  fs::create_directories(dir.path() / "web" / "releases" / ".staging-1.0-123" / "content");
  fs::create_directories(dir.path() / "web" / "releases" / "0.9");
  ArtifactStager stager(dir.path().string(), nullptr);
  EXPECT_EQ(stager.remove_abandoned(), 1);
  EXPECT_FALSE(fs::exists(dir.path() / "web" / "releases" / ".staging-1.0-123"));
  EXPECT_TRUE(fs::exists(dir.path() / "web" / "releases" / "0.9"));
}

// Nothing but empty dirs under the service's releases dir: no release, no
// half-written staging left behind.
bool nothing_staged(const fs::path& root) {
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(root / "web" / "releases", ec)) {
    if (!e.is_directory()) return false;
  }
  return fs::is_empty(root / "web" / "releases", ec);
}

TEST(ArtifactStagerTest, AUrlDownloadStopsAtTheLimitAndStagesNothing) {
  testing::TempDir dir;
  FakeFetcher store, web;
  web.bytes = std::string(5'000, 'x');
  StagingLimits limits;
  limits.max_url_bytes = 1'000;
  ArtifactStager stager(dir.path().string(), &store, BundleLimits(), &web, limits);
  auto r = release("1.0", sha_of(web.bytes));
  r.set_url("https://artifacts.example/app");
  auto got = stager.stage("web", r, kQuiet);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted) << got.status();
  EXPECT_EQ(web.last_options.max_bytes, 1'000u) << "the limit is the fetcher's to enforce while streaming";
  EXPECT_TRUE(nothing_staged(dir.path()));
  // The coordinator's store is not a URL: the same artifact comes through.
  store.bytes = web.bytes;
  ASSERT_TRUE(stager.stage("web", release("1.0", sha_of(store.bytes)), kQuiet).ok());
  EXPECT_EQ(store.last_options.max_bytes, 0u);
}

TEST(ArtifactStagerTest, AFullDiskRefusesStagingBeforeAnythingIsFetched) {
  testing::TempDir dir;
  FakeFetcher f;
  StagingLimits limits;
  limits.free_space_margin = uint64_t{64} << 20;
  std::string asked;
  limits.free_bytes = [&](const std::string& path) -> absl::StatusOr<uint64_t> {
    asked = path;
    return uint64_t{10} << 20;
  };
  ArtifactStager stager(dir.path().string(), &f, BundleLimits(), nullptr, limits);
  auto got = stager.stage("web", release("1.0", sha_of(f.bytes)), kQuiet);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted) << got.status();
  EXPECT_NE(got.status().message().find("10 MiB free"), absl::string_view::npos) << got.status();
  EXPECT_NE(got.status().message().find("1.0"), absl::string_view::npos) << got.status();
  EXPECT_EQ(f.calls, 0);
  EXPECT_EQ(asked, (dir.path() / "web" / "releases").string());
  EXPECT_TRUE(nothing_staged(dir.path()));
}

TEST(ArtifactStagerTest, AnArtifactThatDoesNotFitIsRefusedOnceItsSizeIsKnown) {
  testing::TempDir dir;
  FakeFetcher f;
  f.bytes = std::string(2'000, 'x');
  f.says_size = true;
  uint64_t free = 1'500;
  StagingLimits limits;
  limits.free_space_margin = 100;
  limits.free_bytes = [&](const std::string&) -> absl::StatusOr<uint64_t> { return free; };
  ArtifactStager stager(dir.path().string(), &f, BundleLimits(), nullptr, limits);
  auto got = stager.stage("web", release("1.0", sha_of(f.bytes)), kQuiet);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted) << got.status();
  EXPECT_NE(got.status().message().find("the artifact is 2000 bytes"), absl::string_view::npos) << got.status();
  EXPECT_TRUE(nothing_staged(dir.path()));
  // With the room for it and the margin, it stages.
  free = 2'100;
  ASSERT_TRUE(stager.stage("web", release("1.0", sha_of(f.bytes)), kQuiet).ok());
}

TEST(ArtifactStagerTest, PruneKeepsTheNewestAndTheOnesInUse) {
  testing::TempDir dir;
  FakeFetcher f;
  ArtifactStager stager(dir.path().string(), &f);
  const auto t0 = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (int v = 1; v <= 7; ++v) {
    f.bytes = "build " + std::to_string(v);
    auto got = stager.stage("web", release(std::to_string(v), sha_of(f.bytes)), kQuiet);
    ASSERT_TRUE(got.ok()) << got.status();
    // Staged a minute apart, whatever the filesystem's time resolution.
    fs::last_write_time(*got + "/.tern-sha256", t0 + std::chrono::minutes(v));
  }
  const fs::path releases = dir.path() / "web" / "releases";
  fs::create_directories(releases / "not-a-release");  // no marker: not the stager's
  auto removed = stager.prune("web", {"2"}, 3);
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{"1", "3", "4"}));
  for (const char* kept : {"2", "5", "6", "7", "not-a-release"}) EXPECT_TRUE(fs::exists(releases / kept)) << kept;
  EXPECT_TRUE(stager.prune("web", {"2"}, 3).empty()) << "a second prune changes nothing";
  EXPECT_TRUE(stager.prune("api", {}, 1).empty()) << "a service with nothing staged";
}

}  // namespace
}  // namespace tern
