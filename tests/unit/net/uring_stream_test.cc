// uring_stream_test.cc: unit tests for net::UringStream against a loopback peer in a thread:
// what a read leaves for the next, a peer's close, a refused connect, a timeout and a stop
// that leave nothing in the ring (the next stream on it works), a large write to a slow
// reader, and two streams on one loop whose tasks wait apart. (TLS and the SMTP exchanges over
// it: tests/unit/delivery/smtp_client_test.cc.)

#include "net/uring_stream.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace chute::net {
namespace {

// Peer: a listening socket on 127.0.0.1; Accept() takes one connection.
class Peer {
 public:
  Peer() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&in), sizeof(in)), 0);
    EXPECT_EQ(listen(fd_, 8), 0);
    socklen_t length = sizeof(in);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&in), &length);
    std::memcpy(&address_, &in, sizeof(in));
    length_ = sizeof(in);
    port_ = ntohs(in.sin_port);
  }
  ~Peer() { close(fd_); }
  int Accept() { return accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC); }
  const sockaddr_storage& address() const { return address_; }
  socklen_t length() const { return length_; }
  std::string name() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_;
  sockaddr_storage address_{};
  socklen_t length_ = 0;
  int port_ = 0;
};

class UringStreamTest : public testing::Test {
 protected:
  void SetUp() override {
    auto loop = io::Loop::Create(8);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }
  // Run: `task` to its end on the test's loop.
  template <typename T>
  T Run(io::Task<T> task) {
    return io::RunSync(*loop_, std::move(task));
  }
  UringStream::Ptr Connect(const Peer& peer, StreamOptions options = {}) {
    auto stream =
        Run(UringStream::Connect(loop_.get(), peer.address(), peer.length(), peer.name(), options));
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? *std::move(stream) : nullptr;
  }
  std::unique_ptr<io::Loop> loop_;
};

TEST_F(UringStreamTest, AReadTakesAtMostItsMaxAndLeavesTheRestForTheNext) {
  Peer peer;
  UringStream::Ptr stream = Connect(peer);
  ASSERT_NE(stream, nullptr);
  int fd = peer.Accept();
  ASSERT_EQ(write(fd, "hello world", 11), 11);
  std::string out;
  ASSERT_TRUE(Run(stream->Read(&out, 5, absl::Now() + absl::Seconds(5))).ok());
  EXPECT_EQ(out, "hello");
  ASSERT_TRUE(Run(stream->Read(&out, 100, absl::Now() + absl::Seconds(5))).ok());
  EXPECT_EQ(out, "hello world");
  ASSERT_TRUE(Run(stream->Write("ping")).ok());
  char buffer[8] = {};
  EXPECT_EQ(read(fd, buffer, sizeof(buffer)), 4);
  EXPECT_EQ(std::string(buffer, 4), "ping");
  close(fd);
}

TEST_F(UringStreamTest, APeersCloseIsAnIoFailureAndUnreadInput) {
  Peer peer;
  UringStream::Ptr stream = Connect(peer);
  ASSERT_NE(stream, nullptr);
  close(peer.Accept());
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (!stream->HasUnreadInput() && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_TRUE(stream->HasUnreadInput());
  std::string out;
  absl::Status status = Run(stream->Read(&out, 100, absl::Now() + absl::Seconds(5)));
  EXPECT_EQ(status.message(), absl::StrCat(peer.name(), " closed the connection"));
  EXPECT_EQ(stream->failure(), StreamFailure::kIo);
}

TEST_F(UringStreamTest, AReaderThatTakesTheCloseAsTheEndIsToldOfIt) {
  Peer peer;
  UringStream::Ptr stream = Connect(peer);
  ASSERT_NE(stream, nullptr);
  int fd = peer.Accept();
  ASSERT_EQ(write(fd, "all", 3), 3);
  close(fd);
  std::string out;
  bool closed = true;
  ASSERT_TRUE(Run(stream->Read(&out, 100, absl::Now() + absl::Seconds(5), &closed)).ok());
  EXPECT_EQ(out, "all");
  EXPECT_FALSE(closed);
  ASSERT_TRUE(Run(stream->Read(&out, 100, absl::Now() + absl::Seconds(5), &closed)).ok());
  EXPECT_TRUE(closed);
  EXPECT_EQ(out, "all") << "nothing appended at the close";
}

TEST_F(UringStreamTest, ARefusedConnectIsAConnectFailure) {
  std::string name;
  sockaddr_storage address{};
  socklen_t length = 0;
  {
    Peer gone;  // a port that was just free: nobody listens on it once closed
    address = gone.address();
    length = gone.length();
    name = gone.name();
  }
  auto stream = Run(UringStream::Connect(loop_.get(), address, length, name, StreamOptions{}));
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().message(), absl::StrCat("connect to ", name, ": Connection refused"));
}

TEST_F(UringStreamTest, ATimeoutAndAStopLeaveNothingInTheRing) {
  Peer peer;
  auto stop = std::make_shared<std::atomic<int64_t>>(0);
  StreamOptions options;
  options.stop_at_unix_ms = stop.get();
  UringStream::Ptr stream = Connect(peer, options);
  ASSERT_NE(stream, nullptr);
  int fd = peer.Accept();
  std::string out;
  absl::Status status = Run(
      stream->Read(&out, 100, absl::Now() + absl::Milliseconds(50), nullptr, "reading reply from"));
  EXPECT_EQ(status.message(), absl::StrCat("timeout reading reply from ", peer.name()));
  stop->store(absl::ToUnixMillis(absl::Now()));
  status =
      Run(stream->Read(&out, 100, absl::Now() + absl::Seconds(30), nullptr, "reading reply from"));
  EXPECT_EQ(status.message(),
            absl::StrCat("chuted is stopping: gave up reading reply from ", peer.name()));
  stream.reset();  // a receive is still armed: it is cancelled and awaited
  close(fd);
  // The loop serves the next stream, with no completion of the last one left over.
  UringStream::Ptr next = Connect(peer);
  ASSERT_NE(next, nullptr);
  fd = peer.Accept();
  ASSERT_EQ(write(fd, "x", 1), 1);
  ASSERT_TRUE(Run(next->Read(&out, 100, absl::Now() + absl::Seconds(5))).ok());
  EXPECT_EQ(out, "x");
  close(fd);
}

TEST_F(UringStreamTest, ALargeWriteToASlowReaderGoesWhole) {
  Peer peer;
  UringStream::Ptr stream = Connect(peer);
  ASSERT_NE(stream, nullptr);
  int fd = peer.Accept();
  const size_t size = 8 << 20;  // far more than the socket buffers take at once
  std::atomic<size_t> received{0};
  std::thread reader([&] {
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
      received += static_cast<size_t>(n);
      if (received < size / 4) {
        absl::SleepFor(absl::Microseconds(50));  // slow at first
      }
    }
  });
  EXPECT_TRUE(Run(stream->Write(std::string(size, 'a'))).ok());
  stream.reset();  // closes: the reader sees the end
  reader.join();
  EXPECT_EQ(received.load(), size);
  close(fd);
}

// ReadOnce: a task that reads once from `stream` into `out` and says when it is done.
io::Task<void> ReadOnce(UringStream* stream, std::string* out, bool* done) {
  absl::Status status = co_await stream->Read(out, 100, absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(status.ok()) << status;
  *done = true;
}

TEST_F(UringStreamTest, TwoStreamsOnOneLoopWaitApart) {
  Peer first_peer;
  Peer second_peer;
  UringStream::Ptr first = Connect(first_peer);
  UringStream::Ptr second = Connect(second_peer);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  int first_fd = first_peer.Accept();
  int second_fd = second_peer.Accept();
  std::string first_out;
  std::string second_out;
  bool first_done = false;
  bool second_done = false;
  loop_->Spawn(ReadOnce(first.get(), &first_out, &first_done));
  loop_->Spawn(ReadOnce(second.get(), &second_out, &second_done));
  EXPECT_EQ(loop_->tasks(), 2u);
  // Only the second peer speaks: its task ends while the first one still waits.
  ASSERT_EQ(write(second_fd, "two", 3), 3);
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (!second_done && absl::Now() < until) {
    loop_->Turn(absl::Milliseconds(50));
  }
  EXPECT_TRUE(second_done);
  EXPECT_EQ(second_out, "two");
  EXPECT_FALSE(first_done);
  EXPECT_EQ(loop_->tasks(), 1u);
  ASSERT_EQ(write(first_fd, "one", 3), 3);
  loop_->Run();
  EXPECT_TRUE(first_done);
  EXPECT_EQ(first_out, "one");
  close(first_fd);
  close(second_fd);
}

}  // namespace
}  // namespace chute::net
