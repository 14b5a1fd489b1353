// chutectl app-access: the applications allowed to use an HVE account over XOAUTH2
// (Add-/Remove-HVEAppAccess).

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr absl::string_view kHelp = R"(Application access (XOAUTH2):
  app-access add ID --app-id GUID...             at most 10 applications per account
  app-access remove ID --app-id GUID...
  An app-only token authenticates the account only if its app (the token's oid: the
  Enterprise application's object id, not the client id) is listed; an empty list lets any
  application of the tenant in, unless the tenant says --oauth-app-access listed.
)";

int Run(Context& context, const std::vector<std::string>& words) {
  Args args;
  if (std::optional<std::string> error = ParseArgs(words, 2, {}, {"--app-id"}, &args)) {
    return context.Usage(*error);
  }
  if (words.size() < 2 || (words[1] != "add" && words[1] != "remove")) {
    return context.Usage("app-access add|remove ID --app-id GUID...");
  }
  if (args.positional.empty()) {
    return context.Usage(absl::StrCat("app-access ", words[1], " needs ID"));
  }
  // "--app-id A B C": values after the first one arrive as positionals.
  std::vector<std::string> apps = args.All("--app-id");
  apps.insert(apps.end(), args.positional.begin() + 1, args.positional.end());
  if (apps.empty()) {
    return context.Usage(absl::StrCat("app-access ", words[1], " needs --app-id GUID..."));
  }
  directory::AccountChange change;
  (words[1] == "add" ? change.add_apps : change.remove_apps) = apps;
  directory::Store* store = context.Store();
  if (store == nullptr) {
    return kExitFailure;
  }
  absl::StatusOr<directory::Account> account = store->UpdateAccount(args.positional[0], change);
  if (!account.ok()) {
    return context.Fail(account.status());
  }
  if (context.json()) {
    PrintJson(nlohmann::json{{"identity", account->primary_address},
                             {"allowed_apps", account->allowed_apps}});
  } else {
    std::cout << "Identity:    " << account->primary_address
              << "\nAllowedApps: " << absl::StrJoin(account->allowed_apps, ", ") << "\n";
  }
  return kExitOk;
}

}  // namespace

extern const CommandGroup kAppAccessGroup{"app-access", Run, kHelp};

}  // namespace chute::ctl
