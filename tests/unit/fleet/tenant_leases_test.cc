// tenant_leases_test.cc: the fleet's Redis client and the tenant leases, against a real Redis.

#include "fleet/tenant_leases.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fleet/redis.h"
#include "io/loop.h"
#include "tests/unit/fleet/redis_server.h"

namespace chute::fleet {
namespace {

TEST(RespTest, AppendCommandWritesBulkStrings) {
  std::string out;
  AppendCommand(&out, {"SET", "k", ""});
  EXPECT_EQ(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

TEST(RespTest, ARepliesSplitAtEveryByteComeOutWhole) {
  const std::string bytes = "+OK\r\n:42\r\n$3\r\nabc\r\n$-1\r\n-ERR no\r\n*2\r\n:1\r\n$1\r\nx\r\n";
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    RespReader reader;
    std::vector<RespValue> values;
    for (absl::string_view part :
         {absl::string_view(bytes).substr(0, cut), absl::string_view(bytes).substr(cut)}) {
      ASSERT_TRUE(reader.Feed(part).ok());
      RespValue value;
      while (*reader.Next(&value)) {
        values.push_back(value);
      }
    }
    ASSERT_EQ(values.size(), 6u) << cut;
    EXPECT_EQ(values[0].type, RespValue::Type::kStatus);
    EXPECT_EQ(values[1].integer, 42);
    EXPECT_EQ(values[2].str, "abc");
    EXPECT_EQ(values[3].type, RespValue::Type::kNil);
    EXPECT_TRUE(values[4].is_error());
    EXPECT_EQ(values[4].str, "ERR no");
    ASSERT_EQ(values[5].elements.size(), 2u);
    EXPECT_EQ(values[5].elements[1].str, "x");
  }
}

TEST(RespTest, GarbageIsAProtocolError) {
  RespReader reader;
  ASSERT_TRUE(reader.Feed("?what\r\n").ok());
  RespValue value;
  EXPECT_FALSE(reader.Next(&value).ok());
}

TEST(RespTest, AReplyPastTheBoundIsRefused) {
  RespReader reader;
  ASSERT_TRUE(reader.Feed(absl::StrCat("$", kRespReplyBytesMax * 2, "\r\n")).ok());
  std::string chunk(64 * 1024, 'x');
  absl::Status status;
  for (size_t fed = 0; status.ok() && fed <= kRespReplyBytesMax; fed += chunk.size()) {
    status = reader.Feed(chunk);
    RespValue value;
    ASSERT_TRUE(reader.Next(&value).ok());
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
}

class FleetTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.Start()) << "redis-server did not start (tools/install-deps.sh installs it)";
    auto loop = io::Loop::Create(16);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }
  // Redis: one command on a connection of the test's own, its reply.
  RespValue Redis(std::vector<std::string> args) {
    std::string command;
    std::vector<absl::string_view> views(args.begin(), args.end());
    AppendCommand(&command, views);
    auto replies = io::RunSync(*loop_, Exchange(std::move(command)));
    EXPECT_TRUE(replies.ok()) << replies.status();
    return replies.ok() ? (*replies)[0] : RespValue();
  }
  io::Task<absl::StatusOr<std::vector<RespValue>>> Exchange(std::string command) {
    auto connection =
        co_await RedisConnection::Open(loop_.get(), redis_.target(), "", absl::Seconds(5), nullptr);
    if (!connection.ok()) {
      co_return connection.status();
    }
    co_return co_await (*connection)->Exchange(std::move(command), 1, absl::Seconds(5));
  }
  int64_t Sessions(absl::string_view tenant) {
    return Redis({"ZCARD", absl::StrCat("chute:tenant:", tenant, ":sessions")}).integer;
  }

  RedisServer redis_;
  std::unique_ptr<io::Loop> loop_;
};

TEST_F(FleetTest, APipelineGetsEveryReplyInOrderAndAnErrorIsAValue) {
  std::string commands;
  AppendCommand(&commands, {"SET", "a", "1"});
  AppendCommand(&commands, {"INCR", "a"});
  AppendCommand(&commands, {"LPUSH", "a", "x"});  // a string is not a list
  AppendCommand(&commands, {"GET", "missing"});
  auto run = [&]() -> io::Task<absl::StatusOr<std::vector<RespValue>>> {
    auto connection =
        co_await RedisConnection::Open(loop_.get(), redis_.target(), "", absl::Seconds(5), nullptr);
    if (!connection.ok()) {
      co_return connection.status();
    }
    co_return co_await (*connection)->Exchange(commands, 4, absl::Seconds(5));
  };
  auto replies = io::RunSync(*loop_, run());
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ((*replies)[0].str, "OK");
  EXPECT_EQ((*replies)[1].integer, 2);
  EXPECT_TRUE((*replies)[2].is_error());
  EXPECT_EQ((*replies)[3].type, RespValue::Type::kNil);
}

TEST_F(FleetTest, ARedisThatDoesNotAnswerIsATimeoutNotAWait) {
  auto run = [&]() -> io::Task<absl::Status> {
    auto connection =
        co_await RedisConnection::Open(loop_.get(), redis_.target(), "", absl::Seconds(5), nullptr);
    if (!connection.ok()) {
      co_return connection.status();
    }
    redis_.Pause();
    std::string command;
    AppendCommand(&command, {"PING"});
    auto replies = co_await (*connection)->Exchange(command, 1, absl::Milliseconds(200));
    redis_.Resume();
    co_return replies.status();
  };
  absl::Time start = absl::Now();
  absl::Status status = io::RunSync(*loop_, run());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

TEST_F(FleetTest, AWrongPasswordIsRefusedByName) {
  Redis({"CONFIG", "SET", "requirepass", "right"});
  auto run = [&]() -> io::Task<absl::Status> {
    auto connection = co_await RedisConnection::Open(loop_.get(), redis_.target(), "wrong",
                                                     absl::Seconds(5), nullptr);
    co_return connection.status();
  };
  absl::Status status = io::RunSync(*loop_, run());
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_NE(status.message().find("refused AUTH"), absl::string_view::npos) << status;
}

// Answers: a LeaseSink that keeps what it is told.
class Answers : public LeaseSink {
 public:
  void OnLeased(uint64_t cookie, LeaseAnswer answer) override {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[cookie] = answer;
    changed_.notify_all();
  }
  // Take: the answer for `cookie`: the one Acquire gave at once, else the one that comes.
  LeaseAnswer Take(uint64_t cookie, std::optional<LeaseAnswer> now) {
    if (now.has_value()) {
      return *now;
    }
    std::unique_lock<std::mutex> lock(mu_);
    bool came = changed_.wait_for(lock, std::chrono::seconds(10),
                                  [&] { return answers_.count(cookie) > 0; });
    EXPECT_TRUE(came) << "no answer for " << cookie;
    return came ? answers_[cookie] : LeaseAnswer{};
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint64_t, LeaseAnswer> answers_;
};

// Node: one node's leases with its own count of sessions per tenant (what a node's
// ConnectionGate counts).
struct Node {
  Node(const std::string& redis, const std::string& id, uint64_t cap,
       absl::Duration lease = absl::Seconds(3)) {
    LeaseOptions options;
    options.node_id = id;
    options.redis = redis;
    options.cap = cap;
    options.lease = lease;
    options.timeout = absl::Milliseconds(300);
    options.local_count = [this](int64_t) { return local.load(); };
    auto started = TenantLeases::Start(std::move(options));
    EXPECT_TRUE(started.ok()) << started.status();
    leases = *std::move(started);
  }
  // Ask: one session asks (counted locally first, as the shard does); its answer.
  LeaseAnswer Ask(uint64_t cookie) {
    local.fetch_add(1);
    LeaseAnswer answer = answers.Take(cookie, leases->Acquire(1, "contoso", cookie, &answers));
    if (!answer.admitted) {
      local.fetch_sub(1);
    }
    return answer;
  }
  void End(const LeaseAnswer& answer) {
    leases->Release(answer.lease);
    local.fetch_sub(1);
  }
  // WaitUp: until the node has a working connection to Redis (at most 5 s).
  bool WaitUp() {
    absl::Time until = absl::Now() + absl::Seconds(5);
    while (!leases->counters().redis_up.load() && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return leases->counters().redis_up.load();
  }

  std::atomic<uint64_t> local{0};
  Answers answers;
  std::unique_ptr<TenantLeases> leases;
};

TEST_F(FleetTest, TwoNodesAskingAtOnceNeverPassTheCap) {
  Node a(redis_.target(), "a", 5);
  Node b(redis_.target(), "b", 5);
  ASSERT_TRUE(a.WaitUp() && b.WaitUp());
  std::atomic<int> admitted{0};
  auto ask = [&](Node* node, uint64_t first) {
    for (uint64_t cookie = first; cookie < first + 4; ++cookie) {
      LeaseAnswer answer = node->Ask(cookie);
      EXPECT_FALSE(answer.fallback);
      admitted += answer.admitted ? 1 : 0;
    }
  };
  std::thread ta(ask, &a, 1);
  std::thread tb(ask, &b, 100);
  ta.join();
  tb.join();
  EXPECT_EQ(admitted.load(), 5);
  EXPECT_EQ(Sessions("contoso"), 5);
  EXPECT_EQ(a.leases->counters().refused.load() + b.leases->counters().refused.load(), 3u);
}

TEST_F(FleetTest, ASessionThatEndsGivesItsPlaceToAnotherNode) {
  Node a(redis_.target(), "a", 2);
  Node b(redis_.target(), "b", 2);
  ASSERT_TRUE(a.WaitUp() && b.WaitUp());
  LeaseAnswer first = a.Ask(1);
  ASSERT_TRUE(first.admitted);
  ASSERT_TRUE(a.Ask(2).admitted);
  EXPECT_FALSE(b.Ask(3).admitted);
  a.End(first);
  // The release goes with the node's next pipeline; the other node's next ask sees it.
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (Sessions("contoso") != 1 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(b.Ask(4).admitted);
}

TEST_F(FleetTest, ADeadNodesPlacesAreFreeWithinTheLease) {
  // A node that died holds two places that nobody renews (as a SIGKILLed chuted leaves them).
  Redis({"ZADD", "chute:tenant:contoso:sessions", "0", "placeholder"});
  auto now_ms = [&] {
    RespValue time = Redis({"TIME"});
    return std::stoll(time.elements[0].str) * 1000 + std::stoll(time.elements[1].str) / 1000;
  };
  int64_t expiry = now_ms() + 1500;
  Redis({"ZADD", "chute:tenant:contoso:sessions", absl::StrCat(expiry), "dead:1:1",
         absl::StrCat(expiry), "dead:1:2"});
  Node b(redis_.target(), "b", 2);
  ASSERT_TRUE(b.WaitUp());
  EXPECT_FALSE(b.Ask(1).admitted);  // the dead node's places still count
  absl::SleepFor(absl::Milliseconds(1600));
  EXPECT_TRUE(b.Ask(2).admitted);
  EXPECT_TRUE(b.Ask(3).admitted);
  EXPECT_FALSE(b.Ask(4).admitted);
}

TEST_F(FleetTest, ALiveNodeKeepsItsPlacesPastTheLeaseByRenewingThem) {
  Node a(redis_.target(), "a", 2, absl::Milliseconds(900));
  Node b(redis_.target(), "b", 2, absl::Milliseconds(900));
  ASSERT_TRUE(a.WaitUp() && b.WaitUp());
  ASSERT_TRUE(a.Ask(1).admitted);
  ASSERT_TRUE(a.Ask(2).admitted);
  absl::SleepFor(absl::Milliseconds(2500));  // nearly three leases
  EXPECT_FALSE(b.Ask(3).admitted);
  EXPECT_EQ(a.leases->counters().nodes_alive.load(), 2u);
}

TEST_F(FleetTest, WithRedisAwayEachNodeKeepsToItsShareAndAnswersAtOnce) {
  Node a(redis_.target(), "a", 6);
  Node b(redis_.target(), "b", 6);
  Node c(redis_.target(), "c", 6);
  ASSERT_TRUE(a.WaitUp() && b.WaitUp() && c.WaitUp());
  // Each has seen the three nodes alive once its first renewal came back.
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (a.leases->counters().nodes_alive.load() != 3 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(a.leases->counters().nodes_alive.load(), 3u);
  ASSERT_TRUE(a.Ask(1).admitted);  // one place taken while Redis answered
  redis_.Kill();
  // The first ask after the loss waits for the timeout at most, then the share decides.
  LeaseAnswer second = a.Ask(2);
  EXPECT_TRUE(second.admitted);
  EXPECT_EQ(a.leases->Share(), 2u);  // 6 over the 3 nodes last seen alive
  absl::Time start = absl::Now();
  LeaseAnswer third = a.Ask(3);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));  // no wait on a Redis that is away
  EXPECT_TRUE(third.fallback);
  EXPECT_FALSE(third.admitted);  // two are the node's share
  EXPECT_FALSE(a.leases->counters().redis_up.load());
  EXPECT_GE(a.leases->counters().fallback_refused.load(), 1u);
}

TEST_F(FleetTest, ARedisRestartedEmptyGetsTheLiveSessionsBack) {
  Node a(redis_.target(), "a", 3, absl::Seconds(3));
  ASSERT_TRUE(a.WaitUp());
  ASSERT_TRUE(a.Ask(1).admitted);
  ASSERT_TRUE(a.Ask(2).admitted);
  redis_.Kill();
  ASSERT_TRUE(redis_.Start());  // empty: nothing was saved
  EXPECT_EQ(Sessions("contoso"), 0);
  // The node finds the connection gone at its next exchange, connects again (within a
  // second) and puts its two sessions back before anything else.
  absl::Time until = absl::Now() + absl::Seconds(8);
  while (Sessions("contoso") != 2 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(Sessions("contoso"), 2);
  // And the cap is exact again.
  until = absl::Now() + absl::Seconds(5);
  while (!a.leases->counters().redis_up.load() && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  LeaseAnswer third = a.Ask(3);
  EXPECT_TRUE(third.admitted);
  EXPECT_FALSE(third.fallback);
  EXPECT_FALSE(a.Ask(4).admitted);
  EXPECT_GE(a.leases->counters().put_back.load(), 2u);
}

TEST_F(FleetTest, AScriptFlushIsSurvivedByConnectingAgain) {
  Node a(redis_.target(), "a", 5);
  ASSERT_TRUE(a.WaitUp());
  ASSERT_TRUE(a.Ask(1).admitted);
  Redis({"SCRIPT", "FLUSH"});  // EVALSHA now answers NOSCRIPT
  LeaseAnswer flushed = a.Ask(2);
  EXPECT_TRUE(flushed.admitted);
  EXPECT_TRUE(flushed.fallback);  // the share decided, at once
  // The connection is made again (the scripts loaded again) and the leases work as before,
  // the first one among them.
  ASSERT_TRUE(a.WaitUp());
  absl::Time until = absl::Now() + absl::Seconds(5);
  LeaseAnswer third;
  do {
    third = a.Ask(3);
    if (!third.fallback) {
      break;
    }
    a.End(third);
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < until);
  EXPECT_TRUE(third.admitted);
  EXPECT_FALSE(third.fallback);
  EXPECT_EQ(Sessions("contoso"), 3);
}

TEST_F(FleetTest, AStoppingNodeGivesItsPlacesBackAtOnce) {
  auto a = std::make_unique<Node>(redis_.target(), "a", 5);
  ASSERT_TRUE(a->WaitUp());
  ASSERT_TRUE(a->Ask(1).admitted);
  ASSERT_TRUE(a->Ask(2).admitted);
  EXPECT_EQ(Sessions("contoso"), 2);
  a->leases->Stop();
  EXPECT_EQ(Sessions("contoso"), 0);
  EXPECT_EQ(Redis({"ZCARD", "chute:nodes"}).integer, 0);
}

TEST_F(FleetTest, ANodeThatNeverReachesRedisDecidesByItsShareFromTheStart) {
  Node a("unix:/nonexistent/redis.sock", "a", 4);
  LeaseAnswer answer = a.Ask(1);
  EXPECT_TRUE(answer.admitted);
  EXPECT_TRUE(answer.fallback);
  EXPECT_EQ(a.leases->Share(), 4u);  // it never saw another node
}

}  // namespace
}  // namespace chute::fleet
