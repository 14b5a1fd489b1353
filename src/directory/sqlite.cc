#include "directory/sqlite.h"

#include "absl/strings/str_cat.h"

namespace chute::directory {
namespace {

constexpr int kBusyTimeoutMs = 5000;

}  // namespace

Statement& Statement::Bind(int index, absl::string_view text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) {
    return true;
  }
  if (rc == SQLITE_DONE) {
    return false;
  }
  if (rc == SQLITE_CONSTRAINT) {
    return absl::AlreadyExistsError(sqlite3_errmsg(db_));
  }
  return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) {
      return row.status();
    }
    if (!*row) {
      return absl::OkStatus();
    }
  }
}

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  int bytes = sqlite3_column_bytes(stmt_, column);
  return text == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(text),
                                                       static_cast<size_t>(bytes));
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path, bool create) {
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = absl::StrCat(path, ": cannot open the directory database: ",
                                       db != nullptr ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return rc == SQLITE_CANTOPEN ? absl::NotFoundError(message) : absl::InternalError(message);
  }
  std::unique_ptr<Database> database(new Database(db));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  absl::Status status = database->Exec("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;");
  if (!status.ok()) {
    return status;
  }
  return database;
}

Database::~Database() { sqlite3_close(db_); }

absl::Status Database::Error(absl::string_view what) const {
  return absl::InternalError(absl::StrCat(what, ": ", sqlite3_errmsg(db_)));
}

absl::Status Database::Exec(absl::string_view sql) {
  std::string text(sql);
  char* error = nullptr;
  int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = absl::StrCat("sqlite: ", error != nullptr ? error : "error");
    sqlite3_free(error);
    return absl::InternalError(message);
  }
  return absl::OkStatus();
}

absl::StatusOr<Statement> Database::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return Error(absl::StrCat("sqlite prepare '", sql, "'"));
  }
  return Statement(db_, stmt);
}

absl::StatusOr<int64_t> Database::DataVersion() {
  absl::StatusOr<Statement> stmt = Prepare("PRAGMA data_version");
  if (!stmt.ok()) {
    return stmt.status();
  }
  absl::StatusOr<bool> row = stmt->Step();
  if (!row.ok()) {
    return row.status();
  }
  return *row ? stmt->Int(0) : 0;
}

}  // namespace chute::directory
