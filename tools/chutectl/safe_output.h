#pragma once

// What chutectl prints is safe for a terminal: text from chuted, the directory or the trace
// (addresses, replies, reasons) may hold escape sequences, and a terminal obeys them. Once
// installed, everything written to std::cout and std::cerr passes a filter that lets through
// printable UTF-8, newline and tab, and spells every other code point as \uXXXX (C0 and C1
// controls, DEL: U+009B is a CSI to many terminals) and every byte that is not UTF-8 as \xNN.
// Inside a JSON string \uXXXX means the same character, so --json output stays valid JSON.
//
// printf() would go around the filter: chutectl writes through Printf() below instead.

#include <iostream>

#include "absl/strings/str_format.h"

namespace chute::ctl {

// InstallSafeOutput: puts the filter on std::cout and std::cerr for the rest of the process.
void InstallSafeOutput();

// EscapeForTerminal: `text` as the filter writes it (for tests and for one-off strings).
std::string EscapeForTerminal(absl::string_view text);

// Printf: absl::StrFormat to std::cout.
template <typename... Args>
void Printf(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::cout << absl::StrFormat(format, args...);
}

}  // namespace chute::ctl
