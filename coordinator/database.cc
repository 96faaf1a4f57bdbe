#include "coordinator/database.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace tern {

absl::StatusOr<std::unique_ptr<DatabaseLock>> DatabaseLock::acquire(const std::string& database_path) {
  const std::string path = database_path + ".lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open the lock file ", path, ": ", std::strerror(errno),
                                               "; the database's directory must be writable"));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    }
    int64_t pid = 0;
    const bool known = n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(buf, n)), &pid);
    return absl::FailedPreconditionError(absl::StrCat(
        "the database ", database_path, " is in use by another tern-coordinator",
        known ? absl::StrCat(" (pid ", pid, ")") : "",
        "; two coordinators on one database would drive the same rollouts. Stop that one first, or give this "
        "one its own --database"));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the pid; only a refused second coordinator's message is the poorer.
  }
  return std::unique_ptr<DatabaseLock>(new DatabaseLock(fd));
}

DatabaseLock::~DatabaseLock() { ::close(fd_); }

namespace {

// The database holds token hashes and the audit trail. SQLite creates it
// 0644 less the umask and gives its -wal and -shm the database's mode, so
// it is created (or, left readable by an older coordinator, tightened) 0600
// first: then every file of it is the owner's only, whatever the umask.
absl::Status keep_private(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", std::strerror(errno),
                                               " (check that the directory exists and is writable)"));
  }
  struct stat st {};
  const bool tighten = ::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0;
  const int rc = tighten ? ::fchmod(fd, 0600) : 0;
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot make database ", path, " private (chmod 0600): ",
                                                    std::strerror(err), "; run the coordinator as its owner"));
  }
  for (const char* suffix : {"-wal", "-shm"}) {
    const std::string file = path + suffix;
    if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0 && ::chmod(file.c_str(), 0600) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("cannot make ", file, " private (chmod 0600): ",
                                                      std::strerror(errno), "; run the coordinator as its owner"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> Database::open(const std::string& path) {
  if (path != ":memory:") {
    if (auto st = keep_private(path); !st.ok()) return st;
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", msg,
                                               " (check that the directory exists and is writable)"));
  }
  std::unique_ptr<Database> out(new Database(db, path));
  sqlite3_busy_timeout(db, 5000);
  if (path != ":memory:") {
    if (auto st = out->exec("PRAGMA journal_mode=WAL"); !st.ok()) return st;
  }
  // NORMAL with WAL: a power cut may lose the last transactions but never corrupts.
  if (auto st = out->exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON"); !st.ok()) return st;
  return out;
}

Database::~Database() { sqlite3_close(db_); }

absl::Status Database::exec(absl::string_view sql) {
  char* err = nullptr;
  std::string s(sql);
  if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("database ", path_, ": ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<Statement> Database::prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("database ", path_, ": ", sqlite3_errmsg(db_), " in: ", sql));
  }
  return Statement(db_, stmt);
}

int Database::user_version() {
  auto st = prepare("PRAGMA user_version");
  if (!st.ok() || !st->step()) return 0;
  return static_cast<int>(st->int_at(0));
}

absl::Status Database::set_user_version(int v) { return exec(absl::StrCat("PRAGMA user_version=", v)); }

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Statement& Statement::bind(int i, int64_t v) {
  sqlite3_bind_int64(stmt_, i, v);
  return *this;
}

Statement& Statement::bind(int i, absl::string_view v) {
  sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_blob(int i, absl::string_view bytes) {
  sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_null(int i) {
  sqlite3_bind_null(stmt_, i);
  return *this;
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE && status_.ok()) {
    status_ = absl::InternalError(absl::StrCat("database: ", sqlite3_errmsg(db_)));
  }
  return false;
}

absl::Status Statement::run() {
  while (step()) {
  }
  return status_;
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  status_ = absl::OkStatus();
}

int64_t Statement::int_at(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::text_at(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
           : std::string();
}

std::string Statement::blob_at(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
           : std::string();
}

bool Statement::null_at(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

}  // namespace tern
