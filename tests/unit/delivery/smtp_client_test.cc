// Tests of SmtpClient (the delivery stage's transport of smtp::ClientSession) against a fake
// SMTP/LMTP server that runs on loopback (port 0) in a thread of the test.

#include "delivery/smtp_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "delivery/verifier.h"
#include "net/tls.h"
#include "tests/unit/net/test_certificates.h"

namespace chute::delivery {
namespace {

// ---------------------------------------------------------------------------------------------
// A fake SMTP/LMTP server.

// How the fake server answers. The hooks run on the server thread.
struct FakeBehavior {
  bool lmtp = false;
  std::vector<std::string> extensions = {"PIPELINING"};
  // Set: STARTTLS is offered with this server context.
  std::shared_ptr<net::TlsContext> tls;
  // The handshake after STARTTLS is cut short: the server closes instead.
  bool break_tls = false;
  // The server closes the connection after reading the first bytes of the data.
  bool close_during_data = false;
  // The server waits this long before each read (a slow reader).
  absl::Duration read_pause = absl::ZeroDuration();
  // After this many messages on one connection the server says 421 and closes (0: never).
  int close_after_messages = 0;
  // on_command(connection, line): a reply instead of the default, or "" for the default, or
  // kClose to close without a reply. State changes follow the reply's class.
  std::function<std::string(int, const std::string&)> on_command;
  // on_data(connection, recipient): the reply after the data; LMTP asks once per accepted
  // recipient, SMTP once with recipient "". "" means the default 250.
  std::function<std::string(int, const std::string&)> on_data;
};

constexpr char kClose[] = "CLOSE";

struct ReceivedMessage {
  int connection = 0;
  std::string content;  // unstuffed
  std::string wire;     // as sent (DATA: stuffed, with the final dot)
  std::vector<std::string> recipients;
  bool tls = false;
};

class FakeServer {
 public:
  // FakeServer: listens on 127.0.0.1, port 0, or on the unix socket `unix_path` when set.
  explicit FakeServer(FakeBehavior behavior, std::string unix_path = "")
      : behavior_(std::move(behavior)), unix_path_(std::move(unix_path)) {
    bool ok = unix_path_.empty() ? ListenTcp() : ListenUnix();
    if (!ok) {
      std::abort();  // the test environment has no loopback or no writable temp dir
    }
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeServer() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
    if (!unix_path_.empty()) {
      unlink(unix_path_.c_str());
    }
  }

  std::string target() const {
    return unix_path_.empty() ? absl::StrCat("127.0.0.1:", port_) : "unix:" + unix_path_;
  }

  std::vector<std::vector<std::string>> commands() {
    std::lock_guard<std::mutex> lock(mu_);
    return commands_;
  }
  std::vector<ReceivedMessage> messages() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }
  bool saw_pipelining() {
    std::lock_guard<std::mutex> lock(mu_);
    return saw_pipelining_;
  }
  // WaitClosed: waits (bounded) until `count` connections have ended on the server side.
  bool WaitClosed(int count) {
    std::unique_lock<std::mutex> lock(mu_);
    return closed_changed_.wait_for(lock, std::chrono::seconds(10),
                                    [&] { return closed_ >= count; });
  }

 private:
  class Io;
  class Session;

  bool ListenTcp() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    bool ok = bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
              listen(listen_fd_, 16) == 0 &&
              getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    port_ = ntohs(address.sin_port);
    return ok;
  }
  bool ListenUnix() {
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (unix_path_.size() >= sizeof(address.sun_path)) {
      return false;
    }
    std::memcpy(address.sun_path, unix_path_.data(), unix_path_.size());
    return bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
           listen(listen_fd_, 16) == 0;
  }
  void Run();
  void Serve(int fd, int connection);

  void Record(int connection, const std::string& line, bool more_buffered) {
    std::lock_guard<std::mutex> lock(mu_);
    if (commands_.size() <= static_cast<size_t>(connection)) {
      commands_.resize(connection + 1);
    }
    commands_[connection].push_back(line);
    saw_pipelining_ = saw_pipelining_ || more_buffered;
  }

  FakeBehavior behavior_;
  std::string unix_path_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  // std::mutex rather than absl::Mutex: Debian's abseil is not built for ThreadSanitizer, which
  // then cannot see absl::Condition's synchronisation.
  std::mutex mu_;
  std::condition_variable closed_changed_;
  std::vector<std::vector<std::string>> commands_;  // guarded by mu_, as are the next ones
  std::vector<ReceivedMessage> messages_;
  bool saw_pipelining_ = false;
  int closed_ = 0;
};

// FakeServer::Io: a blocking socket, plain or TLS (server side), read in 100 ms slices so that
// the server notices stop_, and given up after 10 s so that a broken test cannot hang.
class FakeServer::Io {
 public:
  Io(int fd, const std::atomic<bool>* stop, absl::Duration pause = absl::ZeroDuration())
      : fd_(fd), stop_(stop), pause_(pause) {}
  bool tls() const { return tls_ != nullptr; }

  void Send(absl::string_view bytes) {
    std::string ciphertext;
    if (tls_ != nullptr) {
      tls_->Write(bytes);
      tls_->TakeCiphertext(&ciphertext);
      bytes = ciphertext;
    }
    while (!bytes.empty()) {
      ssize_t sent = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) {
        return;
      }
      bytes.remove_prefix(static_cast<size_t>(sent));
    }
  }

  // ReadMore: appends plaintext to `in`; false on EOF, error, timeout or stop.
  bool ReadMore(std::string* in) {
    if (tls_ == nullptr) {
      return RecvRaw(in);
    }
    while (true) {
      net::TlsStream::Result result = tls_->ReadPlaintext(in, 16384);
      Flush();
      if (result == net::TlsStream::Result::kOk) {
        return true;
      }
      std::string ciphertext;
      if (result != net::TlsStream::Result::kWantMore || !RecvRaw(&ciphertext)) {
        return false;
      }
      tls_->PutCiphertext(ciphertext);
    }
  }

  bool StartTls(std::shared_ptr<net::TlsContext> context) {
    tls_ = std::make_unique<net::TlsStream>(std::move(context));
    while (true) {
      net::TlsStream::Result result = tls_->Handshake();
      Flush();
      if (result == net::TlsStream::Result::kOk) {
        return true;
      }
      std::string ciphertext;
      if (result != net::TlsStream::Result::kWantMore || !RecvRaw(&ciphertext)) {
        return false;
      }
      tls_->PutCiphertext(ciphertext);
    }
  }

 private:
  void Flush() {
    std::string ciphertext;
    tls_->TakeCiphertext(&ciphertext);
    for (absl::string_view rest = ciphertext; !rest.empty();) {
      ssize_t sent = send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (sent <= 0) {
        return;
      }
      rest.remove_prefix(static_cast<size_t>(sent));
    }
  }

  bool RecvRaw(std::string* out) {
    for (int slice = 0; slice < 100 && !stop_->load(); ++slice) {
      pollfd entry{fd_, POLLIN, 0};
      if (poll(&entry, 1, 100) <= 0) {
        continue;
      }
      absl::SleepFor(pause_);
      char buffer[16384];
      ssize_t received = recv(fd_, buffer, sizeof(buffer), 0);
      if (received <= 0) {
        return false;
      }
      out->append(buffer, static_cast<size_t>(received));
      return true;
    }
    return false;
  }

  int fd_;
  const std::atomic<bool>* stop_;
  absl::Duration pause_;
  std::unique_ptr<net::TlsStream> tls_;
};

void FakeServer::Run() {
  int connection = 0;
  while (!stop_) {
    pollfd entry{listen_fd_, POLLIN, 0};
    if (poll(&entry, 1, 100) <= 0) {
      continue;
    }
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      continue;
    }
    Serve(fd, connection++);
    close(fd);
    std::lock_guard<std::mutex> lock(mu_);
    ++closed_;
    closed_changed_.notify_all();
  }
}

std::string Unstuff(absl::string_view wire) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(wire, "\r\n")) {
    if (absl::StartsWith(line, ".")) {
      line.remove_prefix(1);
    }
    absl::StrAppend(&out, line, "\r\n");
  }
  out.resize(out.size() - 2);  // StrSplit's last piece follows the last CRLF
  return out;
}

std::string Address(const std::string& line) {
  size_t open = line.find('<');
  size_t close = line.rfind('>');
  return open == std::string::npos || close == std::string::npos
             ? ""
             : line.substr(open + 1, close - open - 1);
}

// FakeServer::Session: one connection's state on the server thread.
class FakeServer::Session {
 public:
  Session(FakeServer* server, int fd, int connection)
      : server_(server),
        behavior_(server->behavior_),
        io_(fd, &server->stop_, server->behavior_.read_pause),
        connection_(connection) {}

  void Run() {
    io_.Send("220 fake.test ready\r\n");
    std::string line;
    while (ReadLine(&line)) {
      server_->Record(connection_, line, !in_.empty());
      std::string reply = behavior_.on_command ? behavior_.on_command(connection_, line) : "";
      Next next = reply == kClose ? Next::kClose : Answer(line, &reply);
      if (next == Next::kClose) {
        return;
      }
      if (next == Next::kNoReply) {
        continue;
      }
      io_.Send((reply.empty() ? "250 2.0.0 OK" : reply) + "\r\n");
      if (absl::StartsWith(reply, "421") || absl::StrContains(reply, "\r\n421 ")) {
        return;
      }
    }
  }

 private:
  bool ReadLine(std::string* line) {
    size_t end;
    while ((end = in_.find("\r\n")) == std::string::npos) {
      if (!io_.ReadMore(&in_)) {
        return false;
      }
    }
    *line = in_.substr(0, end);
    in_.erase(0, end + 2);
    return true;
  }

  enum class Next { kReply, kNoReply, kClose };

  // Answer: the state change and default reply for `line` (`reply` is the hook's, or "").
  Next Answer(const std::string& line, std::string* reply) {
    std::string verb = line.substr(0, line.find(' '));
    bool positive = reply->empty() || (*reply)[0] == '2' || (*reply)[0] == '3';
    if (verb == "EHLO" || verb == "LHLO") {
      *reply = reply->empty() ? EhloReply() : *reply;
      if ((verb == "LHLO") != behavior_.lmtp) {
        *reply = "500 5.5.1 wrong greeting for this protocol";
      }
    } else if (verb == "STARTTLS" && reply->empty()) {
      io_.Send("220 2.0.0 go ahead\r\n");
      // Anything pipelined after STARTTLS would be an injection: the server hangs up.
      bool ok = !behavior_.break_tls && in_.empty() && io_.StartTls(behavior_.tls);
      return ok ? Next::kNoReply : Next::kClose;
    } else if (verb == "MAIL") {
      mail_ = positive;
      recipients_.clear();
    } else if (verb == "RCPT") {
      if (!mail_) {
        *reply = "503 5.5.1 MAIL first";
      } else if (positive) {
        recipients_.push_back(Address(line));
      }
    } else if (verb == "RSET") {
      mail_ = false;
      recipients_.clear();
    } else if (verb == "QUIT") {
      *reply = "221 2.0.0 bye";
      io_.Send(*reply + "\r\n");
      return Next::kClose;
    } else if ((verb == "DATA" || verb == "BDAT") && reply->empty()) {
      return Receive(verb, line, reply) ? Next::kReply : Next::kClose;
    }
    return Next::kReply;
  }

  std::string EhloReply() const {
    std::vector<std::string> lines = {"fake.test"};
    lines.insert(lines.end(), behavior_.extensions.begin(), behavior_.extensions.end());
    if (behavior_.tls != nullptr && !io_.tls()) {
      lines.push_back("STARTTLS");
    }
    std::string reply;
    for (size_t i = 0; i < lines.size(); ++i) {
      absl::StrAppend(&reply, "250", i + 1 == lines.size() ? " " : "-", lines[i]);
      absl::StrAppend(&reply, i + 1 == lines.size() ? "" : "\r\n");
    }
    return reply;
  }

  // Receive: DATA or BDAT; records the message and sets the reply (LMTP: one per recipient).
  bool Receive(const std::string& verb, const std::string& line, std::string* reply) {
    uint64_t size = 0;
    if (verb == "BDAT" && !absl::SimpleAtoi(line.substr(5, line.find(' ', 5) - 5), &size)) {
      return false;
    }
    if (recipients_.empty()) {
      *reply = "554 5.5.1 no valid recipients";
      if (verb == "BDAT" && ReadBytes(size)) {
        in_.erase(0, size);  // RFC 3030: the refused chunk is read and discarded
      }
      return true;
    }
    ReceivedMessage message{connection_, "", "", recipients_, io_.tls()};
    if (verb == "DATA") {
      io_.Send("354 go ahead\r\n");
      if (behavior_.close_during_data) {
        io_.ReadMore(&in_);
        return false;
      }
      size_t end;
      while ((end = ("\r\n" + in_).find("\r\n.\r\n")) == std::string::npos) {
        if (!io_.ReadMore(&in_)) {
          return false;
        }
      }
      message.wire = in_.substr(0, end + 3);
      message.content = Unstuff(in_.substr(0, end));
      in_.erase(0, end + 3);
    } else {
      if (!ReadBytes(size)) {
        return false;
      }
      message.wire = message.content = in_.substr(0, size);
      in_.erase(0, size);
    }
    {
      std::lock_guard<std::mutex> lock(server_->mu_);
      server_->messages_.push_back(message);
    }
    *reply = DataReplies();
    return true;
  }

  bool ReadBytes(uint64_t size) {
    while (in_.size() < size) {
      if (!io_.ReadMore(&in_)) {
        return false;
      }
    }
    return true;
  }

  std::string DataReplies() {
    std::string reply;
    if (behavior_.lmtp) {
      for (const std::string& recipient : recipients_) {
        std::string each = behavior_.on_data ? behavior_.on_data(connection_, recipient) : "";
        absl::StrAppend(&reply, reply.empty() ? "" : "\r\n",
                        each.empty() ? "250 2.0.0 delivered" : each);
      }
    } else {
      reply = behavior_.on_data ? behavior_.on_data(connection_, "") : "";
      reply = reply.empty() ? "250 2.0.0 OK" : reply;
    }
    mail_ = false;
    recipients_.clear();
    if (++messages_here_ == behavior_.close_after_messages) {
      reply += "\r\n421 4.4.2 fake.test idle too long";  // as if it came a while later
    }
    return reply;
  }

  FakeServer* server_;
  const FakeBehavior& behavior_;
  Io io_;
  int connection_;
  std::string in_;
  bool mail_ = false;
  int messages_here_ = 0;
  std::vector<std::string> recipients_;
};

void FakeServer::Serve(int fd, int connection) { Session(this, fd, connection).Run(); }

// ---------------------------------------------------------------------------------------------
// SmtpClient against the fake server.

SmtpClientOptions Options(const std::string& target, bool lmtp = false) {
  SmtpClientOptions options;
  options.lmtp = lmtp;
  options.targets = {target};
  options.helo_name = "chute.test";
  options.tls = DeliveryTls::kOff;
  options.io_timeout = absl::Seconds(10);  // only bounds a broken test
  return options;
}

OutboundMessage Message(std::vector<std::string> recipients,
                        std::string content = "Subject: hi\r\n\r\nhello\r\n",
                        std::string sender = "alice@a.test") {
  OutboundMessage message;
  message.id = "Q1";
  message.sender = std::move(sender);
  message.recipients = std::move(recipients);
  for (uint32_t i = 0; i < message.recipients.size(); ++i) {
    message.recipient_indexes.push_back(i);
  }
  message.content = std::move(content);
  return message;
}

std::vector<Outcome> Outcomes(const OutboundMessage& message) {
  std::vector<Outcome> outcomes;
  for (const RecipientResult& result : message.results) {
    outcomes.push_back(result.outcome);
  }
  return outcomes;
}

std::unique_ptr<SmtpClient> NewClient(SmtpClientOptions options) {
  std::shared_ptr<net::TlsContext> tls =
      options.tls == DeliveryTls::kOff ? nullptr : net::TlsContext::NewUnverifiedClient();
  return std::make_unique<SmtpClient>(std::move(options), std::move(tls));
}

std::vector<std::string> Verbs(const std::vector<std::string>& lines) {
  std::vector<std::string> verbs;
  for (const std::string& line : lines) {
    verbs.push_back(line.substr(0, line.find(' ')));
  }
  return verbs;
}

using Strs = std::vector<std::string>;
constexpr Outcome kOk = Outcome::kDelivered;
constexpr Outcome kTemp = Outcome::kTransient;
constexpr Outcome kPerm = Outcome::kPermanent;

TEST(LmtpClientTest, PerRecipientOutcomesAtRcptAndAfterData) {
  FakeBehavior behavior;
  behavior.lmtp = true;
  behavior.on_command = [](int, const std::string& line) -> std::string {
    return line == "RCPT TO:<bob@b.test>" ? "550 5.1.1 <bob@b.test>: user unknown" : "";
  };
  behavior.on_data = [](int, const std::string& recipient) -> std::string {
    return recipient == "carol@b.test" ? "452 4.2.2 <carol@b.test>: mailbox full" : "";
  };
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target(), /*lmtp=*/true));
  OutboundMessage message = Message({"dave@b.test", "bob@b.test", "carol@b.test"});
  DeliverNow(*client, {&message});

  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk, kPerm, kTemp}));
  EXPECT_EQ(message.results[0].reply, "250 2.0.0 delivered");
  EXPECT_EQ(message.results[1].reply, "550 5.1.1 <bob@b.test>: user unknown");
  EXPECT_EQ(message.results[2].reply, "452 4.2.2 <carol@b.test>: mailbox full");
  client.reset();
  ASSERT_TRUE(server.WaitClosed(1));
  EXPECT_EQ(server.commands()[0],
            (Strs{"LHLO chute.test", "MAIL FROM:<alice@a.test>", "RCPT TO:<dave@b.test>",
                  "RCPT TO:<bob@b.test>", "RCPT TO:<carol@b.test>", "DATA", "QUIT"}));
  EXPECT_TRUE(server.saw_pipelining());
  ASSERT_EQ(server.messages().size(), 1u);
  EXPECT_EQ(server.messages()[0].content, message.content);
  EXPECT_EQ(server.messages()[0].recipients, (Strs{"dave@b.test", "carol@b.test"}));
}

TEST(SmtpClientTest, PipeliningAndChunkingSendBdatWithTheEnvelope) {
  FakeBehavior behavior;
  behavior.extensions = {"PIPELINING", "CHUNKING", "SIZE 100000", "8BITMIME"};
  behavior.on_data = [](int, const std::string&) { return std::string("250 2.0.0 queued as X"); };
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  std::string content = "Subject: caf\xc3\xa9\r\n\r\n.line\r\n";
  OutboundMessage message = Message({"b@b.test", "c@b.test"}, content);
  DeliverNow(*client, {&message});

  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk, kOk}));
  EXPECT_EQ(message.results[1].reply, "250 2.0.0 queued as X");
  client.reset();
  ASSERT_TRUE(server.WaitClosed(1));
  EXPECT_EQ(server.commands()[0],
            (Strs{"EHLO chute.test",
                  absl::StrCat("MAIL FROM:<alice@a.test> SIZE=", content.size(), " BODY=8BITMIME"),
                  "RCPT TO:<b@b.test>", "RCPT TO:<c@b.test>",
                  absl::StrCat("BDAT ", content.size(), " LAST"), "QUIT"}));
  EXPECT_TRUE(server.saw_pipelining());
  ASSERT_EQ(server.messages().size(), 1u);
  EXPECT_EQ(server.messages()[0].wire, content);  // BDAT: no dot-stuffing
}

TEST(LmtpClientTest, UnixSocketTarget) {
  std::string dir = ::testing::TempDir() + "/lmtp.XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  {
    FakeBehavior behavior;
    behavior.lmtp = true;
    FakeServer server(behavior, dir + "/lmtp");
    auto client = NewClient(Options(server.target(), /*lmtp=*/true));
    OutboundMessage message = Message({"b@b.test", "c@b.test"});
    DeliverNow(*client, {&message});
    EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk, kOk}));
  }
  rmdir(dir.c_str());
}

TEST(LmtpClientTest, ChunkingIsNotUsedForLmtp) {
  FakeBehavior behavior;
  behavior.lmtp = true;
  behavior.extensions = {"PIPELINING", "CHUNKING"};
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target(), /*lmtp=*/true));
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"LHLO", "MAIL", "RCPT", "DATA"}));
}

TEST(SmtpClientTest, WithoutPipeliningOneCommandAtATime) {
  FakeBehavior behavior;
  behavior.extensions = {};
  behavior.on_command = [](int, const std::string& line) -> std::string {
    return line == "RCPT TO:<x@b.test>" ? "450 4.2.1 try later" : "";
  };
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test", "x@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk, kTemp}));
  EXPECT_EQ(message.results[1].reply, "450 4.2.1 try later");
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "MAIL", "RCPT", "RCPT", "DATA"}));
  EXPECT_FALSE(server.saw_pipelining());
  ASSERT_EQ(server.messages().size(), 1u);
  EXPECT_EQ(server.messages()[0].content, message.content);
}

TEST(SmtpClientTest, DotStuffingSurvivesTheTrip) {
  for (bool pipelining : {false, true}) {
    FakeBehavior behavior;
    behavior.extensions = pipelining ? Strs{"PIPELINING"} : Strs{};
    FakeServer server(behavior);
    auto client = NewClient(Options(server.target()));
    OutboundMessage message = Message({"b@b.test"}, "Subject: dots\r\n\r\n.\r\n..x\r\n.");
    DeliverNow(*client, {&message});
    EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
    ASSERT_EQ(server.messages().size(), 1u);
    // The missing final CRLF is added; nothing else changes.
    EXPECT_EQ(server.messages()[0].content, message.content + "\r\n");
    EXPECT_EQ(server.messages()[0].wire, "Subject: dots\r\n\r\n..\r\n...x\r\n..\r\n.\r\n");
  }
}

TEST(SmtpClientTest, NullSenderIsSentAsEmptyBrackets) {
  FakeServer server(FakeBehavior{});
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test"}, "x\r\n", "");
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(server.commands()[0][1], "MAIL FROM:<>");
}

TEST(SmtpClientTest, MailRefusedSettlesEveryRecipient) {
  for (bool pipelining : {false, true}) {
    FakeBehavior behavior;
    behavior.extensions = pipelining ? Strs{"PIPELINING"} : Strs{};
    behavior.on_command = [](int, const std::string& line) -> std::string {
      return absl::StartsWith(line, "MAIL") ? "550 5.7.1 sender rejected" : "";
    };
    FakeServer server(behavior);
    auto client = NewClient(Options(server.target()));
    OutboundMessage message = Message({"b@b.test", "c@b.test"});
    DeliverNow(*client, {&message});
    EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kPerm, kPerm})) << pipelining;
    EXPECT_EQ(message.results[1].reply, "550 5.7.1 sender rejected");
    EXPECT_TRUE(server.messages().empty());
    // The connection stays usable.
    OutboundMessage second = Message({"b@b.test"});
    DeliverNow(*client, {&second});
    EXPECT_EQ(client->connections_opened(), 1u);
  }
}

TEST(SmtpClientTest, EveryRcptRefusedResetsWithoutData) {
  for (bool pipelining : {false, true}) {
    FakeBehavior behavior;
    behavior.extensions = pipelining ? Strs{"PIPELINING"} : Strs{};
    behavior.on_command = [](int, const std::string& line) -> std::string {
      return absl::StartsWith(line, "RCPT") ? "550 5.1.1 no such user" : "";
    };
    FakeServer server(behavior);
    auto client = NewClient(Options(server.target()));
    OutboundMessage message = Message({"b@b.test", "c@b.test"});
    DeliverNow(*client, {&message});
    EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kPerm, kPerm}));
    EXPECT_TRUE(server.messages().empty());
    Strs expected = pipelining ? Strs{"EHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET"}
                               : Strs{"EHLO", "MAIL", "RCPT", "RCPT", "RSET"};
    client.reset();
    ASSERT_TRUE(server.WaitClosed(1));
    expected.push_back("QUIT");
    EXPECT_EQ(Verbs(server.commands()[0]), expected) << pipelining;
  }
}

// RefusingPort: a bound socket that does not listen refuses connections, and keeps its port.
struct RefusingPort {
  RefusingPort() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
    target = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  }
  ~RefusingPort() { close(fd); }
  int fd = -1;
  std::string target;
};

TEST(SmtpClientTest, ConnectionRefusedIsTransientForTheWholeBatch) {
  RefusingPort port;
  const std::string& target = port.target;
  auto client = NewClient(Options(target));
  OutboundMessage first = Message({"b@b.test", "c@b.test"});
  OutboundMessage second = Message({"d@b.test"});
  DeliverNow(*client, {&first, &second});
  EXPECT_EQ(Outcomes(first), (std::vector<Outcome>{kTemp, kTemp}));
  EXPECT_EQ(Outcomes(second), (std::vector<Outcome>{kTemp}));
  EXPECT_EQ(first.results[0].reply,
            absl::StrCat("451 4.4.1 connect to ", target, ": Connection refused"));
  EXPECT_EQ(second.results[0].reply, first.results[0].reply);
  EXPECT_EQ(client->connections_opened(), 0u);
  EXPECT_FALSE(client->connected());
}

// SilentPort: listens and never accepts: connections complete, no greeting comes. Accepted()
// counts the connections made to it since the last call.
struct SilentPort {
  SilentPort() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(listen(fd, 64), 0);
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
    target = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  }
  ~SilentPort() { close(fd); }
  int Accepted() {
    int n = 0;
    for (int c; (c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0; ++n) {
      close(c);
    }
    return n;
  }
  int fd = -1;
  std::string target;
};

TEST(SmtpClientTest, SilentServerTimesOut) {
  SilentPort port;  // the connection completes, the greeting never comes
  SmtpClientOptions options = Options(port.target);
  options.io_timeout = absl::Milliseconds(100);
  auto client = NewClient(options);
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp}));
  EXPECT_EQ(message.results[0].reply,
            absl::StrCat("451 4.4.2 timeout reading reply from ", options.targets[0]));
}

TEST(SmtpClientTest, AMessageSlowerToSendThanTheTimeoutStillGetsItsReply) {
  // io_timeout bounds each wait, not the whole message: 4 MB to a reader that takes 16 KB
  // every 2 ms needs about half a second, more than the 200 ms timeout. Over a unix socket,
  // whose buffers do not grow, most of the message waits for the reader.
  std::string dir = ::testing::TempDir() + "/slow.XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  std::string content;
  for (int i = 0; i < 4 * 1024 * 1024 / 80; ++i) {
    content += std::string(78, 'a') + "\r\n";
  }
  for (bool chunking : {false, true}) {
    FakeBehavior behavior;
    behavior.read_pause = absl::Milliseconds(2);
    if (chunking) {
      behavior.extensions.push_back("CHUNKING");
    }
    {
      FakeServer server(behavior, dir + "/smtp");
      SmtpClientOptions options = Options(server.target());
      options.io_timeout = absl::Milliseconds(200);
      auto client = NewClient(options);
      OutboundMessage message = Message({"b@b.test"}, content);
      absl::Time start = absl::Now();
      DeliverNow(*client, {&message});
      EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}))
          << (chunking ? "BDAT: " : "DATA: ") << message.results[0].reply;
      EXPECT_GT(absl::Now() - start, options.io_timeout) << "the test must outlast the timeout";
    }
    unlink((dir + "/smtp").c_str());
  }
  rmdir(dir.c_str());
}

TEST(SmtpClientTest, ServerClosingMidDataIsTransientAndDropsTheConnection) {
  FakeBehavior behavior;
  behavior.close_during_data = true;
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test", "c@b.test"}, std::string(100000, 'x'));
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp, kTemp}));
  EXPECT_TRUE(absl::StartsWith(message.results[0].reply, "451 4.4.2 ")) << message.results[0].reply;
  EXPECT_FALSE(client->connected());
}

TEST(SmtpClientTest, Reply421IsTransientAndTheNextDeliverReconnects) {
  FakeBehavior behavior;
  behavior.on_command = [](int connection, const std::string& line) -> std::string {
    return connection == 0 && line == "RCPT TO:<c@b.test>" ? "421 4.3.2 shutting down" : "";
  };
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test", "c@b.test", "d@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp, kTemp, kTemp}));
  EXPECT_EQ(message.results[0].reply, "421 4.3.2 shutting down");
  EXPECT_EQ(message.results[2].reply, "421 4.3.2 shutting down");
  EXPECT_FALSE(client->connected());
  OutboundMessage again = Message({"b@b.test", "c@b.test", "d@b.test"});
  DeliverNow(*client, {&again});
  EXPECT_EQ(Outcomes(again), (std::vector<Outcome>{kOk, kOk, kOk}));
  EXPECT_EQ(client->connections_opened(), 2u);
}

TEST(SmtpClientTest, AnUnreachableTargetGivesWayToTheNextInOrder) {
  RefusingPort down;
  FakeServer server(FakeBehavior{});
  SmtpClientOptions options = Options(down.target);
  options.targets.push_back(server.target());
  auto client = NewClient(options);
  OutboundMessage first = Message({"b@b.test"});
  DeliverNow(*client, {&first});
  EXPECT_EQ(Outcomes(first), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(client->target(), server.target());
  EXPECT_EQ(client->connections_opened(), 1u);
}

TEST(SmtpClientTest, WhenEveryTargetFailsTheReplyNamesEach) {
  RefusingPort a;
  RefusingPort b;
  SmtpClientOptions options = Options(a.target);
  options.targets.push_back(b.target);
  auto client = NewClient(options);
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp}));
  EXPECT_EQ(message.results[0].reply,
            absl::StrCat("451 4.4.1 connect to ", a.target, ": Connection refused; 451 4.4.1 ",
                         "connect to ", b.target, ": Connection refused"));
}

TEST(SmtpClientTest, ATargetThatFailedLatelyIsTriedLast) {
  // A black hole: the kernel completes connections to a listening socket nobody accepts on,
  // and no greeting ever comes. Each attempt costs io_timeout.
  SilentPort hole;
  FakeServer server(FakeBehavior{});
  SmtpClientOptions options = Options(hole.target);
  options.targets.push_back(server.target());
  options.io_timeout = absl::Milliseconds(200);
  options.messages_per_connection_max = 1;  // every message connects again
  // Two workers of one route share what they learn of its targets.
  options.health = std::make_shared<TargetHealth>(options.targets.size());
  auto client = NewClient(options);
  auto other_worker = NewClient(options);
  OutboundMessage first = Message({"b@b.test"});
  OutboundMessage second = Message({"c@b.test"});
  OutboundMessage third = Message({"d@b.test"});
  DeliverNow(*client, {&first});
  DeliverNow(*client, {&second});
  DeliverNow(*other_worker, {&third});
  EXPECT_EQ(Outcomes(first), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(Outcomes(second), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(Outcomes(third), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(client->target(), server.target());
  // The black hole was tried once, by the first message; the others, on either worker, went
  // straight on.
  EXPECT_EQ(hole.Accepted(), 1);
}

TEST(SmtpClientTest, ConnectionIsReusedAcrossDeliverCalls) {
  FakeServer server(FakeBehavior{});
  auto client = NewClient(Options(server.target()));
  OutboundMessage first = Message({"b@b.test"});
  OutboundMessage second = Message({"c@b.test"});
  DeliverNow(*client, {&first});
  DeliverNow(*client, {&second});
  EXPECT_EQ(Outcomes(first), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(Outcomes(second), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(client->connections_opened(), 1u);
  client.reset();
  ASSERT_TRUE(server.WaitClosed(1));
  ASSERT_EQ(server.commands().size(), 1u);
  // A completed transaction needs no RSET before the next one.
  EXPECT_EQ(Verbs(server.commands()[0]),
            (Strs{"EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"}));
}

TEST(SmtpClientTest, MessagesPerConnectionMaxStartsANewConnection) {
  FakeServer server(FakeBehavior{});
  SmtpClientOptions options = Options(server.target());
  options.messages_per_connection_max = 2;
  auto client = NewClient(options);
  std::vector<OutboundMessage> messages;
  for (int i = 0; i < 5; ++i) {
    messages.push_back(Message({absl::StrCat("r", i, "@b.test")}));
  }
  std::vector<OutboundMessage*> batch;
  for (OutboundMessage& message : messages) {
    batch.push_back(&message);
  }
  DeliverNow(*client, batch);
  for (const OutboundMessage& message : messages) {
    EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
  }
  EXPECT_EQ(client->connections_opened(), 3u);
  client.reset();
  ASSERT_TRUE(server.WaitClosed(3));
  std::vector<std::vector<std::string>> commands = server.commands();
  ASSERT_EQ(commands.size(), 3u);
  EXPECT_EQ(Verbs(commands[0]),
            (Strs{"EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"}));
  EXPECT_EQ(Verbs(commands[2]), (Strs{"EHLO", "MAIL", "RCPT", "DATA", "QUIT"}));
}

TEST(SmtpClientTest, ConnectionClosedByTheServerWhileIdleIsReplaced) {
  FakeBehavior behavior;
  behavior.close_after_messages = 1;
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  OutboundMessage first = Message({"b@b.test"});
  DeliverNow(*client, {&first});
  EXPECT_EQ(Outcomes(first), (std::vector<Outcome>{kOk}));
  ASSERT_TRUE(server.WaitClosed(1));
  // The 421 and the close are noticed before the next message, which is not harmed.
  OutboundMessage second = Message({"c@b.test"});
  DeliverNow(*client, {&second});
  EXPECT_EQ(Outcomes(second), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(client->connections_opened(), 2u);
}

TEST(SmtpClientTest, CloseIdleSendsQuitOnceIdleLongEnough) {
  FakeServer server(FakeBehavior{});
  SmtpClientOptions options = Options(server.target());
  options.idle_timeout = absl::Seconds(30);
  auto client = NewClient(options);
  OutboundMessage first = Message({"b@b.test"});
  DeliverNow(*client, {&first});
  CloseIdleNow(*client, absl::Now() + absl::Seconds(31));
  EXPECT_FALSE(client->connected());
  ASSERT_TRUE(server.WaitClosed(1));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "MAIL", "RCPT", "DATA", "QUIT"}));
}

TEST(SmtpClientTest, CloseIdleKeepsAFreshConnection) {
  FakeServer server(FakeBehavior{});
  SmtpClientOptions options = Options(server.target());
  options.idle_timeout = absl::Hours(1);
  auto client = NewClient(options);
  OutboundMessage first = Message({"b@b.test"});
  DeliverNow(*client, {&first});
  CloseIdleNow(*client, absl::Now());
  EXPECT_TRUE(client->connected());
}

TEST(SmtpClientTest, EhloRefusedFallsBackToHelo) {
  FakeBehavior behavior;
  behavior.on_command = [](int, const std::string& line) -> std::string {
    return absl::StartsWith(line, "EHLO") ? "502 5.5.2 what?" : "";
  };
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "HELO", "MAIL", "RCPT", "DATA"}));
  EXPECT_FALSE(server.saw_pipelining());
}

TEST(SmtpClientTest, RequiredTlsNotOfferedIsTransient) {
  FakeServer server(FakeBehavior{});
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kRequired;
  auto client = NewClient(options);
  OutboundMessage message = Message({"b@b.test", "c@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp, kTemp}));
  EXPECT_EQ(message.results[0].reply,
            absl::StrCat("451 4.7.5 ", server.target(), ": STARTTLS not offered"));
  ASSERT_TRUE(server.WaitClosed(1));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "QUIT"}));
  EXPECT_TRUE(server.messages().empty());
}

// SelfSignedServer: a fresh self-signed certificate for CN=localhost and its key
// (net::SelfSigned: PEM files in a temporary directory, the key 0600), loaded into a server
// context; the certificate's file stays, as a client's CA file, until the object goes.
// `context` is null on failure.
struct SelfSignedServer {
  SelfSignedServer() {
    if (!files.ok) {
      return;
    }
    absl::StatusOr<std::shared_ptr<net::TlsContext>> loaded =
        net::TlsContext::Load(files.cert_path, files.key_path);
    if (loaded.ok()) {
      context = *loaded;
    }
  }

  net::SelfSigned files;
  const std::string& cert_path = files.cert_path;
  std::shared_ptr<net::TlsContext> context;
};

// VerifyingClient: an SmtpClient whose TLS context verifies as MakeSmtpClientFactory's does
// (enforcing for tls = required), trusting `server`'s certificate.
std::unique_ptr<SmtpClient> VerifyingClient(SmtpClientOptions options,
                                            const SelfSignedServer& server) {
  net::TlsClientOptions verify;
  verify.ca_file = server.cert_path;
  verify.enforce = options.tls == DeliveryTls::kRequired;
  absl::StatusOr<std::shared_ptr<net::TlsContext>> context = net::TlsContext::NewClient(verify);
  EXPECT_TRUE(context.ok()) << context.status();
  return std::make_unique<SmtpClient>(std::move(options), context.ok() ? *context : nullptr);
}

TEST(SmtpClientTest, StartTlsEncryptsAndRepeatsEhlo) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  behavior.extensions = {"PIPELINING", "CHUNKING"};
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kRequired;
  options.tls_server_name = "localhost";
  auto client = VerifyingClient(options, tls);
  OutboundMessage first = Message({"b@b.test"}, "Subject: secret\r\n\r\n.\r\n");
  OutboundMessage second = Message({"c@b.test"});
  DeliverNow(*client, {&first});
  DeliverNow(*client, {&second});
  EXPECT_EQ(Outcomes(first), (std::vector<Outcome>{kOk})) << first.results[0].reply;
  EXPECT_EQ(Outcomes(second), (std::vector<Outcome>{kOk}));
  client.reset();
  ASSERT_TRUE(server.WaitClosed(1));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "BDAT",
                                               "MAIL", "RCPT", "BDAT", "QUIT"}));
  std::vector<ReceivedMessage> messages = server.messages();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_TRUE(messages[0].tls);
  EXPECT_EQ(messages[0].content, first.content);
}

// Issue 16, finding 4: with tls = required a certificate for another name got the message.
TEST(SmtpClientTest, RequiredTlsRefusesACertificateForAnotherName) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kRequired;
  options.tls_server_name = "mx.example.test";
  auto client = VerifyingClient(options, tls);
  OutboundMessage message = Message({"b@b.test", "c@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp, kTemp}));
  EXPECT_EQ(message.results[0].reply,
            absl::StrCat("451 4.7.5 TLS handshake with ", server.target(),
                         " failed: name mismatch: certificate is for localhost, expected "
                         "mx.example.test"));
  ASSERT_TRUE(server.WaitClosed(1));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "STARTTLS"}));
  EXPECT_TRUE(server.messages().empty());
}

TEST(SmtpClientTest, TheNameExpectedByDefaultIsTheTargetsAddress) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kRequired;
  auto client = VerifyingClient(options, tls);
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp}));
  EXPECT_TRUE(absl::EndsWith(message.results[0].reply,
                             "name mismatch: certificate is for localhost, expected 127.0.0.1"))
      << message.results[0].reply;
}

TEST(SmtpClientTest, RequiredTlsDoesNotDeliverOverAContextThatDidNotVerify) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kRequired;
  auto client = std::make_unique<SmtpClient>(options, net::TlsContext::NewUnverifiedClient());
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp}));
  EXPECT_EQ(message.results[0].reply, absl::StrCat("451 4.7.5 TLS with ", server.target(),
                                                   ": the server's certificate was not verified"));
  EXPECT_TRUE(server.messages().empty());
}

TEST(SmtpClientTest, OpportunisticTlsDeliversOverTlsWhateverTheCertificate) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kOpportunistic;
  options.tls_server_name = "mx.example.test";
  auto client = VerifyingClient(options, tls);
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
  ASSERT_EQ(server.messages().size(), 1u);
  EXPECT_TRUE(server.messages()[0].tls);
}

TEST(SmtpClientTest, OpportunisticTlsFallsBackToPlainTextWhenTheHandshakeFails) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  behavior.break_tls = true;
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kOpportunistic;
  auto client = VerifyingClient(options, tls);
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
  EXPECT_EQ(client->connections_opened(), 2u);
  std::vector<std::vector<std::string>> commands = server.commands();
  ASSERT_EQ(commands.size(), 2u);
  EXPECT_EQ(Verbs(commands[0]), (Strs{"EHLO", "STARTTLS"}));
  EXPECT_EQ(Verbs(commands[1]), (Strs{"EHLO", "MAIL", "RCPT", "DATA"}));
  EXPECT_FALSE(server.messages()[0].tls);
}

TEST(SmtpClientTest, RequiredTlsWithAFailedHandshakeIsTransient) {
  SelfSignedServer tls;
  ASSERT_NE(tls.context, nullptr);
  FakeBehavior behavior;
  behavior.tls = tls.context;
  behavior.break_tls = true;
  FakeServer server(behavior);
  SmtpClientOptions options = Options(server.target());
  options.tls = DeliveryTls::kRequired;
  options.tls_server_name = "localhost";
  auto client = VerifyingClient(options, tls);
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kTemp}));
  EXPECT_TRUE(absl::StartsWith(message.results[0].reply, "451 4.")) << message.results[0].reply;
  EXPECT_EQ(client->connections_opened(), 1u);
  EXPECT_TRUE(server.messages().empty());
}

TEST(SmtpClientTest, MessageOverTheServersSizeLimitIsPermanent) {
  FakeBehavior behavior;
  behavior.extensions = {"SIZE 10"};
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test"}, std::string(11, 'x'));
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kPerm}));
  EXPECT_TRUE(absl::StartsWith(message.results[0].reply, "552 5.3.4 ")) << message.results[0].reply;
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO"}));
}

TEST(SmtpClientTest, AddressWithALineBreakIsNeverSent) {
  FakeServer server(FakeBehavior{});
  auto client = NewClient(Options(server.target()));
  OutboundMessage message = Message({"b@b.test\r\nRSET", "c@b.test"});
  DeliverNow(*client, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kPerm, kOk}));
  EXPECT_EQ(Verbs(server.commands()[0]), (Strs{"EHLO", "MAIL", "RCPT", "DATA"}));
}

TEST(SmtpClientTest, ValidateOptions) {
  SmtpClientOptions options = Options("127.0.0.1:25");
  EXPECT_TRUE(ValidateSmtpClientOptions(options).ok());
  options.targets = {"[::1]:24"};
  EXPECT_TRUE(ValidateSmtpClientOptions(options).ok());
  options.targets = {"unix:/run/dovecot/lmtp"};
  EXPECT_TRUE(ValidateSmtpClientOptions(options).ok());
  options.targets = {"unix:/" + std::string(200, 'x')};
  EXPECT_FALSE(ValidateSmtpClientOptions(options).ok());
  options.targets = {"mail.example:25"};
  EXPECT_FALSE(ValidateSmtpClientOptions(options).ok());
  options = Options("127.0.0.1:25");
  options.messages_per_connection_max = 0;
  EXPECT_FALSE(ValidateSmtpClientOptions(options).ok());
  options = Options("127.0.0.1:25");
  options.helo_name = "two words";
  EXPECT_FALSE(ValidateSmtpClientOptions(options).ok());
  // tls = required needs a name to check: a unix: target has none of its own.
  options = Options("unix:/run/lmtp");
  options.tls = DeliveryTls::kRequired;
  EXPECT_FALSE(ValidateSmtpClientOptions(options).ok());
  options.tls_server_name = "lmtp.example.test";
  EXPECT_TRUE(ValidateSmtpClientOptions(options).ok());
  options.tls_server_name = "two words";
  EXPECT_FALSE(ValidateSmtpClientOptions(options).ok());
}

TEST(SmtpClientTest, FactoryMakesIndependentClients) {
  FakeServer server(FakeBehavior{});
  absl::StatusOr<BackendFactory> factory = MakeSmtpClientFactory(Options(server.target()));
  ASSERT_TRUE(factory.ok()) << factory.status();
  std::unique_ptr<Backend> backend = (*factory)();
  OutboundMessage message = Message({"b@b.test"});
  DeliverNow(*backend, {&message});
  EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk}));
}

TEST(SmtpClientTest, FactoryRefusesACaFileThatDoesNotLoad) {
  SmtpClientOptions options = Options("127.0.0.1:25");
  options.tls = DeliveryTls::kOpportunistic;
  options.tls_ca_file = "/nonexistent/ca.pem";
  absl::StatusOr<BackendFactory> factory = MakeSmtpClientFactory(options);
  ASSERT_FALSE(factory.ok());
  EXPECT_EQ(factory.status().message(),
            "tls_ca_file /nonexistent/ca.pem: cannot read the CA certificates: No such file or "
            "directory");           // chuted names the route's table before it
  options.tls = DeliveryTls::kOff;  // no TLS, no CA file needed
  EXPECT_TRUE(MakeSmtpClientFactory(options).ok());
}

TEST(SmtpClientProbeTest, AsksWithTheNullSenderAndResetsOverOneConnection) {
  for (bool pipelining : {false, true}) {
    FakeBehavior behavior;
    behavior.extensions = pipelining ? Strs{"PIPELINING"} : Strs{};
    behavior.on_command = [](int, const std::string& line) -> std::string {
      return line == "RCPT TO:<gone@b.test>" ? "550 5.1.1 <gone@b.test>: User unknown" : "";
    };
    FakeServer server(behavior);
    auto client = NewClient(Options(server.target()));
    RecipientResult known = ProbeNow(*client, "ann@b.test");
    RecipientResult gone = ProbeNow(*client, "gone@b.test");
    EXPECT_EQ(known.outcome, kOk);
    EXPECT_EQ(gone.outcome, kPerm);
    EXPECT_EQ(gone.reply, "550 5.1.1 <gone@b.test>: User unknown");
    EXPECT_EQ(client->connections_opened(), 1u);
    EXPECT_TRUE(server.messages().empty());
    client.reset();
    ASSERT_TRUE(server.WaitClosed(1));
    ASSERT_EQ(server.commands().size(), 1u);
    EXPECT_EQ(server.commands()[0],
              (Strs{"EHLO chute.test", "MAIL FROM:<>", "RCPT TO:<ann@b.test>", "RSET",
                    "MAIL FROM:<>", "RCPT TO:<gone@b.test>", "RSET", "QUIT"}))
        << pipelining;
  }
}

TEST(SmtpClientProbeTest, ATargetThatCannotBeAskedIsTransientAndSaysWhy) {
  RefusingPort down;
  auto refused = NewClient(Options(down.target));
  RecipientResult result = ProbeNow(*refused, "ann@b.test");
  EXPECT_EQ(result.outcome, kTemp);
  EXPECT_EQ(result.reply,
            absl::StrCat("451 4.4.1 connect to ", down.target, ": Connection refused"));

  FakeBehavior no_null_sender;
  no_null_sender.on_command = [](int, const std::string& line) -> std::string {
    return absl::StartsWith(line, "MAIL") ? "553 5.1.7 the null sender is not welcome" : "";
  };
  FakeServer server(no_null_sender);
  auto client = NewClient(Options(server.target()));
  result = ProbeNow(*client, "ann@b.test");
  EXPECT_EQ(result.outcome, kTemp);  // not the recipient's fault
  EXPECT_TRUE(absl::StrContains(result.reply, "refused MAIL FROM:<>: 553 5.1.7")) << result.reply;

  FakeBehavior busy;
  busy.on_command = [](int, const std::string& line) -> std::string {
    return absl::StartsWith(line, "RCPT") ? "450 4.2.1 mailbox busy" : "";
  };
  FakeServer busy_server(busy);
  auto busy_client = NewClient(Options(busy_server.target()));
  result = ProbeNow(*busy_client, "ann@b.test");
  EXPECT_EQ(result.outcome, kTemp);
  EXPECT_EQ(result.reply, "450 4.2.1 mailbox busy");
}

TEST(SmtpClientProbeTest, APooledConnectionThatBreaksIsTriedOnceMoreOnANewOne) {
  // The target drops its first connection at the second probe's MAIL, unanswered (as a server
  // that timed the idle connection out at that moment), and every connection when asked to.
  std::atomic<bool> always{false};
  std::atomic<int> mails{0};
  FakeBehavior behavior;
  behavior.on_command = [&](int connection, const std::string& line) -> std::string {
    if (!absl::StartsWith(line, "MAIL")) {
      return "";
    }
    int mail = mails++;
    return always.load() || (connection == 0 && mail == 1) ? kClose : "";
  };
  FakeServer server(behavior);
  auto client = NewClient(Options(server.target()));
  EXPECT_EQ(ProbeNow(*client, "ann@b.test").outcome, kOk);
  RecipientResult again = ProbeNow(*client, "bob@b.test");
  EXPECT_EQ(again.outcome, kOk) << again.reply;
  EXPECT_FALSE(again.target_down);
  EXPECT_EQ(client->connections_opened(), 2u);
  // A new connection that breaks is not tried again: the target is down. (The fake serves
  // one connection at a time: the first client goes first.)
  client.reset();
  always = true;
  auto fresh = NewClient(Options(server.target()));
  RecipientResult down = ProbeNow(*fresh, "cat@b.test");
  EXPECT_EQ(down.outcome, kTemp);
  EXPECT_TRUE(down.target_down);
  EXPECT_EQ(down.reply, absl::StrCat("451 4.4.2 ", server.target(), " closed the connection"))
      << "not a timeout";
  EXPECT_EQ(fresh->connections_opened(), 1u);
}

TEST(SmtpClientProbeTest, AnAddressThatCouldBreakTheCommandIsNeverSent) {
  FakeServer server(FakeBehavior{});
  auto client = NewClient(Options(server.target()));
  EXPECT_EQ(ProbeNow(*client, "a@b.test>\r\nRCPT TO:<x@y").outcome, kPerm);
  EXPECT_EQ(client->connections_opened(), 0u);
}

// Sink: collects answers (any thread).
struct Answers : ProbeSink {
  void OnProbed(uint64_t cookie, RecipientVerdict verdict) override {
    std::lock_guard<std::mutex> lock(mu);
    got.emplace_back(cookie, std::move(verdict));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu);
    return got.size();
  }
  bool WaitFor(size_t n) {
    for (int i = 0; i < 2000 && size() < n; ++i) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return size() >= n;
  }
  std::mutex mu;
  std::vector<std::pair<uint64_t, RecipientVerdict>> got;
};

VerifierOptions VerifyOptions(const std::string& target) {
  VerifierOptions options;
  options.route = "test";
  SmtpClientOptions client = Options(target);
  options.client = *MakeSmtpClientMaker(client);
  options.positive = absl::Seconds(60);
  options.negative = absl::Seconds(60);
  return options;
}

TEST(RecipientVerifierTest, ProbesOnceCachesBothAnswersAndNotAnUnreachableOne) {
  std::atomic<int> rcpts{0};
  FakeBehavior behavior;
  behavior.on_command = [&rcpts](int, const std::string& line) -> std::string {
    if (!absl::StartsWith(line, "RCPT")) {
      return "";
    }
    ++rcpts;
    return absl::StrContains(line, "gone@") ? "550 5.1.1 no such user" : "";
  };
  FakeServer server(behavior);
  RecipientVerifier verifier(VerifyOptions(server.target()));
  verifier.Start();
  Answers answers;
  absl::Time now = absl::Now();
  EXPECT_FALSE(verifier.Cached("ann@b.test", now).has_value());
  verifier.Submit("ann@b.test", 1, &answers);
  verifier.Submit("gone@b.test", 2, &answers);
  ASSERT_TRUE(answers.WaitFor(2));
  EXPECT_EQ(answers.got[0].first, 1u);
  EXPECT_EQ(answers.got[0].second.kind, RecipientVerdict::Kind::kExists);
  EXPECT_EQ(answers.got[1].second.kind, RecipientVerdict::Kind::kUnknown);
  EXPECT_EQ(answers.got[1].second.reply, "550 5.1.1 no such user");
  std::optional<RecipientVerdict> ann = verifier.Cached("ann@b.test", absl::Now());
  ASSERT_TRUE(ann.has_value());
  EXPECT_TRUE(ann->cached);
  EXPECT_EQ(verifier.Cached("gone@b.test", absl::Now())->kind, RecipientVerdict::Kind::kUnknown);
  EXPECT_FALSE(verifier.Cached("ann@b.test", absl::Now() + absl::Seconds(61)).has_value());
  EXPECT_EQ(rcpts.load(), 2);
  EXPECT_EQ(verifier.counters().probes_exists.load(), 1u);
  EXPECT_EQ(verifier.counters().probes_unknown.load(), 1u);
  EXPECT_EQ(verifier.counters().cache_hits.load(), 2u);

  RefusingPort down;
  RecipientVerifier unreachable(VerifyOptions(down.target));
  unreachable.Start();
  unreachable.Submit("ann@b.test", 3, &answers);
  ASSERT_TRUE(answers.WaitFor(3));
  EXPECT_EQ(answers.got[2].second.kind, RecipientVerdict::Kind::kUnreachable);
  EXPECT_FALSE(unreachable.Cached("ann@b.test", absl::Now()).has_value());
}

TEST(RecipientVerifierTest, TheSameAddressWaitingTwiceIsProbedOnceAndStopAnswersEveryone) {
  // The target answers RCPT only when let go: probes pile up behind the first.
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::atomic<int> rcpts{0};
  FakeBehavior behavior;
  behavior.on_command = [&](int, const std::string& line) -> std::string {
    if (absl::StartsWith(line, "RCPT")) {
      ++rcpts;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return go; });
    }
    return "";
  };
  FakeServer server(behavior);
  RecipientVerifier verifier(VerifyOptions(server.target()));
  verifier.Start();
  Answers answers;
  verifier.Submit("first@b.test", 1, &answers);
  for (int i = 0; i < 200 && rcpts.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(rcpts.load(), 1);
  verifier.Submit("new@b.test", 2, &answers);
  verifier.Submit("new@b.test", 3, &answers);  // waiting already: no second probe
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
  }
  cv.notify_all();
  ASSERT_TRUE(answers.WaitFor(3));
  EXPECT_EQ(rcpts.load(), 2);
  // Stopped, it answers at once that it cannot ask.
  verifier.Stop();
  verifier.Submit("late@b.test", 4, &answers);
  ASSERT_EQ(answers.size(), 4u);
  EXPECT_EQ(answers.got[3].second.kind, RecipientVerdict::Kind::kUnreachable);
  EXPECT_EQ(answers.got[3].second.reply, "421 4.3.2 chute is stopping");
}

TEST(RecipientVerifierTest, ARouteFoundDownAnswersEveryoneWaitingAndIsNotAskedAgainForAWhile) {
  SilentPort hole;
  VerifierOptions options;
  options.route = "test";
  SmtpClientOptions client = Options(hole.target);
  client.io_timeout = absl::Milliseconds(300);
  options.client = *MakeSmtpClientMaker(client);
  options.down_hold = absl::Seconds(1);
  RecipientVerifier verifier(std::move(options));
  verifier.Start();
  Answers answers;
  for (int i = 0; i < 4; ++i) {  // the first one's probe hangs; three wait behind it
    verifier.Submit(absl::StrCat("new", i, "@b.test"), i, &answers);
  }
  ASSERT_TRUE(answers.WaitFor(4));
  const std::string timeout = absl::StrCat("451 4.4.2 timeout reading reply from ", hole.target);
  for (const auto& [cookie, verdict] : answers.got) {
    EXPECT_EQ(verdict.kind, RecipientVerdict::Kind::kUnreachable) << cookie;
    EXPECT_EQ(verdict.reply, timeout) << cookie;
  }
  EXPECT_EQ(hole.Accepted(), 1);  // one probe for all four
  // Within down_hold: answered at once, on the submitting thread, without a connection.
  verifier.Submit("later@b.test", 10, &answers);
  ASSERT_EQ(answers.size(), 5u);
  EXPECT_EQ(answers.got[4].second.kind, RecipientVerdict::Kind::kUnreachable);
  EXPECT_EQ(answers.got[4].second.reply, timeout);
  EXPECT_EQ(hole.Accepted(), 0);
  EXPECT_FALSE(verifier.Cached("later@b.test", absl::Now()).has_value());
  EXPECT_EQ(verifier.counters().probes_unreachable.load(), 5u);
  // After it: asked again.
  absl::SleepFor(absl::Milliseconds(1100));
  verifier.Submit("again@b.test", 11, &answers);
  ASSERT_TRUE(answers.WaitFor(6));
  EXPECT_EQ(answers.got[5].second.reply, timeout);
  EXPECT_EQ(hole.Accepted(), 1);
}

TEST(RecipientVerifierTest, ATargetsOwnTemporaryRefusalDoesNotMarkTheRouteDown) {
  FakeBehavior behavior;
  behavior.on_command = [](int, const std::string& line) -> std::string {
    return absl::StartsWith(line, "RCPT") && absl::StrContains(line, "busy@")
               ? "450 4.2.1 mailbox busy"
               : "";
  };
  FakeServer server(behavior);
  RecipientVerifier verifier(VerifyOptions(server.target()));
  verifier.Start();
  Answers answers;
  verifier.Submit("busy@b.test", 1, &answers);
  ASSERT_TRUE(answers.WaitFor(1));
  EXPECT_EQ(answers.got[0].second.kind, RecipientVerdict::Kind::kUnreachable);
  EXPECT_EQ(answers.got[0].second.reply, "450 4.2.1 mailbox busy");
  verifier.Submit("ann@b.test", 2, &answers);
  ASSERT_TRUE(answers.WaitFor(2));
  EXPECT_EQ(answers.got[1].second.kind, RecipientVerdict::Kind::kExists);
}

TEST(SmtpClientDsnTest, DsnParametersGoOnOnlyToATargetThatOffersDsn) {
  for (bool offered : {false, true}) {
    FakeBehavior behavior;
    behavior.extensions = offered ? Strs{"PIPELINING", "DSN"} : Strs{"PIPELINING"};
    FakeServer server(behavior);
    auto client = NewClient(Options(server.target()));
    OutboundMessage message = Message({"b@b.test", "c@b.test"});
    message.dsn_ret = 2;
    message.envid = "QQ314159";
    message.notify = {4 | 8, 0};
    message.orcpt = {"rfc822;B+40b.test", ""};
    DeliverNow(*client, {&message});
    EXPECT_EQ(Outcomes(message), (std::vector<Outcome>{kOk, kOk}));
    client.reset();
    ASSERT_TRUE(server.WaitClosed(1));
    Strs lines = server.commands()[0];
    if (offered) {
      EXPECT_EQ(lines[1], "MAIL FROM:<alice@a.test> RET=HDRS ENVID=QQ314159");
      EXPECT_EQ(lines[2], "RCPT TO:<b@b.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;B+40b.test");
      EXPECT_EQ(lines[3], "RCPT TO:<c@b.test>");
    } else {
      EXPECT_EQ(lines[1], "MAIL FROM:<alice@a.test>");
      EXPECT_EQ(lines[2], "RCPT TO:<b@b.test>");
    }
  }
}

}  // namespace
}  // namespace chute::delivery
