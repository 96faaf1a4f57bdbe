// Artifact signatures: what one key signs, only that key's public half
// verifies; unsigned and tampered are refused with a reason.
#include "core/signing.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using testing::TempDir;
using testing::run_cmd;

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* k : {"a", "b"}) {
      ASSERT_EQ(run_cmd({"openssl", "genpkey", "-algorithm", "ed25519", "-out", dir_.file(std::string(k) + ".pem")}).code, 0);
      ASSERT_EQ(run_cmd({"openssl", "pkey", "-in", dir_.file(std::string(k) + ".pem"), "-pubout", "-out",
                         dir_.file(std::string(k) + ".pub")})
                    .code,
                0);
    }
  }
  TempDir dir_;
  const std::string sha_ = std::string(64, 'a');
};

TEST_F(SigningTest, ASignatureVerifiesOnlyForItsKeyAndItsArtifact) {
  auto sig = sign_artifact(dir_.file("a.pem"), sha_);
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_EQ(sig->size(), 64u);
  auto a = TrustedKeys::load({dir_.file("a.pub")});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->verify(sha_, *sig).ok());
  EXPECT_EQ(a->verify(std::string(64, 'b'), *sig).code(), absl::StatusCode::kPermissionDenied) << "another artifact";
  std::string flipped = *sig;
  flipped[5] ^= 1;
  EXPECT_EQ(a->verify(sha_, flipped).code(), absl::StatusCode::kPermissionDenied);
  auto b = TrustedKeys::load({dir_.file("b.pub")});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->verify(sha_, *sig).code(), absl::StatusCode::kPermissionDenied) << "someone else's key";
  auto both = TrustedKeys::load({dir_.file("b.pub"), dir_.file("a.pub")});
  ASSERT_TRUE(both.ok());
  EXPECT_TRUE(both->verify(sha_, *sig).ok()) << "any trusted key will do";
  auto unsigned_ = a->verify(sha_, "");
  EXPECT_EQ(unsigned_.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(unsigned_.message()).find("--sign-key"), std::string::npos) << "says what to do";
}

TEST_F(SigningTest, TheOpensslCommandLineMakesTheSameKindOfSignature) {
  // The recipe in core/signing.h, for signing without Tern.
  {
    std::ofstream(dir_.file("msg")) << artifact_signing_message(sha_);
  }
  ASSERT_EQ(run_cmd({"openssl", "pkeyutl", "-sign", "-inkey", dir_.file("a.pem"), "-rawin", "-in", dir_.file("msg"),
                     "-out", dir_.file("sig")})
                .code,
            0);
  auto keys = TrustedKeys::load({dir_.file("a.pub")});
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->verify(sha_, testing::read_file(dir_.file("sig"))).ok());
}

TEST_F(SigningTest, BadKeyFilesAreNamed) {
  auto missing = TrustedKeys::load({dir_.file("nope.pub")});
  EXPECT_NE(std::string(missing.status().message()).find("nope.pub"), std::string::npos);
  auto priv_as_pub = TrustedKeys::load({dir_.file("a.pem")});
  EXPECT_FALSE(priv_as_pub.ok());
  EXPECT_FALSE(sign_artifact(dir_.file("a.pub"), sha_).ok()) << "a public key cannot sign";
}

}  // namespace
}  // namespace tern
