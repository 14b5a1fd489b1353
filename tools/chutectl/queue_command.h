#pragma once

// chutectl queue: the running chuted's delivery queue, through its admin listener
// ([admin] address; JSON over HTTP, endpoints in src/admin/queue_api.h).

#include <string>
#include <vector>

#include "base/config.h"

namespace chute {

// IsQueueCommand: whether `words` is a queue command, Postfix spellings included (mailq,
// postqueue -p, postqueue -f, postsuper -d/-h/-H/-r).
bool IsQueueCommand(const std::vector<std::string>& words);

// RunQueueCommand: runs it; exit status 0 success, 1 usage error, 2 failure.
int RunQueueCommand(const Config& config, bool json, std::vector<std::string> words);

}  // namespace chute
