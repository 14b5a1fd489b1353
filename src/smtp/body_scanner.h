#pragma once

// BodyScanner: checks message content as it arrives, in any split, and (for DATA) removes the
// transparency dots and finds the end. It is the SMTP-smuggling defence
// (docs/architecture.md, Session):
//
// - Only CR LF "." CR LF ends DATA. A line begins only after CR LF, so "\n.\n", "\n.\r\n",
//   "\r.\r\n" and friends never end the data.
// - Every CR must be followed by LF, every LF preceded by CR, and NUL never appears: anything
//   else is Fault::kBareLineEnding, and the message is to be dropped (the scan goes on, so the
//   real end is still found and nothing of the message is read as commands).
// - A text line longer than 1000 octets including its CR LF is Fault::kLineTooLong.
//
// Content leaves as slices of the caller's input, never copied: a DATA body becomes one slice
// per input piece plus one per stuffed dot. Once a fault is seen no more slices are emitted.
// The scan looks for CR, LF and NUL sixteen bytes at a time (SSE2), so clean text runs at
// memory speed. Pure; owned by one Session; not thread-safe.

#include <cstddef>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"

namespace chute::smtp {

class BodyScanner {
 public:
  enum class Mode : uint8_t {
    kData,   // DATA: dot-unstuffing, ends at CR LF "." CR LF
    kChunk,  // BDAT: taken as is; the caller counts the octets and calls Finish()
  };
  enum class Fault : uint8_t { kNone, kBareLineEnding, kLineTooLong };

  // RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CR LF.
  static constexpr size_t kTextLineBytesMax = 1000;

  using Sink = absl::FunctionRef<void(absl::string_view)>;

  // Reset: starts a new message in `mode`, at the beginning of a line. With
  // `normalize_bare_lf` (kData only), a bare LF is not a fault: it ends the line and leaves as
  // CR LF. A line that begins after a bare LF gets no dot processing, so "\n.\r\n" is the
  // text ".", never the end: only CR LF "." CR LF ends the data (no smuggling through it).
  void Reset(Mode mode, bool normalize_bare_lf = false);

  // Scan: consumes `input` up to and including the end-of-data line (kData) or all of it
  // (kChunk), passing content slices (pointing into `input`) to `sink` while no fault has been
  // seen. Returns the number of bytes consumed; in kData mode, fewer than input.size() only when
  // done() became true.
  size_t Scan(absl::string_view input, Sink sink);

  // Finish: kChunk mode, after the last chunk: a trailing lone CR is a fault.
  void Finish();

  bool done() const { return done_; }
  Fault fault() const { return fault_; }

 private:
  enum class State : uint8_t {
    kLineStart,  // after CR LF, or at the very beginning
    kInLine,
    kSawCr,  // the last byte was CR; LF must follow
    kDot,    // kData: the line began with "."; it was not emitted
    kDotCr,  // kData: the line began with "." CR; LF ends the data
  };

  void SetFault(Fault fault);
  void EndLine();

  Mode mode_ = Mode::kData;
  bool normalize_bare_lf_ = false;
  bool after_bare_lf_ = false;  // the line began after a normalized bare LF
  State state_ = State::kLineStart;
  Fault fault_ = Fault::kNone;
  bool done_ = false;
  size_t line_bytes_ = 0;  // octets of the current line so far, as on the wire
};

// FindLineSpecial: the index of the first CR, LF or NUL in [data, data + size), or size.
size_t FindLineSpecial(const char* data, size_t size);

}  // namespace chute::smtp
