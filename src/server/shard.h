#pragma once

// Shard: one thread, one io_uring, its own listening sockets and receive buffers, and the
// connections it accepted. Nothing here is shared: other threads reach a shard only through
// its mailbox (delivery completions, stop requests), which wakes it through an eventfd.

#include <sys/uio.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "auth/verifier.h"
#include "delivery/stage.h"
#include "fleet/tenant_leases.h"
#include "io/ring.h"
#include "net/transport.h"
#include "server/server.h"
#include "server/submission.h"
#include "smtp/session.h"
#include "spool/group_commit.h"
#include "spool/spool.h"
#include "trace/trace.h"

namespace chute::server {

// Connection limits inside a shard.
inline constexpr size_t kConnectionsPerShardMax = 1 << 20;
// Messages together pin at most 1/kPinnedBufferShare of a shard's receive buffers; past it,
// bodies are copied, so the ring never runs dry under many large uploads.
inline constexpr size_t kPinnedBufferShare = 4;
// How long a stopping shard lets messages in progress finish.
inline constexpr absl::Duration kDrainTimeout = absl::Seconds(30);
inline constexpr absl::Duration kTickInterval = absl::Seconds(1);
// Trace events a shard gathers before it hands them over between ticks.
inline constexpr size_t kTraceHandOverEvents = 256;
// How long a listener stops accepting after EMFILE/ENFILE.
inline constexpr absl::Duration kAcceptPause = absl::Milliseconds(100);
inline constexpr unsigned kRingEntries = 4096;

struct Connection;

// How long a TLS handshake may take (the transport's other bounds: net/transport.h).
inline constexpr absl::Duration kTlsHandshakeTimeout = absl::Seconds(10);
// How long a proxy_protocol listener waits for the PROXY header.
inline constexpr absl::Duration kProxyHeaderTimeout = absl::Seconds(10);

// The shard is the Submission's SubmitSink (its group commit, hand-over, usage and trace),
// BodyBuffers (its receive-buffer budget), TenantCap and AuthService (over SharedState);
// those are implemented in shard_submit.cc. It is also the ReceiveBuffers every connection's
// transport gives its receive buffers back to.
class Shard : public auth::VerifySink,
              public delivery::ProbeSink,
              public fleet::LeaseSink,
              public RecipientCheck,
              public net::ReceiveBuffers,
              public SubmitSink,
              public BodyBuffers,
              public TenantCap,
              public AuthService {
 public:
  Shard(int index, SharedState* shared);
  ~Shard() override;

  // OpenListeners: one SO_REUSEPORT socket per configured listener. Main thread, before Start.
  absl::Status OpenListeners();
  // Start: runs the shard on its own thread.
  void Start();
  // RequestStop: any thread. The shard drains and its thread ends; Join waits for that.
  void RequestStop();
  void Join();
  bool failed() const { return failed_.load(); }

  // AdoptSegment: a segment found by replay at start-up; this shard removes it once every
  // message in it is settled. Main thread, before Start.
  void AdoptSegment(std::shared_ptr<spool::Segment> segment);
  // OnVerified: password verifier threads report here (VerifySink).
  void OnVerified(uint64_t cookie, bool ok) override;
  // OnProbed: recipient verifier threads report here (ProbeSink).
  void OnProbed(uint64_t cookie, delivery::RecipientVerdict verdict) override;
  // OnLeased: the fleet's thread reports here (LeaseSink).
  void OnLeased(uint64_t cookie, fleet::LeaseAnswer answer) override;
  // RecipientCheck (shard_submit.cc).
  std::optional<delivery::RecipientVerdict> VerifyRecipient(int route, const std::string& address,
                                                            uint64_t cookie) override;

  const ShardCounters& counters() const { return counters_; }
  const ReplyCounts& replies() const { return replies_; }

  // SubmitSink
  bool ReserveSpool(const SpoolConfig& limits, uint64_t bytes, int messages) override;
  void ReleaseSpool(uint64_t bytes, int messages) override;
  std::string NextQueueId() override { return committer_->NextQueueId(); }
  void NoteReceiving(int delta) override;
  void Stage(spool::RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
             uint64_t cookie) override;
  void Accepted(std::unique_ptr<delivery::QueuedMessage> message,
                const std::vector<int>& routes) override;
  void CountUsage(const directory::Account& account, size_t recipients) override;
  bool Tracing() const override { return shared_->trace != nullptr; }
  void Trace(trace::Event event) override;
  // net::ReceiveBuffers
  const char* Data(uint16_t buffer) const override { return buffers_->Buffer(buffer); }
  void Unref(uint16_t buffer) override;
  std::string& PlaintextSpare() override { return plain_spare_; }
  // BodyBuffers
  bool MayPin() const override { return message_pins_ < buffers_->count() / kPinnedBufferShare; }
  void Pin(uint16_t buffer) override;
  void Unpin(uint16_t buffer) override;
  bool ChargeBody(size_t bytes, int64_t max) override;
  void UnchargeBody(size_t bytes) override;
  bool BodyMemoryFull(int64_t max) const override;
  // TenantCap
  Verdict Admit(const directory::Account& account, uint64_t cookie, TenantPlace* place) override;
  void Leave(uint64_t lease) override;
  // AuthService
  auth::AuthThrottle::Verdict CheckThrottle(const IpBytes& peer, absl::string_view user,
                                            absl::Time now, absl::string_view* reason) override;
  absl::Duration RecordFailure(const IpBytes& peer, absl::string_view user,
                               absl::Time now) override;
  void RecordSuccess(const IpBytes& peer, absl::string_view user, absl::Time now) override;
  bool VerifyPassword(auth::VerifyRequest request) override;
  auth::TokenVerdict VerifyToken(int64_t tenant_id, absl::string_view token,
                                 const auth::TokenPolicy& policy, absl::Time now,
                                 auth::TokenIdentity* identity, std::string* why) override;

 private:
  enum Op : uint8_t {
    kOpAccept = 1,
    kOpRecv,
    kOpSend,
    kOpTick,
    kOpWake,
    kOpIgnore,
    kOpSpool,
    kOpCommitTimer,
    kOpAcceptRetry
  };

  void Run();
  absl::Status Setup();
  void Dispatch(const io_uring_cqe& cqe);
  void ArmAccept(size_t listener);
  void ArmAcceptRetry(size_t listener);
  void ArmWake();
  void ArmTick();
  void OnAccept(size_t listener, const io_uring_cqe& cqe);
  void StartSession(Connection& conn);
  void OnProxyHeader(Connection& conn, absl::string_view bytes);
  void OnWake();
  void OnTick();
  void BeginStop();

  Connection* Lookup(uint64_t cookie);
  // AdmitConnection: takes the new connection's places in the caps and asks policy::Admit;
  // the refusal to send, if any. TakeConnectionPlace: one of [limits] connections_max.
  std::optional<smtp::Reply> AdmitConnection(Connection& conn, const Config& config,
                                             const directory::Snapshot& snapshot);
  bool TakeConnectionPlace(const Config& config);
  void ArmRecv(Connection& conn);
  void CancelRecv(Connection& conn);
  void OnRecv(Connection& conn, const io_uring_cqe& cqe);
  void OnSend(Connection& conn, const io_uring_cqe& cqe);
  void Process(Connection& conn);
  void StartTls(Connection& conn);
  // TakeUpStartTls: after a Feed, the STARTTLS the session accepted (its 220 still queued).
  void TakeUpStartTls(Connection& conn);
  // ReleaseIdleBuffers: a connection quiet for a whole tick with nothing queued frees the
  // capacity its output strings and TLS memory BIOs kept from their largest use; false when
  // something is queued and nothing was freed.
  bool ReleaseIdleBuffers(Connection& conn);
  void MoveOutput(Connection& conn);
  void Flush(Connection& conn);
  void Shutdown(Connection& conn);
  void MaybeFree(Connection& conn);

  // The spool's group commit (spool/group_commit.h): the committer decides and builds the
  // chain; the shard arms the timer it asks for, submits, and passes the completions back.
  void MaybeCommit();
  void IssueGroup();
  void OnSpoolCqe(const io_uring_cqe& cqe);
  // AnswerCommit: tells the connection waiting for `cookie` how its commit ended.
  void AnswerCommit(uint64_t cookie, const spool::Committed* committed);
  void ArmCommitTimer(absl::Duration wait);
  // FlushHandOver: committed messages kept while delivery's ring was full go to it now.
  void FlushHandOver();

  void Ref(uint16_t buffer) {
    if (buffer_refs_[buffer]++ == 0) {
      ++buffers_out_;
    }
  }

  const int index_;
  SharedState* shared_;
  ShardCounters counters_;
  std::vector<int> listener_fds_;
  std::unique_ptr<io::Ring> ring_;
  std::unique_ptr<io::BufferRing> buffers_;
  std::vector<uint16_t> buffer_refs_;
  size_t message_pins_ = 0;  // receive buffers pinned by message bodies
  size_t buffers_out_ = 0;   // receive buffers taken from the ring and not yet given back
  void RearmStarved();
  void NoteStarvedWait(Connection& conn);
  std::vector<std::unique_ptr<Connection>> connections_;  // by slot
  std::vector<uint32_t> free_slots_;
  std::deque<uint32_t> starved_;  // slots whose receive stopped for want of buffers
  size_t live_connections_ = 0;
  // The plaintext buffer lent to whichever connection is decrypting (net::ReceiveBuffers): a
  // pointer swap each way; a connection that keeps a remainder makes the next one allocate
  // its own.
  std::string plain_spare_;
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
  __kernel_timespec tick_{};
  absl::Time now_;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  bool stopping_ = false;
  SubmissionServices services_;  // what every Connection's Submission talks to: this shard
  std::unique_ptr<spool::GroupCommitter> committer_;
  // Messages past MAIL and not yet staged: company a staged record may wait for.
  size_t receiving_ = 0;
  bool commit_timer_armed_ = false;
  __kernel_timespec accept_pause_{};
  __kernel_timespec commit_wait_{};
  std::vector<delivery::DeliveryQueue::Ring*> handover_;  // one per delivery route
  std::deque<delivery::RoutedPart> handover_backlog_;
  std::vector<bool> handed_over_;  // per route: something was pushed since the last Notify
  UsageLog::Map usage_;            // this shard's counts since the last tick
  // Trace events of accepted messages, handed to the trace writer at each tick or when
  // kTraceHandOverEvents have gathered (one short lock per hand-over, not per message).
  std::vector<trace::Event> trace_pending_;
  void HandOverTrace();
  ReplyCounts replies_;
  const uint64_t boot_us_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> failed_{false};
  std::thread thread_;

  void Wake();

  // guards verified_, probed_ and leased_ (verifier and fleet threads hand results over)
  std::mutex mailbox_mu_;
  std::vector<std::pair<uint64_t, bool>> verified_;                      // guarded by mailbox_mu_
  std::vector<std::pair<uint64_t, delivery::RecipientVerdict>> probed_;  // guarded by mailbox_mu_
  std::vector<std::pair<uint64_t, fleet::LeaseAnswer>> leased_;          // guarded by mailbox_mu_
};

}  // namespace chute::server
