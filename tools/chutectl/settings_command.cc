// chutectl settings: an HVE account's settings (Get-/Set-HVEAccountSettings): its ReplyTo.

#include <iostream>

#include "absl/strings/str_cat.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr absl::string_view kHelp = R"(Account settings:
  settings get ID
  settings set ID --reply-to ADDR                an address in one of the tenant's domains
                                                 ("" clears it)
)";

int Run(Context& context, const std::vector<std::string>& words) {
  Args args;
  if (std::optional<std::string> error = ParseArgs(words, 2, {}, {"--reply-to"}, &args)) {
    return context.Usage(*error);
  }
  if (words.size() < 2 || (words[1] != "get" && words[1] != "set")) {
    return context.Usage("settings get|set ID");
  }
  const std::string& verb = words[1];
  if (args.positional.size() != 1) {
    return context.Usage(absl::StrCat("settings ", verb, " needs ID (address or display name)"));
  }
  directory::AccountChange change;
  if (verb == "set") {
    change.reply_to = args.Get("--reply-to");
    if (!change.reply_to) {
      return context.Usage("settings set needs --reply-to ADDR (\"\" clears it)");
    }
  }
  directory::Store* store = context.Store();
  if (store == nullptr) {
    return kExitFailure;
  }
  absl::StatusOr<directory::Account> account = store->UpdateAccount(args.positional[0], change);
  if (!account.ok()) {
    return context.Fail(account.status());
  }
  if (context.json()) {
    PrintJson(
        nlohmann::json{{"identity", account->primary_address}, {"reply_to", account->reply_to}});
  } else {
    std::cout << "Identity: " << account->primary_address << "\nReplyTo:  " << account->reply_to
              << "\n";
  }
  return kExitOk;
}

}  // namespace

extern const CommandGroup kSettingsGroup{"settings", Run, kHelp};

}  // namespace chute::ctl
