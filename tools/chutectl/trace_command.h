#pragma once

// chutectl trace: the message trace (what happened to each message: received, each
// recipient's delivery result), read from the trace database chuted keeps in
// <data_dir>/trace.db for [trace] retention_days. Get-MessageTraceV2 is an alias.

#include <string>
#include <vector>

#include "base/config.h"

namespace chute {

// IsTraceCommand: whether `words` is `trace ...` or `Get-MessageTraceV2 ...`.
bool IsTraceCommand(const std::vector<std::string>& words);

// RunTraceCommand: runs it; prints rows (text, --json or --csv). Exit status 0 success (also
// when nothing matched), 1 usage error, 2 failure (no trace database, unreadable).
int RunTraceCommand(const Config& config, bool json, std::vector<std::string> words);

// TraceUsage: the help text of the command.
extern const char* const kTraceUsage;

}  // namespace chute
