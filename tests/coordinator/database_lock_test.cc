#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

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

unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 01000;  // not there
  return st.st_mode & 0777;
}

// Sets the process's umask for one scope.
class Umask {
 public:
  explicit Umask(mode_t mask) : old_(::umask(mask)) {}
  ~Umask() { ::umask(old_); }
  Umask(const Umask&) = delete;
  Umask& operator=(const Umask&) = delete;

 private:
  mode_t old_;
};

// The database holds token hashes and the audit trail: the coordinator's
// own, even when it is run by hand under a permissive umask.
TEST(DatabaseFilesTest, AreTheOwnersOnlyWhateverTheUmask) {
  testing::TempDir dir;
  const std::string db = dir.file("coordinator.db");
  Umask permissive(022);
  auto lock = DatabaseLock::acquire(db);
  ASSERT_TRUE(lock.ok()) << lock.status();
  auto opened = Database::open(db);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_TRUE((*opened)->exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)").ok());
  for (const std::string suffix : {"", "-wal", "-shm", ".lock"}) {
    EXPECT_EQ(mode_of(db + suffix), 0600u) << db << suffix;
  }
}

// A database an older coordinator left readable to others is tightened.
TEST(DatabaseFilesTest, AReadableDatabaseIsTightenedOnOpen) {
  testing::TempDir dir;
  const std::string db = dir.file("coordinator.db");
  Umask permissive(022);
  {
    auto opened = Database::open(db);
    ASSERT_TRUE(opened.ok()) << opened.status();
    ASSERT_TRUE((*opened)->exec("CREATE TABLE t (x INTEGER)").ok());
  }
  std::ofstream(db + "-wal").flush();
  ASSERT_EQ(::chmod(db.c_str(), 0644), 0);
  ASSERT_EQ(::chmod((db + "-wal").c_str(), 0644), 0);
  auto opened = Database::open(db);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_TRUE((*opened)->exec("INSERT INTO t VALUES (1)").ok());
  for (const std::string suffix : {"", "-wal", "-shm"}) {
    EXPECT_EQ(mode_of(db + suffix), 0600u) << db << suffix;
  }
}

}  // namespace
}  // namespace tern
