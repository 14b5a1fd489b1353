// uring_stream.cc: a deadline-bounded socket stream, plain or TLS, whose waits are io_uring's.

#include "net/uring_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/log.h"
#include "base/status_macros.h"

namespace chute::net {
namespace {

// A stream given back outside a running loop waits at most this long for its operations.
constexpr absl::Duration kDrainMax = absl::Seconds(10);

__kernel_timespec Timespec(absl::Duration d) {
  int64_t ns = std::max<int64_t>(absl::ToInt64Nanoseconds(d), 0);
  return __kernel_timespec{ns / 1'000'000'000, ns % 1'000'000'000};
}

// StopAt: when a stop began (Unix ms; 0: none).
int64_t StopAt(const StreamOptions& options) {
  return options.stop_at_unix_ms != nullptr
             ? options.stop_at_unix_ms->load(std::memory_order_relaxed)
             : 0;
}

}  // namespace

UringStream::UringStream(io::Loop* loop, int fd, std::string peer, StreamOptions options)
    : loop_(loop),
      fd_(fd),
      peer_(std::move(peer)),
      options_(options),
      transport_(this),
      recv_buffer_(new char[kUringStreamRecvBytes]) {}

io::Task<absl::StatusOr<UringStream::Ptr>> UringStream::Connect(io::Loop* loop,
                                                                sockaddr_storage address,
                                                                socklen_t length, std::string peer,
                                                                StreamOptions options) {
  CHECK(loop != nullptr);
  int family = address.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    co_return absl::UnavailableError(absl::StrCat("connect to ", peer, ": ", strerror(errno)));
  }
  Ptr stream(new UringStream(loop, fd, std::move(peer), options));
  if (family != AF_UNIX) {
    // Callers write whole units (a command, a message), so Nagle would only add a delay.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  if (StopAt(options) != 0 && absl::ToUnixMillis(absl::Now()) >= StopAt(options)) {
    co_return stream->Fail(
        StreamFailure::kConnect,
        absl::StrCat("chuted is stopping: gave up connecting to ", stream->peer_));
  }
  // The address and the timeout live in this task's frame, which the task cannot leave before
  // the loop's next turn has submitted the connect: the kernel copies both then, and never
  // reads them again (the frame may go before the connect completes).
  __kernel_timespec timeout = Timespec(options.io_timeout);
  loop->Reserve(2);
  io_uring_sqe* sqe = loop->Sqe(stream.get(), kOpConnect);
  io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&address), length);
  sqe->flags |= IOSQE_IO_LINK;
  sqe = loop->Sqe(stream.get(), kOpLinkTimeout);
  io_uring_prep_link_timeout(sqe, &timeout, 0);
  stream->pending_ += 2;
  while (stream->connect_result_ == 1) {
    co_await loop->Sleep(&stream->waiter_, absl::Now() + kStreamStopCheckInterval);
    if (stream->connect_result_ != 1) {
      break;
    }
    int64_t stop_at = StopAt(options);
    if (stop_at != 0 && absl::ToUnixMillis(absl::Now()) >= stop_at) {
      // Giving the stream back cancels the connect; the stream outlives it, the frame need not.
      co_return stream->Fail(
          StreamFailure::kConnect,
          absl::StrCat("chuted is stopping: gave up connecting to ", stream->peer_));
    }
  }
  int connect_result = stream->connect_result_;
  if (connect_result == -ECANCELED || connect_result == -ETIME) {
    co_return stream->Fail(StreamFailure::kConnect,
                           absl::StrCat("timeout connecting to ", stream->peer_));
  }
  if (connect_result < 0) {
    co_return stream->Fail(StreamFailure::kConnect, absl::StrCat("connect to ", stream->peer_, ": ",
                                                                 strerror(-connect_result)));
  }
  co_return stream;
}

UringStream::~UringStream() {
  transport_.Reset();
  close(fd_);
}

absl::Status UringStream::Fail(StreamFailure kind, absl::string_view message) {
  failure_ = kind;
  return absl::UnavailableError(message);
}

void UringStream::GiveBack() {
  CHECK_MSG(!waiter_.waiting(), "a stream given back while a task waits on it");
  if (pending_ == 0) {
    delete this;
    return;
  }
  // A cancelled receive or send completes at once (-ECANCELED). The connection is thrown away,
  // so it is also shut down: a kernel that could not cancel one completes it that way.
  io_uring_sqe* sqe = loop_->Sqe(this, kOpCancel);
  io_uring_prep_cancel_fd(sqe, fd_, IORING_ASYNC_CANCEL_ALL);
  ++pending_;
  shutdown(fd_, SHUT_RDWR);
  if (loop_->running()) {
    given_back_ = true;  // OnCompletion frees it
    return;
  }
  absl::Time until = absl::Now() + kDrainMax;
  while (pending_ > 0 && absl::Now() < until) {
    loop_->Turn(kStreamStopCheckInterval);
  }
  if (pending_ > 0) {
    // The loop cannot complete them: the kernel may still write into the receive buffer, so
    // the stream is left to it, never freed under it.
    LOG_ERROR("stream to %s: %d operation(s) never completed; the stream is left", peer_,
              static_cast<int64_t>(pending_));
    given_back_ = true;
    return;
  }
  delete this;
}

size_t UringStream::Feed(absl::string_view bytes, int /*buffer*/, absl::Time /*now*/) {
  size_t take = std::min(bytes.size(), reading_room_);
  reading_into_->append(bytes.data(), take);
  reading_room_ -= take;
  return take;
}

void UringStream::OnCompletion(const io_uring_cqe& cqe) {
  --pending_;
  switch (io::UserDataOp(cqe.user_data)) {
    case kOpConnect:
      connect_result_ = cqe.res;
      break;
    case kOpRecv:
      recv_armed_ = false;
      if (cqe.res > 0) {
        transport_.Received(0, static_cast<uint32_t>(cqe.res));
      } else if (cqe.res == 0) {
        eof_ = true;
      } else if (cqe.res != -EINTR && cqe.res != -EAGAIN) {
        error_ = -cqe.res;
      }
      break;
    case kOpSend:
      send_armed_ = false;
      if (cqe.res >= 0) {
        transport_.Sent(static_cast<size_t>(cqe.res));
        send_progress_ = absl::Now();
      } else if (cqe.res != -EINTR && cqe.res != -EAGAIN) {
        error_ = -cqe.res;
      }
      break;
    default:
      break;
  }
  if (given_back_) {
    if (pending_ == 0) {
      delete this;
    }
    return;
  }
  loop_->Wake(&waiter_);
}

io::Task<absl::Status> UringStream::Wait(bool receive, absl::Time deadline,
                                         absl::string_view what) {
  if (error_ != 0) {
    co_return Fail(StreamFailure::kIo,
                   absl::StrCat("lost connection to ", peer_, ": ", strerror(error_)));
  }
  // Checked before anything new goes into the ring: a stream that gives up sends nothing more.
  absl::Time now = absl::Now();
  bool sending = send_armed_ || !transport_.NextSend().empty();
  if (sending && send_progress_ == absl::InfinitePast()) {
    send_progress_ = now;
  }
  absl::Time until = sending ? std::min(deadline, send_progress_ + options_.io_timeout) : deadline;
  if (now >= until) {
    co_return Fail(StreamFailure::kIo,
                   absl::StrCat("timeout ", sending && !receive ? "writing to" : what, " ", peer_));
  }
  int64_t stop_at = StopAt(options_);
  if (stop_at != 0 && absl::ToUnixMillis(now) >= stop_at) {
    co_return Fail(StreamFailure::kIo,
                   absl::StrCat("chuted is stopping: gave up ", what, " ", peer_));
  }
  if (!send_armed_) {
    absl::string_view view = transport_.NextSend();
    if (!view.empty()) {
      io_uring_sqe* sqe = loop_->Sqe(this, kOpSend);
      io_uring_prep_send(sqe, fd_, view.data(), view.size(), MSG_NOSIGNAL);
      send_armed_ = true;
      ++pending_;
    }
  }
  if (receive && !recv_armed_ && !eof_ && !transport_.has_input()) {
    io_uring_sqe* sqe = loop_->Sqe(this, kOpRecv);
    io_uring_prep_recv(sqe, fd_, recv_buffer_.get(), kUringStreamRecvBytes, 0);
    recv_armed_ = true;
    ++pending_;
  }
  if (pending_ == 0) {
    co_return absl::OkStatus();  // nothing to wait for
  }
  // In slices, so that a stop is noticed within kStreamStopCheckInterval.
  co_await loop_->Sleep(&waiter_, now + std::min(until - now, kStreamStopCheckInterval));
  if (!send_armed_ && transport_.sent_all()) {
    send_progress_ = absl::InfinitePast();
  }
  if (error_ != 0) {
    co_return Fail(StreamFailure::kIo,
                   absl::StrCat("lost connection to ", peer_, ": ", strerror(error_)));
  }
  co_return absl::OkStatus();
}

io::Task<absl::Status> UringStream::Flush() {
  while (send_armed_ || !transport_.NextSend().empty()) {
    CO_RETURN_IF_ERROR(co_await Wait(/*receive=*/false, absl::InfiniteFuture(), "writing to"));
  }
  co_return absl::OkStatus();
}

io::Task<absl::Status> UringStream::Write(absl::string_view bytes, bool wait) {
  do {
    absl::string_view piece = bytes.substr(0, kStreamWriteChunkBytes);
    if (!transport_.Write(piece)) {
      co_return Fail(StreamFailure::kTls,
                     absl::StrCat("TLS error to ", peer_, ": ", transport_.TlsError()));
    }
    bytes.remove_prefix(piece.size());
    if (wait || !bytes.empty()) {
      CO_RETURN_IF_ERROR(co_await Flush());
    }
  } while (!bytes.empty());
  co_return absl::OkStatus();
}

io::Task<absl::Status> UringStream::Read(std::string* out, size_t max, absl::Time deadline,
                                         bool* closed, absl::string_view reading) {
  if (closed != nullptr) {
    *closed = false;
  }
  size_t old_size = out->size();
  reading_into_ = out;
  reading_room_ = max;
  absl::Status status;
  while (true) {
    PumpResult pumped = transport_.Pump(*this, absl::Now());
    if (out->size() > old_size) {
      break;
    }
    if (pumped.peer_closed) {
      if (pumped.close_notify && closed != nullptr) {
        *closed = true;
      } else {
        status = pumped.close_notify
                     ? Fail(StreamFailure::kIo, absl::StrCat(peer_, " closed the TLS session"))
                     : Fail(StreamFailure::kTls,
                            absl::StrCat("TLS error from ", peer_, ": ", transport_.TlsError()));
      }
      break;
    }
    if (eof_ && !transport_.has_input()) {
      if (closed != nullptr && !transport_.tls()) {
        *closed = true;
      } else if (closed != nullptr) {
        // Without close_notify: a truncation attack or a careless peer. A caller that takes
        // the close as the end of what it reads is told so, never given a cut-off end.
        status = Fail(StreamFailure::kIo,
                      absl::StrCat(peer_, " closed the connection without TLS close_notify"));
      } else {
        status = Fail(StreamFailure::kIo, absl::StrCat(peer_, " closed the connection"));
      }
      break;
    }
    status = co_await Wait(/*receive=*/true, deadline, reading);
    if (!status.ok()) {
      break;
    }
  }
  reading_into_ = nullptr;
  reading_room_ = 0;
  co_return status;
}

io::Task<absl::Status> UringStream::StartTls(std::shared_ptr<TlsContext> context,
                                             absl::string_view server_name,
                                             absl::string_view reading) {
  CHECK(!transport_.tls());
  absl::Time deadline = absl::Now() + options_.io_timeout;
  transport_.StartTls(TlsStream::NewClient(std::move(context), server_name), deadline);
  while (true) {
    PumpResult pumped = transport_.Pump(*this, absl::Now());  // the ClientHello, then each flight
    if (pumped.handshake_failed) {
      absl::Status alert = co_await Flush();  // the alert, if one was made: the server learns why
      (void)alert;
      co_return Fail(StreamFailure::kTls, absl::StrCat("TLS handshake with ", peer_,
                                                       " failed: ", transport_.TlsError()));
    }
    if (pumped.handshake_done) {
      co_return co_await Flush();
    }
    if (eof_ && !transport_.has_input()) {
      co_return Fail(StreamFailure::kIo, absl::StrCat(peer_, " closed the connection"));
    }
    CO_RETURN_IF_ERROR(co_await Wait(/*receive=*/true, deadline, reading));
  }
}

bool UringStream::HasUnreadInput() const {
  if (transport_.has_input() || eof_ ||
      (transport_.tls_stream() != nullptr && transport_.tls_stream()->pending_ciphertext() > 0)) {
    return true;
  }
  pollfd entry{fd_, POLLIN, 0};
  return poll(&entry, 1, 0) != 0;
}

}  // namespace chute::net
