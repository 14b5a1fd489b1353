// record.cc: encodes and decodes spool records: header, marks, envelope, CRC-32C.

#include "spool/record.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"

namespace chute::spool {
namespace {

void PutU16(std::string* out, uint16_t v) {
  char b[2] = {static_cast<char>(v), static_cast<char>(v >> 8)};
  out->append(b, 2);
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    out->push_back(static_cast<char>(v >> (8 * i)));
  }
}
void PutI64(std::string* out, int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) {
    out->push_back(static_cast<char>(u >> (8 * i)));
  }
}
void PutField(std::string* out, absl::string_view field) {
  PutU16(out, static_cast<uint16_t>(field.size()));
  out->append(field.data(), field.size());
}

// Reader: bounds-checked little-endian reads over a payload.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : bytes_(bytes) {}
  bool U8(uint8_t* v) { return Fixed(v, 1); }
  bool U16(uint16_t* v) { return Fixed(v, 2); }
  bool U32(uint32_t* v) { return Fixed(v, 4); }
  bool I64(int64_t* v) {
    uint64_t u = 0;
    if (!Fixed(&u, 8)) {
      return false;
    }
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool Field(std::string* out) {
    uint16_t n = 0;
    if (!U16(&n) || n > kFieldBytesMax || bytes_.size() - at_ < n) {
      return false;
    }
    out->assign(bytes_.data() + at_, n);
    at_ += n;
    return true;
  }
  size_t at() const { return at_; }
  size_t left() const { return bytes_.size() - at_; }

 private:
  template <typename T>
  bool Fixed(T* v, size_t n) {
    if (bytes_.size() - at_ < n) {
      return false;
    }
    uint64_t value = 0;
    for (size_t i = 0; i < n; ++i) {
      value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes_[at_ + i])) << (8 * i);
    }
    *v = static_cast<T>(value);
    at_ += n;
    return true;
  }
  absl::string_view bytes_;
  size_t at_ = 0;
};

uint32_t ReadU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}

}  // namespace

absl::StatusOr<RecordPrefix> EncodeRecordPrefix(const Envelope& envelope,
                                                absl::string_view added_headers,
                                                std::span<const iovec> body) {
  if (envelope.recipients.empty() || envelope.recipients.size() > kRecipientsMax) {
    return absl::InvalidArgumentError("a record needs 1 to 4096 recipients");
  }
  for (absl::string_view field :
       {absl::string_view(envelope.id), absl::string_view(envelope.client),
        absl::string_view(envelope.listener), absl::string_view(envelope.sender)}) {
    if (field.size() > kFieldBytesMax) {
      return absl::InvalidArgumentError("a record field is over 4096 bytes");
    }
  }
  size_t marks = MarksBytes(envelope.recipients.size());
  std::string out(kRecordHeaderBytes + marks, '\0');
  PutField(&out, envelope.id);
  PutI64(&out, envelope.received_unix_us);
  PutI64(&out, envelope.tenant_id);
  PutI64(&out, envelope.account_id);
  PutField(&out, envelope.client);
  PutField(&out, envelope.listener);
  PutField(&out, envelope.sender);
  PutU16(&out, static_cast<uint16_t>(envelope.recipients.size()));
  for (const std::string& recipient : envelope.recipients) {
    if (recipient.size() > kFieldBytesMax) {
      return absl::InvalidArgumentError("a recipient is over 4096 bytes");
    }
    PutField(&out, recipient);
  }
  bool dsn = envelope.has_dsn();
  if (dsn) {
    if (envelope.envid.size() > kFieldBytesMax) {
      return absl::InvalidArgumentError("a record field is over 4096 bytes");
    }
    out.push_back(static_cast<char>(envelope.dsn_ret));
    PutField(&out, envelope.envid);
    for (size_t i = 0; i < envelope.recipients.size(); ++i) {
      out.push_back(static_cast<char>(i < envelope.notify.size() ? envelope.notify[i] : 0));
      absl::string_view orcpt =
          i < envelope.orcpt.size() ? absl::string_view(envelope.orcpt[i]) : absl::string_view();
      if (orcpt.size() > kFieldBytesMax) {
        return absl::InvalidArgumentError("an ORCPT is over 4096 bytes");
      }
      PutField(&out, orcpt);
    }
  }
  PutU32(&out, static_cast<uint32_t>(added_headers.size()));
  out.append(added_headers.data(), added_headers.size());
  size_t payload_start = kRecordHeaderBytes + marks;
  uint32_t crc = Crc32cExtend(0, absl::string_view(out).substr(payload_start));
  uint64_t payload = out.size() - payload_start;
  for (const iovec& piece : body) {
    crc = Crc32cExtend(crc,
                       absl::string_view(static_cast<const char*>(piece.iov_base), piece.iov_len));
    payload += piece.iov_len;
  }
  if (payload > kPayloadBytesMax) {
    return absl::InvalidArgumentError("a record is over its size bound");
  }
  std::string header;
  PutU32(&header, kRecordMagic);
  header.push_back(static_cast<char>(dsn ? kRecordVersionDsn : kRecordVersion));
  header.push_back(static_cast<char>(RecordState::kLive));
  PutU16(&header, static_cast<uint16_t>(envelope.recipients.size()));
  PutU32(&header, static_cast<uint32_t>(payload));
  PutU32(&header, crc);
  std::memcpy(out.data(), header.data(), kRecordHeaderBytes);
  RecordPrefix prefix;
  prefix.content_offset = out.size() - added_headers.size();
  prefix.bytes = std::move(out);
  return prefix;
}

uint64_t PeekRecordBytes(absl::string_view header) {
  uint8_t version = header.size() > 4 ? static_cast<uint8_t>(header[4]) : 0;
  if (header.size() < kRecordHeaderBytes || ReadU32(header.data()) != kRecordMagic ||
      (version != kRecordVersion && version != kRecordVersionDsn)) {
    return 0;
  }
  uint16_t recipients = static_cast<uint16_t>(static_cast<unsigned char>(header[6]) |
                                              (static_cast<unsigned char>(header[7]) << 8));
  uint32_t payload = ReadU32(header.data() + 8);
  if (recipients == 0 || recipients > kRecipientsMax || payload > kPayloadBytesMax) {
    return 0;
  }
  return kRecordHeaderBytes + MarksBytes(recipients) + payload;
}

bool IsNewerRecord(absl::string_view header) {
  return header.size() >= kRecordHeaderBytes && ReadU32(header.data()) == kRecordMagic &&
         static_cast<uint8_t>(header[4]) > kRecordVersionDsn;
}

DecodeResult DecodeRecord(absl::string_view bytes, DecodedRecord* out) {
  if (bytes.size() < kRecordHeaderBytes) {
    return DecodeResult::kIncomplete;
  }
  uint64_t record_bytes = PeekRecordBytes(bytes);
  if (record_bytes == 0) {
    return DecodeResult::kCorrupt;
  }
  if (bytes.size() < record_bytes) {
    return DecodeResult::kIncomplete;
  }
  size_t recipients = static_cast<unsigned char>(bytes[6]) |
                      (static_cast<size_t>(static_cast<unsigned char>(bytes[7])) << 8);
  size_t payload_start = kRecordHeaderBytes + MarksBytes(recipients);
  absl::string_view payload = bytes.substr(payload_start, record_bytes - payload_start);
  if (Crc32cExtend(0, payload) != ReadU32(bytes.data() + 12)) {
    return DecodeResult::kCorrupt;
  }
  Reader r(payload);
  Envelope& e = out->envelope;
  uint16_t count = 0;
  uint32_t added = 0;
  bool ok = r.Field(&e.id) && r.I64(&e.received_unix_us) && r.I64(&e.tenant_id) &&
            r.I64(&e.account_id) && r.Field(&e.client) && r.Field(&e.listener) &&
            r.Field(&e.sender) && r.U16(&count) && count == recipients;
  e.recipients.clear();
  for (size_t i = 0; ok && i < count; ++i) {
    e.recipients.emplace_back();
    ok = r.Field(&e.recipients.back());
  }
  e.dsn_ret = 0;
  e.envid.clear();
  e.notify.clear();
  e.orcpt.clear();
  if (ok && static_cast<uint8_t>(bytes[4]) == kRecordVersionDsn) {
    uint8_t ret = 0;
    ok = r.U8(&ret) && ret <= 2 && r.Field(&e.envid);
    e.dsn_ret = ret;
    for (size_t i = 0; ok && i < count; ++i) {
      uint8_t notify = 0;
      e.orcpt.emplace_back();
      ok = r.U8(&notify) && r.Field(&e.orcpt.back());
      e.notify.push_back(notify);
    }
  }
  ok = ok && r.U32(&added) && added <= r.left();
  if (!ok) {
    return DecodeResult::kCorrupt;
  }
  uint8_t state = static_cast<uint8_t>(bytes[kStateOffset]);
  out->state = state == 0 ? RecordState::kLive : RecordState::kSettled;
  out->marks.clear();
  for (size_t i = 0; i < recipients; ++i) {
    uint8_t mark = static_cast<uint8_t>(bytes[kRecordHeaderBytes + i]);
    out->marks.push_back(mark == 1 ? Mark::kDelivered : mark == 2 ? Mark::kDead : Mark::kPending);
  }
  out->record_bytes = record_bytes;
  out->content_offset = payload_start + r.at();
  out->content_bytes = record_bytes - out->content_offset;
  return DecodeResult::kOk;
}

}  // namespace chute::spool
