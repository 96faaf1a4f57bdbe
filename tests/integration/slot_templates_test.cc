// Config files rendered per slot, end to end: releases whose app takes its
// port from a file the agent rendered from a template in the release, not
// from argv. The demo app with --config, and Debian's nginx when installed.

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/integration/one_host.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;

class SlotTemplatesTest : public OneHostFixture {
 protected:
  void SetUp() override {
    OneHostFixture::set_up("nftables", /*keep_warm=*/false);
    if (skipped()) return;
    // Slots run as nobody (the agent's policy here): the release and render
    // dirs below the test's dir must be reachable for it.
    fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                     fs::perms::others_read | fs::perms::others_exec);
  }

  // Applies the fixture's service with this argv and these templates.
  void apply(const std::string& argv, const std::string& templates) {
    std::ofstream(dir_.file("web.yaml"))
        << "name: web\n"
        << "selector: role=web\n"
        << "ports: [{name: http, protocol: tcp, public: " << kPublicPort << ", blue: " << kBluePort
        << ", green: " << kGreenPort << "}]\n"
        << "argv: " << argv << "\n"
        << "templates: " << templates << "\n"
        << "health: {http: {path: /healthz}, interval: 100ms, timeout: 1s, healthy_deadline: 6s}\n"
        << "drain: 1s\n"
        << "grace: 3s\n";
    auto r = ctl({"service", "apply", "-f", dir_.file("web.yaml")});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }

  void deploy(const std::string& version, const std::string& bundle_path) {
    ASSERT_NO_FATAL_FAILURE(push(version, bundle_path));
    auto r = ctl({"host", "deploy", "h1", "web", "--version", version});
    ASSERT_EQ(r.code, 0) << r.out << r.err << "\nagent log:\n" << agent_->log();
  }

  std::string rendered(const std::string& color, const std::string& file) const {
    return dir_.file("agent/web/" + color + "/rendered/" + file);
  }
};

TEST_F(SlotTemplatesTest, TheDemoAppTakesItsPortFromAFileRenderedForItsSlot) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  // No --port in argv: only the rendered file says where to listen.
  ASSERT_NO_FATAL_FAILURE(apply(R"(["{release_dir}/app", "--config", "{render_dir}/app.conf", "--drain", "300ms"])",
                                R"([{source: conf/app.conf.tmpl, dest: app.conf, mode: "0600"}])"));
  const std::string tmpl = "# rendered for {service}\nport={port}\nversion={version}-from-file\ncolor={slot}\n";
  const std::string good = bundle("tmpl-good", {{"app", ""}, {"conf/app.conf.tmpl", tmpl}});
  ASSERT_NO_FATAL_FAILURE(deploy("v1", good));
  EXPECT_EQ(serving(), "v1-from-file blue");
  EXPECT_EQ(read_file(rendered("blue", "app.conf")),
            "# rendered for web\nport=9001\nversion=v1-from-file\ncolor=blue\n");
  struct stat st {};
  ASSERT_EQ(::stat(rendered("blue", "app.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u) << "the file is the slot user's";
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(rendered("blue", "").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u) << "the dir is the agent's: the slot cannot add to it";

  ASSERT_NO_FATAL_FAILURE(deploy("v2", good));
  EXPECT_EQ(serving(), "v2-from-file green");
  EXPECT_EQ(read_file(rendered("green", "app.conf")),
            "# rendered for web\nport=9002\nversion=v2-from-file\ncolor=green\n");

  // A release whose template names a placeholder the agent does not know: a
  // deploy error naming the file, line and placeholder; the idle slot (blue)
  // never starts and v2 keeps serving.
  const std::string broken =
      bundle("tmpl-broken", {{"app", ""}, {"conf/app.conf.tmpl", "port={port}\nlisten={prot}\n"}});
  ASSERT_NO_FATAL_FAILURE(push("v3", broken));
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v3"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("conf/app.conf.tmpl line 2: unknown placeholder {prot}"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(serving(), "v2-from-file green");
  auto h = host_status();
  ASSERT_TRUE(h && h->services_size() == 1);
  for (const auto& s : h->services(0).slots()) {
    if (s.color() == tern::v1::SLOT_COLOR_BLUE) {
      EXPECT_EQ(s.pid(), 0) << "v3 was never started in blue";
    }
  }
}

TEST_F(SlotTemplatesTest, NginxServesOnThePortOfItsRenderedConfig) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  if (!fs::exists("/usr/sbin/nginx")) {
    GTEST_SKIP() << "nginx is not installed (apt-get install nginx; scripts/setup.sh installs it)";
  }
  // nginx writes its pid file and temp dirs; the render dir is read-only for
  // the slot, so they go to a directory of the test's that nobody may write.
  const std::string writable = dir_.file("nginx-var");
  fs::create_directories(writable);
  fs::permissions(writable, fs::perms::all | fs::perms::sticky_bit);
  std::string conf =
      "worker_processes 1;\n"
      "error_log stderr warn;\n"
      "pid @/{slot}.pid;\n"
      "events {\n  worker_connections 64;\n}\n"
      "http {\n"
      "  access_log off;\n"
      "  client_body_temp_path @/{slot}-body;\n"
      "  proxy_temp_path @/{slot}-proxy;\n"
      "  fastcgi_temp_path @/{slot}-fastcgi;\n"
      "  uwsgi_temp_path @/{slot}-uwsgi;\n"
      "  scgi_temp_path @/{slot}-scgi;\n"
      "  server {\n"
      "    listen {port};\n"
      "    location = /healthz { return 200 \"ok\\n\"; }\n"
      "    location / { default_type text/plain; return 200 \"{version} {slot}\\n\"; }\n"
      "  }\n"
      "}\n";
  for (auto at = conf.find('@'); at != std::string::npos; at = conf.find('@')) conf.replace(at, 1, writable);
  ASSERT_NO_FATAL_FAILURE(apply(
      R"([/usr/sbin/nginx, -e, stderr, -p, "{render_dir}", -c, "{render_dir}/nginx.conf", -g, "daemon off;"])",
      R"([{source: conf/nginx.conf.tmpl, dest: nginx.conf}])"));
  const std::string site = bundle("nginx", {{"conf/nginx.conf.tmpl", conf}});
  ASSERT_NO_FATAL_FAILURE(deploy("1.0", site));
  EXPECT_EQ(serving(), "1.0 blue");
  ASSERT_NO_FATAL_FAILURE(deploy("1.1", site));
  EXPECT_EQ(serving(), "1.1 green");
  EXPECT_NE(read_file(rendered("green", "nginx.conf")).find("listen 9002;"), std::string::npos);
}

}  // namespace
}  // namespace tern::testing
