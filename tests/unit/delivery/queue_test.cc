// Unit tests for the delivery queue: the backoff schedule, per-recipient outcome accounting
// (marks in the spool record, settling), dead letters and requeue, hold/release/delete, and
// the lock-free hand-over from a producer ring.

#include "delivery/queue.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "absl/strings/match.h"
#include "delivery/report.h"
#include "delivery/stage.h"
#include "gtest/gtest.h"
#include "smtp/message_headers.h"
#include "spool/group_commit.h"
#include "spool/record.h"
#include "spool/spool.h"

namespace chute::delivery {
namespace {

TEST(RetryDelayTest, DoublesFromTheInitialDelayUpToTheCap) {
  absl::Duration initial = absl::Seconds(60);
  absl::Duration max = absl::Seconds(3600);
  EXPECT_EQ(RetryDelay(1, initial, max), absl::Seconds(60));
  EXPECT_EQ(RetryDelay(2, initial, max), absl::Seconds(120));
  EXPECT_EQ(RetryDelay(3, initial, max), absl::Seconds(240));
  EXPECT_EQ(RetryDelay(6, initial, max), absl::Seconds(1920));
  EXPECT_EQ(RetryDelay(7, initial, max), absl::Seconds(3600));
  EXPECT_EQ(RetryDelay(1000, initial, max), absl::Seconds(3600));  // no overflow
}

// ScriptedBackend: answers each recipient from a table (address -> outcome); counts calls.
struct Script {
  std::mutex mu;
  std::map<std::string, RecipientResult> answers;              // missing: delivered
  std::vector<std::pair<std::string, std::string>> delivered;  // (message id, recipient)
  int attempts = 0;
};

class ScriptedBackend : public Backend {
 public:
  explicit ScriptedBackend(Script* script) : script_(script) {}
  io::Task<void> Deliver(const std::vector<OutboundMessage*>& batch,
                         const MessageDone& done) override {
    DeliverBatch(batch, done);
    co_return;
  }

 private:
  void DeliverBatch(const std::vector<OutboundMessage*>& batch, const MessageDone& done) {
    std::lock_guard<std::mutex> lock(script_->mu);
    for (size_t m = 0; m < batch.size(); ++m) {
      OutboundMessage& message = *batch[m];
      ++script_->attempts;
      message.results.clear();
      for (const std::string& r : message.recipients) {
        auto it = script_->answers.find(r);
        RecipientResult result = it != script_->answers.end()
                                     ? it->second
                                     : RecipientResult{Outcome::kDelivered, "250 ok"};
        if (result.outcome == Outcome::kDelivered) {
          script_->delivered.emplace_back(message.id, r);
        }
        message.results.push_back(result);
      }
      if (done != nullptr) {
        done(m);
      }
    }
  }

  Script* script_;
};

class QueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chute-queue-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    dir_fd_ = *spool::LockSpool(dir_ + "/spool");
    writer_ =
        std::make_unique<spool::SegmentWriter>(dir_ + "/spool", dir_fd_, 0, 1, 1 << 20, &gauges_);
  }
  // UseReporter: failure reports go to `to` ("" = none), before StartQueue.
  void UseReporter(std::string to,
                   std::function<bool(int64_t, absl::string_view)> in_tenant = nullptr) {
    ReporterOptions options;
    options.hostname = "relay.x.test";
    options.dir = dir_ + "/reports";
    options.boot_us = static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));
    options.gauges = &gauges_;
    options.address = [to](int64_t, int64_t) {
      return ReportTarget{to, to.empty() ? "nowhere" : "", "x", "app@x.test"};
    };
    options.in_tenant = std::move(in_tenant);
    reporter_ = std::make_unique<Reporter>(std::move(options));
  }

  void TearDown() override {
    stage_.reset();
    reporter_.reset();
    writer_.reset();
    close(dir_fd_);
    std::filesystem::remove_all(dir_);
  }

  // StartQueue: the stage with the default route (its backend answers from script_) and,
  // with `other_route`, a route "other" for y.test (its backend answers from other_script_).
  void StartQueue(absl::Duration retry_initial = absl::Milliseconds(50), bool other_route = false) {
    Config config;
    if (other_route) {
      RouteConfig route;
      route.name = "other";
      route.domains = {"y.test"};
      config.routes.push_back(route);
    }
    Router router(config);
    std::vector<std::unique_ptr<DeliveryQueue>> queues;
    for (size_t r = 0; r < router.size(); ++r) {
      QueueOptions options;
      Script* script = router.route(r).name == "other" ? &other_script_ : &script_;
      options.backend = [script] { return std::make_unique<ScriptedBackend>(script); };
      options.route = router.route(r).name;
      options.destination = "test";
      options.workers = 2;
      options.batch_messages_max = 8;
      options.batch_delay = absl::ZeroDuration();
      options.retry_initial = retry_initial;
      options.retry_max = retry_initial * 4;
      options.give_up_after = absl::Hours(1);
      options.delay_notice_after = delay_notice_after_;
      options.dead_dir = dir_ + "/dead";
      options.gauges = &gauges_;
      options.reporter = reporter_.get();
      queues.push_back(std::make_unique<DeliveryQueue>(std::move(options)));
    }
    stage_ = std::make_unique<DeliveryStage>(std::move(router), std::move(queues), dir_ + "/dead",
                                             &gauges_, nullptr);
    queue_ = &stage_->queue(stage_->routes() - 1);  // the default route
    if (reporter_ != nullptr) {
      reporter_->set_stage(stage_.get());
    }
    rings_ = stage_->AddProducer();
    stage_->Start();
  }

  // Spools a message to `recipients` and hands it to the queue through the producer ring.
  std::unique_ptr<QueuedMessage> Spool(const std::string& id,
                                       const std::vector<std::string>& recipients) {
    spool::Envelope envelope;
    envelope.id = id;
    envelope.received_unix_us = absl::ToUnixMicros(absl::Now());
    envelope.sender = "app@example.test";
    envelope.recipients = recipients;
    std::string body = "Subject: t\r\n\r\nhello\r\n";
    iovec iov{body.data(), body.size()};
    writer_->Stage(*spool::EncodeRecordPrefix(envelope, "", {&iov, 1}), {&iov, 1}, body.size(), 0);
    std::vector<spool::Committed> committed;
    std::vector<uint64_t> failed;
    const spool::Group* group = *writer_->TakeGroup(&failed);
    writer_->FinishGroup(spool::WriteGroupNow(*group), &committed, &failed);
    auto message = std::make_unique<QueuedMessage>();
    message->id = id;
    message->received_unix_us = envelope.received_unix_us;
    message->sender = envelope.sender;
    message->recipients = recipients;
    message->marks.assign(recipients.size(), spool::Mark::kPending);
    message->replies.assign(recipients.size(), "");
    message->record = committed[0].ref;
    return message;
  }

  // HandOver: as a shard does it: split by route, one ring per route.
  void HandOver(std::unique_ptr<QueuedMessage> message) {
    std::vector<int> routes;
    for (const std::string& r : message->recipients) {
      routes.push_back(stage_->router().FindAddress(r, ""));
    }
    for (RoutedPart& part : SplitByRoute(std::move(message), routes, stage_->router())) {
      ASSERT_TRUE(rings_[part.route]->TryPush(part.message));
      stage_->queue(part.route).Notify();
    }
  }

  // WaitFor: polls `condition` for up to 10 s.
  template <typename F>
  bool WaitFor(F condition) {
    absl::Time end = absl::Now() + absl::Seconds(10);
    while (absl::Now() < end) {
      if (condition()) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return condition();
  }

  spool::DecodedRecord ReadRecord(const spool::Segment& segment, uint64_t offset) {
    std::string bytes =
        *segment.Read(offset, 4096 < segment.bytes - offset ? 4096 : segment.bytes - offset);
    spool::DecodedRecord record;
    EXPECT_EQ(spool::DecodeRecord(bytes, &record), spool::DecodeResult::kOk);
    return record;
  }

  std::string dir_;
  int dir_fd_ = -1;
  spool::SpoolGauges gauges_;
  std::unique_ptr<spool::SegmentWriter> writer_;
  Script script_;
  Script other_script_;
  std::unique_ptr<Reporter> reporter_;
  absl::Duration delay_notice_after_ = absl::Hours(4);
  std::unique_ptr<DeliveryStage> stage_;
  DeliveryQueue* queue_ = nullptr;  // the default route's
  std::vector<DeliveryQueue::Ring*> rings_;
};

TEST_F(QueueTest, DeliveredMessageIsSettledInTheSpool) {
  StartQueue();
  std::unique_ptr<QueuedMessage> message = Spool("M1", {"a@x.test", "b@x.test"});
  std::shared_ptr<spool::Segment> segment = message->record.segment;
  uint64_t offset = message->record.record_offset;
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(segment->live.load(), 0);
  EXPECT_EQ(ReadRecord(*segment, offset).state, spool::RecordState::kSettled);
  EXPECT_EQ(queue_->counters().recipients_delivered.load(), 2u);
  EXPECT_EQ(queue_->queued(), 0u);
}

TEST_F(QueueTest, TransientRecipientIsRetriedAloneAndTheOtherIsMarked) {
  script_.answers["slow@x.test"] = {Outcome::kTransient, "451 4.2.0 try later"};
  StartQueue();
  std::unique_ptr<QueuedMessage> message = Spool("M2", {"ok@x.test", "slow@x.test"});
  std::shared_ptr<spool::Segment> segment = message->record.segment;
  uint64_t offset = message->record.record_offset;
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() >= 2; }));
  // The delivered recipient is marked in place (a restart would not try it again); the
  // record is not settled.
  spool::DecodedRecord record = ReadRecord(*segment, offset);
  EXPECT_EQ(record.state, spool::RecordState::kLive);
  EXPECT_EQ(record.marks[0], spool::Mark::kDelivered);
  EXPECT_EQ(record.marks[1], spool::Mark::kPending);
  absl::StatusOr<QueueEntry> entry = queue_->Show("M2");
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ(entry->pending, std::vector<std::string>{"slow@x.test"});
  EXPECT_EQ(entry->replies[0], "451 4.2.0 try later");
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    script_.answers.clear();
    // ok@ was delivered exactly once, however many retries slow@ took.
    int ok_count = 0;
    for (const auto& [id, r] : script_.delivered) {
      ok_count += r == "ok@x.test";
    }
    EXPECT_EQ(ok_count, 1);
  }
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(ReadRecord(*segment, offset).state, spool::RecordState::kSettled);
}

// A queue id as QueueIdMinter makes them (23 hex digits): Requeue takes nothing else.
constexpr char kDeadId[] = "19ABCF07E2C010000000003";

TEST_F(QueueTest, PermanentFailureGoesToTheDeadLetterAreaAndRequeueDelivers) {
  script_.answers["gone@x.test"] = {Outcome::kPermanent, "550 5.1.1 no such user"};
  StartQueue();
  HandOver(Spool(kDeadId, {"here@x.test", "gone@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  std::vector<DeadEntry> dead = stage_->Dead();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].id, kDeadId);
  EXPECT_NE(dead[0].json.find("550 5.1.1 no such user"), std::string::npos);
  EXPECT_NE(dead[0].json.find("gone@x.test"), std::string::npos);
  EXPECT_EQ(dead[0].json.find("here@x.test"), std::string::npos);  // it was delivered
  std::ifstream eml(dir_ + "/dead/" + kDeadId + ".eml");
  std::stringstream content;
  content << eml.rdbuf();
  EXPECT_EQ(content.str(), "Subject: t\r\n\r\nhello\r\n");
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    script_.answers.clear();  // the cause is fixed
  }
  ASSERT_TRUE(stage_->Requeue(kDeadId).ok());
  ASSERT_TRUE(WaitFor([&] { return stage_->Dead().empty() && gauges_.messages.load() == 0; }));
  std::lock_guard<std::mutex> lock(script_.mu);
  int gone = 0;
  for (const auto& [id, r] : script_.delivered) {
    gone += r == "gone@x.test";
  }
  EXPECT_EQ(gone, 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dead/" + kDeadId + ".eml"));
}

TEST_F(QueueTest, RequeueTakesOnlyAQueueIdAndItsErrorsNameNoPath) {
  // Was: POST /dead/%2e%2e/requeue answered with the absolute data directory
  // ("open /var/lib/chute/dead/%2e%2e.json: ..."), and any string named a file.
  StartQueue();
  ASSERT_EQ(mkdir((dir_ + "/dead").c_str(), 0700), 0);
  std::ofstream(dir_ + "/outside.json") << R"({"recipients": [{"address": "x@x.test"}]})";
  std::ofstream(dir_ + "/outside.eml") << "Subject: t\r\n\r\nhello\r\n";
  for (const char* bad :
       {"", ".", "..", "%2e%2e", "../outside", "..%2Foutside", "%2E%2E%2Foutside",
        "19abcf07e2c010000000003", "19ABCF07E2C010000000003/", "M3", "19ABCF07E2C0100000000033"}) {
    absl::Status status = stage_->Requeue(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(status.message(), "not a queue id") << bad;
  }
  EXPECT_EQ(queue_->queued(), 0u);
  absl::Status unknown = stage_->Requeue(kDeadId);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(), std::string("no dead letter ") + kDeadId);
  // A damaged dead letter: DataLoss, still without a path.
  std::ofstream(dir_ + "/dead/" + kDeadId + ".json") << "not json";
  absl::Status damaged = stage_->Requeue(kDeadId);
  EXPECT_EQ(damaged.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(damaged.message().find('/'), absl::string_view::npos) << damaged.message();
  std::ofstream(dir_ + "/dead/" + kDeadId + ".json") << R"({"recipients": [{"address": "y"}]})";
  damaged = stage_->Requeue(kDeadId);  // no .eml beside it
  EXPECT_EQ(damaged.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(damaged.message().find('/'), absl::string_view::npos) << damaged.message();
  EXPECT_TRUE(spool::IsQueueId("19ABCF07E2C01000000002A"));
  EXPECT_TRUE(spool::IsQueueId("19ABCF07E2C0100000002A"));  // 22 digits: ids of earlier versions
}

TEST_F(QueueTest, HeldMessageWaitsUntilReleasedAndDeleteSettlesWithoutDelivery) {
  script_.answers["x@x.test"] = {Outcome::kTransient, "451 4.2.0 later"};
  StartQueue(absl::Seconds(3600));  // no retry on its own during the test
  HandOver(Spool("M4", {"x@x.test"}));
  HandOver(Spool("M5", {"x@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() == 2; }));
  ASSERT_TRUE(queue_->Hold("M4").ok());
  EXPECT_TRUE(queue_->Show("M4")->held);
  EXPECT_EQ(queue_->Retry("nope").code(), absl::StatusCode::kNotFound);
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    script_.answers.clear();
  }
  EXPECT_EQ(queue_->RetryAll(), 1u);  // M5 only: M4 is held
  ASSERT_TRUE(WaitFor([&] { return queue_->queued() == 1; }));
  EXPECT_TRUE(queue_->Show("M4").ok());
  ASSERT_TRUE(queue_->Delete("M4").ok());
  EXPECT_EQ(queue_->queued(), 0u);
  EXPECT_EQ(gauges_.messages.load(), 0);
  std::lock_guard<std::mutex> lock(script_.mu);
  for (const auto& [id, r] : script_.delivered) {
    EXPECT_NE(id, "M4");
  }
}

TEST(RouterTest, DomainBeatsTenantBeatsTheDefaultRoute) {
  Config config;
  RouteConfig staff;
  staff.name = "staff";
  staff.domains = {"contoso.test"};
  RouteConfig payroll;
  payroll.name = "payroll";
  payroll.tenants = {"payroll"};
  config.routes = {staff, payroll};
  Router router(config);
  ASSERT_EQ(router.size(), 3u);
  EXPECT_EQ(router.route(2).name, "default");
  EXPECT_EQ(router.Find("contoso.test", "payroll"), 0);  // the domain's route first
  EXPECT_EQ(router.Find("CONTOSO.Test", ""), 0);
  EXPECT_EQ(router.Find("other.test", "payroll"), 1);
  EXPECT_EQ(router.Find("other.test", "someone"), 2);
  EXPECT_EQ(router.FindAddress("ann@contoso.test", ""), 0);
  EXPECT_EQ(router.Describe("contoso.test", ""), "route \"staff\" (by domain)");
  EXPECT_EQ(router.Describe("x.test", "payroll"), "route \"payroll\" (by tenant payroll)");
  EXPECT_EQ(router.Describe("x.test", ""), "route \"default\"");
  config.default_route = false;
  Router strict(config);
  EXPECT_EQ(strict.size(), 2u);
  EXPECT_EQ(strict.Find("other.test", "someone"), kNoRoute);
  EXPECT_EQ(strict.Describe("other.test", "someone"), "");
}

TEST(RouterTest, DestinationNamesBackendAndTargets) {
  DeliveryConfig d;
  d.maildir_root = "/m";
  EXPECT_EQ(Destination(d), "maildir:/m");
  d.backend = DeliveryBackend::kSmtp;
  d.targets = {"127.0.0.1:25", "127.0.0.2:25"};
  EXPECT_EQ(Destination(d), "smtp:127.0.0.1:25,127.0.0.2:25");
}

TEST_F(QueueTest, AMessageOnTwoRoutesIsDeliveredByEachAndSettledOnce) {
  StartQueue(absl::Milliseconds(50), /*other_route=*/true);
  std::unique_ptr<QueuedMessage> message = Spool("M10", {"a@x.test", "b@y.test", "c@x.test"});
  std::shared_ptr<spool::Segment> segment = message->record.segment;
  uint64_t offset = message->record.record_offset;
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(ReadRecord(*segment, offset).state, spool::RecordState::kSettled);
  EXPECT_EQ(segment->live.load(), 0);
  std::lock_guard<std::mutex> lock(script_.mu);
  std::lock_guard<std::mutex> other_lock(other_script_.mu);
  EXPECT_EQ(script_.delivered, (std::vector<std::pair<std::string, std::string>>{
                                   {"M10", "a@x.test"}, {"M10", "c@x.test"}}));
  EXPECT_EQ(other_script_.delivered,
            (std::vector<std::pair<std::string, std::string>>{{"M10", "b@y.test"}}));
}

TEST_F(QueueTest, ARouteThatDefersHoldsOnlyItsPartAndTheRecordWaitsForIt) {
  other_script_.answers["b@y.test"] = {Outcome::kTransient, "451 4.4.1 connect refused"};
  StartQueue(absl::Seconds(3600), /*other_route=*/true);
  std::unique_ptr<QueuedMessage> message = Spool("M11", {"a@x.test", "b@y.test"});
  std::shared_ptr<spool::Segment> segment = message->record.segment;
  uint64_t offset = message->record.record_offset;
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] {
    return stage_->queue(0).counters().recipients_deferred.load() == 1 &&
           queue_->counters().recipients_delivered.load() == 1;
  }));
  EXPECT_EQ(queue_->queued(), 0u);  // the default route's part is done
  EXPECT_EQ(stage_->queue(0).queued(), 1u);
  spool::DecodedRecord record = ReadRecord(*segment, offset);
  EXPECT_EQ(record.state, spool::RecordState::kLive);
  EXPECT_EQ(record.marks[0], spool::Mark::kDelivered);  // a restart would not send it again
  EXPECT_EQ(record.marks[1], spool::Mark::kPending);
  absl::StatusOr<QueueEntry> entry = stage_->Show("M11");
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ(entry->route, "other");
  EXPECT_EQ(entry->pending, std::vector<std::string>{"b@y.test"});
  {
    std::lock_guard<std::mutex> lock(other_script_.mu);
    other_script_.answers.clear();
  }
  ASSERT_TRUE(stage_->Retry("M11").ok());
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(ReadRecord(*segment, offset).state, spool::RecordState::kSettled);
}

TEST_F(QueueTest, DeadRecipientsOfEveryRouteGoToOneDeadLetter) {
  script_.answers["a@x.test"] = {Outcome::kPermanent, "550 5.1.1 a unknown"};
  other_script_.answers["b@y.test"] = {Outcome::kPermanent, "550 5.1.1 b unknown"};
  StartQueue(absl::Seconds(3600), /*other_route=*/true);
  HandOver(Spool(kDeadId, {"a@x.test", "b@y.test", "c@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  std::vector<DeadEntry> dead = stage_->Dead();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_NE(dead[0].json.find("a unknown"), std::string::npos) << dead[0].json;
  EXPECT_NE(dead[0].json.find("b unknown"), std::string::npos) << dead[0].json;
  EXPECT_NE(dead[0].json.find("\"route\": \"other\""), std::string::npos) << dead[0].json;
  EXPECT_EQ(dead[0].json.find("c@x.test"), std::string::npos);  // delivered
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    std::lock_guard<std::mutex> other_lock(other_script_.mu);
    script_.answers.clear();
    other_script_.answers["b@y.test"] = {Outcome::kTransient, "451 4.4.1 not yet"};
  }
  // Requeued, it is routed again: each route delivers its own recipient once.
  ASSERT_TRUE(stage_->Requeue(kDeadId).ok());
  ASSERT_TRUE(WaitFor([&] { return stage_->queue(0).counters().recipients_deferred.load() == 1; }));
  EXPECT_EQ(stage_->Requeue(kDeadId).code(), absl::StatusCode::kAlreadyExists);
  {
    std::lock_guard<std::mutex> lock(other_script_.mu);
    other_script_.answers.clear();
  }
  ASSERT_TRUE(stage_->Retry(kDeadId).ok());
  ASSERT_TRUE(WaitFor([&] { return stage_->Dead().empty() && gauges_.messages.load() == 0; }));
  std::lock_guard<std::mutex> lock(other_script_.mu);
  EXPECT_EQ(other_script_.delivered,
            (std::vector<std::pair<std::string, std::string>>{{kDeadId, "b@y.test"}}));
}

TEST_F(QueueTest, DeletingAMessageOnTwoRoutesDropsEveryPart) {
  script_.answers["a@x.test"] = {Outcome::kTransient, "451 later"};
  other_script_.answers["b@y.test"] = {Outcome::kTransient, "451 later"};
  StartQueue(absl::Seconds(3600), /*other_route=*/true);
  std::unique_ptr<QueuedMessage> message = Spool("M12", {"a@x.test", "b@y.test"});
  std::shared_ptr<spool::Segment> segment = message->record.segment;
  uint64_t offset = message->record.record_offset;
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] { return stage_->queued() == 2 && !stage_->Show("M12")->in_flight; }));
  EXPECT_EQ(stage_->List().size(), 2u);  // one entry per route
  ASSERT_TRUE(stage_->Hold("M12").ok());
  ASSERT_TRUE(stage_->Delete("M12").ok());
  EXPECT_EQ(stage_->Delete("M12").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(stage_->queued(), 0u);
  EXPECT_EQ(gauges_.messages.load(), 0);
  EXPECT_EQ(ReadRecord(*segment, offset).state, spool::RecordState::kSettled);
}

TEST_F(QueueTest, RecipientsWithoutARouteKeepTheRecordInTheSpool) {
  StartQueue(absl::Milliseconds(50), /*other_route=*/true);
  std::unique_ptr<QueuedMessage> message = Spool("M13", {"a@x.test", "b@z.test"});
  std::shared_ptr<spool::Segment> segment = message->record.segment;
  uint64_t offset = message->record.record_offset;
  size_t unrouted = 0;
  std::vector<RoutedPart> parts =
      SplitByRoute(std::move(message), {1, kNoRoute}, stage_->router(), &unrouted);
  EXPECT_EQ(unrouted, 1u);
  ASSERT_EQ(parts.size(), 1u);
  ASSERT_TRUE(rings_[1]->TryPush(parts[0].message));
  queue_->Notify();
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_delivered.load() == 1; }));
  ASSERT_TRUE(WaitFor([&] { return queue_->queued() == 0; }));
  spool::DecodedRecord record = ReadRecord(*segment, offset);
  EXPECT_EQ(record.state, spool::RecordState::kLive);  // b@z.test waits for a route
  EXPECT_EQ(record.marks[0], spool::Mark::kDelivered);
  EXPECT_EQ(record.marks[1], spool::Mark::kPending);
}

TEST_F(QueueTest, GivenUpRecipientsOfEveryRouteGetOneReportDeliveredLikeAnyMessage) {
  script_.answers["a@x.test"] = {Outcome::kPermanent, "550 5.1.1 a unknown"};
  other_script_.answers["b@y.test"] = {Outcome::kPermanent, "554 5.7.1 b refused"};
  UseReporter("ops@x.test");
  StartQueue(absl::Seconds(3600), /*other_route=*/true);
  HandOver(Spool(kDeadId, {"a@x.test", "b@y.test", "c@x.test"}));
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(script_.mu);
    return script_.delivered.size() == 2;  // c@x.test, then the report to ops@x.test
  }));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0 && stage_->queued() == 0; }));
  EXPECT_EQ(reporter_->reports_sent(), 1u);
  std::string report_id;
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    EXPECT_EQ(script_.delivered[1].second, "ops@x.test");
    report_id = script_.delivered[1].first;
  }
  EXPECT_NE(report_id, kDeadId);
  EXPECT_TRUE(spool::IsQueueId(report_id));
  // Delivered, the report's files are gone; the message's dead letter stays.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/reports/" + report_id + ".eml"));
  EXPECT_EQ(stage_->Dead().size(), 1u);
}

TEST_F(QueueTest, NoReportForTheNullSenderNorWhenThereIsNobodyToTell) {
  script_.answers["a@x.test"] = {Outcome::kPermanent, "550 5.1.1 a unknown"};
  UseReporter("");
  StartQueue();
  HandOver(Spool("M20", {"a@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(reporter_->reports_sent(), 0u);
  reporter_.reset();
  stage_.reset();
  UseReporter("ops@x.test");
  StartQueue();
  std::unique_ptr<QueuedMessage> bounce = Spool("M21", {"a@x.test"});
  bounce->sender.clear();
  HandOver(std::move(bounce));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(reporter_->reports_sent(), 0u);
}

TEST_F(QueueTest, AReportThatCannotBeDeliveredIsADeadLetterAndNotReportedOn) {
  script_.answers["a@x.test"] = {Outcome::kPermanent, "550 5.1.1 a unknown"};
  script_.answers["ops@x.test"] = {Outcome::kPermanent, "550 5.1.1 ops unknown"};
  UseReporter("ops@x.test");
  StartQueue();
  HandOver(Spool(kDeadId, {"a@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return stage_->Dead().size() == 2 && stage_->queued() == 0; }));
  EXPECT_EQ(reporter_->reports_sent(), 1u);  // the report's own failure sends none
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/reports"));
  EXPECT_EQ(gauges_.messages.load(), 0);
}

TEST_F(QueueTest, ReportsLeftByAnEarlierRunAreDeliveredAtStart) {
  script_.answers["a@x.test"] = {Outcome::kPermanent, "550 5.1.1 a unknown"};
  script_.answers["ops@x.test"] = {Outcome::kTransient, "451 4.3.0 later"};
  UseReporter("ops@x.test");
  StartQueue(absl::Seconds(3600));
  HandOver(Spool(kDeadId, {"a@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() == 1; }));
  stage_.reset();  // stopped with the report undelivered
  reporter_.reset();
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    script_.answers.clear();
    script_.delivered.clear();
  }
  UseReporter("ops@x.test");
  StartQueue();
  EXPECT_EQ(reporter_->Replay(), 1u);
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(script_.mu);
    return script_.delivered.size() == 1;
  }));
  std::lock_guard<std::mutex> lock(script_.mu);
  EXPECT_EQ(script_.delivered[0].second, "ops@x.test");
}

// SampleReport: a report's input as the tests vary it: ids, sender and addressee set.
ReportInput SampleReport(const std::string& report_id, const std::string& original_id) {
  ReportInput in;
  in.hostname = "relay.x.test";
  in.report_id = report_id;
  in.original_id = original_id;
  in.sender = "payroll@x.test";
  in.to = "hr@x.test";
  in.received = absl::FromUnixSeconds(1'790'000'000);
  in.now = in.received + absl::Hours(1);
  return in;
}

TEST(ReportTest, TheReportIsAMultipartReportWithOneStatusBlockPerRecipientAndTheHeaders) {
  ReportInput in = SampleReport("1A000000000000000000001", "1A000000000000000000002");
  in.recipients = {{"ann@x.test", "550 5.1.1 <ann@x.test>: User unknown", "rfc822;Ann+40X.test"},
                   {"bob@x.test", "gave up after 9 attempts; last reply: 451 4.4.1 refused", ""},
                   {"eve@x.test", "554 rejected", ""}};
  in.envid = "payroll+2B2026-11";
  std::string content = "From: <payroll@x.test>\r\nSubject: Pay slips\r\n\r\nsecret body\r\n";
  in.original_content = content;
  std::string report = ComposeFailureReport(in);
  EXPECT_TRUE(absl::StrContains(report, "To: <hr@x.test>\r\n"));
  EXPECT_TRUE(absl::StrContains(report, "Auto-Submitted: auto-replied\r\n"));
  EXPECT_TRUE(absl::StrContains(
      report, "Content-Type: multipart/report; report-type=delivery-status;\r\n"));
  EXPECT_TRUE(absl::StrContains(report, "Reporting-MTA: dns; relay.x.test\r\n"));
  EXPECT_TRUE(absl::StrContains(report,
                                "Final-Recipient: rfc822; ann@x.test\r\nAction: failed"
                                "\r\nStatus: 5.1.1\r\n"));
  EXPECT_TRUE(absl::StrContains(report, "Status: 5.4.7\r\n"));  // bob: given up
  EXPECT_TRUE(absl::StrContains(report, "Status: 5.0.0\r\n"));  // eve: no enhanced code
  EXPECT_TRUE(absl::StrContains(report, "Subject: Pay slips\r\n"));
  EXPECT_FALSE(absl::StrContains(report, "secret body"));  // the header section only
  EXPECT_TRUE(absl::StrContains(report, "Original-Envelope-Id: payroll+2B2026-11\r\n"));
  EXPECT_TRUE(absl::StrContains(
      report, "Original-Recipient: rfc822; Ann@X.test\r\nFinal-Recipient: rfc822; ann@x.test"));
  EXPECT_TRUE(absl::StrContains(report, "Content-Type: text/rfc822-headers"));
  in.return_full = true;  // RET=FULL
  std::string full = ComposeFailureReport(in);
  EXPECT_TRUE(
      absl::StrContains(full, "Content-Type: message/rfc822\r\n\r\nFrom: <payroll@x.test>"));
  EXPECT_TRUE(absl::StrContains(full, "secret body"));
  std::string big = "Subject: big\r\n\r\n" + std::string(kReportFullBytesMax, 'x');
  in.original_content = big;
  EXPECT_FALSE(absl::StrContains(ComposeFailureReport(in), "xxxx"));  // too big: headers
  in.boundary_nonce = "0123abcd";
  report = ComposeFailureReport(in);
  EXPECT_TRUE(absl::StrContains(report, "\tboundary=\"=_1A000000000000000000001/0123abcd\"\r\n"));
  EXPECT_TRUE(absl::EndsWith(report, "--=_1A000000000000000000001/0123abcd--\r\n"));
  EXPECT_TRUE(absl::StrContains(report, "Diagnostic-Code: smtp; 550 5.1.1"));
  EXPECT_TRUE(absl::StrContains(report, "Diagnostic-Code: X-Chute; gave up after 9 attempts"));
  EXPECT_EQ(report.find("\n"), report.find("\r\n") + 1);  // CRLF line ends
  for (size_t i = 0; (i = report.find('\n', i + 1)) != std::string::npos;) {
    ASSERT_EQ(report[i - 1], '\r') << i;
  }
}

TEST(ReportTest, XtextDecodes) {
  EXPECT_EQ(XtextDecoded("ann+40x.test"), "ann@x.test");
  EXPECT_EQ(XtextDecoded("a+2Bb+3D"), "a+b=");
  EXPECT_EQ(XtextDecoded("bad+4"), "bad+4");
  EXPECT_EQ(XtextDecoded("bad+zz"), "bad+zz");
}

TEST(ReportTest, StatusOfReadsTheEnhancedCodeOnlyWhenItIsOne) {
  EXPECT_EQ(StatusOf("550 5.1.1 no"), "5.1.1");
  EXPECT_EQ(StatusOf("552 5.3.4 too big"), "5.3.4");
  EXPECT_EQ(StatusOf("550 no enhanced code"), "5.0.0");
  EXPECT_EQ(StatusOf("550 5.x.1 odd"), "5.0.0");
  EXPECT_EQ(StatusOf("gave up after 3 attempts; last reply: 451 4.4.1 x"), "5.4.7");
  EXPECT_EQ(StatusOf(""), "5.0.0");
}

TEST_F(QueueTest, ADeferredRecipientThatAskedForDelayNoticesGetsOneOnce) {
  script_.answers["slow@x.test"] = {Outcome::kTransient, "451 4.4.1 connect refused"};
  script_.answers["quiet@x.test"] = {Outcome::kTransient, "451 4.4.1 connect refused"};
  UseReporter("ops@x.test");
  delay_notice_after_ = absl::Milliseconds(1);
  StartQueue(absl::Milliseconds(20));
  // FAILURE only, and no NOTIFY: no delay notice, however long they wait.
  std::unique_ptr<QueuedMessage> quiet = Spool("M31", {"quiet@x.test", "slow@x.test"});
  quiet->notify = {4, 0};
  quiet->received_unix_us -= 1000;
  HandOver(std::move(quiet));
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() >= 6; }));
  EXPECT_EQ(reporter_->reports_sent(), 0u);
  std::unique_ptr<QueuedMessage> message = Spool("M30", {"slow@x.test", "quiet@x.test"});
  message->notify = {static_cast<uint8_t>(8 | 4), 4};  // DELAY,FAILURE; FAILURE only
  message->received_unix_us -= 1000;                   // already older than the threshold
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() >= 16; }));
  EXPECT_EQ(reporter_->reports_sent(), 1u);  // one notice, however many retries
  std::lock_guard<std::mutex> lock(script_.mu);
  int notices = 0;
  for (const auto& [id, r] : script_.delivered) {
    notices += r == "ops@x.test";
  }
  EXPECT_EQ(notices, 1);
}

TEST(ReportTest, ADelayNoticeSaysDelayedAndUntilWhen) {
  ReportInput in = SampleReport("1A000000000000000000003", "1A000000000000000000004");
  in.now = in.received + absl::Hours(4);
  in.action = ReportAction::kDelayed;
  in.will_retry_until = in.received + absl::Hours(48);
  in.recipients = {{"ann@x.test", "451 4.4.1 connect to 10.0.0.5:25: Connection refused", ""}};
  in.original_content = "Subject: s\r\n\r\nb\r\n";
  std::string notice = ComposeFailureReport(in);
  EXPECT_TRUE(absl::StrContains(notice, "Subject: Delayed Mail (still being retried)\r\n"));
  EXPECT_TRUE(absl::StrContains(notice, "Action: delayed\r\nStatus: 4.4.1\r\n"));
  EXPECT_TRUE(absl::StrContains(
      notice, "Will-Retry-Until: " + smtp::FormatRfc5322Date(in.will_retry_until)));
  EXPECT_EQ(DelayStatusOf("421 no code"), "4.0.0");
}

TEST_F(QueueTest, ADeliveredRecipientThatAskedNotifySuccessGetsASuccessNotice) {
  UseReporter("ops@x.test");
  StartQueue();
  // A message whose recipients did not ask (no NOTIFY, or FAILURE only) makes no notice.
  std::unique_ptr<QueuedMessage> quiet = Spool("M41", {"plain@x.test", "failures@x.test"});
  quiet->notify = {0, 4};
  HandOver(std::move(quiet));
  ASSERT_TRUE(WaitFor([&] { return gauges_.messages.load() == 0; }));
  EXPECT_EQ(reporter_->reports_sent(), 0u);
  std::unique_ptr<QueuedMessage> message = Spool("M40", {"glad@x.test", "plain@x.test"});
  message->notify = {static_cast<uint8_t>(2 | 4), 0};  // SUCCESS,FAILURE; none
  HandOver(std::move(message));
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(script_.mu);
    return script_.delivered.size() == 5;  // four recipients, and the notice
  }));
  EXPECT_EQ(reporter_->reports_sent(), 1u);
}

TEST(ReportTest, ASuccessNoticeSaysDeliveredOrRelayedWithoutTheBody) {
  ReportInput in = SampleReport("1A000000000000000000005", "1A000000000000000000006");
  in.action = ReportAction::kDelivered;
  in.return_full = true;  // RET=FULL is for failures
  in.recipients = {{"ann@x.test", "250 2.0.0 delivered", ""}};
  in.original_content = "Subject: s\r\n\r\nsecret\r\n";
  std::string notice = ComposeFailureReport(in);
  EXPECT_TRUE(absl::StrContains(notice, "Subject: Successful Mail Delivery Report\r\n"));
  EXPECT_TRUE(absl::StrContains(notice, "Action: delivered\r\nStatus: 2.0.0\r\n"));
  EXPECT_FALSE(absl::StrContains(notice, "secret"));
  in.action = ReportAction::kRelayed;
  EXPECT_TRUE(absl::StrContains(ComposeFailureReport(in), "Action: relayed\r\n"));
}

TEST_F(QueueTest, ARetryAskedWhileTheMessageIsBeingTriedIsNotLost) {
  script_.answers["x@x.test"] = {Outcome::kTransient, "451 4.3.0 later"};
  StartQueue(absl::Seconds(3600));  // no retry on its own during the test
  {
    std::unique_lock<std::mutex> backend_blocked(script_.mu);  // the attempt waits on it
    HandOver(Spool("M50", {"x@x.test"}));
    ASSERT_TRUE(WaitFor([&] {
      absl::StatusOr<QueueEntry> entry = stage_->Show("M50");
      return entry.ok() && entry->in_flight;
    }));
    ASSERT_TRUE(stage_->Retry("M50").ok());
  }
  // Tried again as soon as the first attempt ended, not in an hour.
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() >= 2; }));
}

TEST_F(QueueTest, AReportLeftForAnAddressNoLongerInTheTenantIsDropped) {
  script_.answers["a@x.test"] = {Outcome::kPermanent, "550 5.1.1 a unknown"};
  script_.answers["ops@x.test"] = {Outcome::kTransient, "451 4.3.0 later"};
  UseReporter("ops@x.test");
  StartQueue(absl::Seconds(3600));
  HandOver(Spool(kDeadId, {"a@x.test"}));
  ASSERT_TRUE(WaitFor([&] { return queue_->counters().recipients_deferred.load() == 1; }));
  stage_.reset();
  reporter_.reset();
  UseReporter("ops@x.test", [](int64_t, absl::string_view) { return false; });  // x.test moved
  StartQueue();
  EXPECT_EQ(reporter_->Replay(), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/reports"));
}

}  // namespace
}  // namespace chute::delivery
