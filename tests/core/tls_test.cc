#include "core/tls.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The serial is compared with what an admin copies from `openssl x509
// -serial` into the deny list: no leading zeros, lower case, whatever its
// length.
TEST(CertIdentityTest, SerialHasNoLeadingZerosAndLabelsComeFromUriSans) {
  testing::TempDir dir;
  const std::string key = dir.file("k.pem"), crt = dir.file("c.pem");
  auto r = testing::run("openssl", {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                     "-keyout", key, "-out", crt, "-subj", "/O=Tern/OU=agent/CN=web-1", "-days", "1",
                                     "-set_serial", "0x0ABC", "-addext",
                                     "subjectAltName=URI:tern:label:role=web,URI:tern:label:zone=a,URI:https://x"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto id = cert_identity(read(crt));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->serial, "abc");
  EXPECT_EQ(id->common_name, "web-1");
  EXPECT_EQ(id->org_unit, "agent");
  EXPECT_EQ(id->labels, (std::map<std::string, std::string>{{"role", "web"}, {"zone", "a"}}));
}

}  // namespace
}  // namespace tern
