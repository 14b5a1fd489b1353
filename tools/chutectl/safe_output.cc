// safe_output.cc: the terminal-safe filter on chutectl's std::cout and std::cerr.

#include "tools/chutectl/safe_output.h"

#include <streambuf>
#include <string>

namespace chute::ctl {
namespace {

// SequenceLength: the length of the UTF-8 sequence that `lead` starts; 0 when no sequence
// starts with it.
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) {
    return 1;
  }
  if (lead >= 0xc2 && lead <= 0xdf) {
    return 2;
  }
  if (lead >= 0xe0 && lead <= 0xef) {
    return 3;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    return 4;
  }
  return 0;
}

// DecodeOne: the code point of the sequence at the start of `s` (whole, `length` bytes), or -1
// when it is not valid UTF-8 (bad continuation, overlong, surrogate, beyond U+10FFFF).
int32_t DecodeOne(absl::string_view s, size_t length) {
  auto c = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  int32_t cp = length == 1 ? c(0) : c(0) & (0x7f >> length);
  for (size_t i = 1; i < length; ++i) {
    if ((c(i) & 0xc0) != 0x80) {
      return -1;
    }
    cp = (cp << 6) | (c(i) & 0x3f);
  }
  static constexpr int32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[length] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return -1;
  }
  return cp;
}

bool Printable(int32_t cp) {
  return cp == '\n' || cp == '\t' || (cp >= 0x20 && cp < 0x7f) ||
         (cp > 0x9f && cp != 0x2028 && cp != 0x2029 && cp != 0xfeff);
}

// Escape: appends the safe spelling of the complete prefix of `in` to `out`; returns how many
// bytes it consumed (an incomplete sequence at the end waits for more, unless `final`).
size_t Escape(absl::string_view in, bool final, std::string* out) {
  size_t i = 0;
  while (i < in.size()) {
    unsigned char lead = static_cast<unsigned char>(in[i]);
    size_t length = SequenceLength(lead);
    if (length > 1 && i + length > in.size() && !final) {
      bool prefix_ok = true;
      for (size_t k = i + 1; k < in.size(); ++k) {
        prefix_ok &= (static_cast<unsigned char>(in[k]) & 0xc0) == 0x80;
      }
      if (prefix_ok) {
        break;  // the rest of this sequence comes with the next write
      }
    }
    int32_t cp = length == 0 || i + length > in.size() ? -1 : DecodeOne(in.substr(i), length);
    if (cp < 0) {
      absl::StrAppendFormat(out, "\\x%02x", lead);
      i += 1;
      continue;
    }
    if (Printable(cp)) {
      out->append(in.data() + i, length);
    } else {
      absl::StrAppendFormat(out, "\\u%04x", cp);
    }
    i += length;
  }
  return i;
}

class SafeBuffer : public std::streambuf {
 public:
  explicit SafeBuffer(std::streambuf* sink) : sink_(sink) {}

 protected:
  int_type overflow(int_type ch) override {
    if (ch != traits_type::eof()) {
      char c = traits_type::to_char_type(ch);
      Put(absl::string_view(&c, 1));
    }
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    Put(absl::string_view(s, static_cast<size_t>(n)));
    return n;
  }
  int sync() override {
    // A flush writes everything: nothing is left behind at exit (a sequence split across a
    // flush is spelled as its bytes).
    Drain(/*final=*/true);
    return sink_->pubsync();
  }

 private:
  void Put(absl::string_view bytes) {
    pending_.append(bytes.data(), bytes.size());
    if (pending_.size() >= 4096 || bytes.find('\n') != absl::string_view::npos) {
      Drain(false);
    }
  }
  void Drain(bool final) {
    std::string out;
    size_t used = Escape(pending_, final, &out);
    pending_.erase(0, used);
    sink_->sputn(out.data(), static_cast<std::streamsize>(out.size()));
  }

  std::streambuf* sink_;
  std::string pending_;
};

}  // namespace

std::string EscapeForTerminal(absl::string_view text) {
  std::string out;
  Escape(text, /*final=*/true, &out);
  return out;
}

void InstallSafeOutput() {
  // Alive to the end of the process: std::cout is flushed after main returns.
  static SafeBuffer* out = new SafeBuffer(std::cout.rdbuf());
  static SafeBuffer* err = new SafeBuffer(std::cerr.rdbuf());
  std::cout.rdbuf(out);
  std::cerr.rdbuf(err);
  std::cerr.setf(std::ios::unitbuf);
}

}  // namespace chute::ctl
