// chutectl account: HVE accounts (New-/Get-/Set-/Remove-MailUser -HVEAccount), and their
// passwords, which must satisfy the tenant's password policy.

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/password.h"
#include "delivery/maildir.h"
#include "delivery/router.h"
#include "delivery/smtp_client.h"
#include "directory/domain_name.h"
#include "directory/password_policy.h"
#include "smtp/address.h"
#include "smtp/parser.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr absl::string_view kHelp = R"(HVE accounts (ID = primary address or display name):
  account new [--tenant NAME] --name DISPLAY --primary-smtp-address ADDR
              [--password-stdin | --no-password] [--no-mailbox-check]
                      the tenant defaults to the domain's owner; the password is asked twice
                      on a terminal, read from standard input with --password-stdin, and
                      --no-password makes an account that cannot authenticate by password
                      until one is set (it can still send through a trusted listener)
  account list [--tenant NAME]
  account show ID
  account set ID [--display-name X] [--primary-smtp-address A]
                 [--add-alias A]... [--remove-alias A]... [--basic-auth on|off|tenant]
                 [--no-mailbox-check]
                      --basic-auth: the account's authentication policy for AUTH PLAIN and
                      LOGIN, overriding its tenant's (tenant set --basic-auth); "tenant"
                      follows the tenant's again (the default)
  account disable ID                             no mechanism authenticates it (password or
                                                 XOAUTH2), no trusted listener acts as it;
                                                 it is kept, and takes effect without restart
  account enable ID
  account password ID [--password-stdin]         asked twice on a terminal otherwise
  account remove ID [--yes]                      asked on a terminal unless --yes
  A password must satisfy the tenant's password policy (tenant show NAME): its minimum
  length, its complexity, and not be one of its last N passwords.
  An account's address or alias may not be a mailbox mail is delivered to (it would take that
  mailbox's mail, and send as its owner): a Maildir route's existing mailbox, or an address an
  LMTP/SMTP route with verify_recipients is told exists by its target (asked now; when it
  cannot be asked, a warning says so and the address is added). --no-mailbox-check adds it
  without asking.
)";

// CheckNotAMailbox: kExitOk when `address` is not a mailbox of its delivery route (see the
// help above), else the failure's exit status, after saying why.
int CheckNotAMailbox(Context& context, const std::string& address, const std::string& tenant) {
  absl::StatusOr<std::string> normalized = directory::NormalizeAddress(address);
  if (!normalized.ok()) {
    return kExitOk;  // the directory refuses it with a better message
  }
  delivery::Router router(context.config());
  int index = router.FindAddress(*normalized, tenant);
  if (index == delivery::kNoRoute) {
    return kExitOk;
  }
  const delivery::Route& route = router.route(static_cast<size_t>(index));
  const DeliveryConfig& d = route.settings;
  std::string where = absl::StrCat("route ", route.name, ", ", delivery::Destination(d));
  std::string is_mailbox = absl::StrCat(
      *normalized, " is a mailbox (", where,
      "): as an HVE account's address it would take that mailbox's mail (its senders would "
      "get 550 5.1.10) and let the account send as its owner; give --no-mailbox-check if that "
      "is what you want");
  if (d.backend == DeliveryBackend::kMaildir) {
    return delivery::FindMailbox(d.maildir_root, *normalized) == delivery::MailboxState::kExists
               ? context.Fail(is_mailbox)
               : kExitOk;
  }
  if (!d.verify_recipients) {
    return kExitOk;  // its target is not trusted to know its mailboxes (it may take any)
  }
  delivery::SmtpClientOptions options =
      delivery::ClientOptionsFor(d, context.config().server.hostname);
  options.io_timeout = absl::Seconds(d.verify_timeout_s);
  absl::StatusOr<delivery::SmtpClientMaker> maker = delivery::MakeSmtpClientMaker(options);
  if (!maker.ok()) {
    return context.Fail(maker.status());
  }
  delivery::RecipientResult result = delivery::ProbeNow(*(*maker)(), *normalized);
  switch (result.outcome) {
    case delivery::Outcome::kDelivered:
      return context.Fail(is_mailbox);
    case delivery::Outcome::kPermanent:
      return kExitOk;
    case delivery::Outcome::kTransient:
      break;
  }
  // Not knowing is no reason to refuse (the target may be down while accounts are set up).
  context.Note(absl::StrCat("could not tell whether ", *normalized, " is a mailbox (", where,
                            "): ", result.reply, "; added without that check"));
  return kExitOk;
}

// BasicAuthName: the account's authentication policy as `account set --basic-auth` spells it.
const char* BasicAuthName(const directory::Account& a) {
  if (!a.basic_auth.has_value()) {
    return "tenant";
  }
  return *a.basic_auth ? "on" : "off";
}

nlohmann::json AccountJson(const directory::Account& a) {
  return nlohmann::json{{"display_name", a.display_name},
                        {"primary_smtp_address", a.primary_address},
                        {"tenant", a.tenant_name},
                        {"aliases", a.aliases},
                        {"has_password", !a.password_hash.empty()},
                        {"reply_to", a.reply_to},
                        {"allowed_apps", a.allowed_apps},
                        {"basic_auth", BasicAuthName(a)},
                        {"enabled", a.enabled}};
}

void PrintAccount(const Context& context, const directory::Account& a) {
  if (context.json()) {
    PrintJson(AccountJson(a));
    return;
  }
  std::cout << "DisplayName:        " << a.display_name << "\n"
            << "PrimarySmtpAddress: " << a.primary_address << "\n"
            << "Tenant:             " << a.tenant_name << "\n"
            << "Aliases:            " << absl::StrJoin(a.aliases, ", ") << "\n"
            << "Password:           " << (a.password_hash.empty() ? "not set" : "set") << "\n"
            << "ReplyTo:            " << a.reply_to << "\n"
            << "AllowedApps:        " << absl::StrJoin(a.allowed_apps, ", ") << "\n"
            << "BasicAuth:          " << BasicAuthName(a) << "\n"
            << "Enabled:            " << (a.enabled ? "true" : "false") << "\n";
}

// NewPassword: the password from standard input or, on a terminal, typed twice; checked
// against the tenant's length and complexity rules and, for an existing account, its history
// (the last N argon2id hashes). Returns the hash, or the exit status after saying why.
struct Hashed {
  std::string hash;
  int exit = kExitOk;
};

Hashed NewPassword(Context& context, const Args& args, const directory::Tenant& tenant,
                   absl::string_view who, int64_t account_id) {
  absl::StatusOr<std::string> password =
      args.Has("--password-stdin") ? ReadPasswordStdin() : PromptNewPassword(who);
  if (!password.ok()) {
    return {"", context.Fail(password.status())};
  }
  const directory::PasswordPolicy& policy = tenant.password_policy;
  if (absl::Status rules = directory::CheckPasswordRules(policy, *password, tenant.name);
      !rules.ok()) {
    return {"", context.Fail(rules)};
  }
  if (account_id != 0 && policy.history > 0) {
    absl::StatusOr<std::vector<std::string>> previous =
        context.Store()->PasswordHashes(account_id, policy.history);
    if (!previous.ok()) {
      return {"", context.Fail(previous.status())};
    }
    for (const std::string& hash : *previous) {
      if (auth::VerifyPassword(hash, *password)) {
        return {"", context.Fail(absl::StrCat("the password was used before: tenant '", tenant.name,
                                              "' does not allow reusing any of the last ",
                                              policy.history, " passwords (password-history)"))};
      }
    }
  }
  absl::StatusOr<std::string> hash = HashPassword(context.config(), *password);
  if (!hash.ok()) {
    return {"", context.Fail(hash.status())};
  }
  return {*hash, kExitOk};
}

int New(Context& context, directory::Store& store, const Args& args) {
  if (!args.positional.empty()) {
    return context.Usage("account new takes options only");
  }
  std::optional<std::string> tenant_name = args.Get("--tenant");
  std::optional<std::string> name = args.Get("--name");
  std::optional<std::string> address = args.Get("--primary-smtp-address");
  if (!name || !address) {
    return context.Usage("account new needs --name and --primary-smtp-address");
  }
  bool no_password = args.Has("--no-password");
  if (no_password && args.Has("--password-stdin")) {
    return context.Usage("account new takes --password-stdin or --no-password, not both");
  }
  if (!no_password && !args.Has("--password-stdin") && !IsTerminal()) {
    return context.Usage(
        "account new needs --password-stdin (the password on standard input), or "
        "--no-password for an account that cannot authenticate by password until one is set");
  }
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
  if (!snapshot.ok()) {
    return context.Fail(snapshot.status());
  }
  const directory::Tenant* tenant = nullptr;
  if (tenant_name) {
    tenant = (*snapshot)->FindTenantByName(*tenant_name);
    if (tenant == nullptr) {
      return context.Fail(absl::StrCat("no tenant '", *tenant_name, "'"));
    }
  } else {
    // The tenant is the one that owns the address's domain, as in Exchange Online.
    tenant = (*snapshot)->FindTenantByDomain(smtp::SplitAddress(*address).domain);
    if (tenant == nullptr) {
      return context.Fail(
          absl::StrCat("no tenant has the domain of ", *address, "; give --tenant"));
    }
  }
  if (!args.Has("--no-mailbox-check")) {
    if (int exit = CheckNotAMailbox(context, *address, tenant->name); exit != kExitOk) {
      return exit;
    }
  }
  directory::NewAccount account{tenant->name, *name, *address, ""};
  if (!no_password) {
    Hashed hashed = NewPassword(context, args, *tenant, *address, 0);
    if (hashed.exit != kExitOk) {
      return hashed.exit;
    }
    account.password_hash = std::move(hashed.hash);
  }
  absl::StatusOr<directory::Account> created =
      store.AddAccount(account, context.config().limits.accounts_per_tenant);
  if (!created.ok()) {
    return context.Fail(created.status());
  }
  PrintAccount(context, *created);
  if (no_password) {
    context.Note(absl::StrCat(created->primary_address,
                              " has no password: it cannot authenticate by password until one "
                              "is set (chutectl account password ",
                              created->primary_address, ")"));
  }
  return kExitOk;
}

int List(Context& context, directory::Store& store, const Args& args) {
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
  if (!snapshot.ok()) {
    return context.Fail(snapshot.status());
  }
  std::optional<std::string> tenant = args.Get("--tenant");
  if (tenant && (*snapshot)->FindTenantByName(*tenant) == nullptr) {
    return context.Fail(absl::StrCat("no tenant '", *tenant, "'"));
  }
  nlohmann::json list = nlohmann::json::array();
  if (!context.json()) {
    Printf("%-36s %-28s %s\n", "PRIMARY_SMTP_ADDRESS", "DISPLAY_NAME", "TENANT");
  }
  // In natural order (bulk2 before bulk10), as people read the names.
  std::vector<const directory::Account*> accounts;
  for (const directory::Account& a : (*snapshot)->accounts()) {
    if (!tenant || a.tenant_name == *tenant) {
      accounts.push_back(&a);
    }
  }
  std::sort(accounts.begin(), accounts.end(),
            [](const directory::Account* x, const directory::Account* y) {
              return NaturalLess(x->primary_address, y->primary_address);
            });
  for (const directory::Account* account : accounts) {
    const directory::Account& a = *account;
    if (context.json()) {
      list.push_back(AccountJson(a));
    } else {
      Printf("%-36s %-28s %s\n", a.primary_address.c_str(), a.display_name.c_str(),
             a.tenant_name.c_str());
    }
  }
  if (context.json()) {
    PrintJson(list);
  }
  return kExitOk;
}

// Find: the account an ID names, from a fresh snapshot (kept alive by `snapshot`).
const directory::Account* Find(Context& context, directory::Store& store, const std::string& id,
                               std::shared_ptr<const directory::Snapshot>* snapshot) {
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> loaded = store.LoadSnapshot();
  if (!loaded.ok()) {
    context.Fail(loaded.status());
    return nullptr;
  }
  *snapshot = *loaded;
  bool ambiguous = false;
  const directory::Account* account = (*snapshot)->FindAccountByIdentity(id, &ambiguous);
  if (account == nullptr) {
    context.Fail(ambiguous ? absl::StrCat("'", id, "' names several accounts; use the address")
                           : absl::StrCat("no account '", id, "'"));
  }
  return account;
}

int Password(Context& context, directory::Store& store, const Args& args, const std::string& id) {
  if (!args.Has("--password-stdin") && !IsTerminal()) {
    return context.Usage("account password needs --password-stdin when not run on a terminal");
  }
  std::shared_ptr<const directory::Snapshot> snapshot;
  const directory::Account* account = Find(context, store, id, &snapshot);
  if (account == nullptr) {
    return kExitFailure;
  }
  const directory::Tenant* tenant = snapshot->FindTenant(account->tenant_id);
  Hashed hashed = NewPassword(context, args, *tenant, account->primary_address, account->id);
  if (hashed.exit != kExitOk) {
    return hashed.exit;
  }
  directory::AccountChange change;
  change.password_hash = std::move(hashed.hash);
  absl::StatusOr<directory::Account> updated = store.UpdateAccount(id, change);
  if (!updated.ok()) {
    return context.Fail(updated.status());
  }
  PrintAccount(context, *updated);
  return kExitOk;
}

int Remove(Context& context, directory::Store& store, const Args& args, const std::string& id) {
  if (!args.Has("--yes")) {
    if (!IsTerminal()) {
      return context.Usage("account remove needs --yes when not run interactively");
    }
    std::shared_ptr<const directory::Snapshot> snapshot;
    if (Find(context, store, id, &snapshot) == nullptr) {
      return kExitFailure;
    }
    if (!Confirm(absl::StrCat("Remove the account ", id, "?"))) {
      return context.Declined(absl::StrCat("the account ", id, " was not removed"));
    }
  }
  absl::Status status = store.RemoveAccount(id);
  if (!status.ok()) {
    return context.Fail(status);
  }
  if (context.json()) {
    PrintJson(nlohmann::json{{"removed", id}});
  } else {
    std::cout << "Removed account " << id << "\n";
  }
  return kExitOk;
}

int Run(Context& context, const std::vector<std::string>& words) {
  if (words.size() < 2) {
    return context.Usage(
        "account needs a subcommand: new, list, show, set, disable, enable, password, remove");
  }
  const std::string& verb = words[1];
  Args args;
  if (std::optional<std::string> error =
          ParseArgs(words, 2, {"--password-stdin", "--no-password", "--yes", "--no-mailbox-check"},
                    {"--tenant", "--name", "--primary-smtp-address", "--display-name",
                     "--add-alias", "--remove-alias", "--basic-auth"},
                    &args)) {
    return context.Usage(*error);
  }
  static const char* const kVerbs[] = {"new",    "list",    "show",     "set",
                                       "enable", "disable", "password", "remove"};
  if (std::find(std::begin(kVerbs), std::end(kVerbs), verb) == std::end(kVerbs)) {
    return context.Usage(absl::StrCat("unknown account subcommand '", verb, "'"));
  }
  if (verb != "new" && verb != "list" && args.positional.size() != 1) {
    return context.Usage(absl::StrCat("account ", verb, " needs ID (address or display name)"));
  }
  directory::Store* store = context.Store();
  if (store == nullptr) {
    return kExitFailure;
  }
  if (verb == "new") {
    return New(context, *store, args);
  }
  if (verb == "list") {
    return List(context, *store, args);
  }
  const std::string& id = args.positional[0];
  if (verb == "show") {
    std::shared_ptr<const directory::Snapshot> snapshot;
    const directory::Account* account = Find(context, *store, id, &snapshot);
    if (account == nullptr) {
      return kExitFailure;
    }
    PrintAccount(context, *account);
    return kExitOk;
  }
  if (verb == "password") {
    return Password(context, *store, args, id);
  }
  if (verb == "remove") {
    return Remove(context, *store, args, id);
  }
  directory::AccountChange change;
  change.display_name = args.Get("--display-name");
  change.primary_address = args.Get("--primary-smtp-address");
  change.add_aliases = args.All("--add-alias");
  change.remove_aliases = args.All("--remove-alias");
  if (verb == "enable" || verb == "disable") {
    change.enabled = verb == "enable";
  }
  if (std::optional<std::string> basic = args.Get("--basic-auth")) {
    if (*basic != "on" && *basic != "off" && *basic != "tenant") {
      return context.Usage("--basic-auth takes on, off or tenant");
    }
    change.basic_auth =
        *basic == "tenant" ? std::optional<bool>() : std::optional<bool>(*basic == "on");
  }
  if (!args.Has("--no-mailbox-check") && (change.primary_address || !change.add_aliases.empty())) {
    std::shared_ptr<const directory::Snapshot> snapshot;
    const directory::Account* account = Find(context, *store, id, &snapshot);
    if (account == nullptr) {
      return kExitFailure;
    }
    std::vector<std::string> addresses = change.add_aliases;
    if (change.primary_address) {
      addresses.push_back(*change.primary_address);
    }
    for (const std::string& address : addresses) {
      if (int exit = CheckNotAMailbox(context, address, account->tenant_name); exit != kExitOk) {
        return exit;
      }
    }
  }
  absl::StatusOr<directory::Account> updated = store->UpdateAccount(id, change);
  if (!updated.ok()) {
    return context.Fail(updated.status());
  }
  PrintAccount(context, *updated);
  return kExitOk;
}

}  // namespace

extern const CommandGroup kAccountGroup{"account", Run, kHelp};

}  // namespace chute::ctl
