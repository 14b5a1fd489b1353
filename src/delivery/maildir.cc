// maildir.cc: delivers batches into Maildir folders (tmp/, syncfs, new/) and cleans tmp/.

#include "delivery/maildir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/log.h"
#include "io/file.h"

namespace chute::delivery {

struct MaildirBackend::Copy {
  std::string tmp;
  std::string target;
  std::string cur_dir;
  bool written = false;
};

namespace {

RecipientResult LocalFailure(absl::string_view what, int error) {
  // A full disk, a quota or a permission problem may be fixed by an operator: retried.
  return RecipientResult{Outcome::kTransient,
                         absl::StrCat("451 4.3.0 maildir: ", what, ": ", std::strerror(error))};
}

absl::Status MakeDirectory(const std::string& path) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(std::strerror(errno));
  }
  return absl::OkStatus();
}

// MakeMaildir: the folders of a mailbox, and the parents leading to it.
bool MakeMaildir(const std::string& root, const std::string& maildir) {
  size_t domain_end = maildir.rfind('/');
  bool ok = MakeDirectory(root).ok() && MakeDirectory(maildir.substr(0, domain_end)).ok() &&
            MakeDirectory(maildir).ok();
  for (const char* leaf : {"/tmp", "/new", "/cur"}) {
    ok = ok && MakeDirectory(absl::StrCat(maildir, leaf)).ok();
  }
  return ok;
}

// InCur: whether a mail reader already moved `name` into `cur_dir` (as "name:2,FLAGS").
bool InCur(const std::string& cur_dir, absl::string_view name) {
  DIR* d = opendir(cur_dir.c_str());
  if (d == nullptr) {
    return false;
  }
  bool found = false;
  while (dirent* entry = readdir(d)) {
    absl::string_view candidate(entry->d_name);
    if (candidate == name || (absl::StartsWith(candidate, name) && candidate.size() > name.size() &&
                              candidate[name.size()] == ':')) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

}  // namespace

std::string MaildirPath(absl::string_view root, absl::string_view address) {
  size_t at = address.rfind('@');
  absl::string_view local_part = at == absl::string_view::npos ? address : address.substr(0, at);
  absl::string_view domain = at == absl::string_view::npos ? "" : address.substr(at + 1);
  std::string local;
  for (size_t i = 0; i < local_part.size(); ++i) {
    char c = absl::ascii_tolower(static_cast<unsigned char>(local_part[i]));
    if (c == '/' || c == '%' || (i == 0 && c == '.')) {
      absl::StrAppendFormat(&local, "%%%02X", static_cast<unsigned char>(c));
    } else {
      local.push_back(c);
    }
  }
  return absl::StrCat(root, "/", absl::AsciiStrToLower(domain), "/", local);
}

MaildirBackend::MaildirBackend(std::string root, std::string hostname)
    : root_(std::move(root)), hostname_(std::move(hostname)) {}

RecipientResult MaildirBackend::WriteCopy(const OutboundMessage& message, size_t i, Copy* copy) {
  std::string maildir = MaildirPath(root_, message.recipients[i]);
  std::string name = absl::StrCat(message.received_unix_s, ".", message.id, "R",
                                  message.recipient_indexes[i], ".", hostname_);
  copy->tmp = absl::StrCat(maildir, "/tmp/", name);
  copy->target = absl::StrCat(maildir, "/new/", name);
  copy->cur_dir = absl::StrCat(maildir, "/cur");
  if (message.replayed) {
    // An earlier run may have delivered it before it could settle the record.
    struct stat st {};
    if (stat(copy->target.c_str(), &st) == 0 || InCur(copy->cur_dir, name)) {
      return RecipientResult{Outcome::kDelivered, "250 2.0.0 already in the mailbox"};
    }
  }
  int fd = open(copy->tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 && errno == ENOENT) {
    // A new mailbox, or one removed while chuted runs: made (again) on demand.
    if (!MakeMaildir(root_, maildir)) {
      return LocalFailure(absl::StrCat("create ", maildir), errno);
    }
    fd = open(copy->tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  }
  if (fd < 0) {
    return LocalFailure(absl::StrCat("open ", copy->tmp), errno);
  }
  absl::Status written = io::WriteAll(fd, message.content, copy->tmp);
  close(fd);
  if (!written.ok()) {
    // A full disk or a quota may be fixed by an operator: retried.
    unlink(copy->tmp.c_str());
    return RecipientResult{Outcome::kTransient,
                           absl::StrCat("451 4.3.0 maildir: ", written.message())};
  }
  copy->written = true;
  return RecipientResult{Outcome::kDelivered, "250 2.0.0 delivered to maildir"};
}

void MaildirBackend::Deliver(const std::vector<OutboundMessage*>& batch, const MessageDone& done) {
  (void)done;  // a batch is durable only as a whole: the caller settles it after this returns
  // Pass 1: write every copy to tmp/.
  std::vector<std::vector<Copy>> copies(batch.size());
  bool any_written = false;
  bool any_found = false;  // replayed copies already in the mailbox: made durable below too
  for (size_t m = 0; m < batch.size(); ++m) {
    OutboundMessage& message = *batch[m];
    message.results.assign(message.recipients.size(), RecipientResult{});
    copies[m].resize(message.recipients.size());
    for (size_t i = 0; i < message.recipients.size(); ++i) {
      message.results[i] = WriteCopy(message, i, &copies[m][i]);
      any_written |= copies[m][i].written;
      any_found |= message.replayed && !copies[m][i].written &&
                   message.results[i].outcome == Outcome::kDelivered;
    }
  }
  if (!any_written && !any_found) {
    return;
  }
  int root_fd = open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  // Pass 2: their data is durable; pass 3: rename into new/; pass 4: the renames are durable.
  bool synced = root_fd >= 0 && syncfs(root_fd) == 0;
  int sync_error = errno;
  for (size_t m = 0; m < batch.size(); ++m) {
    for (size_t i = 0; i < copies[m].size(); ++i) {
      Copy& copy = copies[m][i];
      if (!copy.written) {
        continue;
      }
      if (!synced) {
        batch[m]->results[i] = LocalFailure("syncfs", sync_error);
      } else if (rename(copy.tmp.c_str(), copy.target.c_str()) != 0) {
        batch[m]->results[i] = LocalFailure(absl::StrCat("rename to ", copy.target), errno);
      }
      if (batch[m]->results[i].outcome != Outcome::kDelivered) {
        unlink(copy.tmp.c_str());
      }
    }
  }
  if (synced && syncfs(root_fd) != 0) {
    // The renames may not be durable: retry them all (a redelivery renames over itself).
    RecipientResult failure = LocalFailure("syncfs", errno);
    for (size_t m = 0; m < batch.size(); ++m) {
      for (size_t i = 0; i < copies[m].size(); ++i) {
        if (copies[m][i].written) {
          batch[m]->results[i] = failure;
        }
      }
    }
  }
  if (root_fd >= 0) {
    close(root_fd);
  }
}

BackendFactory MakeMaildirFactory(std::string root, std::string hostname) {
  return [root, hostname]() -> std::unique_ptr<Backend> {
    return std::make_unique<MaildirBackend>(root, hostname);
  };
}

namespace {

// ForEachEntry: calls `f(name)` for each entry of `dir` but "." and "..".
template <typename F>
void ForEachEntry(const std::string& dir, F&& f) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return;
  }
  while (dirent* entry = readdir(d)) {
    absl::string_view name(entry->d_name);
    if (name != "." && name != "..") {
      f(std::string(name));
    }
  }
  closedir(d);
}

// IsOwnTmpName: "<seconds>.<queue id>R<index>.<hostname>", as WriteCopy names copies.
bool IsOwnTmpName(absl::string_view name, absl::string_view hostname) {
  if (!absl::ConsumeSuffix(&name, hostname) || !absl::ConsumeSuffix(&name, ".")) {
    return false;
  }
  size_t dot = name.find('.');
  size_t r = name.rfind('R');
  return dot != absl::string_view::npos && dot > 0 && r != absl::string_view::npos && r > dot &&
         name.find_first_not_of("0123456789") == dot;
}

}  // namespace

size_t CleanMaildirTmp(const std::string& root, const std::string& hostname, absl::Time now) {
  size_t removed = 0;
  ForEachEntry(root, [&](const std::string& domain) {
    ForEachEntry(absl::StrCat(root, "/", domain), [&](const std::string& mailbox) {
      std::string tmp = absl::StrCat(root, "/", domain, "/", mailbox, "/tmp");
      ForEachEntry(tmp, [&](const std::string& name) {
        std::string path = absl::StrCat(tmp, "/", name);
        struct stat st {};
        if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
          return;
        }
        bool stale = IsOwnTmpName(name, hostname) ||
                     now - absl::FromUnixSeconds(st.st_mtime) > kForeignTmpAge;
        if (stale && unlink(path.c_str()) == 0) {
          ++removed;
        }
      });
    });
  });
  return removed;
}

}  // namespace chute::delivery
