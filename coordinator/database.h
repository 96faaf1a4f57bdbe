#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

class Statement;

// One SQLite connection in WAL mode. Not thread-safe: the coordinator uses it
// from its event-loop thread only.
class Database {
 public:
  // Opens (creating if needed) the file at `path`; ":memory:" for tests. The
  // file and its -wal and -shm are 0600 whatever the umask (a readable one
  // is tightened): they hold token hashes and the audit trail.
  static absl::StatusOr<std::unique_ptr<Database>> open(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  absl::Status exec(absl::string_view sql);
  absl::StatusOr<Statement> prepare(absl::string_view sql);
  // Runs `fn` inside BEGIN IMMEDIATE / COMMIT; rolls back if it fails.
  template <typename Fn>
  absl::Status transaction(Fn&& fn) {
    if (auto st = exec("BEGIN IMMEDIATE"); !st.ok()) return st;
    absl::Status st = fn();
    if (!st.ok()) {
      (void)exec("ROLLBACK");
      return st;
    }
    return exec("COMMIT");
  }
  int user_version();
  absl::Status set_user_version(int v);
  const std::string& path() const { return path_; }
  sqlite3* raw() { return db_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

// One coordinator per database: an exclusive flock(2) on "<database>.lock"
// beside the file, held for as long as this object lives, with the holder's
// pid written in it. A second coordinator on the same database (another
// port, a forgotten test instance) would resume the same rollouts and write
// into their journal next to the live one; it is refused instead. A lock
// file rather than the database itself: SQLite's own POSIX locks on the
// database must not interact with ours. The kernel drops the lock when the
// holder dies, so a crash never leaves a stale lock. ":memory:" needs none.
class DatabaseLock {
 public:
  // FAILED_PRECONDITION naming the holder's pid when another process holds
  // it; UNAVAILABLE when the lock file cannot be opened.
  static absl::StatusOr<std::unique_ptr<DatabaseLock>> acquire(const std::string& database_path);
  ~DatabaseLock();
  DatabaseLock(const DatabaseLock&) = delete;
  DatabaseLock& operator=(const DatabaseLock&) = delete;

 private:
  explicit DatabaseLock(int fd) : fd_(fd) {}
  int fd_;
};

// A prepared statement. Bind indexes start at 1, column indexes at 0.
class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& o) noexcept : db_(o.db_), stmt_(o.stmt_) { o.stmt_ = nullptr; }
  Statement& operator=(Statement&&) = delete;
  ~Statement();

  Statement& bind(int i, int64_t v);
  Statement& bind(int i, absl::string_view v);
  Statement& bind_null(int i);
  Statement& bind_blob(int i, absl::string_view bytes);
  // True while a row is available; false when done. Errors surface in status().
  bool step();
  // Runs to completion, for statements without results.
  absl::Status run();
  absl::Status status() const { return status_; }
  void reset();

  int64_t int_at(int col) const;
  std::string text_at(int col) const;
  std::string blob_at(int col) const;
  bool null_at(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  absl::Status status_;
};

}  // namespace tern
