#include "delivery/maildir.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "absl/hash/hash.h"
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
  queues_.push_back(std::make_unique<Queue>());
}

MaildirDelivery::~MaildirDelivery() { Stop(); }

void MaildirDelivery::Start() {
  for (int i = 0; i < workers_count_; ++i) {
    workers_.emplace_back([this, i] { Work(static_cast<size_t>(i) % queues_.size()); });
  }
}

void MaildirDelivery::Stop() {
  for (std::unique_ptr<Queue>& queue : queues_) {
    absl::MutexLock lock(&queue->mu);
    queue->stopping = true;
  }
  for (std::thread& worker : workers_) {
    worker.join();
  }
  workers_.clear();
}

bool MaildirDelivery::Submit(std::unique_ptr<Job> job, CompletionSink* sink) {
  size_t worker = 0;
  if (!job->recipients.empty()) {
    const Recipient& first = job->recipients.front();
    worker = absl::HashOf(first.domain, first.local) % queues_.size();
  }
  Queue& queue = *queues_[worker];
  absl::MutexLock lock(&queue.mu);
  if (queue.stopping || queue.entries.size() >= kQueueJobsMax / queues_.size()) {
    return false;
  }
  queue.entries.push_back(Entry{std::move(job), sink});
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

absl::Status MaildirDelivery::WriteCopy(Job& job, size_t recipient_index, Copy* copy) {
  std::string maildir = MaildirPath(root_, job.recipients[recipient_index]);
  absl::Status status = EnsureMaildir(maildir);
  if (!status.ok()) {
    return status;
  }
  std::string name =
      absl::StrCat(std::time(nullptr), ".C", job.id, "R", recipient_index, ".", hostname_);
  copy->tmp = absl::StrCat(maildir, "/tmp/", name);
  copy->target = absl::StrCat(maildir, "/new/", name);
  copy->new_dir = absl::StrCat(maildir, "/new");
  copy->fd = open(copy->tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (copy->fd < 0) {
    return io::ErrnoStatus(errno, absl::StrCat("open ", copy->tmp));
  }
  absl::Status written = WriteAll(copy->fd, job.content);
  if (written.ok()) {
    // Start writeback now (it allocates the blocks), so that the batch's first fdatasync
    // commits the journal for every copy and the later ones find little left to do.
    sync_file_range(copy->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  }
  return written;
}

void MaildirDelivery::DeliverBatch(std::vector<Entry>& batch) {
  // Group commit, in four passes over the batch: write every copy; fdatasync them all (the
  // first sync commits the filesystem journal for the rest, so the later ones are cheap);
  // rename them into new/; fsync each new/ directory once. A job fails if any of its copies
  // fails; its other copies are removed.
  std::vector<Copy> copies;
  for (size_t j = 0; j < batch.size(); ++j) {
    Job& job = *batch[j].job;
    job.result = absl::OkStatus();
    for (size_t i = 0; i < job.recipients.size() && job.result.ok(); ++i) {
      copies.emplace_back();
      copies.back().job = j;
      job.result = WriteCopy(job, i, &copies.back());
    }
  }
  for (Copy& copy : copies) {
    Job& job = *batch[copy.job].job;
    if (job.result.ok() && fdatasync(copy.fd) != 0) {
      job.result = io::ErrnoStatus(errno, absl::StrCat("fdatasync ", copy.tmp));
    }
  }
  std::vector<std::string> dirs;
  for (Copy& copy : copies) {
    if (copy.fd >= 0) {
      close(copy.fd);
    }
    Job& job = *batch[copy.job].job;
    if (job.result.ok() && rename(copy.tmp.c_str(), copy.target.c_str()) != 0) {
      job.result = io::ErrnoStatus(errno, absl::StrCat("rename to ", copy.target));
    }
    if (!job.result.ok()) {
      unlink(copy.tmp.c_str());
    } else if (std::find(dirs.begin(), dirs.end(), copy.new_dir) == dirs.end()) {
      dirs.push_back(copy.new_dir);
    }
  }
  absl::Status sync_status;
  for (const std::string& dir : dirs) {
    absl::Status status = SyncDirectory(dir);
    if (!status.ok()) {
      sync_status = status;
    }
  }
  for (Copy& copy : copies) {
    Job& job = *batch[copy.job].job;
    if (!job.result.ok()) {
      unlink(copy.target.c_str());  // a partly delivered job is retried whole by the client
    } else if (!sync_status.ok()) {
      job.result = sync_status;
    }
  }
}

void MaildirDelivery::Work(size_t worker) {
  Queue& queue = *queues_[worker];
  std::vector<Entry> batch;
  while (true) {
    {
      absl::MutexLock lock(&queue.mu);
      queue.mu.Await(absl::Condition(
          +[](Queue* q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu) {
            return q->stopping || !q->entries.empty();
          },
          &queue));
      if (queue.entries.empty()) {
        return;  // stopping, and nothing left
      }
      while (!queue.entries.empty() && batch.size() < batch_messages_max_) {
        batch.push_back(std::move(queue.entries.front()));
        queue.entries.pop_front();
      }
    }
    DeliverBatch(batch);
    for (Entry& entry : batch) {
      if (!entry.job->result.ok()) {
        LOG_ERROR("delivery of %s failed: %s", entry.job->id, entry.job->result.ToString());
      }
      entry.sink->OnDelivered(std::move(entry.job));
    }
    batch.clear();
  }
}

}  // namespace chute::delivery
