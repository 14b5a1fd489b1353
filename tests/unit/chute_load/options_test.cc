// options_test.cc: unit tests for chute-load's command-line options.

#include "tools/chute-load/options.h"

#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"

namespace chute::load {
namespace {

absl::StatusOr<Options> Parse(std::vector<std::string> args) { return ParseOptions(args); }

std::string TempFile(const std::string& content) {
  std::string path = testing::TempDir() + "/chute_load_secret";
  std::ofstream(path) << content;
  return path;
}

TEST(OptionsTest, DefaultsBoundTheRun) {
  absl::StatusOr<Options> o = Parse({"--target", "127.0.0.1:2525"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->duration_s, kDefaultDurationS) << "neither --messages nor --duration";
  EXPECT_EQ(o->auth, AuthMech::kNone);
  EXPECT_EQ(o->to.size(), 1u);
  EXPECT_EQ(o->sizes.size(), 1u);
  EXPECT_GE(o->threads, 1);
  absl::StatusOr<Options> counted = Parse({"--target", "127.0.0.1:2525", "--messages", "5"});
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ(counted->duration_s, 0);
}

TEST(OptionsTest, EveryFlagParses) {
  std::string password = TempFile("secret\n");
  absl::StatusOr<Options> o = Parse({"--target",
                                     "[::1]:587",
                                     "--scenario",
                                     "reconnect",
                                     "--tls",
                                     "implicit",
                                     "--user",
                                     "app@example.test",
                                     "--password-file",
                                     password,
                                     "--auth",
                                     "login",
                                     "--from",
                                     "app@example.test",
                                     "--to",
                                     "a{n}@example.test",
                                     "--to",
                                     "b@example.test",
                                     "--connections=8",
                                     "--messages",
                                     "100",
                                     "--duration",
                                     "2.5",
                                     "--rate",
                                     "50",
                                     "--size",
                                     "10k",
                                     "--rcpts",
                                     "3",
                                     "--threads",
                                     "2",
                                     "--bdat",
                                     "--no-pipelining",
                                     "--json",
                                     "--timeout",
                                     "5",
                                     "--max-errors",
                                     "7"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->scenario, Scenario::kReconnect);
  EXPECT_EQ(o->tls, TlsMode::kImplicit);
  EXPECT_EQ(o->auth, AuthMech::kLogin);
  EXPECT_EQ(o->secret, "secret") << "the trailing newline is not part of it";
  EXPECT_EQ(o->to.size(), 2u);
  EXPECT_EQ(o->connections, 8);
  EXPECT_EQ(o->messages, 100u);
  EXPECT_EQ(o->duration_s, 2.5);
  EXPECT_EQ(o->rate_per_s, 50);
  EXPECT_EQ(o->sizes[0].bytes, 10240u);
  EXPECT_EQ(o->rcpts, 3);
  EXPECT_EQ(o->threads, 2);
  EXPECT_TRUE(o->bdat);
  EXPECT_FALSE(o->pipelining);
  EXPECT_TRUE(o->json);
  EXPECT_EQ(o->errors_max, 7u);
}

TEST(OptionsTest, TokenFileMeansXoauth2) {
  std::string token = TempFile("eyJ.a.b");
  absl::StatusOr<Options> o =
      Parse({"--target", "127.0.0.1:587", "--user", "app@example.test", "--token-file", token});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->auth, AuthMech::kXoauth2);
  EXPECT_EQ(o->secret, "eyJ.a.b");
}

TEST(OptionsTest, BadArgumentsAreRefusedNamingTheFlag) {
  std::string password = TempFile("pw");
  struct Case {
    std::vector<std::string> args;
    const char* flag;
  };
  const Case cases[] = {
      {{}, "--target"},
      {{"--target", "localhost:25"}, "--target"},
      {{"--target", "192.0.2.1:25"}, "--allow-remote"},
      {{"--target", "10.0.0.1:25"}, "--allow-remote"},
      {{"--target", "127.0.0.1:25", "--connections", "0"}, "--connections"},
      {{"--target", "127.0.0.1:25", "--connections", "100001"}, "--connections"},
      {{"--target", "127.0.0.1:25", "--size", "10x"}, "--size"},
      {{"--target", "127.0.0.1:25", "--size", "65m"}, "--size"},
      {{"--target", "127.0.0.1:25", "--size-dist", "1k:0"}, "--size-dist"},
      {{"--target", "127.0.0.1:25", "--size-dist", "1k"}, "--size-dist"},
      {{"--target", "127.0.0.1:25", "--scenario", "flood"}, "--scenario"},
      {{"--target", "127.0.0.1:25", "--tls", "ssl"}, "--tls"},
      {{"--target", "127.0.0.1:25", "--rcpts", "1001"}, "--rcpts"},
      {{"--target", "127.0.0.1:25", "--rate", "-1"}, "--rate"},
      {{"--target", "127.0.0.1:25", "--duration", "0"}, "--duration"},
      {{"--target", "127.0.0.1:25", "--password-file", password}, "--user"},
      {{"--target", "127.0.0.1:25", "--user", "a@b.test"}, "--user"},
      {{"--target", "127.0.0.1:25", "--password-file", "/nonexistent"}, "--password-file"},
      {{"--target", "127.0.0.1:25", "--user", "a@b.test", "--password-file", password, "--auth",
        "xoauth2"},
       "--auth"},
      {{"--target", "127.0.0.1:25", "--to", "a b@c"}, "--to"},
      {{"--target", "127.0.0.1:25", "--json=yes"}, "--json"},
      {{"--target", "127.0.0.1:25", "--messages"}, "--messages"},
      {{"--target", "127.0.0.1:25", "--frobnicate"}, "--frobnicate"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Options> o = Parse(c.args);
    ASSERT_FALSE(o.ok()) << c.flag;
    EXPECT_TRUE(absl::IsInvalidArgument(o.status())) << o.status();
    EXPECT_NE(o.status().message().find(c.flag), absl::string_view::npos) << o.status();
  }
  EXPECT_TRUE(absl::IsNotFound(Parse({"--help"}).status()));
}

TEST(OptionsTest, RemoteTargetsNeedAllowRemote) {
  EXPECT_TRUE(Parse({"--target", "127.1.2.3:25"}).ok());
  EXPECT_TRUE(Parse({"--target", "[::1]:25"}).ok());
  EXPECT_TRUE(Parse({"--target", "192.0.2.1:25", "--allow-remote"}).ok());
  EXPECT_FALSE(Parse({"--target", "[2001:db8::1]:25"}).ok());
}

TEST(OptionsTest, SizesAndDistributions) {
  EXPECT_EQ(*ParseBytes("512"), 512u);
  EXPECT_EQ(*ParseBytes("1K"), 1024u);
  EXPECT_EQ(*ParseBytes("2m"), 2u << 20);
  absl::StatusOr<std::vector<SizeBucket>> d = ParseSizeDist("1k:60,10k:30,1m:10");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ(PickSize(*d, 0.0), 1024u);
  EXPECT_EQ(PickSize(*d, 0.59), 1024u);
  EXPECT_EQ(PickSize(*d, 0.6), 10240u);
  EXPECT_EQ(PickSize(*d, 0.95), 1u << 20);
  EXPECT_EQ(ExpandAddress("u{n}@x.test", 42), "u42@x.test");
  EXPECT_EQ(ExpandAddress("fixed@x.test", 42), "fixed@x.test");
}

}  // namespace
}  // namespace chute::load
