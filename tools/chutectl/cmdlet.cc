// The Exchange Online spellings of the HVE cmdlets, as Microsoft documents them, mapped onto
// chutectl's own commands: "New-MailUser -HVEAccount -Name X -PrimarySmtpAddress Y" is
// "account new --name X --primary-smtp-address Y". Parameter names are case-insensitive and
// take their value as the next word or after a colon ("-ReplyTo:x@contoso.com"), as in
// PowerShell; "-Confirm:$false" confirms a removal. Messages about a command typed as a cmdlet
// use the cmdlet's words (Context::Words).

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

struct Cmdlet {
  const char* name;  // lower-cased
  const char* spelling;
  std::vector<std::string> command;  // the chutectl words
  bool needs_hve_switch;
};

const Cmdlet kCmdlets[] = {
    {"new-mailuser", "New-MailUser", {"account", "new"}, true},
    {"get-mailuser", "Get-MailUser", {"account", "list"}, true},
    {"set-mailuser", "Set-MailUser", {"account", "set"}, true},
    {"remove-mailuser", "Remove-MailUser", {"account", "remove"}, false},
    {"set-user", "Set-User", {"account", "set"}, false},
    {"get-hveaccountsettings", "Get-HVEAccountSettings", {"settings", "get"}, false},
    {"set-hveaccountsettings", "Set-HVEAccountSettings", {"settings", "set"}, false},
    {"add-hveappaccess", "Add-HVEAppAccess", {"app-access", "add"}, false},
    {"remove-hveappaccess", "Remove-HVEAppAccess", {"app-access", "remove"}, false},
};

// Parameters that take a value.
constexpr std::pair<absl::string_view, absl::string_view> kValued[] = {
    {"-name", "--name"},
    {"-displayname", "--display-name"},
    {"-primarysmtpaddress", "--primary-smtp-address"},
    {"-replyto", "--reply-to"},
    {"-appid", "--app-id"},
};

// Switches: "-X" alone, or "-X:$true" / "-X:$false".
constexpr std::pair<absl::string_view, absl::string_view> kSwitches[] = {
    {"-passwordstdin", "--password-stdin"},
    {"-nopassword", "--no-password"},
};

std::optional<absl::string_view> Lookup(
    absl::Span<const std::pair<absl::string_view, absl::string_view>> table,
    absl::string_view name) {
  for (const auto& [from, to] : table) {
    if (name == from) {
      return to;
    }
  }
  return std::nullopt;
}

// SwitchValue: a PowerShell switch's value: "" (bare) and "$true"/"true" are on.
std::optional<bool> SwitchValue(const std::optional<std::string>& value) {
  if (!value.has_value()) {
    return true;
  }
  std::string lower = absl::AsciiStrToLower(*value);
  if (lower == "$true" || lower == "true") {
    return true;
  }
  if (lower == "$false" || lower == "false") {
    return false;
  }
  return std::nullopt;
}

}  // namespace

extern const absl::string_view kCmdletHelp =
    R"(The Exchange Online cmdlet spellings work too, for example:
  chutectl New-MailUser -HVEAccount -Name "HVE account" -PrimarySmtpAddress hve@contoso.com
  chutectl Get-MailUser -HVEAccount [-Identity ID]
  chutectl Set-MailUser -HVEAccount -Identity ID [-DisplayName X] [-PrimarySmtpAddress A]
  chutectl Remove-MailUser -Identity ID [-Confirm:$false]
  chutectl Set-MailUser -HVEAccount -Identity ID -AccountDisabled:$true|$false
  chutectl Set-User -Identity ID -AuthenticationPolicy BlockBasicAuthSmtp|AllowBasicAuthSmtp|$null
  chutectl Get-HVEAccountSettings -Identity ID
  chutectl Set-HVEAccountSettings -Identity hve@contoso.com -ReplyTo marketing@contoso.com
  chutectl Add-HVEAppAccess -Identity ID -AppId GUID[,GUID...]
  chutectl Remove-HVEAppAccess -Identity ID -AppId GUID[,GUID...]
  Parameters take "-Name value" or "-Name:value". New-MailUser prompts for the password on a
  terminal; otherwise give -PasswordStdin (read from standard input) or -NoPassword.
  chute has no named authentication policy objects (no New-AuthenticationPolicy): each account
  has its own setting, and -AuthenticationPolicy takes one of two built-in names, as if made
  with New-AuthenticationPolicy -AllowBasicAuthSmtp:$false (BlockBasicAuthSmtp) or :$true
  (AllowBasicAuthSmtp); $null follows the tenant's switch again ("account set ID --basic-auth
  off|on|tenant"). -AccountDisabled is "account disable ID" / "account enable ID".
)";

namespace {

// Translation: the chutectl words made so far from a cmdlet's parameters.
struct Translation {
  std::vector<std::string> words;
  std::optional<std::string> identity;
  std::optional<std::string> verb;  // replaces the command's verb (-AccountDisabled)
  bool hve = false;
};

// AuthenticationPolicyWord: -AuthenticationPolicy's value as `account set --basic-auth` takes
// it, or nullopt for a name chute does not have.
std::optional<std::string> AuthenticationPolicyWord(absl::string_view value) {
  if (absl::EqualsIgnoreCase(value, "BlockBasicAuthSmtp")) {
    return "off";
  }
  if (absl::EqualsIgnoreCase(value, "AllowBasicAuthSmtp")) {
    return "on";
  }
  if (value.empty() || absl::EqualsIgnoreCase(value, "$null")) {
    return "tenant";
  }
  return std::nullopt;
}

// TranslateParameter: words[*i] (a "-Parameter", with its value) into `out`, advancing *i past
// a value given as the next word. The message of a usage error otherwise.
std::optional<std::string> TranslateParameter(const Cmdlet& cmdlet,
                                              const std::vector<std::string>& words, size_t* i,
                                              Translation* out) {
  const std::string& word = words[*i];
  // "-Name:value" (PowerShell's colon form) or "-Name value".
  std::string name = absl::AsciiStrToLower(word);
  std::optional<std::string> value;
  if (size_t colon = word.find(':'); colon != std::string::npos) {
    name = absl::AsciiStrToLower(word.substr(0, colon));
    value = word.substr(colon + 1);
  }
  std::optional<absl::string_view> switch_to = Lookup(kSwitches, name);
  if (name == "-accountdisabled" && cmdlet.command[1] == "set") {
    std::optional<bool> disabled = SwitchValue(value);
    if (!disabled.has_value()) {
      return absl::StrCat(cmdlet.spelling, ": ", word, " takes $true or $false");
    }
    out->verb = *disabled ? "disable" : "enable";
    return std::nullopt;
  }
  if (name == "-hveaccount" || name == "-confirm" || switch_to.has_value()) {
    std::optional<bool> on = SwitchValue(value);
    if (!on.has_value()) {
      return absl::StrCat(cmdlet.spelling, ": ", word, " takes $true or $false");
    }
    if (name == "-hveaccount") {
      out->hve = *on;
    } else if (name == "-confirm" && !*on) {
      out->words.push_back("--yes");  // -Confirm:$false: no question asked
    } else if (switch_to.has_value() && *on) {
      out->words.push_back(std::string(*switch_to));
    }
    return std::nullopt;
  }
  std::optional<absl::string_view> mapped = Lookup(kValued, name);
  bool policy = name == "-authenticationpolicy" && cmdlet.command[1] == "set";
  if (name != "-identity" && !policy && !mapped.has_value()) {
    return absl::StrCat(cmdlet.spelling, ": unsupported parameter ", word);
  }
  if (!value.has_value()) {
    if (*i + 1 >= words.size()) {
      return absl::StrCat(cmdlet.spelling, ": ", word, " needs a value");
    }
    value = words[++*i];
  }
  if (name == "-identity") {
    out->identity = *value;
  } else if (policy) {
    std::optional<std::string> basic = AuthenticationPolicyWord(*value);
    if (!basic.has_value()) {
      return absl::StrCat(cmdlet.spelling, ": -AuthenticationPolicy takes BlockBasicAuthSmtp, ",
                          "AllowBasicAuthSmtp or $null (chute has no named policies)");
    }
    out->words.push_back("--basic-auth");
    out->words.push_back(*basic);
  } else if (*mapped != "--app-id") {
    out->words.push_back(std::string(*mapped));
    out->words.push_back(*value);
  } else {
    // -AppId takes a comma-separated list in PowerShell.
    for (absl::string_view app : absl::StrSplit(*value, ',', absl::SkipEmpty())) {
      out->words.push_back("--app-id");
      out->words.push_back(std::string(absl::StripAsciiWhitespace(app)));
    }
  }
  return std::nullopt;
}

}  // namespace

bool IsCmdlet(absl::string_view word) {
  for (const Cmdlet& cmdlet : kCmdlets) {
    if (absl::EqualsIgnoreCase(word, cmdlet.name)) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> TranslateCmdlet(std::vector<std::string>* words, Context* context) {
  if (words->empty() || absl::StartsWith((*words)[0], "-")) {
    return std::nullopt;
  }
  std::string lower_name = absl::AsciiStrToLower((*words)[0]);
  const Cmdlet* match = nullptr;
  for (const Cmdlet& candidate : kCmdlets) {
    if (lower_name == candidate.name) {
      match = &candidate;
    }
  }
  if (match == nullptr) {
    return std::nullopt;
  }
  context->SetCmdlet(match->spelling, absl::StrJoin(match->command, " "));
  Translation out;
  out.words = match->command;
  for (size_t i = 1; i < words->size(); ++i) {
    const std::string& word = (*words)[i];
    if (!absl::StartsWith(word, "-") || absl::StartsWith(word, "--")) {
      out.words.push_back(word);
    } else if (std::optional<std::string> error = TranslateParameter(*match, *words, &i, &out)) {
      return error;
    }
  }
  if (match->needs_hve_switch && !out.hve) {
    return absl::StrCat(match->spelling, " manages HVE accounts only: add -HVEAccount");
  }
  if (out.verb.has_value()) {
    if (out.words.size() > 2) {
      return absl::StrCat(match->spelling, ": -AccountDisabled goes alone (one change a command)");
    }
    out.words[1] = *out.verb;
    context->SetCmdlet(match->spelling, absl::StrCat("account ", *out.verb));
  }
  if (out.identity.has_value()) {
    if (out.words[1] == "list") {
      out.words[1] = "show";  // Get-MailUser -Identity X
      context->SetCmdlet(match->spelling, "account show");
    }
    out.words.insert(out.words.begin() + 2, *out.identity);
  }
  *words = std::move(out.words);
  return std::nullopt;
}

}  // namespace chute::ctl
