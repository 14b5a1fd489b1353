// transport_test.cc: unit tests for net::Transport: plain input fed in order and each receive
// buffer given back, a reader that pauses, the input bound, output and its release, STARTTLS
// over the input that follows, a TLS exchange with a real client stream, a failed and an
// overdue handshake, and Reset.

#include "net/transport.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "test_certificates.h"

namespace chute::net {
namespace {

// Buffers: receive buffers as strings, each with the count of references the transport holds.
class Buffers : public ReceiveBuffers {
 public:
  // Put: a new buffer holding `bytes`, with one reference (as a receive leaves it).
  uint16_t Put(std::string bytes) {
    data_.push_back(std::move(bytes));
    refs_.push_back(1);
    return static_cast<uint16_t>(data_.size() - 1);
  }
  const char* Data(uint16_t buffer) const override { return data_[buffer].data(); }
  void Unref(uint16_t buffer) override {
    ASSERT_GT(refs_[buffer], 0) << "buffer " << buffer << " given back twice";
    --refs_[buffer];
  }
  std::string& PlaintextSpare() override { return spare_; }
  int refs(uint16_t buffer) const { return refs_[buffer]; }
  int held() const {
    int total = 0;
    for (int refs : refs_) {
      total += refs;
    }
    return total;
  }

 private:
  std::vector<std::string> data_;
  std::vector<int> refs_;
  std::string spare_;
};

// Reader: takes up to `take` bytes a Feed while `reading`; agrees to STARTTLS when a Feed
// holds "STARTTLS\r\n" (and, like the SMTP session, discards what follows it in that Feed).
class Reader : public TransportReader {
 public:
  bool Reading() const override { return reading; }
  size_t Feed(absl::string_view bytes, int buffer, absl::Time) override {
    size_t n = std::min(bytes.size(), take);
    received.append(bytes.data(), n);
    buffers.push_back(buffer);
    if (absl::StrContains(bytes.substr(0, n), "STARTTLS\r\n")) {
      starttls = true;
      reading = false;  // blocked until the handshake, as the session is
    }
    if (once) {
      reading = false;
    }
    return n;
  }
  bool TakeStartTls() override { return std::exchange(starttls, false); }

  bool reading = true;
  bool once = false;  // stop reading after one Feed
  size_t take = SIZE_MAX;
  bool starttls = false;
  std::string received;
  std::vector<int> buffers;
};

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

TEST(TransportTest, PlainInputIsFedInOrderAndEachBufferGoesBack) {
  Buffers buffers;
  Transport transport(&buffers);
  Reader reader;
  uint16_t a = buffers.Put("EHLO a\r\n");
  uint16_t b = buffers.Put("MAIL FROM:<x@y>\r\n");
  transport.Received(a, 8);
  transport.Received(b, 17);
  PumpResult result = transport.Pump(reader, kNow);
  EXPECT_FALSE(result.starttls || result.handshake_done || result.handshake_failed);
  EXPECT_EQ(reader.received, "EHLO a\r\nMAIL FROM:<x@y>\r\n");
  EXPECT_EQ(reader.buffers, (std::vector<int>{a, b}));  // the reader may pin what it is fed
  EXPECT_EQ(buffers.held(), 0);
  EXPECT_FALSE(transport.has_input());
}

TEST(TransportTest, AReaderThatStopsKeepsTheRestHeldUntilItReadsAgain) {
  Buffers buffers;
  Transport transport(&buffers);
  Reader reader;
  reader.take = 5;
  reader.once = true;
  uint16_t a = buffers.Put("0123456789");
  transport.Received(a, 10);
  transport.Pump(reader, kNow);
  EXPECT_EQ(reader.received, "01234");
  EXPECT_EQ(buffers.refs(a), 1);  // the rest is still in the receive buffer, held
  transport.Pump(reader, kNow);   // not reading: nothing moves
  EXPECT_EQ(reader.received, "01234");
  reader.reading = true;
  reader.once = false;
  transport.Pump(reader, kNow);
  EXPECT_EQ(reader.received, "0123456789");
  EXPECT_EQ(buffers.refs(a), 0);
}

TEST(TransportTest, InputIsFullAtTheBoundAndDropInputGivesItAllBack) {
  Buffers buffers;
  Transport transport(&buffers);
  for (size_t i = 0; i < kInputChunksMax; ++i) {
    EXPECT_FALSE(transport.input_full()) << i;
    transport.Received(buffers.Put("x"), 1);
  }
  EXPECT_TRUE(transport.input_full());
  EXPECT_EQ(buffers.held(), static_cast<int>(kInputChunksMax));
  transport.DropInput();
  EXPECT_EQ(buffers.held(), 0);
  EXPECT_FALSE(transport.input_full());
}

TEST(TransportTest, OutputIsSentFromAStableViewAndQueuesBehindIt) {
  Buffers buffers;
  Transport transport(&buffers);
  EXPECT_TRUE(transport.NextSend().empty());
  ASSERT_TRUE(transport.Write("250 a\r\n"));
  ASSERT_TRUE(transport.Write("250 b\r\n"));
  absl::string_view first = transport.NextSend();
  EXPECT_EQ(first, "250 a\r\n250 b\r\n");
  ASSERT_TRUE(transport.Write("250 c\r\n"));  // while the first send is under way
  transport.Sent(3);
  EXPECT_FALSE(transport.sent_all());
  EXPECT_FALSE(transport.ReleaseIdle());  // something is unsent: nothing is freed
  EXPECT_EQ(transport.NextSend(), " a\r\n250 b\r\n");
  transport.Sent(11);
  EXPECT_TRUE(transport.sent_all());
  EXPECT_EQ(transport.NextSend(), "250 c\r\n");
  transport.Sent(7);
  EXPECT_TRUE(transport.NextSend().empty());
  EXPECT_TRUE(transport.ReleaseIdle());
}

TEST(TransportTest, DropOutputForgetsEverythingQueued) {
  Buffers buffers;
  Transport transport(&buffers);
  transport.Write("250 a\r\n");
  transport.NextSend();
  transport.Write("250 b\r\n");
  transport.DropOutput();
  EXPECT_TRUE(transport.sent_all());
  EXPECT_TRUE(transport.NextSend().empty());
}

// A server transport and a client TlsStream talking through it, the test carrying the bytes.
class TransportTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    context_ = SelfSignedContext();
    ASSERT_NE(context_, nullptr);
    client_ = TlsStream::NewClient(TlsContext::NewUnverifiedClient());
  }

  // ToServer: what the client has to send, as one receive.
  void ToServer() {
    std::string ciphertext;
    client_->TakeCiphertext(&ciphertext);
    if (!ciphertext.empty()) {
      uint32_t length = static_cast<uint32_t>(ciphertext.size());
      transport_.Received(buffers_.Put(std::move(ciphertext)), length);
    }
  }
  // ToClient: everything the transport has to send, into the client.
  std::string ToClient() {
    std::string sent;
    for (absl::string_view next = transport_.NextSend(); !next.empty();
         next = transport_.NextSend()) {
      sent.append(next.data(), next.size());
      transport_.Sent(next.size());
    }
    client_->PutCiphertext(sent);
    return sent;
  }
  // Handshake: rounds until both ends are done; false if either failed or it did not end.
  bool Handshake() {
    for (int round = 0; round < 10; ++round) {
      if (client_->Handshake() == TlsStream::Result::kError) {
        return false;
      }
      ToServer();
      PumpResult result = transport_.Pump(reader_, kNow);
      if (result.handshake_failed) {
        return false;
      }
      ToClient();
      if (result.handshake_done) {
        return client_->Handshake() == TlsStream::Result::kOk;
      }
    }
    return false;
  }

  std::shared_ptr<TlsContext> context_;
  std::unique_ptr<TlsStream> client_;
  Buffers buffers_;
  Transport transport_{&buffers_};
  Reader reader_;
};

TEST_F(TransportTlsTest, StartTlsTurnsTheInputThatFollowsIntoTheHandshake) {
  transport_.Received(buffers_.Put("EHLO a\r\nSTARTTLS\r\n"), 18);
  PumpResult result = transport_.Pump(reader_, kNow);
  ASSERT_TRUE(result.starttls);
  EXPECT_FALSE(reader_.TakeStartTls());  // asked once, true once
  // The owner queues the 220 in plaintext, then starts TLS: the 220 still goes out as it is.
  transport_.Write("220 2.0.0 go ahead\r\n");
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  EXPECT_TRUE(transport_.tls());
  EXPECT_TRUE(transport_.handshaking());
  EXPECT_FALSE(transport_.accepts_output());
  std::string plain;
  for (absl::string_view next = transport_.NextSend(); !next.empty();
       next = transport_.NextSend()) {
    plain.append(next.data(), next.size());
    transport_.Sent(next.size());
  }
  EXPECT_EQ(plain, "220 2.0.0 go ahead\r\n");

  reader_.reading = true;
  ASSERT_TRUE(Handshake());
  EXPECT_FALSE(transport_.handshaking());
  EXPECT_TRUE(transport_.accepts_output());
  EXPECT_TRUE(absl::StartsWith(transport_.TlsVersion(), "TLS")) << transport_.TlsVersion();

  // Client to server: decrypted and fed from the transport's own memory (buffer -1).
  reader_.received.clear();
  reader_.buffers.clear();
  ASSERT_EQ(client_->Write("EHLO a\r\n"), TlsStream::Result::kOk);
  ToServer();
  transport_.Pump(reader_, kNow);
  EXPECT_EQ(reader_.received, "EHLO a\r\n");
  EXPECT_EQ(reader_.buffers, (std::vector<int>{-1}));
  EXPECT_EQ(buffers_.held(), 0);  // every receive buffer, ciphertext included, went back

  // Server to client: encrypted.
  ASSERT_TRUE(transport_.Write("250 ok\r\n"));
  std::string ciphertext = ToClient();
  EXPECT_FALSE(absl::StrContains(ciphertext, "250 ok"));
  std::string received;
  while (client_->ReadPlaintext(&received, 16384) == TlsStream::Result::kOk) {
  }
  EXPECT_EQ(received, "250 ok\r\n");
  EXPECT_TRUE(transport_.ReleaseIdle());
}

TEST_F(TransportTlsTest, ReadsThatWaitForTheReaderKeepTheirPlaintext) {
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  ASSERT_TRUE(Handshake());
  reader_.take = 4;
  reader_.once = true;
  ASSERT_EQ(client_->Write("DATA\r\nQUIT\r\n"), TlsStream::Result::kOk);
  ToServer();
  transport_.Pump(reader_, kNow);
  EXPECT_EQ(reader_.received, "DATA");
  reader_.reading = true;
  reader_.take = SIZE_MAX;
  reader_.once = false;
  transport_.Pump(reader_, kNow);  // no new input: the rest of what was decrypted
  EXPECT_EQ(reader_.received, "DATA\r\nQUIT\r\n");
}

TEST_F(TransportTlsTest, CiphertextIsTakenOnlyABoundAheadOfAReaderThatWaits) {
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  ASSERT_TRUE(Handshake());
  reader_.reading = false;  // waiting for a commit, say
  const std::string body(4 * kTlsCiphertextMax, 'b');
  ASSERT_EQ(client_->Write(body), TlsStream::Result::kOk);
  std::string ciphertext;
  client_->TakeCiphertext(&ciphertext);
  for (size_t at = 0; at < ciphertext.size(); at += 16384) {
    std::string piece = ciphertext.substr(at, 16384);
    uint32_t length = static_cast<uint32_t>(piece.size());
    transport_.Received(buffers_.Put(std::move(piece)), length);
  }
  transport_.Pump(reader_, kNow);
  // At most kTlsCiphertextMax (and one receive) went into the TLS stream; the rest stays in
  // its receive buffers, held, so that the owner's budget sees it.
  EXPECT_TRUE(transport_.has_input());
  EXPECT_GE(buffers_.held(), static_cast<int>((ciphertext.size() - kTlsCiphertextMax) / 16384) - 1);
  reader_.reading = true;
  for (int round = 0; round < 64 && reader_.received.size() < body.size(); ++round) {
    transport_.Pump(reader_, kNow);
  }
  EXPECT_EQ(reader_.received.size(), body.size());
  EXPECT_EQ(buffers_.held(), 0);
}

TEST_F(TransportTlsTest, ABrokenRecordEndsTheInput) {
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  ASSERT_TRUE(Handshake());
  // A record that is not TLS after the handshake is a broken stream: no more input.
  transport_.Received(buffers_.Put(std::string(64, 'x')), 64);
  PumpResult result = transport_.Pump(reader_, kNow);
  EXPECT_TRUE(result.peer_closed);
  EXPECT_FALSE(result.close_notify);
  EXPECT_EQ(buffers_.held(), 0);
}

TEST_F(TransportTlsTest, AHandshakeOfGarbageFailsSayingWhy) {
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  transport_.Received(buffers_.Put("GET / HTTP/1.0\r\n\r\n"), 18);
  PumpResult result = transport_.Pump(reader_, kNow);
  EXPECT_TRUE(result.handshake_failed);
  EXPECT_FALSE(transport_.TlsError().empty());
  EXPECT_TRUE(reader_.received.empty());
  EXPECT_EQ(buffers_.held(), 0);
}

TEST_F(TransportTlsTest, AHandshakeIsOverdueAtItsDeadlineAndNotOnceDone) {
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  EXPECT_FALSE(transport_.HandshakeOverdue(kNow + absl::Seconds(9)));
  EXPECT_TRUE(transport_.HandshakeOverdue(kNow + absl::Seconds(10)));
  ASSERT_TRUE(Handshake());
  EXPECT_FALSE(transport_.HandshakeOverdue(kNow + absl::Hours(1)));
}

TEST_F(TransportTlsTest, ResetGivesTheInputBackAndEndsTheTls) {
  transport_.StartTls(std::make_unique<TlsStream>(context_), kNow + absl::Seconds(10));
  ASSERT_TRUE(Handshake());
  transport_.Write("250 ok\r\n");
  reader_.reading = false;
  transport_.Received(buffers_.Put("not yet read"), 12);
  transport_.Reset();
  EXPECT_EQ(buffers_.held(), 0);
  EXPECT_FALSE(transport_.tls());
  EXPECT_EQ(transport_.TlsVersion(), "none");
  EXPECT_TRUE(transport_.NextSend().empty());
  EXPECT_FALSE(transport_.HandshakeOverdue(kNow + absl::Hours(1)));
}

}  // namespace
}  // namespace chute::net
