// sqlite.cc: wraps SQLite connections and prepared statements, failures as absl::Status.

#include "db/sqlite.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/log.h"

namespace chute::db {
namespace {

constexpr int kBusyTimeoutMs = 5000;

// The database holds argon2id password hashes: only its owner may read it. SQLite gives the
// -wal and -shm files the mode of the database file (and fchmods them to it, whatever the
// umask), so creating the database itself with this mode is enough for all three.
constexpr mode_t kDatabaseMode = 0600;

// CreatePrivately: creates `path` empty with kDatabaseMode when it does not exist yet. The
// mode is set with fchmod as well, since open(2)'s mode is filtered through the umask (only
// ever narrowed, but a umask of 0 must not widen it either). Doing it here rather than with
// umask(2) around sqlite3_open keeps other threads' files (chuted's Maildir, spool) untouched.
absl::Status CreatePrivately(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kDatabaseMode);
  if (fd < 0) {
    if (errno == EEXIST) {
      return absl::OkStatus();
    }
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot create the directory database: ", std::strerror(errno)));
  }
  int rc = ::fchmod(fd, kDatabaseMode);
  int saved = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat(path, ": cannot set mode 0600: ", std::strerror(saved)));
  }
  return absl::OkStatus();
}

// TightenExisting: a database (or its -wal/-shm) made before chute created them 0600 may be
// world-readable, which exposes the password hashes to every local user: the "other" bits are
// removed, with a warning. Group bits are only warned about: a group may be how a deployment
// deliberately shares the file between chuted's service user and an administrators' group.
void TightenExisting(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::string file = absl::StrCat(path, suffix);
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    mode_t mode = st.st_mode & 0777;
    if ((mode & 0007) != 0) {
      mode_t tightened = mode & ~mode_t{0007};
      if (::chmod(file.c_str(), tightened) == 0) {
        LOG_WARNING(
            "%s was readable by every user (mode %04o): changed to %04o; it holds "
            "password hashes",
            file, mode, tightened);
      } else {
        LOG_WARNING(
            "%s is readable by every user (mode %04o) and could not be changed (%s): "
            "run chmod o-rwx on it; it holds password hashes",
            file, mode, std::strerror(errno));
      }
    } else if ((mode & 0070) != 0) {
      LOG_WARNING(
          "%s is accessible to its group (mode %04o); it holds password hashes: "
          "chmod 0600 it unless the group is meant to administer chute",
          file, mode);
    }
  }
}

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
  return text == nullptr
             ? std::string()
             : std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(bytes));
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path, bool create) {
  if (create) {
    absl::Status created = CreatePrivately(path);
    if (!created.ok()) {
      return created;
    }
    TightenExisting(path);
  }
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

}  // namespace chute::db
