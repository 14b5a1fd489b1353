// stream.cc: a blocking, deadline-bounded socket stream, plain or TLS.

#include "net/stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"

namespace chute::net {

absl::StatusOr<std::unique_ptr<Stream>> Stream::Connect(const sockaddr_storage& address,
                                                        socklen_t length, std::string peer,
                                                        StreamOptions options) {
  int family = address.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("connect to ", peer, ": ", strerror(errno)));
  }
  std::unique_ptr<Stream> stream(new Stream(fd, std::move(peer), options));
  if (family != AF_UNIX) {
    // Callers write whole units (a command, a request), so Nagle would only add a delay.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    if (errno != EINPROGRESS) {
      return stream->Fail(StreamFailure::kConnect,
                          absl::StrCat("connect to ", stream->peer_, ": ", strerror(errno)));
    }
    RETURN_IF_ERROR(stream->WaitFor(POLLOUT, absl::Now() + options.io_timeout,
                                    StreamFailure::kConnect, "connecting to"));
    int error = 0;
    socklen_t size = sizeof(error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0) {
      error = errno;
    }
    if (error != 0) {
      return stream->Fail(StreamFailure::kConnect,
                          absl::StrCat("connect to ", stream->peer_, ": ", strerror(error)));
    }
  }
  return stream;
}

Stream::~Stream() { close(fd_); }

absl::Status Stream::Fail(StreamFailure kind, absl::string_view message) {
  failure_ = kind;
  return absl::UnavailableError(message);
}

absl::Status Stream::WaitFor(int16_t events, absl::Time deadline, StreamFailure kind,
                             absl::string_view what) {
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return Fail(kind, absl::StrCat("timeout ", what, " ", peer_));
    }
    const std::atomic<int64_t>* stop = options_.stop_at_unix_ms;
    int64_t stop_at = stop != nullptr ? stop->load(std::memory_order_relaxed) : 0;
    if (stop_at != 0 && absl::ToUnixMillis(absl::Now()) >= stop_at) {
      return Fail(kind, absl::StrCat("chuted is stopping: gave up ", what, " ", peer_));
    }
    // In slices, so that a stop is noticed within kStreamStopCheckInterval.
    left = std::min(left, kStreamStopCheckInterval);
    int timeout_ms =
        static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
    pollfd entry{fd_, events, 0};
    int ready = poll(&entry, 1, timeout_ms);
    if (ready > 0) {
      return absl::OkStatus();  // readable, writable, or an error that the next call reports
    }
    if (ready < 0 && errno != EINTR) {
      return Fail(StreamFailure::kIo, absl::StrCat("poll for ", peer_, ": ", strerror(errno)));
    }
  }
}

absl::Status Stream::SendRaw(absl::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t sent = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      bytes.remove_prefix(static_cast<size_t>(sent));
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      RETURN_IF_ERROR(
          WaitFor(POLLOUT, absl::Now() + options_.io_timeout, StreamFailure::kIo, "writing to"));
    } else if (sent < 0 && errno != EINTR) {
      return Fail(StreamFailure::kIo,
                  absl::StrCat("lost connection to ", peer_, ": ", strerror(errno)));
    }
  }
  return absl::OkStatus();
}

absl::Status Stream::RecvRaw(std::string* out, size_t max, absl::Time deadline, bool* closed,
                             absl::string_view reading) {
  size_t old_size = out->size();
  out->resize(old_size + max);
  while (true) {
    ssize_t received = recv(fd_, out->data() + old_size, max, 0);
    if (received > 0) {
      out->resize(old_size + static_cast<size_t>(received));
      return absl::OkStatus();
    }
    if (received == 0) {
      out->resize(old_size);
      *closed = true;
      return absl::OkStatus();
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      absl::Status waited = WaitFor(POLLIN, deadline, StreamFailure::kIo, reading);
      if (!waited.ok()) {
        out->resize(old_size);
        return waited;
      }
    } else if (errno != EINTR) {
      out->resize(old_size);
      return Fail(StreamFailure::kIo,
                  absl::StrCat("lost connection to ", peer_, ": ", strerror(errno)));
    }
  }
}

absl::Status Stream::FlushCiphertext() {
  std::string ciphertext;
  tls_->TakeCiphertext(&ciphertext);
  return ciphertext.empty() ? absl::OkStatus() : SendRaw(ciphertext);
}

absl::Status Stream::Read(std::string* out, size_t max, absl::Time deadline, bool* closed,
                          absl::string_view reading) {
  bool eof = false;
  if (closed != nullptr) {
    *closed = false;
  }
  auto closed_by_peer = [&](absl::string_view what) {
    if (closed != nullptr) {
      *closed = true;
      return absl::OkStatus();
    }
    return Fail(StreamFailure::kIo, absl::StrCat(peer_, " closed the ", what));
  };
  if (tls_ == nullptr) {
    RETURN_IF_ERROR(RecvRaw(out, max, deadline, &eof, reading));
    return eof ? closed_by_peer("connection") : absl::OkStatus();
  }
  while (true) {
    TlsStream::Result result = tls_->ReadPlaintext(out, max);
    // Reading may produce records to send (TLS 1.3 key updates).
    RETURN_IF_ERROR(FlushCiphertext());
    switch (result) {
      case TlsStream::Result::kOk:
        return absl::OkStatus();
      case TlsStream::Result::kClosed:
        return closed_by_peer("TLS session");
      case TlsStream::Result::kError:
        return Fail(StreamFailure::kTls,
                    absl::StrCat("TLS error from ", peer_, ": ", tls_->Error()));
      case TlsStream::Result::kWantMore:
        break;
    }
    std::string ciphertext;
    RETURN_IF_ERROR(RecvRaw(&ciphertext, max, deadline, &eof, reading));
    if (eof) {
      // Without close_notify: a truncation attack or a careless peer. A caller that takes
      // the close as the end of what it reads is told so, never given a cut-off end.
      if (closed != nullptr) {
        return Fail(StreamFailure::kIo,
                    absl::StrCat(peer_, " closed the connection without TLS close_notify"));
      }
      return closed_by_peer("connection");
    }
    tls_->PutCiphertext(ciphertext);
  }
}

absl::Status Stream::Write(absl::string_view bytes) {
  if (tls_ == nullptr) {
    return SendRaw(bytes);
  }
  while (!bytes.empty()) {
    absl::string_view piece = bytes.substr(0, kStreamTlsWriteChunkBytes);
    if (tls_->Write(piece) == TlsStream::Result::kError) {
      return Fail(StreamFailure::kTls, absl::StrCat("TLS error to ", peer_, ": ", tls_->Error()));
    }
    RETURN_IF_ERROR(FlushCiphertext());
    bytes.remove_prefix(piece.size());
  }
  return absl::OkStatus();
}

absl::Status Stream::StartTls(std::shared_ptr<TlsContext> context, absl::string_view server_name,
                              absl::string_view reading) {
  CHECK(tls_ == nullptr);
  tls_ = TlsStream::NewClient(std::move(context), server_name);
  absl::Time deadline = absl::Now() + options_.io_timeout;
  constexpr size_t kHandshakeReadBytes = 16 * 1024;
  while (true) {
    TlsStream::Result result = tls_->Handshake();
    RETURN_IF_ERROR(FlushCiphertext());
    if (result == TlsStream::Result::kOk) {
      return absl::OkStatus();
    }
    if (result != TlsStream::Result::kWantMore) {
      return Fail(StreamFailure::kTls,
                  absl::StrCat("TLS handshake with ", peer_, " failed: ", tls_->Error()));
    }
    std::string ciphertext;
    bool eof = false;
    RETURN_IF_ERROR(RecvRaw(&ciphertext, kHandshakeReadBytes, deadline, &eof, reading));
    if (eof) {
      return Fail(StreamFailure::kIo, absl::StrCat(peer_, " closed the connection"));
    }
    tls_->PutCiphertext(ciphertext);
  }
}

bool Stream::HasUnreadInput() const {
  if (tls_ != nullptr && tls_->pending_ciphertext() > 0) {
    return true;
  }
  pollfd entry{fd_, POLLIN, 0};
  return poll(&entry, 1, 0) != 0;
}

}  // namespace chute::net
