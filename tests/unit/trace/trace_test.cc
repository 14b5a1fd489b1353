// trace_test.cc: unit tests for the message trace's store, writer, pruning and reopening.

#include "trace/trace.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace chute::trace {
namespace {

class TraceStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/chute-trace-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir_ + "/trace.db", true);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override {
    store_.reset();
    std::string command = "rm -rf " + dir_;
    ASSERT_EQ(system(command.c_str()), 0);
  }

  static Event Received(const std::string& id, int64_t time_us, std::vector<std::string> recipients,
                        const std::string& sender = "a@x.test") {
    Event e;
    e.kind = Event::Kind::kReceived;
    e.time_us = time_us;
    e.queue_id = id;
    e.tenant = "x.test";
    e.account = sender;
    e.sender = sender;
    e.message_id = "<" + id + "@x.test>";
    e.client = "127.0.0.1";
    e.recipients = std::move(recipients);
    e.size_bytes = 100;
    return e;
  }
  static Event Attempt(const std::string& id, int64_t time_us, const std::string& recipient,
                       Status status, const std::string& reply, uint32_t attempt) {
    Event e;
    e.kind = Event::Kind::kAttempt;
    e.time_us = time_us;
    e.queue_id = id;
    e.recipient = recipient;
    e.status = status;
    e.reply = reply;
    e.target = "smtp:127.0.0.1:25";
    e.attempt = attempt;
    return e;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(TraceStoreTest, AResultThatArrivesBeforeItsReceivedEventIsKept) {
  // Delivery hands its results over at once; shards hand theirs over once a second.
  ASSERT_TRUE(
      store_->Append({Attempt("Q1", 2000, "b@x.test", Status::kDelivered, "250 ok", 1)}).ok());
  ASSERT_TRUE(store_->Append({Received("Q1", 1000, {"b@x.test", "c@x.test"})}).ok());
  absl::StatusOr<std::vector<Row>> rows = store_->Find(Query{});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].recipient, "b@x.test");
  EXPECT_EQ((*rows)[0].status, Status::kDelivered);
  EXPECT_EQ((*rows)[0].reply, "250 ok");
  EXPECT_EQ((*rows)[1].recipient, "c@x.test");
  EXPECT_EQ((*rows)[1].status, Status::kPending);
}

TEST_F(TraceStoreTest, AnOlderResultDoesNotOverwriteANewerOne) {
  ASSERT_TRUE(store_
                  ->Append({Received("Q1", 1000, {"b@x.test"}),
                            Attempt("Q1", 3000, "b@x.test", Status::kDelivered, "250 ok", 2),
                            Attempt("Q1", 2000, "b@x.test", Status::kDeferred, "451 later", 1)})
                  .ok());
  absl::StatusOr<std::vector<Row>> rows = store_->Find(Query{});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].status, Status::kDelivered);
  EXPECT_EQ((*rows)[0].attempts, 2);
  absl::StatusOr<std::vector<EventRow>> events = store_->Events("Q1");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[0].event, "received");
  EXPECT_EQ((*events)[1].event, "deferred");
  EXPECT_EQ((*events)[2].event, "delivered");
}

TEST_F(TraceStoreTest, FiltersCombineAndTheNewestComeFirst) {
  ASSERT_TRUE(store_
                  ->Append({Received("Q1", 1000, {"b@x.test"}, "s1@x.test"),
                            Received("Q2", 2000, {"b@x.test", "c@x.test"}, "s2@x.test"),
                            Received("Q3", 3000, {"c@x.test"}, "s1@x.test"),
                            Attempt("Q2", 2500, "c@x.test", Status::kFailed, "550 no", 1)})
                  .ok());
  Query by_sender;
  by_sender.sender = "S1@x.test";  // addresses match whatever their case
  absl::StatusOr<std::vector<Row>> rows = store_->Find(by_sender);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].queue_id, "Q3");
  EXPECT_EQ((*rows)[1].queue_id, "Q1");

  Query failed;
  failed.status = Status::kFailed;
  rows = store_->Find(failed);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].queue_id, "Q2");
  EXPECT_EQ((*rows)[0].recipient, "c@x.test");

  Query window;
  window.recipient = "b@x.test";
  window.from_us = 1500;
  window.to_us = 2500;
  rows = store_->Find(window);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].queue_id, "Q2");

  Query by_message_id;
  by_message_id.message_id = "Q3@x.test";  // without the angle brackets
  rows = store_->Find(by_message_id);
  ASSERT_EQ(rows->size(), 1u);

  Query limited;
  limited.limit = 2;
  rows = store_->Find(limited);
  EXPECT_EQ(rows->size(), 2u);
}

TEST_F(TraceStoreTest, PruneRemovesOldMessagesWithTheirRecipientsAndEvents) {
  ASSERT_TRUE(
      store_
          ->Append({Received("OLD1", 1000, {"b@x.test"}), Received("OLD2", 1100, {"b@x.test"}),
                    Attempt("OLD1", 1200, "b@x.test", Status::kDelivered, "250", 1),
                    Received("NEW", 5000, {"b@x.test"})})
          .ok());
  absl::StatusOr<int64_t> pruned = store_->Prune(2000, 1);  // at most one per pass
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 1);
  pruned = store_->Prune(2000, 100);
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 1);
  absl::StatusOr<std::vector<Row>> rows = store_->Find(Query{});
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].queue_id, "NEW");
  EXPECT_TRUE(store_->Events("OLD1")->empty());
}

TEST_F(TraceStoreTest, TheWriterWritesEverythingSubmittedBeforeStop) {
  absl::StatusOr<std::unique_ptr<Store>> own = Store::Open(dir_ + "/trace.db", true);
  ASSERT_TRUE(own.ok());
  Writer writer(*std::move(own), 90);
  // Recent times: the writer prunes what is older than the retention period as it goes.
  int64_t now_us = absl::ToUnixMicros(absl::Now());
  for (int i = 0; i < 100; ++i) {
    std::vector<Event> events = {Received("W" + std::to_string(i), now_us + i, {"b@x.test"})};
    EXPECT_TRUE(writer.Submit(events));
    EXPECT_TRUE(events.empty());
  }
  writer.Stop();
  EXPECT_EQ(writer.events_written.load(), 100u);
  EXPECT_EQ(writer.events_dropped.load(), 0u);
  Query all;
  all.limit = kQueryRowsMax;
  EXPECT_EQ(store_->Find(all)->size(), 100u);
}

TEST_F(TraceStoreTest, TheWriterPrunesWhatIsOlderThanTheRetentionPeriod) {
  int64_t now_us = absl::ToUnixMicros(absl::Now());
  int64_t day_us = int64_t{86400} * 1000000;
  ASSERT_TRUE(store_
                  ->Append({Received("OLD", now_us - 8 * day_us, {"b@x.test"}),
                            Received("KEPT", now_us - 6 * day_us, {"b@x.test"})})
                  .ok());
  absl::StatusOr<std::unique_ptr<Store>> own = Store::Open(dir_ + "/trace.db", true);
  ASSERT_TRUE(own.ok());
  Writer writer(*std::move(own), 7);
  std::vector<Event> events = {Received("NEW", now_us, {"b@x.test"})};
  ASSERT_TRUE(writer.Submit(events));
  writer.Stop();
  EXPECT_EQ(writer.messages_pruned.load(), 1u);
  absl::StatusOr<std::vector<Row>> rows = store_->Find(Query{});
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].queue_id, "NEW");
  EXPECT_EQ((*rows)[1].queue_id, "KEPT");
}

TEST_F(TraceStoreTest, ADatabaseRemovedUnderTheWriterIsMadeAgain) {
  // Was: SQLite went on writing into the unlinked file, and chutectl trace found nothing.
  store_.reset();
  absl::StatusOr<std::unique_ptr<Store>> own = Store::Open(dir_ + "/trace.db", true);
  ASSERT_TRUE(own.ok());
  Writer writer(*std::move(own), 90);
  int64_t now_us = absl::ToUnixMicros(absl::Now());
  std::vector<Event> first = {Received("BEFORE", now_us, {"b@x.test"})};
  ASSERT_TRUE(writer.Submit(first));
  for (int i = 0; i < 200 && writer.events_written.load() < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(writer.events_written.load(), 1u);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    unlink((dir_ + "/trace.db" + suffix).c_str());
  }
  std::vector<Event> second = {Received("AFTER", now_us + 1, {"b@x.test"})};
  ASSERT_TRUE(writer.Submit(second));
  writer.Stop();
  absl::StatusOr<std::unique_ptr<Store>> reread = Store::Open(dir_ + "/trace.db", false);
  ASSERT_TRUE(reread.ok()) << reread.status();
  absl::StatusOr<std::vector<Row>> rows = (*reread)->Find(Query{});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].queue_id, "AFTER");
}

TEST(TraceStatusTest, NamesRoundTrip) {
  for (Status s :
       {Status::kPending, Status::kDelivered, Status::kDeferred, Status::kFailed, Status::kDead}) {
    EXPECT_EQ(ParseStatus(StatusName(s)), s);
  }
  EXPECT_FALSE(ParseStatus("lost").has_value());
}

}  // namespace
}  // namespace chute::trace
