// Config files rendered per slot: the text rules (a pure function) and the
// disk rules (what a hostile release or spec cannot make the root agent do).
#include "agent/slot_templates.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "tests/support/temp_dir.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

const Placeholders kValues = {{"port", "9002"},           {"port:admin", "9102"}, {"release_dir", "/r/1.4"},
                              {"render_dir", "/s/green"}, {"version", "1.4"},     {"slot", "green"},
                              {"service", "web"}};

std::string render_ok(const std::string& text) {
  auto out = render_template(text, kValues, "t.tmpl");
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : "";
}

TEST(RenderTemplateTest, SubstitutesPlaceholdersAndLeavesConfigBracesAlone) {
  EXPECT_EQ(render_ok("server {\n  listen 127.0.0.1:{port};\n  root {release_dir}/www;\n"
                      "  location ~ ^/\\d{3}$ { }\n}\n"),
            "server {\n  listen 127.0.0.1:9002;\n  root /r/1.4/www;\n  location ~ ^/\\d{3}$ { }\n}\n");
  EXPECT_EQ(render_ok("admin={port:admin} v={version} slot={slot} svc={service} dir={render_dir}"),
            "admin=9102 v=1.4 slot=green svc=web dir=/s/green");
  EXPECT_EQ(render_ok("HOME=${HOME} {\"a\": 1} { port} {port {} {"), "HOME=${HOME} {\"a\": 1} { port} {port {} {")
      << "a brace that starts no {lower_case_name} is copied as written";
}

TEST(RenderTemplateTest, DoubleBraceIsALiteralBrace) {
  EXPECT_EQ(render_ok("{{port}"), "{port}");
  EXPECT_EQ(render_ok("${{user}"), "${user}");
  EXPECT_EQ(render_ok("{{{port}"), "{9002");
  EXPECT_EQ(render_ok("a {{ b"), "a { b");
}

TEST(RenderTemplateTest, ValuesAreNotRenderedAgain) {
  auto out = render_template("{release_dir}", {{"release_dir", "/r/{port}"}, {"port", "1"}}, "t");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "/r/{port}");
}

TEST(RenderTemplateTest, AnUnknownPlaceholderNamesTheFileTheLineAndThePlaceholder) {
  auto out = render_template("events {}\nhttp {\n  listen {prot};\n", kValues, "conf/nginx.conf.tmpl");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string m(out.status().message());
  EXPECT_NE(m.find("conf/nginx.conf.tmpl line 3"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown placeholder {prot}"), std::string::npos) << m;
  EXPECT_NE(m.find("{port}"), std::string::npos) << "the known ones are listed: " << m;
  EXPECT_NE(m.find("{{"), std::string::npos) << "the escape is named: " << m;

  out = render_template("{port:metrics}", kValues, "t");
  ASSERT_FALSE(out.ok()) << "a port name the spec does not have";
  EXPECT_NE(std::string(out.status().message()).find("{port:metrics}"), std::string::npos) << out.status();
}

class RenderSlotFilesTest : public ::testing::Test {
 protected:
  RenderSlotFilesTest() {
    fs::create_directories(release_ + "/conf");
    std::ofstream(release_ + "/conf/app.conf.tmpl") << "port={port}\nversion={version}\n";
    std::ofstream(release_ + "/conf/site.tmpl") << "listen {port:admin};\n";
  }

  tern::v1::TemplateFile* add(const std::string& source, const std::string& dest, const std::string& mode = "") {
    auto* t = templates_.Add();
    t->set_source(source);
    t->set_dest(dest);
    t->set_mode(mode);
    return t;
  }

  absl::Status render() { return render_slot_files(templates_, kValues, release_, render_dir_, owner_); }

  static uint32_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }

  std::set<std::string> listing() const {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(render_dir_)) {
      out.insert(fs::relative(e.path(), render_dir_).string());
    }
    return out;
  }

  testing::TempDir dir_;
  const std::string release_ = dir_.file("releases/1.4");
  const std::string render_dir_ = dir_.file("state/web/green/rendered");
  const RenderOwner owner_{::geteuid(), ::getegid()};
  google::protobuf::RepeatedPtrField<tern::v1::TemplateFile> templates_;
};

TEST_F(RenderSlotFilesTest, RendersEachTemplateWithItsModeAndLeavesNoTempFiles) {
  add("conf/app.conf.tmpl", "app.conf");
  add("conf/site.tmpl", "sites/admin.conf", "0600");
  ASSERT_TRUE(render().ok()) << render();
  EXPECT_EQ(testing::read_file(render_dir_ + "/app.conf"), "port=9002\nversion=1.4\n");
  EXPECT_EQ(testing::read_file(render_dir_ + "/sites/admin.conf"), "listen 9102;\n");
  EXPECT_EQ(mode_of(render_dir_ + "/app.conf"), 0640u) << "the default mode";
  EXPECT_EQ(mode_of(render_dir_ + "/sites/admin.conf"), 0600u);
  EXPECT_EQ(mode_of(render_dir_), 0750u) << "the slot's group reads it; only the agent adds to it";
  EXPECT_EQ(mode_of(render_dir_ + "/sites"), 0750u);
  EXPECT_EQ(listing(), (std::set<std::string>{"app.conf", "sites", "sites/admin.conf"}));
}

TEST_F(RenderSlotFilesTest, EveryRenderStartsAfresh) {
  add("conf/app.conf.tmpl", "old.conf");
  ASSERT_TRUE(render().ok());
  templates_.Clear();
  add("conf/app.conf.tmpl", "new.conf");
  ASSERT_TRUE(render().ok());
  EXPECT_EQ(listing(), (std::set<std::string>{"new.conf"})) << "what an earlier spec rendered is gone";
}

TEST_F(RenderSlotFilesTest, NoTemplatesTouchNothing) {
  ASSERT_TRUE(render().ok());
  EXPECT_FALSE(fs::exists(dir_.file("state"))) << "nothing is created for a spec without templates";
}

TEST_F(RenderSlotFilesTest, ASourceThatResolvesOutsideTheReleaseIsRefused) {
  std::ofstream(dir_.file("secret")) << "root:x:0:0\n";
  fs::create_symlink("/etc/passwd", release_ + "/conf/absolute.tmpl");
  fs::create_symlink("../../../secret", release_ + "/conf/climbing.tmpl");
  fs::create_symlink("../../..", release_ + "/conf/up");
  for (const char* source : {"conf/absolute.tmpl", "conf/climbing.tmpl", "conf/up/secret"}) {
    templates_.Clear();
    add(source, "app.conf");
    auto st = render();
    ASSERT_FALSE(st.ok()) << source;
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(std::string(st.message()).find("outside the release"), std::string::npos) << st;
    EXPECT_NE(std::string(st.message()).find(source), std::string::npos) << "the template is named: " << st;
    EXPECT_FALSE(fs::exists(render_dir_ + "/app.conf")) << source;
  }
}

TEST_F(RenderSlotFilesTest, ASymlinkThatStaysInsideTheReleaseIsFollowed) {
  fs::create_symlink("app.conf.tmpl", release_ + "/conf/current.tmpl");
  add("conf/current.tmpl", "app.conf");
  ASSERT_TRUE(render().ok()) << render();
  EXPECT_EQ(testing::read_file(render_dir_ + "/app.conf"), "port=9002\nversion=1.4\n");
}

TEST_F(RenderSlotFilesTest, PathsThatClimbOutAreRefusedEvenIfTheSpecWasNotChecked) {
  for (const auto& [source, dest] : std::vector<std::pair<std::string, std::string>>{
           {"../secret", "a.conf"}, {"/etc/passwd", "a.conf"}, {"conf/app.conf.tmpl", "../a.conf"},
           {"conf/app.conf.tmpl", "/tmp/a.conf"}, {"conf/app.conf.tmpl", "x/../../a.conf"}}) {
    templates_.Clear();
    add(source, dest);
    auto st = render();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << source << " -> " << dest << ": " << st;
  }
  EXPECT_FALSE(fs::exists(dir_.file("state/web/green/a.conf")));
}

TEST_F(RenderSlotFilesTest, ARenderDirThatIsASymlinkIsReplacedNotFollowed) {
  fs::create_directories(dir_.file("victim"));
  std::ofstream(dir_.file("victim/keep")) << "x";
  fs::create_directories(fs::path(render_dir_).parent_path());
  fs::create_symlink(dir_.file("victim"), render_dir_);
  add("conf/app.conf.tmpl", "keep");
  ASSERT_TRUE(render().ok()) << render();
  EXPECT_EQ(testing::read_file(dir_.file("victim/keep")), "x") << "nothing was written through the link";
  EXPECT_FALSE(fs::is_symlink(render_dir_));
  EXPECT_EQ(testing::read_file(render_dir_ + "/keep"), "port=9002\nversion=1.4\n");
}

TEST_F(RenderSlotFilesTest, AMissingTooLargeOrOddSourceIsAClearError) {
  add("conf/missing.tmpl", "a.conf");
  auto st = render();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << "the spec and the release disagree: " << st;
  EXPECT_NE(std::string(st.message()).find("templates[0] (conf/missing.tmpl -> a.conf)"), std::string::npos) << st;
  EXPECT_NE(std::string(st.message()).find("no such file"), std::string::npos) << st;

  std::ofstream(release_ + "/conf/big.tmpl") << std::string(kMaxTemplateBytes + 1, 'x');
  templates_.Clear();
  add("conf/big.tmpl", "a.conf");
  st = render();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(std::string(st.message()).find("at most 1048576 bytes"), std::string::npos) << st;

  templates_.Clear();
  add("conf", "a.conf");
  st = render();
  EXPECT_NE(std::string(st.message()).find("not a regular file"), std::string::npos) << st;

  ASSERT_EQ(::mkfifo((release_ + "/conf/fifo").c_str(), 0644), 0);
  templates_.Clear();
  add("conf/fifo", "a.conf");
  st = render();
  EXPECT_NE(std::string(st.message()).find("not a regular file"), std::string::npos) << "a fifo does not hang: " << st;
}

TEST_F(RenderSlotFilesTest, AnUnknownPlaceholderNamesTheTemplateAndTheLine) {
  std::ofstream(release_ + "/conf/bad.tmpl") << "ok\nport={prot}\n";
  add("conf/app.conf.tmpl", "app.conf");
  add("conf/bad.tmpl", "bad.conf");
  auto st = render();
  ASSERT_FALSE(st.ok());
  const std::string m(st.message());
  EXPECT_NE(m.find("templates[1] (conf/bad.tmpl -> bad.conf)"), std::string::npos) << m;
  EXPECT_NE(m.find("conf/bad.tmpl line 2: unknown placeholder {prot}"), std::string::npos) << m;
}

TEST_F(RenderSlotFilesTest, FilesBelongToTheSlotsUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving files to another user needs root (CI runs as root)";
  const RenderOwner nobody{65534, 65534};
  add("conf/app.conf.tmpl", "app.conf");
  ASSERT_TRUE(render_slot_files(templates_, kValues, release_, render_dir_, nobody).ok());
  struct stat st {};
  ASSERT_EQ(::stat((render_dir_ + "/app.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u);
  ASSERT_EQ(::stat(render_dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u) << "the dir stays the agent's: the slot cannot plant files or links in it";
  EXPECT_EQ(st.st_gid, 65534u);
}

}  // namespace
}  // namespace tern
