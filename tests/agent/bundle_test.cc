#include "agent/bundle.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <vector>

#include "agent/artifact_stager.h"
#include "core/sha256.h"
#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using testing::run_cmd;
using testing::TempDir;

// --- building archives by hand ------------------------------------------------

// One tar member, written exactly as given: no policy, so tests can say
// whatever a hostile archive would.
struct Member {
  std::string name{};
  char type = '0';
  std::string data{};
  uint32_t mode = 0644;
  std::string link{};
  int64_t mtime = 1'700'000'000;
  bool gnu_magic = false;
  std::string prefix{};
};

void put(std::string& block, std::size_t offset, std::size_t len, const std::string& value) {
  ASSERT_LE(value.size(), len) << value;
  block.replace(offset, value.size(), value);
}

std::string octal(uint64_t v, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*llo", width, static_cast<unsigned long long>(v));
  return buf;
}

std::string header(const Member& m) {
  std::string b(512, '\0');
  put(b, 0, 100, m.name);
  put(b, 100, 8, octal(m.mode, 7));
  put(b, 108, 8, octal(0, 7));
  put(b, 116, 8, octal(0, 7));
  put(b, 124, 12, octal(m.data.size(), 11));
  put(b, 136, 12, octal(static_cast<uint64_t>(m.mtime), 11));
  b[156] = m.type;
  put(b, 157, 100, m.link);
  if (m.gnu_magic) {
    put(b, 257, 8, std::string("ustar  \0", 8));
  } else {
    put(b, 257, 8, std::string("ustar\0" "00", 8));
    put(b, 345, 155, m.prefix);
  }
  put(b, 265, 32, "root");
  put(b, 297, 32, "root");
  b.replace(148, 8, "        ");
  unsigned sum = 0;
  for (char c : b) sum += static_cast<unsigned char>(c);
  put(b, 148, 8, octal(sum, 6) + std::string("\0 ", 2));
  return b;
}

std::string padded(const std::string& data) { return data + std::string((512 - data.size() % 512) % 512, '\0'); }

std::string pax_record(const std::string& key, const std::string& value) {
  // The length counts itself, so find the fixed point.
  std::string body = " " + key + "=" + value + "\n";
  std::size_t len = body.size() + 1;
  while (std::to_string(len).size() + body.size() != len) ++len;
  return std::to_string(len) + body;
}

class TarBuilder {
 public:
  TarBuilder& add(const Member& m) {
    tar_ += header(m) + padded(m.data);
    return *this;
  }
  TarBuilder& file(const std::string& name, const std::string& data, uint32_t mode = 0644) {
    return add(Member{.name = name, .data = data, .mode = mode});
  }
  TarBuilder& dir(const std::string& name, uint32_t mode = 0755) {
    return add(Member{.name = name, .type = '5', .mode = mode});
  }
  TarBuilder& symlink(const std::string& name, const std::string& target) {
    return add(Member{.name = name, .type = '2', .mode = 0777, .link = target});
  }
  TarBuilder& pax(const std::vector<std::pair<std::string, std::string>>& records, char type = 'x') {
    std::string data;
    for (const auto& [k, v] : records) data += pax_record(k, v);
    return add(Member{.name = "PaxHeader", .type = type, .data = data});
  }
  TarBuilder& raw(const std::string& bytes) {
    tar_ += bytes;
    return *this;
  }
  std::string tar(bool end_marker = true) const { return end_marker ? tar_ + std::string(1024, '\0') : tar_; }

 private:
  std::string tar_;
};

std::string gzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// --- looking at the result ----------------------------------------------------

// Short contents as they are, long ones by size and digest.
std::string summary(const std::string& content) {
  if (content.size() <= 64) return content;
  Sha256 h;
  h.update(content.data(), content.size());
  return std::to_string(content.size()) + " bytes, sha256 " + h.hex_digest().substr(0, 16);
}

// Everything under `root`, never following symlinks: path -> what it is.
std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st;
    // lexically: fs::relative would resolve symlinks.
    const std::string rel = it->path().lexically_relative(root).string();
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    if (S_ISLNK(st.st_mode)) {
      out[rel] = "link -> " + fs::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      out[rel] = std::string("dir ") + mode;
    } else if (S_ISREG(st.st_mode)) {
      out[rel] = std::string("file ") + mode + " " + summary(testing::read_file(it->path().string()));
    } else {
      out[rel] = "other";
    }
  }
  return out;
}

// An unpack into <tmp>/dest next to <tmp>/outside, which must stay as it was.
class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dest());
    fs::create_directories(outside());
    std::ofstream(outside() / "sentinel") << "untouched\n";
    before_ = tree(dir_.path() / "outside");
  }

  fs::path dest() const { return dir_.path() / "dest"; }
  fs::path outside() const { return dir_.path() / "outside"; }

  // Into a fresh, empty dest.
  absl::Status unpack_bytes(const std::string& gz, const BundleLimits& limits = BundleLimits()) {
    fs::remove_all(dest());
    fs::create_directories(dest());
    const std::string archive = dir_.file("bundle.tar.gz");
    std::ofstream(archive, std::ios::binary) << gz;
    return unpack_bundle(archive, dest().string(), limits);
  }
  absl::Status unpack(const TarBuilder& b, const BundleLimits& limits = BundleLimits()) {
    return unpack_bytes(gzip(b.tar()), limits);
  }

  // The refusal says what and why, and nothing escaped.
  void expect_refused(const absl::Status& st, const std::vector<std::string>& words) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    for (const auto& w : words) EXPECT_NE(st.message().find(w), absl::string_view::npos) << "\"" << w << "\" in " << st;
    expect_nothing_outside();
  }
  void expect_nothing_outside() {
    EXPECT_EQ(tree(outside()), before_);
    const std::set<std::string> expected = {"dest", "outside", "bundle.tar.gz"};
    for (const auto& e : fs::directory_iterator(dir_.path())) {
      EXPECT_TRUE(expected.count(e.path().filename().string())) << "created outside: " << e.path();
    }
  }

  TempDir dir_;
  std::map<std::string, std::string> before_;
};

// --- accepted bundles ---------------------------------------------------------

TEST_F(BundleTest, UnpacksAGnuTarBundleWithLongNamesExactly) {
  const std::string long_dir = "a-directory-name-long-enough-to-need-gnu-long-names-" + std::string(60, 'd');
  const std::string long_file = std::string(120, 'f') + ".txt";
  const fs::path src = dir_.path() / "src";
  fs::create_directories(src / "bin");
  fs::create_directories(src / "lib" / long_dir / "deeper" / "deepest");
  fs::create_directories(src / "empty");
  std::ofstream(src / "bin" / "app") << "#!/bin/sh\necho hi\n";
  fs::permissions(src / "bin" / "app", fs::perms(0755));
  std::ofstream(src / "lib" / "libx.so.1") << std::string(100'000, 'x');
  std::ofstream(src / "lib" / long_dir / "deeper" / "deepest" / long_file) << "deep\n";
  fs::create_symlink("libx.so.1", src / "lib" / "libx.so");
  fs::create_symlink("../../lib/libx.so.1", src / "lib" / long_dir / "up");
  const auto want = tree(src);

  for (const char* format : {"gnu", "posix", "ustar-if-possible"}) {
    SCOPED_TRACE(format);
    fs::remove_all(dest());
    fs::create_directories(dest());
    const std::string archive = dir_.file("bundle.tar.gz");
    std::vector<std::string> argv = {"tar", "-czf", archive, "-C", src.string(), "."};
    if (std::string(format) == "ustar-if-possible") {
      argv.insert(argv.begin() + 1, "--format=ustar");  // long paths fit in prefix + name
      argv.back() = "bin";
      argv.push_back("lib/libx.so.1");
    } else {
      argv.insert(argv.begin() + 1, std::string("--format=") + format);
    }
    auto made = run_cmd(argv);
    ASSERT_EQ(made.code, 0) << made.err;
    ASSERT_TRUE(unpack_bundle(archive, dest().string()).ok()) << unpack_bundle(archive, dest().string());
    if (std::string(format) == "ustar-if-possible") {
      EXPECT_EQ(tree(dest()).at("bin/app"), want.at("bin/app"));
      EXPECT_EQ(tree(dest()).at("lib/libx.so.1"), want.at("lib/libx.so.1"));
    } else {
      EXPECT_EQ(tree(dest()), want);
    }
    fs::remove(archive);
  }
}

TEST_F(BundleTest, KeepsModificationTimesAndAcceptsUstarPrefixAndPax) {
  const std::string deep = std::string(150, 'p');
  const std::string kPaxPath = "pax/" + std::string(200, 'n') + "/" + std::string(100, 'm');
  TarBuilder b;
  b.add(Member{.name = "file.txt", .data = "in prefix", .mtime = 1'234'567'890, .prefix = deep})
      .pax({{"path", kPaxPath}, {"mtime", "1600000000.5"}, {"uname", "whoever"}})
      .file("short", "from pax")
      .pax({{"comment", "made by a test"}}, 'g')
      .file("after-global", "g");
  ASSERT_TRUE(unpack(b).ok()) << unpack(b);
  EXPECT_EQ(testing::read_file((dest() / deep / "file.txt").string()), "in prefix");
  EXPECT_EQ(testing::read_file((dest() / kPaxPath).string()), "from pax");
  EXPECT_FALSE(fs::exists(dest() / "short"));
  struct stat st;
  ASSERT_EQ(::stat((dest() / deep / "file.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1'234'567'890);
  ASSERT_EQ(::stat((dest() / kPaxPath).c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1'600'000'000);
}

TEST_F(BundleTest, PaxSizeAndMtimeOverrideTheHeader) {
  TarBuilder b;
  b.pax({{"size", "5"}, {"mtime", "99999999999999"}})
      .raw(header(Member{.name = "big"}))  // the header says 0 bytes
      .raw(padded("hello"));
  ASSERT_TRUE(unpack(b).ok()) << unpack(b);
  EXPECT_EQ(testing::read_file((dest() / "big").string()), "hello");
  struct stat st;
  ASSERT_EQ(::stat((dest() / "big").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 0) << "a time past the year 9999 is not kept";
}

TEST_F(BundleTest, AcceptsAMultiMemberGzipAndARepeatedDirectory) {
  const std::string tar = TarBuilder().dir("d/").file("d/a", "1").dir("d").file("d/b", "2").tar();
  ASSERT_TRUE(unpack_bytes(gzip(tar.substr(0, 700)) + gzip(tar.substr(700))).ok());
  EXPECT_EQ(tree(dest()), (std::map<std::string, std::string>{
                              {"d", "dir 0755"}, {"d/a", "file 0644 1"}, {"d/b", "file 0644 2"}}));
}

TEST_F(BundleTest, StripsSetuidSetgidStickyAndWriteBitsAndNeverHonoursOwners) {
  TarBuilder b;
  b.file("suid", "x", 04755).file("sgid", "x", 02711).file("world-writable", "x", 0666).dir("shared", 03777);
  ASSERT_TRUE(unpack(b).ok());
  EXPECT_EQ(tree(dest()), (std::map<std::string, std::string>{{"suid", "file 0755 x"},
                                                              {"sgid", "file 0755 x"},
                                                              {"world-writable", "file 0644 x"},
                                                              {"shared", "dir 0755"}}));
  struct stat st;
  ASSERT_EQ(::stat((dest() / "suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

// --- refused bundles ----------------------------------------------------------

TEST_F(BundleTest, RefusesTraversal) {
  expect_refused(unpack(TarBuilder().file("ok", "1").file("../outside/evil", "x")),
                 {"\"../outside/evil\"", "'..'", "tar -czf"});
  expect_refused(unpack(TarBuilder().file("a/../../outside/evil", "x")), {"'..'"});
  // A '..' hidden in a GNU long name or a pax path is the same.
  const std::string long_evil = std::string(120, 'a') + "/../../outside/evil";
  expect_refused(unpack(TarBuilder()
                            .add(Member{.name = "././@LongLink", .type = 'L', .data = long_evil + '\0',
                                        .gnu_magic = true})
                            .add(Member{.name = "short", .data = "x", .gnu_magic = true})),
                 {"'..'"});
  expect_refused(unpack(TarBuilder().pax({{"path", "../outside/evil"}}).file("innocent", "x")), {"'..'"});
}

TEST_F(BundleTest, RefusesAbsolutePaths) {
  const std::string target = (outside() / "abs").string();
  expect_refused(unpack(TarBuilder().file(target, "x")), {"absolute paths are refused"});
  expect_refused(unpack(TarBuilder().pax({{"path", "/etc/tern-bundle-test"}}).file("x", "x")),
                 {"\"/etc/tern-bundle-test\"", "absolute"});
  EXPECT_FALSE(fs::exists("/etc/tern-bundle-test"));
}

TEST_F(BundleTest, RefusesSymlinksThatLeaveTheRelease) {
  expect_refused(unpack(TarBuilder().symlink("out", "../outside")), {"symlink \"out\"", "outside the release"});
  expect_refused(unpack(TarBuilder().symlink("etc", "/etc")), {"absolute targets are refused"});
  expect_refused(unpack(TarBuilder().dir("a").symlink("a/b", "../../outside")), {"outside the release"});
  expect_refused(unpack(TarBuilder().symlink("empty", "")), {"empty"});
  // Each link below stays inside on paper, but through "s" the second would
  // climb two levels from the top: '..' after a name is refused.
  expect_refused(unpack(TarBuilder().dir("d").symlink("d/s", "..").symlink("d/l", "s/../../outside")),
                 {"'..' may only lead the target"});
}

TEST_F(BundleTest, NeverWritesThroughASymlinkFromTheSameArchive) {
  // The link itself is allowed (it points inside); writing through it is not.
  expect_refused(unpack(TarBuilder().dir("real").symlink("link", "real").file("link/x", "through")),
                 {"\"link/x\"", "symlink"});
  EXPECT_FALSE(fs::exists(dest() / "real" / "x"));
  // Replacing the link by a file or a directory is refused too.
  expect_refused(unpack(TarBuilder().symlink("link", "x").file("link", "data")), {"replace an earlier entry"});
  expect_refused(unpack(TarBuilder().symlink("link", "x").dir("link")), {"replace an earlier entry"});
}

TEST_F(BundleTest, RefusesDuplicatesThatReplaceEntries) {
  expect_refused(unpack(TarBuilder().dir("d").file("d", "x")), {"\"d\"", "replace an earlier entry"});
  expect_refused(unpack(TarBuilder().file("f", "1").file("f", "2")), {"replace an earlier entry"});
  EXPECT_EQ(testing::read_file((dest() / "f").string()), "1");
  expect_refused(unpack(TarBuilder().file("f", "1").file("f/g", "2")), {"\"f/g\"", "earlier entry made a file"});
}

TEST_F(BundleTest, RefusesHardLinks) {
  expect_refused(unpack(TarBuilder().file("a", "x").add(Member{.name = "b", .type = '1', .link = "a"})),
                 {"\"b\"", "hard link", "copy"});
  // As GNU tar writes them.
  const fs::path src = dir_.path() / "src";
  fs::create_directories(src);
  std::ofstream(src / "a") << "x";
  fs::create_hard_link(src / "a", src / "b");
  const std::string archive = dir_.file("bundle.tar.gz");
  ASSERT_EQ(run_cmd({"tar", "-czf", archive, "-C", src.string(), "a", "b"}).code, 0);
  fs::remove_all(src);
  fs::remove_all(dest());
  fs::create_directories(dest());
  expect_refused(unpack_bundle(archive, dest().string()), {"hard link"});
}

TEST_F(BundleTest, RefusesDevicesFifosAndOtherTypes) {
  expect_refused(unpack(TarBuilder().add(Member{.name = "null", .type = '3'})), {"character device"});
  expect_refused(unpack(TarBuilder().add(Member{.name = "sda", .type = '4'})), {"block device"});
  expect_refused(unpack(TarBuilder().add(Member{.name = "pipe", .type = '6'})), {"fifo"});
  expect_refused(unpack(TarBuilder().add(Member{.name = "sparse", .type = 'S', .gnu_magic = true})), {"sparse"});
  expect_refused(unpack(TarBuilder().add(Member{.name = "vol", .type = 'V', .gnu_magic = true})), {"entry type"});
  expect_refused(unpack(TarBuilder().pax({{"GNU.sparse.map", "0,1"}}).file("s", "x")), {"sparse"});
  // A real fifo, as GNU tar writes it.
  const fs::path src = dir_.path() / "src";
  fs::create_directories(src);
  ASSERT_EQ(::mkfifo((src / "pipe").c_str(), 0644), 0);
  const std::string archive = dir_.file("bundle.tar.gz");
  ASSERT_EQ(run_cmd({"tar", "-czf", archive, "-C", src.string(), "pipe"}).code, 0);
  fs::remove_all(src);
  expect_refused(unpack_bundle(archive, dest().string()), {"fifo"});
}

TEST_F(BundleTest, RefusesBadNames) {
  expect_refused(unpack(TarBuilder().file("", "x")), {"empty name"});
  expect_refused(unpack(TarBuilder().pax({{"path", std::string("a\0b", 3)}}).file("x", "x")), {"NUL"});
  expect_refused(unpack(TarBuilder().add(Member{.name = "././@LongLink", .type = 'L',
                                                .data = std::string("a\0b\0", 4), .gnu_magic = true})
                            .add(Member{.name = "x", .data = "x", .gnu_magic = true})),
                 {"NUL"});
  expect_refused(unpack(TarBuilder().pax({{"path", std::string(5000, 'n')}}).file("x", "x")), {"over the limit of 4096"});
  expect_refused(unpack(TarBuilder().pax({{"path", std::string(300, 'n')}}).file("x", "x")), {"longer than 255"});
  expect_refused(unpack(TarBuilder().file(".", "x")), {"release directory itself"});
  expect_refused(unpack(TarBuilder().file("file/", "x")), {"ends with '/'"});
}

TEST_F(BundleTest, RefusesTooManyEntries) {
  TarBuilder b;
  for (int i = 0; i < 11; ++i) b.file("f" + std::to_string(i), "x");
  BundleLimits limits;
  limits.max_entries = 10;
  expect_refused(unpack(b, limits), {"more than 10 entries"});
}

TEST_F(BundleTest, StopsAGzipBombAtTheByteLimit) {
  BundleLimits limits;
  limits.max_total_bytes = 1 << 20;
  // A file whose header declares more than the limit: refused before a byte is written.
  const std::string zeros(8 << 20, '\0');
  const std::string bomb = gzip(TarBuilder().file("zeros", zeros).tar());
  EXPECT_LT(bomb.size(), 64u << 10) << "a real bomb: small compressed, large unpacked";
  expect_refused(unpack_bytes(bomb, limits), {"\"zeros\"", "more than the limit of 1048576 bytes"});
  EXPECT_FALSE(fs::exists(dest() / "zeros"));
  // Many files, each small: stopped when the running total passes the limit.
  TarBuilder many;
  for (int i = 0; i < 20; ++i) many.file("f" + std::to_string(i), std::string(100'000, 'z'));
  expect_refused(unpack(many, limits), {"more than the limit"});
  // Zeros after the end-of-archive marker count too.
  expect_refused(unpack_bytes(gzip(TarBuilder().file("a", "x").tar() + zeros), limits), {"more than the limit"});
}

TEST_F(BundleTest, RefusesTruncatedAndCorruptBundles) {
  const std::string good = gzip(TarBuilder().file("a", std::string(200'000, 'a')).file("b", "b").tar());
  struct Case {
    std::string name;
    std::string bytes;
    std::string words;
  };
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x55;
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 6] ^= 0x01;
  const std::string tar = TarBuilder().file("a", "x").tar();
  std::string bad_checksum = tar;
  bad_checksum[0] = 'b';
  for (const Case& c : std::vector<Case>{
           {"cut in the gzip data", good.substr(0, good.size() / 2), "truncated"},
           {"cut in the trailer", good.substr(0, good.size() - 3), "truncated"},
           {"a flipped byte", flipped, "corrupt"},
           {"a wrong CRC", bad_crc, "corrupt"},
           {"not gzip", tar, "not gzip-compressed"},
           {"empty", "", "empty"},
           {"garbage after the gzip data", good + "garbage", "corrupt"},
           {"no end-of-archive marker", gzip(TarBuilder().file("a", "x").tar(false)), "end-of-archive marker"},
           {"tar cut in a file", gzip(tar.substr(0, 600)), "in the middle of"},
           {"a bad header checksum", gzip(bad_checksum), "checksum"},
           {"not tar at all", gzip(std::string(2048, 'x')), "checksum"},
       }) {
    SCOPED_TRACE(c.name);
    expect_refused(unpack_bytes(c.bytes), {c.words});
  }
}

TEST_F(BundleTest, OnlyUnpacksIntoAnEmptyDirectory) {
  std::ofstream(dir_.file("bundle.tar.gz"), std::ios::binary) << gzip(TarBuilder().file("a", "x").tar());
  std::ofstream(dest() / "already") << "here";
  EXPECT_EQ(unpack_bundle(dir_.file("bundle.tar.gz"), dest().string()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(unpack_bundle(dir_.file("bundle.tar.gz"), (dir_.path() / "missing").string()).code(),
            absl::StatusCode::kFailedPrecondition);
}

// read_tar_gz alone: what a visitor sees, with no disk involved.
class Recorder final : public BundleVisitor {
 public:
  std::vector<std::string> seen;
  absl::Status begin_entry(const BundleEntry& e) override {
    seen.push_back(e.path + (e.kind == BundleEntryKind::kSymlink ? " -> " + e.link_target : ""));
    return absl::OkStatus();
  }
  absl::Status file_data(const char* data, std::size_t len) override {
    seen.back() += ":" + std::string(data, len);
    return absl::OkStatus();
  }
  absl::Status end_entry() override { return absl::OkStatus(); }
};

TEST(ReadTarGzTest, NormalisesPathsAndTakesLongLinkTargets) {
  const std::string long_target = std::string(150, 't');
  const std::string gz = gzip(TarBuilder()
                                  .dir("./")
                                  .file(".//bin/./app", "A")
                                  .add(Member{.name = "././@LongLink", .type = 'K', .data = long_target + '\0',
                                              .gnu_magic = true})
                                  .add(Member{.name = "lnk", .type = '2', .gnu_magic = true})
                                  .tar());
  Recorder r;
  ASSERT_TRUE(read_tar_gz(gz, BundleLimits(), r).ok());
  EXPECT_EQ(r.seen, (std::vector<std::string>{"bin/app:A", "lnk -> " + long_target}));
}

TEST(ReadTarGzTest, AVisitorErrorStopsReading) {
  class Refuser final : public BundleVisitor {
   public:
    absl::Status begin_entry(const BundleEntry&) override { return absl::PermissionDeniedError("no"); }
    absl::Status file_data(const char*, std::size_t) override { return absl::OkStatus(); }
    absl::Status end_entry() override { return absl::OkStatus(); }
  } refuser;
  EXPECT_EQ(read_tar_gz(gzip(TarBuilder().file("a", "x").tar()), BundleLimits(), refuser).code(),
            absl::StatusCode::kPermissionDenied);
}

// --- through the stager: a refused bundle leaves nothing behind ----------------

class BytesFetcher final : public ArtifactFetcher {
 public:
  explicit BytesFetcher(std::string bytes) : bytes_(std::move(bytes)) {}
  absl::Status fetch(const std::string&, const Sink& sink) override { return sink(bytes_.data(), bytes_.size()); }

 private:
  std::string bytes_;
};

tern::v1::ReleaseRef release_of(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  tern::v1::ReleaseRef r;
  r.set_version("2.0");
  r.set_sha256(h.hex_digest());
  r.set_kind("tar.gz");
  return r;
}

TEST_F(BundleTest, TheStagerLeavesNothingOfARefusedBundle) {
  const std::string root = (dest() / "state").string();
  for (const std::string& bytes : {gzip(TarBuilder().file("ok", "1").symlink("out", "../../../outside").tar()),
                                   gzip(TarBuilder().file("ok", "1").file("../../../../outside/x", "x").tar()),
                                   gzip(TarBuilder().file("ok", "1").tar()).substr(0, 40)}) {
    BytesFetcher fetcher(bytes);
    ArtifactStager stager(root, &fetcher);
    auto got = stager.stage("web", release_of(bytes), [](const std::string&) {});
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
    EXPECT_NE(got.status().message().find("cannot unpack the 2.0 bundle of web"), absl::string_view::npos)
        << got.status();
    EXPECT_FALSE(fs::exists(stager.release_dir("web", "2.0")));
    EXPECT_TRUE(fs::is_empty(fs::path(root) / "web" / "releases")) << "no staging dir left behind";
    expect_nothing_outside();
  }
}

TEST_F(BundleTest, TheStagerRefusesABundleThatShipsItsMarker) {
  const std::string bytes = gzip(TarBuilder().file(".tern-sha256", std::string(64, 'a')).tar());
  BytesFetcher fetcher(bytes);
  ArtifactStager stager((dest() / "state").string(), &fetcher);
  auto got = stager.stage("web", release_of(bytes), [](const std::string&) {});
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("reserves"), absl::string_view::npos) << got.status();
}

}  // namespace
}  // namespace tern
