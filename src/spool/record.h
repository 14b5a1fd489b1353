#pragma once

// Spool records (docs/architecture.md, Spool): what a segment file is made of. Like a Postfix queue
// file, a record is typed and length-prefixed, and its per-recipient "done" marks are bytes
// written in place later without an fsync of their own (a lost mark only means a redelivery,
// which the backends make harmless).
//
//   offset  size  field
//   0       4     magic "CHS1" (0x31534843 little-endian)
//   4       1     version (1; 2 when the envelope has DSN parameters)
//   5       1     state: 0 live, 1 settled            (written in place; not in the CRC)
//   6       2     recipient count n
//   8       4     payload bytes
//   12      4     CRC-32C of the payload
//   16      n     one mark per recipient: 0 pending, 1 delivered, 2 dead-lettered
//                 (written in place; not in the CRC), then zero padding to a multiple of 8
//   ...           payload: the envelope (below), the headers chute added, then the body
//
// Envelope: u16 id length, id; i64 received time (µs since the epoch); i64 tenant id; i64
// account id; u16+bytes client address; u16+bytes listener; u16+bytes sender; u16 recipient
// count, then u16+bytes per recipient; version 2 only: u8 DSN RET (0 none, 1 FULL, 2 HDRS),
// u16+bytes ENVID, then per recipient u8 NOTIFY bits and u16+bytes ORCPT (RFC 3461, as the
// client sent them); u32 content-prefix length (the added headers). What
// follows is the message "content" as delivered: the added headers, then the body. All
// integers little-endian. Pure; any thread.

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::spool {

inline constexpr uint32_t kRecordMagic = 0x31534843;  // "CHS1"
inline constexpr uint8_t kRecordVersion = 1;
inline constexpr uint8_t kRecordVersionDsn = 2;  // the envelope carries DSN parameters
inline constexpr size_t kRecordHeaderBytes = 16;
inline constexpr size_t kStateOffset = 5;
// A record's payload is at most a maximal message plus its envelope: anything larger in a
// header is garbage (a torn tail), not a record.
inline constexpr uint32_t kPayloadBytesMax = 64u << 20;
inline constexpr size_t kRecipientsMax = 4096;
inline constexpr size_t kFieldBytesMax = 4096;  // one address, id, client or listener

enum class RecordState : uint8_t { kLive = 0, kSettled = 1 };
enum class Mark : uint8_t { kPending = 0, kDelivered = 1, kDead = 2 };

struct Envelope {
  std::string id;
  int64_t received_unix_us = 0;
  int64_t tenant_id = 0;
  int64_t account_id = 0;
  std::string client;
  std::string listener;
  std::string sender;
  std::vector<std::string> recipients;
  // DSN (RFC 3461), as the client sent them: RET (0 none, 1 FULL, 2 HDRS) and ENVID (xtext),
  // and per recipient NOTIFY bits (smtp::kNotify*; 0 none) and ORCPT ("rfc822;xtext"). Empty
  // vectors: no recipient had one.
  uint8_t dsn_ret = 0;
  std::string envid;
  std::vector<uint8_t> notify;
  std::vector<std::string> orcpt;
  bool has_dsn() const {
    return dsn_ret != 0 || !envid.empty() ||
           std::any_of(notify.begin(), notify.end(), [](uint8_t n) { return n != 0; }) ||
           std::any_of(orcpt.begin(), orcpt.end(), [](const std::string& o) { return !o.empty(); });
  }
};

// MarksBytes: the size of the marks area for `recipients` recipients (padded to 8).
inline size_t MarksBytes(size_t recipients) { return (recipients + 7) & ~size_t{7}; }

// RecordPrefix: a record's bytes up to its body, and where in them the content begins.
struct RecordPrefix {
  std::string bytes;
  uint64_t content_offset = 0;  // the added headers' first byte
};

// EncodeRecordPrefix: the record's bytes up to the body: header, marks, envelope and
// `added_headers`; the CRC covers the payload, `body` included (read, not copied).
// InvalidArgument when a field or the recipient list is over its bound.
absl::StatusOr<RecordPrefix> EncodeRecordPrefix(const Envelope& envelope,
                                                absl::string_view added_headers,
                                                std::span<const iovec> body);

// DecodedRecord: a record parsed from its bytes; offsets are relative to the record start.
struct DecodedRecord {
  Envelope envelope;
  RecordState state = RecordState::kLive;
  std::vector<Mark> marks;      // one per recipient
  uint64_t record_bytes = 0;    // header + marks + payload
  uint64_t content_offset = 0;  // where the added headers begin
  uint64_t content_bytes = 0;   // added headers + body
};

enum class DecodeResult { kOk, kIncomplete, kCorrupt };

// PeekRecordBytes: from the first kRecordHeaderBytes of a record, its whole size; 0 when the
// header is not a record header (bad magic, version or an impossible length).
uint64_t PeekRecordBytes(absl::string_view header);

// IsNewerRecord: the header has the record magic but a version above the ones this build reads
// (a newer chute wrote it): not a torn tail to drop, a record this build cannot keep.
bool IsNewerRecord(absl::string_view header);

// DecodeRecord: parses the record at the start of `bytes` (which holds at least the whole
// record). kCorrupt on a bad magic, length, CRC or envelope.
DecodeResult DecodeRecord(absl::string_view bytes, DecodedRecord* out);

}  // namespace chute::spool
