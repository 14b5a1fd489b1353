#pragma once

// chutectl's command groups. Each is one file that defines its CommandGroup; main.cc lists
// them in one table. Adding a group is a new file and a line in that table.

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "tools/chutectl/common.h"

namespace chute::ctl {

struct CommandGroup {
  // The first words that select the group, space-separated ("queue mailq postqueue").
  absl::string_view names;
  // Run: words[0] is the group's name; returns the exit status.
  int (*run)(Context& context, const std::vector<std::string>& words);
  // Help: the group's lines in `chutectl --help`, and all of `chutectl GROUP --help`.
  absl::string_view help;
};

extern const CommandGroup kTenantGroup;     // tenant_command.cc
extern const CommandGroup kAccountGroup;    // account_command.cc
extern const CommandGroup kSettingsGroup;   // settings_command.cc
extern const CommandGroup kAppAccessGroup;  // app_access_command.cc
extern const CommandGroup kReportGroup;     // report_command.cc
extern const CommandGroup kQueueGroup;      // queue_command.cc
extern const CommandGroup kTraceGroup;      // trace_command.cc

// TranslateCmdlet (cmdlet.cc): the Exchange Online cmdlet spellings (New-MailUser ...) turned
// into chutectl's words, with the cmdlet recorded in `context`. Words that are not a cmdlet
// come back unchanged. The message of a usage error otherwise.
std::optional<std::string> TranslateCmdlet(std::vector<std::string>* words, Context* context);
// IsCmdlet (cmdlet.cc): whether `word` is one of those cmdlets' names (any case).
bool IsCmdlet(absl::string_view word);
extern const absl::string_view kCmdletHelp;

}  // namespace chute::ctl
