#pragma once

// What every chutectl command group shares: the context a command runs in, argument parsing,
// the exit statuses, --json output (errors included), confirmations and password input.
//
// A command group is one file that defines a CommandGroup (commands.h) and is listed once in
// the table in main.cc.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/config.h"
#include "directory/directory.h"
#include "tools/chutectl/safe_output.h"

namespace chute::ctl {

// Exit statuses (docs/architecture.md, Interfaces), the same for every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 1;    // the command line is wrong, or a confirmation declined
inline constexpr int kExitFailure = 2;  // it could not be done; stderr says why

// Context: what a command runs with. `cmdlet` is the Exchange Online spelling the command was
// typed as ("Remove-MailUser"), "" for chutectl's own; messages then use the cmdlet's words.
class Context {
 public:
  // `no_config`: why no configuration file was read (none was given and the default one
  // does not exist: the built-in defaults apply), "" when one was.
  Context(const Config& config, bool json, std::string no_config = "")
      : config_(config), json_(json), no_config_(std::move(no_config)) {}

  const Config& config() const { return config_; }
  bool json() const { return json_; }
  const std::string& cmdlet() const { return cmdlet_; }
  // SetCmdlet: `name` as typed, and the chutectl words it stands for ("account remove").
  void SetCmdlet(std::string name, std::string command) {
    cmdlet_ = std::move(name);
    cmdlet_command_ = std::move(command);
  }

  // Store: the directory database, opened (and created) on first use; nullptr after printing
  // why it could not be opened (the caller returns kExitFailure). Without a configuration
  // file it is not created: the built-in defaults' database is used only when it exists, and
  // otherwise the failure says which configuration is missing and how to give one.
  directory::Store* Store();
  // ConfigHint: " (no configuration file: ...; give ...)" when no configuration file was read,
  // "" otherwise; for failures that the wrong configuration explains (no chuted at the admin
  // address, no message trace).
  std::string ConfigHint() const;

  // Usage: prints a usage error (and {"error": ...} on stdout with --json); kExitUsage.
  int Usage(absl::string_view message) const;
  // Fail: prints a failure (and {"error": ...} on stdout with --json); kExitFailure.
  int Fail(const absl::Status& status) const;
  int Fail(absl::string_view message) const;
  // Declined: a confirmation answered no: says so (like Usage, without the hint); kExitUsage,
  // so that a script sees that nothing was done.
  int Declined(absl::string_view message) const;
  // Note: a remark on stderr that is not an error ("note: ...").
  void Note(absl::string_view message) const;
  // Words: `message` in the words the user typed: with a cmdlet, "account remove" becomes
  // "Remove-MailUser", "--yes" "-Confirm:$false", "ID" "-Identity", and so on.
  std::string Words(absl::string_view message) const;

 private:
  const Config& config_;
  bool json_;
  std::string no_config_;
  std::string cmdlet_;
  std::string cmdlet_command_;
  std::unique_ptr<directory::Store> store_;
};

// Args: the words after the command, split into positionals and --options.
struct Args {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> options;  // "--x" -> value ("" for a flag)

  bool Has(const std::string& name) const { return options.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  std::vector<std::string> All(const std::string& name) const;
};

// ParseArgs: words[from...] into `out`. `flags` take no value; `valued` take one ("--x V" or
// "--x=V"). The message of a usage error otherwise.
std::optional<std::string> ParseArgs(const std::vector<std::string>& words, size_t from,
                                     const std::vector<std::string>& flags,
                                     const std::vector<std::string>& valued, Args* out);

// CsvField: `text` as one CSV field (RFC 4180): quoted, with quotes doubled, when it holds a
// comma, a quote or a line break.
std::string CsvField(absl::string_view text);
// PrintJson: one JSON document on stdout.
void PrintJson(const nlohmann::json& value);

// IsTerminal: whether standard input is a terminal (prompts are possible).
bool IsTerminal();

// Confirm: asks `question` on the terminal ("[y/N]"); true only for y/yes.
bool Confirm(absl::string_view question);

// ReadPasswordStdin: a password from standard input (one trailing newline dropped);
// InvalidArgument when empty or longer than auth::kPasswordBytesMax.
absl::StatusOr<std::string> ReadPasswordStdin();

// PromptNewPassword: asks twice on the terminal without echo (termios); InvalidArgument when
// the two differ or it is empty.
absl::StatusOr<std::string> PromptNewPassword(absl::string_view for_whom);

// HashPassword: argon2id with the configured cost.
absl::StatusOr<std::string> HashPassword(const Config& config, absl::string_view password);

// NaturalLess: whether `a` sorts before `b` in natural order, as people read names: runs of
// digits compare as numbers (bulk2 before bulk10 before bulk100), other characters ASCII
// case-insensitively; a tie (bulk01 and bulk1, A and a) is broken by the bytes, so that the
// order is total.
bool NaturalLess(absl::string_view a, absl::string_view b);

// ParseCount: a decimal integer in [min, max]; nullopt otherwise.
std::optional<int64_t> ParseCount(absl::string_view text, int64_t min, int64_t max);

}  // namespace chute::ctl
