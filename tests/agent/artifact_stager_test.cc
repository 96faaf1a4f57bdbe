#include "agent/artifact_stager.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

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

}  // namespace
}  // namespace tern
