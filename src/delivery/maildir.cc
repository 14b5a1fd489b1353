// maildir.cc: delivers batches into Maildir folders (tmp/, one file per message and hard links,
// syncfs, new/) and cleans tmp/, never through a symbolic link below the root.

#include "delivery/maildir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/log.h"
#include "io/file.h"

namespace chute::delivery {
namespace {

// Fd: owns one file descriptor (-1: none), closed when it goes.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  void Reset() {
    if (fd_ >= 0) {
      close(fd_);
    }
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

constexpr int kDirectoryFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

RecipientResult LocalFailure(absl::string_view what, int error) {
  // A full disk, a quota, a permission problem or a planted link may be fixed by an operator:
  // retried.
  return RecipientResult{Outcome::kTransient,
                         absl::StrCat("451 4.3.0 maildir: ", what, ": ", std::strerror(error))};
}

// OpenDirectoryAt: the folder `name` (one path component) of `parent`, never through a
// symbolic link: O_NOFOLLOW | O_DIRECTORY refuse a link at `name` (errno ELOOP, whichever of
// ELOOP and ENOTDIR the kernel said) and anything else that is not a directory (ENOTDIR).
// With `create`, a missing folder is made (0700) first. -1 and errno on failure.
int OpenDirectoryAt(int parent, const std::string& name, bool create) {
  int fd = openat(parent, name.c_str(), kDirectoryFlags);
  if (fd < 0 && errno == ENOENT && create) {
    if (mkdirat(parent, name.c_str(), 0700) != 0 && errno != EEXIST) {
      return -1;
    }
    fd = openat(parent, name.c_str(), kDirectoryFlags);
  }
  if (fd < 0 && errno == ENOTDIR) {
    struct stat st {};
    bool link = fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
    errno = link ? ELOOP : ENOTDIR;
  }
  return fd;
}

// CreateFileAt: a new file `name` in the folder `dir`, for writing. O_EXCL | O_NOFOLLOW: what
// is already at the name (a leftover, or a link someone planted there) is removed, never
// written through, and the file is made afresh. -1 and errno on failure.
int CreateFileAt(int dir, const std::string& name) {
  constexpr int kFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = openat(dir, name.c_str(), kFlags, 0600);
  if (fd < 0 && errno == EEXIST) {
    if (unlinkat(dir, name.c_str(), 0) != 0) {
      return -1;
    }
    fd = openat(dir, name.c_str(), kFlags, 0600);
  }
  return fd;
}

// LinkAt: `to_name` in the folder `to_dir` as a hard link to `from_name` in `from_dir` (a
// file, not followed if it were a link). As CreateFileAt, what is already at `to_name` is
// removed, never written through. False and errno on failure.
bool LinkAt(int from_dir, const std::string& from_name, int to_dir, const std::string& to_name) {
  if (linkat(from_dir, from_name.c_str(), to_dir, to_name.c_str(), 0) == 0) {
    return true;
  }
  if (errno != EEXIST || unlinkat(to_dir, to_name.c_str(), 0) != 0) {
    return false;
  }
  return linkat(from_dir, from_name.c_str(), to_dir, to_name.c_str(), 0) == 0;
}

// NoHardLinkHere: a link failure that a written copy avoids: another filesystem (EXDEV), the
// file's link count at its maximum (EMLINK), or a filesystem without hard links (EPERM).
bool NoHardLinkHere(int error) { return error == EXDEV || error == EMLINK || error == EPERM; }

// ForEachEntry: calls `f(name)` for each entry of the folder `dir` but "." and "..".
template <typename F>
void ForEachEntry(int dir, F&& f) {
  // A new open file description of the folder: its own read position, closed by closedir.
  int fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = fd < 0 ? nullptr : fdopendir(fd);
  if (d == nullptr) {
    if (fd >= 0) {
      close(fd);
    }
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

// IsFileAt: whether `name` in the folder `dir` is a regular file (a link is not).
bool IsFileAt(int dir, const std::string& name) {
  struct stat st {};
  return fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

// InCur: whether a mail reader already moved `name` into the cur/ folder `cur` (as
// "name:2,FLAGS").
bool InCur(int cur, absl::string_view name) {
  bool found = false;
  ForEachEntry(cur, [&](const std::string& candidate) {
    found |= candidate == name || (absl::StartsWith(candidate, name) &&
                                   candidate.size() > name.size() && candidate[name.size()] == ':');
  });
  return found;
}

// MailboxNames: the folder names of an address's mailbox below the root (MaildirPath).
struct MailboxNames {
  std::string domain;
  std::string local;
};

MailboxNames NamesOf(absl::string_view address) {
  size_t at = address.rfind('@');
  absl::string_view local_part = at == absl::string_view::npos ? address : address.substr(0, at);
  absl::string_view domain = at == absl::string_view::npos ? "" : address.substr(at + 1);
  MailboxNames names{absl::AsciiStrToLower(domain), ""};
  for (size_t i = 0; i < local_part.size(); ++i) {
    char c = absl::ascii_tolower(static_cast<unsigned char>(local_part[i]));
    if (c == '/' || c == '%' || (i == 0 && c == '.')) {
      absl::StrAppendFormat(&names.local, "%%%02X", static_cast<unsigned char>(c));
    } else {
      names.local.push_back(c);
    }
  }
  return names;
}

// IsFolderName: one path component that names a folder of its own ("", "." and ".." do not;
// a domain with a '/' cannot pass RCPT, and is refused here all the same).
bool IsFolderName(absl::string_view name) {
  return !name.empty() && name != "." && name != ".." && !absl::StrContains(name, '/');
}

// OpenMailboxFolder: the folder <domain>/<local> of `root`, each made when missing (unless
// `create` is false: then ENOENT) and neither reached through a link. -1 on failure, with
// *failed naming the folder below the root and *error its errno.
int OpenMailboxFolder(int root, const MailboxNames& names, std::string* failed, int* error,
                      bool create = true) {
  std::string key = absl::StrCat(names.domain, "/", names.local);
  if (!IsFolderName(names.domain) || !IsFolderName(names.local)) {
    *failed = key;
    *error = EINVAL;
    return -1;
  }
  Fd domain(OpenDirectoryAt(root, names.domain, create));
  if (!domain.ok()) {
    *failed = names.domain;
    *error = errno;
    return -1;
  }
  int mailbox = OpenDirectoryAt(domain.get(), names.local, create);
  if (mailbox < 0) {
    *failed = key;
    *error = errno;
  }
  return mailbox;
}

}  // namespace

// Mailbox: one mailbox's folders, opened beneath the root without following any link; or
// why they could not be.
struct MaildirBackend::Mailbox {
  std::string name;  // "<domain>/<local>", below the root: what replies say
  Fd tmp;
  Fd fresh;              // new/
  int error = 0;         // 0: open
  std::string failed;    // the folder that could not be opened, below the root
  bool missing = false;  // it does not exist, and mailboxes are not created (verify_recipients)
};

namespace {

// NoSuchMailbox: a recipient whose mailbox does not exist when delivery may not create one.
RecipientResult NoSuchMailbox(absl::string_view address) {
  return RecipientResult{Outcome::kPermanent,
                         absl::StrCat("550 5.1.1 <", address, ">: no such mailbox")};
}

}  // namespace

struct MaildirBackend::Copy {
  std::string name;
  bool written = false;  // in tmp/: written, or a hard link to the message's original
};

struct MaildirBackend::Original {
  Fd tmp;  // its tmp/ folder: a descriptor of its own, whatever mailboxes are let go
  std::string name;
};

std::string MaildirPath(absl::string_view root, absl::string_view address) {
  MailboxNames names = NamesOf(address);
  return absl::StrCat(root, "/", names.domain, "/", names.local);
}

MailboxState FindMailbox(const std::string& root, absl::string_view address) {
  Fd root_fd(open(root.c_str(), kDirectoryFlags & ~O_NOFOLLOW));
  if (!root_fd.ok()) {
    // No root at all (a mail filesystem not mounted yet) says nothing about one mailbox.
    return MailboxState::kUnknown;
  }
  std::string failed;
  int error = 0;
  Fd mailbox(OpenMailboxFolder(root_fd.get(), NamesOf(address), &failed, &error, false));
  if (mailbox.ok()) {
    return MailboxState::kExists;
  }
  // Missing, or a name that cannot be a folder: no such mailbox. A link or a permission
  // problem is for the operator to look at, not the sender's fault.
  return error == ENOENT || error == EINVAL || error == ENOTDIR ? MailboxState::kMissing
                                                                : MailboxState::kUnknown;
}

MaildirBackend::MaildirBackend(std::string root, std::string hostname, bool create_mailboxes)
    : root_(std::move(root)), hostname_(std::move(hostname)), create_mailboxes_(create_mailboxes) {}

MaildirBackend::Mailbox& MaildirBackend::OpenMailbox(int root_fd, int root_error,
                                                     absl::string_view address,
                                                     Mailboxes* mailboxes) {
  MailboxNames names = NamesOf(address);
  std::string key = absl::StrCat(names.domain, "/", names.local);
  auto found = mailboxes->find(key);
  if (found != mailboxes->end()) {
    return *found->second;
  }
  if (mailboxes->size() >= kMailboxesOpenMax) {
    mailboxes->clear();  // their descriptors close; a later copy opens its mailbox again
  }
  std::unique_ptr<Mailbox>& slot = (*mailboxes)[key];
  slot = std::make_unique<Mailbox>();
  Mailbox& box = *slot;
  box.name = key;
  if (root_fd < 0) {
    box.failed = "the Maildir root";
    box.error = root_error;
    return box;
  }
  Fd mailbox(OpenMailboxFolder(root_fd, names, &box.failed, &box.error, create_mailboxes_));
  box.missing = !create_mailboxes_ && box.error == ENOENT;
  // cur/ is checked too, although only a replay reads it: a mailbox whose cur/ is a link would
  // have its mail reader move the mail through it.
  const std::pair<const char*, Fd*> folders[] = {{"tmp", &box.tmp}, {"new", &box.fresh}};
  for (const auto& [folder, fd] : folders) {
    if (mailbox.ok()) {
      *fd = Fd(OpenDirectoryAt(mailbox.get(), folder, true));
      if (!fd->ok()) {
        box.error = errno;
        box.failed = absl::StrCat(key, "/", folder);
      }
    }
  }
  if (box.error == 0 && !Fd(OpenDirectoryAt(mailbox.get(), "cur", true)).ok()) {
    box.error = errno;
    box.failed = absl::StrCat(key, "/cur");
  }
  if (box.error != 0) {
    box.tmp.Reset();
    box.fresh.Reset();
  }
  return box;
}

bool MaildirBackend::AlreadyDelivered(int root_fd, absl::string_view address,
                                      const Mailbox& mailbox, const std::string& name) {
  if (IsFileAt(mailbox.fresh.get(), name)) {
    return true;
  }
  // cur/ is opened again (replays are rare): a mailbox keeps only tmp/ and new/ open.
  std::string failed;
  int error = 0;
  Fd folder(OpenMailboxFolder(root_fd, NamesOf(address), &failed, &error));
  Fd cur(folder.ok() ? OpenDirectoryAt(folder.get(), "cur", false) : -1);
  return cur.ok() && InCur(cur.get(), name);
}

RecipientResult MaildirBackend::WriteCopy(const OutboundMessage& message, size_t i, int root_fd,
                                          Mailbox& mailbox, Original* original, Copy* copy) {
  copy->name = absl::StrCat(message.received_unix_s, ".", message.id, "R",
                            message.recipient_indexes[i], ".", hostname_);
  if (mailbox.missing) {
    return NoSuchMailbox(message.recipients[i]);
  }
  if (mailbox.error != 0) {
    return LocalFailure(absl::StrCat("open ", mailbox.failed), mailbox.error);
  }
  if (message.replayed) {
    // An earlier run may have delivered it before it could settle the record.
    if (AlreadyDelivered(root_fd, message.recipients[i], mailbox, copy->name)) {
      return RecipientResult{Outcome::kDelivered, "250 2.0.0 already in the mailbox"};
    }
  }
  if (original->tmp.ok()) {
    // The message's other copies are hard links to the one written: one file's blocks, however
    // many recipients (the copies are the same bytes: no per-recipient header).
    if (LinkAt(original->tmp.get(), original->name, mailbox.tmp.get(), copy->name)) {
      copy->written = true;
      return RecipientResult{Outcome::kDelivered, "250 2.0.0 delivered to maildir"};
    }
    if (!NoHardLinkHere(errno)) {
      return LocalFailure(absl::StrCat("link ", mailbox.name, "/tmp/", copy->name), errno);
    }
  }
  Fd fd(CreateFileAt(mailbox.tmp.get(), copy->name));
  if (!fd.ok()) {
    return LocalFailure(absl::StrCat("create ", mailbox.name, "/tmp/", copy->name), errno);
  }
  absl::Status written = io::WriteAll(fd.get(), message.content, copy->name);
  fd.Reset();
  if (!written.ok()) {
    // A full disk or a quota may be fixed by an operator: retried.
    unlinkat(mailbox.tmp.get(), copy->name.c_str(), 0);
    return RecipientResult{Outcome::kTransient,
                           absl::StrCat("451 4.3.0 maildir: ", written.message())};
  }
  copy->written = true;
  if (!original->tmp.ok()) {
    original->tmp = Fd(fcntl(mailbox.tmp.get(), F_DUPFD_CLOEXEC, 0));
    original->name = copy->name;
  }
  return RecipientResult{Outcome::kDelivered, "250 2.0.0 delivered to maildir"};
}

io::Task<void> MaildirBackend::Deliver(const std::vector<OutboundMessage*>& batch,
                                       const MessageDone& done) {
  (void)done;  // a batch is durable only as a whole: the caller settles it after this returns
  DeliverBatch(batch);
  co_return;
}

void MaildirBackend::DeliverBatch(const std::vector<OutboundMessage*>& batch) {
  Fd root(open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.ok() && errno == ENOENT && mkdir(root_.c_str(), 0700) == 0) {
    root = Fd(open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  int root_error = root.ok() ? 0 : errno;
  Mailboxes mailboxes;
  // Pass 1: write every copy to tmp/.
  std::vector<std::vector<Copy>> copies(batch.size());
  bool any_written = false;
  bool any_found = false;  // replayed copies already in the mailbox: made durable below too
  for (size_t m = 0; m < batch.size(); ++m) {
    OutboundMessage& message = *batch[m];
    message.results.assign(message.recipients.size(), RecipientResult{});
    copies[m].resize(message.recipients.size());
    Original original;
    for (size_t i = 0; i < message.recipients.size(); ++i) {
      Mailbox& mailbox = OpenMailbox(root.get(), root_error, message.recipients[i], &mailboxes);
      message.results[i] = WriteCopy(message, i, root.get(), mailbox, &original, &copies[m][i]);
      any_written |= copies[m][i].written;
      any_found |= message.replayed && !copies[m][i].written &&
                   message.results[i].outcome == Outcome::kDelivered;
    }
  }
  if (!any_written && !any_found) {
    return;
  }
  // Pass 2: their data is durable; pass 3: rename into new/; pass 4: the renames are durable.
  bool synced = syncfs(root.get()) == 0;
  int sync_error = errno;
  for (size_t m = 0; m < batch.size(); ++m) {
    for (size_t i = 0; i < copies[m].size(); ++i) {
      Copy& copy = copies[m][i];
      if (!copy.written) {
        continue;
      }
      const Mailbox& box = OpenMailbox(root.get(), root_error, batch[m]->recipients[i], &mailboxes);
      if (!synced) {
        batch[m]->results[i] = LocalFailure("syncfs", sync_error);
      } else if (box.missing) {
        batch[m]->results[i] = NoSuchMailbox(batch[m]->recipients[i]);
      } else if (box.error != 0) {
        batch[m]->results[i] = LocalFailure(absl::StrCat("open ", box.failed), box.error);
      } else if (renameat(box.tmp.get(), copy.name.c_str(), box.fresh.get(), copy.name.c_str()) !=
                 0) {
        batch[m]->results[i] =
            LocalFailure(absl::StrCat("rename to ", box.name, "/new/", copy.name), errno);
      }
      if (batch[m]->results[i].outcome != Outcome::kDelivered) {
        unlinkat(box.tmp.get(), copy.name.c_str(), 0);
      }
    }
  }
  if (synced && syncfs(root.get()) != 0) {
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
}

BackendFactory MakeMaildirFactory(std::string root, std::string hostname, bool create_mailboxes) {
  return [root, hostname, create_mailboxes]() -> std::unique_ptr<Backend> {
    return std::make_unique<MaildirBackend>(root, hostname, create_mailboxes);
  };
}

namespace {

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

// OpenFolderToClean: the folder `name` of `parent` for the clean-up, or -1: a link is not
// followed (and named in a warning), anything else that is not a folder is passed over.
int OpenFolderToClean(int parent, const std::string& name, const std::string& path) {
  int fd = OpenDirectoryAt(parent, name, false);
  if (fd < 0 && errno == ELOOP) {
    LOG_WARNING("maildir: %s is a symbolic link; not followed, its tmp/ not cleaned", path);
  }
  return fd;
}

}  // namespace

size_t CleanMaildirTmp(const std::string& root, const std::string& hostname, absl::Time now) {
  Fd root_fd(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.ok()) {
    return 0;
  }
  size_t removed = 0;
  ForEachEntry(root_fd.get(), [&](const std::string& domain) {
    std::string domain_path = absl::StrCat(root, "/", domain);
    Fd domain_fd(OpenFolderToClean(root_fd.get(), domain, domain_path));
    if (!domain_fd.ok()) {
      return;
    }
    ForEachEntry(domain_fd.get(), [&](const std::string& mailbox) {
      std::string mailbox_path = absl::StrCat(domain_path, "/", mailbox);
      Fd mailbox_fd(OpenFolderToClean(domain_fd.get(), mailbox, mailbox_path));
      if (!mailbox_fd.ok()) {
        return;
      }
      Fd tmp(OpenFolderToClean(mailbox_fd.get(), "tmp", mailbox_path + "/tmp"));
      if (!tmp.ok()) {
        return;
      }
      ForEachEntry(tmp.get(), [&](const std::string& name) {
        struct stat st {};
        if (fstatat(tmp.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode)) {
          return;
        }
        bool stale = IsOwnTmpName(name, hostname) ||
                     now - absl::FromUnixSeconds(st.st_mtime) > kForeignTmpAge;
        if (stale && unlinkat(tmp.get(), name.c_str(), 0) == 0) {
          ++removed;
        }
      });
    });
  });
  return removed;
}

}  // namespace chute::delivery
