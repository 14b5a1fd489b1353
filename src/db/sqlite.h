#pragma once

// A thin RAII layer over the SQLite C API: a connection and prepared statements whose
// failures come back as absl::Status. Shared by the directory store and the message trace; not
// thread-safe (one Database per thread).

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::db {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
    other.stmt_ = nullptr;
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  // Bind*: 1-based parameter index, as in SQLite.
  Statement& Bind(int index, absl::string_view text);
  Statement& Bind(int index, int64_t value);

  // Step: true while a row is available, false when done, an error otherwise.
  absl::StatusOr<bool> Step();
  // Run: steps to the end, for statements without rows.
  absl::Status Run();
  // Reset: ready to be bound and run again (a prepared statement used for many rows).
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class Database {
 public:
  // Open: opens (creating when `create`) the database at `path` in WAL mode with foreign keys
  // on and a busy timeout, so chutectl and chuted can share it. With `create`, a new database
  // (and so its -wal and -shm files) is made 0600 whatever the umask, and an existing one that
  // every user may read loses its "other" bits (a warning is logged; group bits are warned
  // about only). Both chutectl and chuted open it this way.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path, bool create);
  ~Database();

  absl::Status Exec(absl::string_view sql);
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  int64_t LastInsertId() const { return sqlite3_last_insert_rowid(db_); }
  int64_t Changes() const { return sqlite3_changes(db_); }
  // DataVersion: changes when another connection commits (PRAGMA data_version).
  absl::StatusOr<int64_t> DataVersion();
  absl::Status Error(absl::string_view what) const;

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace chute::db
