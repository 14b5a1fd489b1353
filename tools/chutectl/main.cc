// chutectl: administration of chute's directory, mirroring Microsoft's HVE cmdlets
// (README.md, Administration), and of the running chuted's delivery queue. It writes the SQLite
// directory; a running chuted picks the change up on SIGHUP or within seconds by itself.
//
// This file is the dispatcher only: global options, the configuration, and the table of
// command groups. Each group is its own file (commands.h); what they share is common.h.
//
// Exit status: 0 success, 1 usage error (or a confirmation declined), 2 a failure explained
// on stderr (and, with --json, as {"error": ...} on stdout).

#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/config.h"
#include "base/version.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr const char* kDefaultConfigPath = "/etc/chute/chute.toml";

// The command groups, in the order --help lists them. A new group is one file that defines
// its CommandGroup (declared in commands.h) and one line here.
const CommandGroup* const kGroups[] = {
    &kTenantGroup, &kAccountGroup, &kSettingsGroup, &kAppAccessGroup,
    &kReportGroup, &kQueueGroup,   &kTraceGroup,
};

constexpr absl::string_view kIntro = R"(Usage: chutectl [--config FILE] [--json] COMMAND ...
       chutectl COMMAND ... [--config FILE] [--json]    (global options may go anywhere)

Administers chute's directory of tenants and High Volume Email (HVE) accounts. The database is
the one named by [directory] database in the configuration (default: <data_dir>/directory.db;
created 0600, since it holds password hashes). A running chuted picks changes up within
seconds, or at once on SIGHUP. `chutectl COMMAND --help` shows one command group.

)";

constexpr absl::string_view kOptions = R"(
Global options (before or after the command words; the same in either place, as in git:
`chutectl --config F --json queue list` is `chutectl queue list --config F --json`; a bare
`--` ends them, for a value that is spelled like one):
  --config FILE   configuration file (default /etc/chute/chute.toml; built-in defaults when
                  that file does not exist, which do not create a directory database)
  --json          print results as JSON; errors also as {"error": "..."} on stdout
  --version       the version and the git revision it was built from
  --help          this text; with a command, its group's (chutectl queue list --help)

Exit status: 0 success, 1 usage error or a confirmation declined, 2 failure (explained on
stderr).
)";

std::string FullHelp() {
  std::string help(kIntro);
  for (const CommandGroup* group : kGroups) {
    absl::StrAppend(&help, group->help, "\n");
  }
  absl::StrAppend(&help, kCmdletHelp, kOptions);
  return help;
}

const CommandGroup* FindGroup(absl::string_view word) {
  for (const CommandGroup* group : kGroups) {
    for (absl::string_view name : absl::StrSplit(group->names, ' ')) {
      if (name == word) {
        return group;
      }
    }
  }
  return nullptr;
}

// Global options may come anywhere, before or after the command words, and mean the same
// in either place (as in git and kubectl): `chutectl --config F queue list --json` is
// `chutectl queue list --config F --json`. This is the one place they are parsed; a command
// never sees them. A bare "--" ends them: the words after it are the command's as typed
// (`account set ID --display-name -- --json`). Before the command word "-h" and "help" also
// ask for help; after it they are arguments (postsuper -h ID, account new --name help).
struct GlobalOptions {
  std::string config_path;
  bool json = false;
  bool help = false;
  bool version = false;
  std::string error;  // a usage error
  std::vector<std::string> command;
};

GlobalOptions ParseGlobalOptions(const std::vector<std::string>& words) {
  GlobalOptions options;
  bool options_ended = false;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    bool before_command = options.command.empty();
    if (options_ended) {
      options.command.push_back(word);
    } else if (word == "--") {
      options_ended = true;
    } else if (word == "--help" || (before_command && (word == "-h" || word == "help"))) {
      options.help = true;
    } else if (word == "--json") {
      options.json = true;
    } else if (word == "--version") {
      options.version = true;
    } else if (word == "--config" && i + 1 < words.size()) {
      options.config_path = words[++i];
    } else if (absl::StartsWith(word, "--config=")) {
      options.config_path = word.substr(9);
    } else if (word == "--config") {
      options.error = "--config needs a value";
    } else {
      options.command.push_back(word);
    }
  }
  return options;
}

// Help: `chutectl --help`, or with a command (`chutectl queue list --help`, `chutectl help
// tenant`) that command's group.
int Help(const std::vector<std::string>& command) {
  if (command.empty()) {
    std::cout << FullHelp();
    return kExitOk;
  }
  if (const CommandGroup* group = FindGroup(command[0])) {
    std::cout << group->help;
    return kExitOk;
  }
  if (IsCmdlet(command[0])) {
    std::cout << kCmdletHelp;
    return kExitOk;
  }
  std::cerr << "chutectl: unknown command '" << command[0] << "'\n"
            << "Run 'chutectl --help' for usage.\n";
  return kExitUsage;
}

// LoadConfiguration: `path`, else the default file, else the built-in defaults; then
// *no_config says why no file was read (Context).
absl::StatusOr<Config> LoadConfiguration(const std::string& path, std::string* no_config) {
  if (!path.empty() || access(kDefaultConfigPath, F_OK) == 0) {
    return LoadConfig(path.empty() ? kDefaultConfigPath : path);
  }
  *no_config = absl::StrCat("no configuration file: ", kDefaultConfigPath,
                            " does not exist and no --config FILE was given");
  return ParseConfig("", "(built-in defaults)");
}

int Dispatch(Context& context, std::vector<std::string> words) {
  if (std::optional<std::string> error = TranslateCmdlet(&words, &context)) {
    return context.Usage(*error);
  }
  const CommandGroup* group = FindGroup(words[0]);
  if (group == nullptr) {
    return context.Usage(absl::StrCat("unknown command '", words[0], "'"));
  }
  if (words.size() == 2 && words[1] == "help") {  // --help anywhere is a global option
    std::cout << group->help;
    return kExitOk;
  }
  return group->run(context, words);
}

int Main(int argc, char** argv) {
  InstallSafeOutput();
  GlobalOptions options = ParseGlobalOptions(std::vector<std::string>(argv + 1, argv + argc));
  if (options.help) {
    return Help(options.command);
  }
  if (options.version) {
    std::cout << "chutectl " << kVersion << " (" << kRevision << ")\n";
    return kExitOk;
  }
  if (!options.error.empty() || options.command.empty()) {
    std::cerr << "chutectl: " << (options.error.empty() ? "no command" : options.error) << "\n"
              << FullHelp();
    return kExitUsage;
  }
  std::string no_config;
  absl::StatusOr<Config> config = LoadConfiguration(options.config_path, &no_config);
  if (!config.ok()) {
    if (options.json) {
      PrintJson(nlohmann::json{{"error", std::string(config.status().message())}});
    }
    std::cerr << "chutectl: " << config.status().message() << "\n";
    return kExitFailure;
  }
  Context context(*config, options.json, std::move(no_config));
  return Dispatch(context, std::move(options.command));
}

}  // namespace
}  // namespace chute::ctl

int main(int argc, char** argv) { return chute::ctl::Main(argc, argv); }
