#pragma once

// BuildMessage: an RFC 5322 message of about `size_bytes` bytes (never less than its headers):
// From:, To:, Subject:, Date:, a Message-ID: unique per run and sequence number, then body
// lines of printable text, some starting with '.', so that DATA's dot-stuffing is exercised
// (smtp::AppendDotStuffed, by the session). Pure.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace chute::load {

struct MessageHeaders {
  std::string from;
  std::vector<std::string> to;
  std::string date;    // RFC 5322 date-time, fixed per run
  std::string run_id;  // Message-ID: <seq.run_id@chute-load>
};

std::string BuildMessage(const MessageHeaders& headers, uint64_t seq, uint64_t size_bytes);

}  // namespace chute::load
