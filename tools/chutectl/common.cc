// common.cc: what chutectl commands share: context, arguments, JSON output, passwords.

#include "tools/chutectl/common.h"

#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "auth/password.h"

namespace chute::ctl {
namespace {

// The chutectl words a cmdlet's messages speak in PowerShell's (Microsoft's parameter names).
constexpr std::pair<absl::string_view, absl::string_view> kCmdletWords[] = {
    {"--yes", "-Confirm:$false"},
    {"ID", "-Identity"},
    {"--name", "-Name"},
    {"--display-name", "-DisplayName"},
    {"--primary-smtp-address", "-PrimarySmtpAddress"},
    {"--reply-to", "-ReplyTo"},
    {"--app-id", "-AppId"},
    {"--password-stdin", "-PasswordStdin"},
    {"--no-password", "-NoPassword"},
    {"--add-alias", "-EmailAddresses @{Add=...}"},
    {"--remove-alias", "-EmailAddresses @{Remove=...}"},
};

bool IsWordChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
}

// ReplaceWord: every occurrence of `from` in `text` that is a whole word.
std::string ReplaceWord(absl::string_view text, absl::string_view from, absl::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t found = text.find(from, pos);
    if (found == absl::string_view::npos) {
      break;
    }
    size_t end = found + from.size();
    bool whole = (found == 0 || !IsWordChar(text[found - 1])) &&
                 (end == text.size() || !IsWordChar(text[end]));
    absl::StrAppend(&out, text.substr(pos, found - pos), whole ? to : from);
    pos = end;
  }
  absl::StrAppend(&out, text.substr(pos));
  return out;
}

// The terminal's settings while echo is off, for the signal handler below.
termios g_saved_terminal{};
volatile sig_atomic_t g_echo_off = 0;

// RestoreAndReraise: Ctrl-C at a password prompt must not leave the terminal without echo.
void RestoreAndReraise(int signal_number) {
  if (g_echo_off != 0) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_terminal);
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

// NoEcho: turns terminal echo off for its lifetime (and on again if interrupted).
class NoEcho {
 public:
  NoEcho() {
    if (tcgetattr(STDIN_FILENO, &g_saved_terminal) != 0) {
      return;
    }
    termios quiet = g_saved_terminal;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;  // the newline the user types still shows
    for (int signal_number : {SIGINT, SIGTERM, SIGQUIT, SIGHUP}) {
      std::signal(signal_number, RestoreAndReraise);
    }
    g_echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0 ? 1 : 0;
  }
  ~NoEcho() {
    if (g_echo_off != 0) {
      tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_terminal);
      g_echo_off = 0;
    }
    for (int signal_number : {SIGINT, SIGTERM, SIGQUIT, SIGHUP}) {
      std::signal(signal_number, SIG_DFL);
    }
  }
  NoEcho(const NoEcho&) = delete;
  NoEcho& operator=(const NoEcho&) = delete;
};

// ReadLine: one line from standard input without its newline; nullopt at end of input.
std::optional<std::string> ReadLine() {
  std::string line;
  int c;
  while ((c = std::fgetc(stdin)) != EOF && c != '\n') {
    if (line.size() <= auth::kPasswordBytesMax) {  // a longer one is refused whole below
      line.push_back(static_cast<char>(c));
    }
  }
  if (c == EOF && line.empty()) {
    return std::nullopt;
  }
  if (absl::EndsWith(line, "\r")) {
    line.pop_back();
  }
  return line;
}

absl::Status CheckPasswordBytes(absl::string_view password, absl::string_view where) {
  if (password.empty() || password.size() > auth::kPasswordBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("the password ", where, " must be 1..", auth::kPasswordBytesMax, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

// How to give a configuration, for the failures that its absence explains.
constexpr absl::string_view kGiveConfig =
    "give the configuration chuted runs with: chutectl --config FILE ... (tools/run.sh's is "
    "var/chute.toml)";

std::string Context::ConfigHint() const {
  return no_config_.empty() ? "" : absl::StrCat(" (", no_config_, "; ", kGiveConfig, ")");
}

directory::Store* Context::Store() {
  if (store_ == nullptr && !no_config_.empty() &&
      access(config_.directory.database.c_str(), F_OK) != 0) {
    // Was: "cannot create the directory database", about a default path, for a missing
    // configuration; and a database made there would be one that no chuted reads.
    Fail(absl::StrCat(no_config_, ", and the built-in defaults' directory database ",
                      config_.directory.database, " does not exist; ", kGiveConfig));
    return nullptr;
  }
  if (store_ == nullptr) {
    absl::StatusOr<std::unique_ptr<directory::Store>> store =
        directory::Store::Open(config_.directory.database, true);
    if (!store.ok()) {
      Fail(store.status());
      return nullptr;
    }
    store_ = std::move(*store);
  }
  return store_.get();
}

std::string Context::Words(absl::string_view message) const {
  if (cmdlet_.empty()) {
    return std::string(message);
  }
  std::string text = ReplaceWord(message, cmdlet_command_, cmdlet_);
  for (const auto& [from, to] : kCmdletWords) {
    text = ReplaceWord(text, from, to);
  }
  return text;
}

int Context::Usage(absl::string_view message) const {
  std::string text = Words(message);
  if (json_) {
    PrintJson(nlohmann::json{{"error", text}});
  }
  std::cerr << "chutectl: " << text << "\nRun 'chutectl --help' for usage.\n";
  return kExitUsage;
}

int Context::Fail(absl::string_view message) const {
  std::string text = Words(message);
  if (json_) {
    PrintJson(nlohmann::json{{"error", text}});
  }
  std::cerr << "chutectl: " << text << "\n";
  return kExitFailure;
}

int Context::Declined(absl::string_view message) const {
  std::string text = Words(message);
  if (json_) {
    PrintJson(nlohmann::json{{"error", text}});
  }
  std::cerr << "chutectl: " << text << "\n";
  return kExitUsage;
}

int Context::Fail(const absl::Status& status) const { return Fail(status.message()); }

void Context::Note(absl::string_view message) const {
  std::cerr << "chutectl: note: " << Words(message) << "\n";
}

std::optional<std::string> Args::Get(const std::string& name) const {
  auto it = options.find(name);
  return it == options.end() ? std::nullopt : std::optional<std::string>(it->second);
}

std::vector<std::string> Args::All(const std::string& name) const {
  std::vector<std::string> values;
  for (auto [it, end] = options.equal_range(name); it != end; ++it) {
    values.push_back(it->second);
  }
  return values;
}

std::optional<std::string> ParseArgs(const std::vector<std::string>& words, size_t from,
                                     const std::vector<std::string>& flags,
                                     const std::vector<std::string>& valued, Args* out) {
  for (size_t i = from; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (!absl::StartsWith(word, "--")) {
      out->positional.push_back(word);
      continue;
    }
    std::string name = word;
    std::optional<std::string> inline_value;
    if (size_t eq = word.find('='); eq != std::string::npos) {
      name = word.substr(0, eq);
      inline_value = word.substr(eq + 1);
    }
    if (std::find(flags.begin(), flags.end(), name) != flags.end() && !inline_value) {
      out->options.emplace(name, "");
    } else if (std::find(valued.begin(), valued.end(), name) != valued.end()) {
      if (!inline_value && i + 1 >= words.size()) {
        return absl::StrCat(name, " needs a value");
      }
      out->options.emplace(name, inline_value ? *inline_value : words[++i]);
    } else {
      return absl::StrCat("unknown option ", word);
    }
  }
  return std::nullopt;
}

void PrintJson(const nlohmann::json& value) {
  // Text that is not UTF-8 (a downstream's reply, an impostor's answer) must not abort.
  std::cout << value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n"
            << std::flush;
}

bool IsTerminal() { return isatty(STDIN_FILENO) == 1; }

bool Confirm(absl::string_view question) {
  std::cerr << question << " [y/N] " << std::flush;
  std::optional<std::string> answer = ReadLine();
  return answer.has_value() && (*answer == "y" || *answer == "Y" || *answer == "yes");
}

absl::StatusOr<std::string> ReadPasswordStdin() {
  std::string password;
  char buffer[auth::kPasswordBytesMax + 2];
  size_t n = std::fread(buffer, 1, sizeof(buffer), stdin);
  password.assign(buffer, n);
  if (absl::EndsWith(password, "\n")) {
    password.pop_back();
  }
  if (absl::EndsWith(password, "\r")) {
    password.pop_back();
  }
  if (absl::Status status = CheckPasswordBytes(password, "on standard input"); !status.ok()) {
    return status;
  }
  return password;
}

absl::StatusOr<std::string> PromptNewPassword(absl::string_view for_whom) {
  std::optional<std::string> first;
  std::optional<std::string> second;
  {
    NoEcho no_echo;
    std::cerr << "New password for " << for_whom << ": " << std::flush;
    first = ReadLine();
    if (first.has_value()) {
      std::cerr << "Again: " << std::flush;
      second = ReadLine();
    }
  }
  if (!first.has_value() || !second.has_value()) {
    return absl::InvalidArgumentError("no password was typed");
  }
  if (*first != *second) {
    return absl::InvalidArgumentError("the two passwords differ; nothing was changed");
  }
  if (absl::Status status = CheckPasswordBytes(*first, "typed"); !status.ok()) {
    return status;
  }
  return *first;
}

absl::StatusOr<std::string> HashPassword(const Config& config, absl::string_view password) {
  auth::PasswordCost cost;
  cost.memory_kib = static_cast<uint32_t>(config.passwords.argon2_memory_kib);
  cost.passes = static_cast<uint32_t>(config.passwords.argon2_passes);
  cost.lanes = static_cast<uint32_t>(config.passwords.argon2_lanes);
  return auth::HashPassword(password, cost);
}

std::optional<int64_t> ParseCount(absl::string_view text, int64_t min, int64_t max) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

bool NaturalLess(absl::string_view a, absl::string_view b) {
  auto digit = [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); };
  size_t i = 0;
  size_t j = 0;
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      size_t a_end = i;
      size_t b_end = j;
      while (a_end < a.size() && digit(a[a_end])) {
        ++a_end;
      }
      while (b_end < b.size() && digit(b[b_end])) {
        ++b_end;
      }
      // As numbers of any length: without leading zeros, the shorter is the smaller.
      absl::string_view x = a.substr(i, a_end - i);
      absl::string_view y = b.substr(j, b_end - j);
      while (x.size() > 1 && x[0] == '0') {
        x.remove_prefix(1);
      }
      while (y.size() > 1 && y[0] == '0') {
        y.remove_prefix(1);
      }
      if (x.size() != y.size()) {
        return x.size() < y.size();
      }
      if (x != y) {
        return x < y;
      }
      i = a_end;
      j = b_end;
      continue;
    }
    char x = absl::ascii_tolower(static_cast<unsigned char>(a[i]));
    char y = absl::ascii_tolower(static_cast<unsigned char>(b[j]));
    if (x != y) {
      return static_cast<unsigned char>(x) < static_cast<unsigned char>(y);
    }
    ++i;
    ++j;
  }
  if ((i < a.size()) != (j < b.size())) {
    return j < b.size();  // `a` ran out first: a prefix sorts first
  }
  return a < b;
}

std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\r\n") == absl::string_view::npos) {
    return std::string(text);
  }
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') {
      out += "\"\"";
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

}  // namespace chute::ctl
