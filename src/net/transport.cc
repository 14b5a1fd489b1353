// transport.cc: a connection's byte stream, plain or TLS, between its receive buffers, its
// reader and its output, with no I/O of its own.

#include "net/transport.h"

#include <utility>

#include "base/check.h"

namespace chute::net {

void Transport::Received(uint16_t buffer, uint32_t length) {
  input_.push_back(Chunk{buffer, 0, length});
}

void Transport::PopChunk() {
  uint16_t buffer = input_.front().buffer;
  input_.pop_front();
  buffers_->Unref(buffer);
}

void Transport::DropInput() {
  while (!input_.empty()) {
    PopChunk();
  }
}

PumpResult Transport::Pump(TransportReader& reader, absl::Time now) {
  return tls_ == nullptr ? PumpPlain(reader, now) : PumpTls(reader, now);
}

PumpResult Transport::PumpPlain(TransportReader& reader, absl::Time now) {
  PumpResult result;
  while (!input_.empty() && reader.Reading()) {
    Chunk& chunk = input_.front();
    absl::string_view view(buffers_->Data(chunk.buffer) + chunk.offset, chunk.length);
    size_t consumed = reader.Feed(view, chunk.buffer, now);
    DCHECK(consumed <= chunk.length);
    chunk.offset += static_cast<uint32_t>(consumed);
    chunk.length -= static_cast<uint32_t>(consumed);
    if (chunk.length == 0) {
      PopChunk();
    }
    if (reader.TakeStartTls()) {
      // What followed STARTTLS in the same read was the reader's to discard; everything
      // received from here on is TLS.
      result.starttls = true;
      return result;
    }
    if (consumed == 0) {
      break;
    }
  }
  return result;
}

PumpResult Transport::PumpTls(TransportReader& reader, absl::Time now) {
  PumpResult result;
  // Ciphertext from the receive buffers into the TLS stream, a bounded amount ahead.
  while (!input_.empty() && tls_->pending_ciphertext() < kTlsCiphertextMax) {
    const Chunk& chunk = input_.front();
    tls_->PutCiphertext(
        absl::string_view(buffers_->Data(chunk.buffer) + chunk.offset, chunk.length));
    PopChunk();
  }
  if (!tls_->handshake_done()) {
    TlsStream::Result handshake = tls_->Handshake();
    tls_->TakeCiphertext(&out_queue_);  // its next flight, or an alert
    if (handshake == TlsStream::Result::kError || handshake == TlsStream::Result::kClosed) {
      result.handshake_failed = true;
    } else if (handshake == TlsStream::Result::kOk) {
      deadline_ = absl::InfiniteFuture();
      result.handshake_done = true;
    }
    return result;
  }
  while (reader.Reading()) {
    if (plain_offset_ == plain_in_.size()) {
      BorrowPlaintext();
      TlsStream::Result read = tls_->ReadPlaintext(&plain_in_, plaintext_chunk_bytes_);
      if (read == TlsStream::Result::kWantMore) {
        break;
      }
      if (read != TlsStream::Result::kOk) {
        result.peer_closed = true;
        result.close_notify = read == TlsStream::Result::kClosed;
        break;
      }
    }
    size_t consumed =
        reader.Feed(absl::string_view(plain_in_).substr(plain_offset_), /*buffer=*/-1, now);
    plain_offset_ += consumed;
    if (consumed == 0) {
      break;
    }
  }
  if (plain_offset_ == plain_in_.size()) {
    ReturnPlaintext();
  }
  return result;
}

void Transport::StartTls(std::unique_ptr<TlsStream> stream, absl::Time deadline) {
  CHECK(tls_ == nullptr);
  // Plaintext already queued (the 220 to STARTTLS) goes out first, as it is.
  tls_ = std::move(stream);
  deadline_ = deadline;
}

absl::string_view Transport::TlsVersion() const {
  return tls_ != nullptr ? absl::string_view(tls_->Version()) : absl::string_view("none");
}

bool Transport::Write(absl::string_view plaintext) {
  if (tls_ == nullptr) {
    out_queue_.append(plaintext.data(), plaintext.size());
    return true;
  }
  return tls_->Write(plaintext) == TlsStream::Result::kOk;
}

absl::string_view Transport::NextSend() {
  if (tls_ != nullptr) {
    tls_->TakeCiphertext(&out_queue_);
  }
  if (send_offset_ == sending_.size()) {
    sending_.clear();
    send_offset_ = 0;
    sending_.swap(out_queue_);
  }
  return absl::string_view(sending_).substr(send_offset_);
}

void Transport::Sent(size_t bytes) {
  DCHECK(bytes <= sending_.size() - send_offset_);
  send_offset_ += bytes;
}

void Transport::DropOutput() {
  sending_.clear();
  out_queue_.clear();
  send_offset_ = 0;
}

bool Transport::ReleaseIdle() {
  if (!input_.empty() || send_offset_ != sending_.size() || !out_queue_.empty()) {
    return false;
  }
  std::string().swap(sending_);
  send_offset_ = 0;
  std::string().swap(out_queue_);
  if (tls_ != nullptr) {
    tls_->ReleaseBuffers();
  }
  return true;
}

void Transport::Reset() {
  DropInput();
  std::string().swap(sending_);  // a slot waiting for its next connection keeps nothing
  std::string().swap(out_queue_);
  send_offset_ = 0;
  tls_.reset();
  deadline_ = absl::InfiniteFuture();
  ReturnPlaintext();
}

void Transport::BorrowPlaintext() {
  std::string& spare = buffers_->PlaintextSpare();
  if (plain_in_.capacity() < spare.capacity()) {
    plain_in_.swap(spare);
  }
  plain_in_.clear();
  plain_offset_ = 0;
}

void Transport::ReturnPlaintext() {
  plain_in_.clear();
  plain_offset_ = 0;
  std::string& spare = buffers_->PlaintextSpare();
  if (spare.capacity() < plain_in_.capacity()) {
    plain_in_.swap(spare);
  } else {
    std::string().swap(plain_in_);  // the owner has one already: this one goes back
  }
}

}  // namespace chute::net
