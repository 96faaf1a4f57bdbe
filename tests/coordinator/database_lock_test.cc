#include <unistd.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "coordinator/database.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

TEST(DatabaseLockTest, ASecondHolderIsRefusedWithTheFirstOnesPid) {
  testing::TempDir dir;
  const std::string db = dir.file("coordinator.db");
  auto first = DatabaseLock::acquire(db);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = DatabaseLock::acquire(db);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(absl::StrCat("(pid ", ::getpid(), ")")), std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find(db), std::string::npos) << second.status();
}

TEST(DatabaseLockTest, ReleasedWhenTheHolderGoes) {
  testing::TempDir dir;
  const std::string db = dir.file("coordinator.db");
  { ASSERT_TRUE(DatabaseLock::acquire(db).ok()); }
  EXPECT_TRUE(DatabaseLock::acquire(db).ok());
  // Another database beside it is another lock.
  auto a = DatabaseLock::acquire(db);
  auto b = DatabaseLock::acquire(dir.file("other.db"));
  EXPECT_TRUE(a.ok() && b.ok());
}

}  // namespace
}  // namespace tern
