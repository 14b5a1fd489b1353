// Golden transcripts: tests/golden/*.smtp, one SMTP conversation per file, so that a new case
// is data, not code. Format, one item per line:
//
//   # a comment                         (ignored, as are blank lines)
//   @ listener starttls|implicit|none   (before the first C:; none = a trusted listener session)
//   @ limit recipients|size|errors|auth_failures N
//   @ answer auth|mail|rcpt|end CODE TEXT   (the handler's next answer of that kind)
//   C: text                             one client read: text + CR LF; \r \n \0 \xHH \\ escapes
//   R: text                             one client read of raw bytes, escapes, no CR LF added
//   S: text                             one expected reply line (without CR LF)
//
// Every transcript runs one read per C:/R: line; those without STARTTLS also run split into
// single bytes and all concatenated into one pipelined read. Each run must produce exactly
// the S: lines.

#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/unit/smtp/session_harness.h"

namespace chute::smtp {
namespace {

using testing::Drive;
using testing::RecordingHandler;
using testing::TestTime;

struct Transcript {
  std::string name;
  SessionOptions options;
  bool trusted = false;
  std::vector<std::pair<std::string, Reply>> answers;  // kind, reply
  std::vector<std::string> reads;
  std::string expected;
  std::deque<std::string> texts;  // owns the answers' texts
};

std::string Unescape(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out.push_back(text[i]);
      continue;
    }
    char c = text[++i];
    if (c == 'r') {
      out.push_back('\r');
    } else if (c == 'n') {
      out.push_back('\n');
    } else if (c == '0') {
      out.push_back('\0');
    } else if (c == 'x' && i + 2 < text.size()) {
      int value = 0;
      if (!absl::SimpleHexAtoi(text.substr(i + 1, 2), &value)) {
        value = '?';
      }
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool ParseTranscript(const std::string& path, Transcript* t, std::string* error) {
  std::ifstream file(path);
  std::string line;
  int number = 0;
  t->options.hostname = "mx.example.test";
  while (std::getline(file, line)) {
    ++number;
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::vector<std::string> words = absl::StrSplit(line, ' ');
    if (absl::StartsWith(line, "C: ") || line == "C:") {
      t->reads.push_back(Unescape(line.size() > 3 ? line.substr(3) : "") + "\r\n");
    } else if (absl::StartsWith(line, "R: ")) {
      t->reads.push_back(Unescape(line.substr(3)));
    } else if (absl::StartsWith(line, "S: ")) {
      absl::StrAppend(&t->expected, line.substr(3), "\r\n");
    } else if (words.size() == 3 && words[0] == "@" && words[1] == "listener") {
      t->options.starttls_offered = words[2] == "starttls";
      t->options.tls_active = words[2] == "implicit";
      t->options.tls_required = words[2] != "none";
      t->trusted = words[2] == "none";
    } else if (words.size() == 4 && words[0] == "@" && words[1] == "limit") {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(words[3], &n)) {
        *error = absl::StrCat(path, ":", number, ": bad number");
        return false;
      }
      if (words[2] == "recipients") {
        t->options.recipients_per_message = static_cast<uint32_t>(n);
      } else if (words[2] == "size") {
        t->options.message_size_bytes = n;
      } else if (words[2] == "errors") {
        t->options.errors_per_session = static_cast<uint32_t>(n);
      } else if (words[2] == "auth_failures") {
        t->options.auth_failures_per_session = static_cast<uint32_t>(n);
      } else {
        *error = absl::StrCat(path, ":", number, ": unknown limit ", words[2]);
        return false;
      }
    } else if (words.size() >= 4 && words[0] == "@" && words[1] == "answer") {
      int code = 0;
      if (!absl::SimpleAtoi(words[3], &code)) {
        *error = absl::StrCat(path, ":", number, ": bad reply code");
        return false;
      }
      size_t text_at = line.find(words[3]) + words[3].size() + 1;
      t->texts.push_back(text_at < line.size() ? line.substr(text_at) : "");
      t->answers.push_back({words[2], Reply{static_cast<uint16_t>(code), t->texts.back()}});
    } else {
      *error = absl::StrCat(path, ":", number, ": cannot parse: ", line);
      return false;
    }
  }
  return true;
}

std::string Play(const Transcript& t, const std::vector<std::string>& reads, size_t piece_bytes) {
  RecordingHandler handler;
  for (const auto& [kind, reply] : t.answers) {
    (kind == "auth"   ? handler.auth_replies
     : kind == "mail" ? handler.mail_replies
     : kind == "rcpt" ? handler.rcpt_replies
                      : handler.end_replies)
        .push_back(reply);
  }
  Session session(t.options, &handler);
  if (t.trusted) {
    session.MarkAuthenticated();
  }
  session.Start(TestTime());
  std::string out;
  session.SwapOutput(out);
  for (const std::string& read : reads) {
    out += Drive(session, handler, read, piece_bytes);
  }
  return out;
}

std::vector<std::string> GoldenFiles() {
  std::vector<std::string> files;
  std::string dir = CHUTE_GOLDEN_DIR;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return files;
  }
  while (dirent* entry = readdir(d)) {
    std::string name = entry->d_name;
    if (absl::EndsWith(name, ".smtp")) {
      files.push_back(dir + "/" + name);
    }
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, Transcript) {
  Transcript t;
  std::string error;
  ASSERT_TRUE(ParseTranscript(GetParam(), &t, &error)) << error;
  ASSERT_FALSE(t.expected.empty()) << GetParam() << " expects nothing";
  EXPECT_EQ(Play(t, t.reads, 0), t.expected) << GetParam() << ": one read per line";
  // After STARTTLS, how the reads are split is the point (what shares a read with STARTTLS
  // is discarded), so such transcripts run only as written.
  bool has_starttls = std::any_of(t.reads.begin(), t.reads.end(), [](const std::string& r) {
    return absl::StrContains(absl::AsciiStrToUpper(r), "STARTTLS");
  });
  if (!has_starttls) {
    EXPECT_EQ(Play(t, t.reads, 1), t.expected) << GetParam() << ": one byte at a time";
    std::string all;
    for (const std::string& read : t.reads) {
      all += read;
    }
    EXPECT_EQ(Play(t, {all}, 0), t.expected) << GetParam() << ": all pipelined in one read";
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenTest, ::testing::ValuesIn(GoldenFiles()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(info.param.rfind('/') + 1);
                           name = name.substr(0, name.size() - 5);
                           for (char& c : name) {
                             if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) {
                               c = '_';
                             }
                           }
                           return name;
                         });

TEST(GoldenFilesTest, ThereAreTranscripts) { EXPECT_GE(GoldenFiles().size(), 5u); }

}  // namespace
}  // namespace chute::smtp
