// body_scanner.cc: scans DATA/BDAT content: dot-unstuffing, end of data, bare CR/LF, line length.

#include "smtp/body_scanner.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace chute::smtp {

size_t FindLineSpecial(const char* data, size_t size) {
  size_t i = 0;
#ifdef __SSE2__
  const __m128i cr = _mm_set1_epi8('\r');
  const __m128i lf = _mm_set1_epi8('\n');
  const __m128i nul = _mm_setzero_si128();
  for (; i + 16 <= size; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i));
    __m128i hits = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)),
                                _mm_cmpeq_epi8(v, nul));
    int mask = _mm_movemask_epi8(hits);
    if (mask != 0) {
      return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
    }
  }
#endif
  for (; i < size; ++i) {
    char c = data[i];
    if (c == '\r' || c == '\n' || c == '\0') {
      return i;
    }
  }
  return size;
}

void BodyScanner::Reset(Mode mode, bool normalize_bare_lf) {
  mode_ = mode;
  normalize_bare_lf_ = normalize_bare_lf && mode == Mode::kData;
  after_bare_lf_ = false;
  state_ = State::kLineStart;
  fault_ = Fault::kNone;
  done_ = false;
  line_bytes_ = 0;
}

void BodyScanner::SetFault(Fault fault) {
  // A bare line ending is the graver fault (it is the smuggling signal): it wins.
  if (fault_ == Fault::kNone || fault == Fault::kBareLineEnding) {
    fault_ = fault;
  }
}

void BodyScanner::EndLine() {
  if (line_bytes_ > kTextLineBytesMax) {
    SetFault(Fault::kLineTooLong);
  }
  line_bytes_ = 0;
  state_ = State::kLineStart;
}

size_t BodyScanner::Scan(absl::string_view input, Sink sink) {
  const char* data = input.data();
  const size_t size = input.size();
  size_t pos = 0;
  size_t emit_from = 0;  // content in [emit_from, pos) not yet passed to the sink
  auto flush = [&](size_t end) {
    if (end > emit_from && fault_ == Fault::kNone) {
      sink(absl::string_view(data + emit_from, end - emit_from));
    }
  };
  while (pos < size && !done_) {
    switch (state_) {
      case State::kLineStart:
        if (mode_ == Mode::kData && data[pos] == '.' && !after_bare_lf_) {
          flush(pos);
          ++pos;
          ++line_bytes_;
          emit_from = pos;
          state_ = State::kDot;
          continue;
        }
        state_ = State::kInLine;
        continue;
      case State::kInLine: {
        size_t run = FindLineSpecial(data + pos, size - pos);
        pos += run;
        line_bytes_ += run;
        if (pos == size) {
          continue;
        }
        char c = data[pos];
        if (c == '\n' && normalize_bare_lf_) {
          // The line's text, then CR LF (from static storage) in place of the bare LF.
          flush(pos);
          ++pos;
          emit_from = pos;
          static constexpr char kCrLf[] = "\r\n";
          if (fault_ == Fault::kNone) {
            sink(absl::string_view(kCrLf, 2));
          }
          line_bytes_ += 2;
          EndLine();
          after_bare_lf_ = true;
          continue;
        }
        ++pos;
        ++line_bytes_;
        if (c == '\r') {
          state_ = State::kSawCr;
        } else {
          SetFault(Fault::kBareLineEnding);  // LF without CR, or NUL; the line goes on
        }
        continue;
      }
      case State::kSawCr:
        if (data[pos] == '\n') {
          ++pos;
          ++line_bytes_;
          EndLine();
          after_bare_lf_ = false;
        } else {
          SetFault(Fault::kBareLineEnding);
          state_ = State::kInLine;  // the byte is looked at again as line content
        }
        continue;
      case State::kDot:
        if (data[pos] == '\r') {
          ++pos;
          ++line_bytes_;
          emit_from = pos;  // never emit this CR: it may be part of the terminator
          state_ = State::kDotCr;
        } else {
          state_ = State::kInLine;  // a stuffed dot: it stays removed
        }
        continue;
      case State::kDotCr:
        if (data[pos] == '\n') {
          ++pos;
          done_ = true;
          return pos;
        }
        SetFault(Fault::kBareLineEnding);  // "." CR and then not LF
        state_ = State::kInLine;
        continue;
    }
  }
  flush(pos);
  return pos;
}

void BodyScanner::Finish() {
  if (state_ == State::kSawCr) {
    SetFault(Fault::kBareLineEnding);
  } else if (line_bytes_ + 2 > kTextLineBytesMax) {
    SetFault(Fault::kLineTooLong);  // an unterminated last line, counted as if it had CR LF
  }
  done_ = true;
}

}  // namespace chute::smtp
