#pragma once

// MaildirDelivery: the embedded default delivery backend (DESIGN.md §2). Messages are written
// to <root>/<domain>/<local-part>/{tmp,new,cur}: each copy is written to tmp/, fdatasync'ed,
// renamed into new/, and new/ is fsync'ed once per batch (a group commit: all copies of a
// batch are written before any is synced); only then does the job complete, so
// the 250 the client then gets means the message is on disk.
//
// The work runs on its own threads (never on a shard's event loop): a bounded queue feeds
// `workers` threads, each taking up to `batch_messages_max` jobs at a time so that the
// directory syncs of a busy mailbox are shared. The file name is derived from the message id
// and the recipient's index, so delivering the same job twice cannot make two copies.
//
// Threads: Submit() from any thread; completions are delivered on worker threads through
// CompletionSink, which must be thread-safe.

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace chute::delivery {

// A bounded queue: beyond this, Submit() refuses and the client hears 452 4.3.1.
inline constexpr size_t kQueueJobsMax = 4096;
inline constexpr int kWorkersMax = 64;

struct Recipient {
  std::string domain;  // lower-cased
  std::string local;   // as given
};

struct Job {
  std::string id;                 // unique message id: names the files
  std::vector<iovec> content;     // the whole message; the memory is the submitter's until done
  std::vector<Recipient> recipients;
  uint64_t cookie = 0;            // the submitter's
  absl::Status result;            // set before completion
};

class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  // OnDelivered: `job` is done (job->result says how). Called on a worker thread.
  virtual void OnDelivered(std::unique_ptr<Job> job) = 0;
};

class MaildirDelivery {
 public:
  MaildirDelivery(std::string root, std::string hostname, int workers, size_t batch_messages_max);
  ~MaildirDelivery();

  // Start: starts the workers. Stop: lets them finish every queued job, then joins them.
  void Start();
  void Stop();

  // Submit: queues `job` for delivery; `sink` hears about it once it is done. False (and the
  // job is dropped untouched) when the queue is full or stopping.
  bool Submit(std::unique_ptr<Job> job, CompletionSink* sink);

 private:
  struct Entry {
    std::unique_ptr<Job> job;
    CompletionSink* sink;
  };
  // One recipient's copy of a job while its batch is written.
  struct Copy {
    size_t job;  // index in the batch
    int fd = -1;
    std::string tmp;
    std::string target;
    std::string new_dir;
  };
  void Work(size_t worker);
  void DeliverBatch(std::vector<Entry>& batch);
  absl::Status WriteCopy(Job& job, size_t recipient_index, Copy* copy);
  absl::Status EnsureMaildir(const std::string& path);

  const std::string root_;
  const std::string hostname_;
  const int workers_count_;
  const size_t batch_messages_max_;
  std::vector<std::thread> workers_;
  // The queues; a job goes to the one its first recipient hashes to. Today there is one,
  // shared by all workers: measured on ext4, parallel fdatasyncs (which the journal commits
  // together) beat one worker per mailbox, even with the directory contention.
  struct Queue {
    absl::Mutex mu;
    std::deque<Entry> entries ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;
  };
  std::vector<std::unique_ptr<Queue>> queues_;
  absl::Mutex dirs_mu_;
  std::vector<std::string> known_dirs_ ABSL_GUARDED_BY(dirs_mu_);
};

// MaildirPath: <root>/<domain>/<local>, with the local part made safe as a file name ('/',
// '%' and a leading '.' are %-escaped).
std::string MaildirPath(const std::string& root, const Recipient& recipient);

}  // namespace chute::delivery
