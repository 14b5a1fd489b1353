#include "delivery/maildir.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/log.h"
#include "io/ring.h"

namespace chute::delivery {
namespace {

// WriteAll: writes every iovec, resuming after short writes and in groups of IOV_MAX.
absl::Status WriteAll(int fd, std::vector<iovec> iov) {
  size_t index = 0;
  while (index < iov.size()) {
    int count = static_cast<int>(std::min<size_t>(iov.size() - index, IOV_MAX));
    ssize_t n = writev(fd, iov.data() + index, count);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return io::ErrnoStatus(errno, "writev");
    }
    size_t written = static_cast<size_t>(n);
    while (index < iov.size() && written >= iov[index].iov_len) {
      written -= iov[index].iov_len;
      ++index;
    }
    if (written > 0) {
      iov[index].iov_base = static_cast<char*>(iov[index].iov_base) + written;
      iov[index].iov_len -= written;
    }
  }
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return io::ErrnoStatus(errno, absl::StrCat("open ", path));
  }
  int rc = fsync(fd);
  int error = errno;
  close(fd);
  return rc == 0 ? absl::OkStatus() : io::ErrnoStatus(error, absl::StrCat("fsync ", path));
}

// MakeDirectory: mkdir that tolerates an existing directory; fsyncs the parent when it
// created one, so the new entry survives a crash.
absl::Status MakeDirectory(const std::string& path) {
  if (mkdir(path.c_str(), 0700) != 0) {
    return errno == EEXIST ? absl::OkStatus() : io::ErrnoStatus(errno, absl::StrCat("mkdir ", path));
  }
  size_t slash = path.rfind('/');
  return slash == std::string::npos || slash == 0 ? absl::OkStatus()
                                                  : SyncDirectory(path.substr(0, slash));
}

}  // namespace

std::string MaildirPath(const std::string& root, const Recipient& recipient) {
  std::string local;
  for (size_t i = 0; i < recipient.local.size(); ++i) {
    char c = recipient.local[i];
    if (c == '/' || c == '%' || (i == 0 && c == '.')) {
      absl::StrAppendFormat(&local, "%%%02X", static_cast<unsigned char>(c));
    } else {
      local.push_back(c);
    }
  }
  return absl::StrCat(root, "/", recipient.domain, "/", local);
}

MaildirDelivery::MaildirDelivery(std::string root, std::string hostname, int workers,
                                 size_t batch_messages_max)
    : root_(std::move(root)),
      hostname_(std::move(hostname)),
      workers_count_(workers),
      batch_messages_max_(batch_messages_max) {
  CHECK(workers_count_ > 0 && workers_count_ <= kWorkersMax);
  CHECK(batch_messages_max_ > 0);
}

MaildirDelivery::~MaildirDelivery() { Stop(); }

void MaildirDelivery::Start() {
  for (int i = 0; i < workers_count_; ++i) {
    workers_.emplace_back([this] { Work(); });
  }
}

void MaildirDelivery::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& worker : workers_) {
    worker.join();
  }
  workers_.clear();
}

bool MaildirDelivery::Submit(std::unique_ptr<Job> job, CompletionSink* sink) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || queue_.size() >= kQueueJobsMax) {
    return false;
  }
  queue_.push_back(Entry{std::move(job), sink});
  return true;
}

absl::Status MaildirDelivery::EnsureMaildir(const std::string& path) {
  {
    absl::MutexLock lock(&dirs_mu_);
    if (std::find(known_dirs_.begin(), known_dirs_.end(), path) != known_dirs_.end()) {
      return absl::OkStatus();
    }
  }
  size_t domain_end = path.rfind('/');
  absl::Status status = MakeDirectory(root_);
  if (status.ok()) {
    status = MakeDirectory(path.substr(0, domain_end));
  }
  for (const char* leaf : {"", "/tmp", "/new", "/cur"}) {
    if (status.ok()) {
      status = MakeDirectory(absl::StrCat(path, leaf));
    }
  }
  if (status.ok()) {
    absl::MutexLock lock(&dirs_mu_);
    constexpr size_t kKnownDirsMax = 100000;  // a cache, bounded; forgetting costs a mkdir
    if (known_dirs_.size() >= kKnownDirsMax) {
      known_dirs_.clear();
    }
    known_dirs_.push_back(path);
  }
  return status;
}

absl::Status MaildirDelivery::DeliverOne(Job& job, size_t recipient_index,
                                         std::vector<std::string>* dirs) {
  std::string maildir = MaildirPath(root_, job.recipients[recipient_index]);
  absl::Status status = EnsureMaildir(maildir);
  if (!status.ok()) {
    return status;
  }
  std::string name =
      absl::StrCat(std::time(nullptr), ".C", job.id, "R", recipient_index, ".", hostname_);
  std::string tmp = absl::StrCat(maildir, "/tmp/", name);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return io::ErrnoStatus(errno, absl::StrCat("open ", tmp));
  }
  status = WriteAll(fd, job.content);
  if (status.ok() && fdatasync(fd) != 0) {
    status = io::ErrnoStatus(errno, absl::StrCat("fdatasync ", tmp));
  }
  close(fd);
  std::string target = absl::StrCat(maildir, "/new/", name);
  if (status.ok() && rename(tmp.c_str(), target.c_str()) != 0) {
    status = io::ErrnoStatus(errno, absl::StrCat("rename to ", target));
  }
  if (!status.ok()) {
    unlink(tmp.c_str());
    return status;
  }
  std::string new_dir = absl::StrCat(maildir, "/new");
  if (std::find(dirs->begin(), dirs->end(), new_dir) == dirs->end()) {
    dirs->push_back(new_dir);
  }
  return absl::OkStatus();
}

void MaildirDelivery::Work() {
  std::vector<Entry> batch;
  std::vector<std::string> dirs;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](MaildirDelivery* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->queue_.empty();
          },
          this));
      if (queue_.empty()) {
        return;  // stopping, and nothing left
      }
      while (!queue_.empty() && batch.size() < batch_messages_max_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    dirs.clear();
    for (Entry& entry : batch) {
      Job& job = *entry.job;
      job.result = absl::OkStatus();
      for (size_t i = 0; i < job.recipients.size() && job.result.ok(); ++i) {
        job.result = DeliverOne(job, i, &dirs);
      }
    }
    // One directory sync per mailbox per batch makes every rename above durable.
    absl::Status sync_status;
    for (const std::string& dir : dirs) {
      absl::Status status = SyncDirectory(dir);
      if (!status.ok()) {
        sync_status = status;
      }
    }
    for (Entry& entry : batch) {
      if (entry.job->result.ok() && !sync_status.ok()) {
        entry.job->result = sync_status;
      }
      if (!entry.job->result.ok()) {
        LOG_ERROR("delivery of %s failed: %s", entry.job->id, entry.job->result.ToString());
      }
      entry.sink->OnDelivered(std::move(entry.job));
    }
    batch.clear();
  }
}

}  // namespace chute::delivery
