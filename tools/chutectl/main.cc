// chutectl: administration of chute's directory, mirroring Microsoft's HVE cmdlets
// (DESIGN.md §3). It writes the SQLite directory; a running chuted picks the change up on
// SIGHUP or within seconds by itself.
//
// Exit status: 0 success, 1 usage error, 2 a failure explained on stderr.

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/strip.h"
#include "auth/password.h"
#include "base/config.h"
#include "directory/directory.h"
#include "tools/chutectl/queue_command.h"

namespace chute {
namespace {

constexpr const char* kDefaultConfigPath = "/etc/chute/chute.toml";

constexpr const char* kUsage = R"(Usage: chutectl [--config FILE] [--json] COMMAND ...

Administers chute's directory of tenants and High Volume Email (HVE) accounts. The database is
the one named by [directory] database in the configuration (default: <data_dir>/directory.db).
A running chuted picks changes up within seconds, or at once on SIGHUP.

Tenants:
  tenant add NAME --domain D [--domain D]...     create a tenant with its accepted domains
  tenant list                                    all tenants
  tenant show NAME                               one tenant
  tenant set NAME [--basic-auth on|off] [--oauth-issuer URL] [--oauth-audience AUD]
                  [--oauth-tenant-id ID] [--oauth-jwks FILE]
                  [--add-domain D]... [--remove-domain D]...
  tenant remove NAME [--force]                   --force also removes its accounts

HVE accounts (ID = primary address or display name):
  account new [--tenant NAME] --name DISPLAY --primary-smtp-address ADDR [--password-stdin]
                                                 (the tenant defaults to the domain's owner)
  account list [--tenant NAME]
  account show ID
  account set ID [--display-name X] [--primary-smtp-address A]
                 [--add-alias A]... [--remove-alias A]...
  account password ID --password-stdin           read the new password from standard input
  account remove ID [--yes]

Account settings:
  settings get ID
  settings set ID --reply-to ADDR                ("" clears it)
  app-access add ID --app-id GUID...             at most 10 applications per account
  app-access remove ID --app-id GUID...

Usage report (what chuted counted per account per UTC day):
  report [--tenant NAME] [--account ID] [--days 7|30|90 | --from YYYY-MM-DD --to YYYY-MM-DD]
         [--volume recipients|messages] [--csv]       (default: the last 7 days)

Delivery queue of the running chuted (through [admin] address):
  queue list | show ID | retry ID|--all | hold ID | release ID | delete ID | dead | requeue ID
  (Postfix spellings: mailq, postqueue -p, postqueue -f, postsuper -d|-h|-H|-r ID)

The Exchange Online cmdlet spellings work too, for example:
  chutectl New-MailUser -HVEAccount -Name "HVE account" -PrimarySmtpAddress hve@contoso.com
  chutectl Get-MailUser -HVEAccount [-Identity ID]
  chutectl Set-MailUser -HVEAccount -Identity ID [-DisplayName X] [-PrimarySmtpAddress A]
  chutectl Remove-MailUser -Identity ID [-Confirm:$false]
  chutectl Get-HVEAccountSettings -Identity ID
  chutectl Set-HVEAccountSettings -Identity hve@contoso.com -ReplyTo marketing@contoso.com
  chutectl Add-HVEAppAccess -Identity ID -AppId GUID[,GUID...]
  chutectl Remove-HVEAppAccess -Identity ID -AppId GUID[,GUID...]
  (-PasswordStdin reads a password for New-MailUser, as --password-stdin does.)

Options:
  --config FILE   configuration file (default /etc/chute/chute.toml; built-in defaults when
                  that file does not exist)
  --json          print results as JSON
  --help          this text

Exit status: 0 success, 1 usage error, 2 failure (explained on stderr).
)";

// Args: the words after the command, split into positionals and --options.
struct Args {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> options;  // "--x" -> value ("" for a flag)

  bool Has(const std::string& name) const { return options.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const {
    auto it = options.find(name);
    return it == options.end() ? std::nullopt : std::optional<std::string>(it->second);
  }
  std::vector<std::string> All(const std::string& name) const {
    std::vector<std::string> values;
    for (auto [it, end] = options.equal_range(name); it != end; ++it) {
      values.push_back(it->second);
    }
    return values;
  }
};

struct UsageError {
  std::string message;
};

// ParseArgs: `flags` take no value; `valued` take one; anything else is a usage error.
std::optional<UsageError> ParseArgs(const std::vector<std::string>& words, size_t from,
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
        return UsageError{absl::StrCat(name, " needs a value")};
      }
      out->options.emplace(name, inline_value ? *inline_value : words[++i]);
    } else {
      return UsageError{absl::StrCat("unknown option ", word)};
    }
  }
  return std::nullopt;
}

class Cli {
 public:
  Cli(std::unique_ptr<directory::Store> store, const Config& config, bool json)
      : store_(std::move(store)), config_(config), json_(json) {}

  int Run(const std::vector<std::string>& words);

 private:
  int Tenant(const std::vector<std::string>& words);
  int Account(const std::vector<std::string>& words);
  int Settings(const std::vector<std::string>& words);
  int AppAccess(const std::vector<std::string>& words);
  int Report(const std::vector<std::string>& words);

  int Usage(absl::string_view message) {
    std::cerr << "chutectl: " << message << "\nRun 'chutectl --help' for usage.\n";
    return 1;
  }
  int Fail(const absl::Status& status) {
    std::cerr << "chutectl: " << status.message() << "\n";
    return 2;
  }

  nlohmann::json TenantJson(const directory::Tenant& t, int64_t accounts);
  nlohmann::json AccountJson(const directory::Account& a);
  void PrintTenant(const directory::Tenant& t, int64_t accounts);
  void PrintAccount(const directory::Account& a);
  absl::StatusOr<std::string> ReadPassword();
  // HashPasswordFromStdin: reads the password from standard input and hashes it (argon2id).
  absl::StatusOr<std::string> HashPasswordFromStdin();

  std::unique_ptr<directory::Store> store_;
  const Config& config_;
  bool json_;
};

nlohmann::json Cli::TenantJson(const directory::Tenant& t, int64_t accounts) {
  return nlohmann::json{{"name", t.name},
                        {"domains", t.domains},
                        {"accounts", accounts},
                        {"basic_auth", t.basic_auth},
                        {"oauth_issuer", t.oauth_issuer},
                        {"oauth_audience", t.oauth_audience},
                        {"oauth_tenant_id", t.oauth_tenant_id},
                        {"oauth_jwks_file", t.oauth_jwks_file}};
}

nlohmann::json Cli::AccountJson(const directory::Account& a) {
  return nlohmann::json{{"display_name", a.display_name},
                        {"primary_smtp_address", a.primary_address},
                        {"tenant", a.tenant_name},
                        {"aliases", a.aliases},
                        {"has_password", !a.password_hash.empty()},
                        {"reply_to", a.reply_to},
                        {"allowed_apps", a.allowed_apps}};
}

void Cli::PrintTenant(const directory::Tenant& t, int64_t accounts) {
  if (json_) {
    std::cout << TenantJson(t, accounts).dump(2) << "\n";
    return;
  }
  std::cout << "Name:            " << t.name << "\n"
            << "Domains:         " << absl::StrJoin(t.domains, ", ") << "\n"
            << "Accounts:        " << accounts << "\n"
            << "Basic auth:      " << (t.basic_auth ? "on" : "off") << "\n"
            << "OAuth issuer:    " << t.oauth_issuer << "\n"
            << "OAuth audience:  " << t.oauth_audience << "\n"
            << "OAuth tenant id: " << t.oauth_tenant_id << "\n"
            << "OAuth JWKS file: " << t.oauth_jwks_file << "\n";
}

void Cli::PrintAccount(const directory::Account& a) {
  if (json_) {
    std::cout << AccountJson(a).dump(2) << "\n";
    return;
  }
  std::cout << "DisplayName:        " << a.display_name << "\n"
            << "PrimarySmtpAddress: " << a.primary_address << "\n"
            << "Tenant:             " << a.tenant_name << "\n"
            << "Aliases:            " << absl::StrJoin(a.aliases, ", ") << "\n"
            << "Password:           " << (a.password_hash.empty() ? "not set" : "set") << "\n"
            << "ReplyTo:            " << a.reply_to << "\n"
            << "AllowedApps:        " << absl::StrJoin(a.allowed_apps, ", ") << "\n";
}

absl::StatusOr<std::string> Cli::ReadPassword() {
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
  if (password.empty() || password.size() > auth::kPasswordBytesMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the password on standard input must be 1..", auth::kPasswordBytesMax, " bytes"));
  }
  return password;
}

absl::StatusOr<std::string> Cli::HashPasswordFromStdin() {
  absl::StatusOr<std::string> password = ReadPassword();
  if (!password.ok()) {
    return password.status();
  }
  auth::PasswordCost cost;
  cost.memory_kib = static_cast<uint32_t>(config_.passwords.argon2_memory_kib);
  cost.passes = static_cast<uint32_t>(config_.passwords.argon2_passes);
  cost.lanes = static_cast<uint32_t>(config_.passwords.argon2_lanes);
  return auth::HashPassword(*password, cost);
}

int Cli::Run(const std::vector<std::string>& words) {
  if (words.empty()) {
    return Usage("no command");
  }
  const std::string& group = words[0];
  if (group == "tenant") {
    return Tenant(words);
  }
  if (group == "account") {
    return Account(words);
  }
  if (group == "settings") {
    return Settings(words);
  }
  if (group == "app-access") {
    return AppAccess(words);
  }
  if (group == "report") {
    return Report(words);
  }
  return Usage(absl::StrCat("unknown command '", group, "'"));
}

int Cli::Tenant(const std::vector<std::string>& words) {
  if (words.size() < 2) {
    return Usage("tenant needs a subcommand: add, list, show, set, remove");
  }
  const std::string& verb = words[1];
  Args args;
  std::optional<UsageError> error =
      ParseArgs(words, 2, {"--force"},
                {"--domain", "--basic-auth", "--oauth-issuer", "--oauth-audience",
                 "--oauth-tenant-id", "--oauth-jwks", "--add-domain", "--remove-domain"},
                &args);
  if (error) {
    return Usage(error->message);
  }
  size_t want_positional = verb == "list" ? 0 : 1;
  if (args.positional.size() != want_positional) {
    return Usage(absl::StrCat("tenant ", verb, verb == "list" ? " takes no name" : " needs NAME"));
  }
  if (verb == "add") {
    absl::StatusOr<directory::Tenant> tenant =
        store_->AddTenant(args.positional[0], args.All("--domain"));
    if (!tenant.ok()) {
      return Fail(tenant.status());
    }
    PrintTenant(*tenant, 0);
    return 0;
  }
  if (verb == "list" || verb == "show") {
    absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store_->LoadSnapshot();
    if (!snapshot.ok()) {
      return Fail(snapshot.status());
    }
    if (verb == "show") {
      const directory::Tenant* tenant = (*snapshot)->FindTenantByName(args.positional[0]);
      if (tenant == nullptr) {
        return Fail(absl::NotFoundError(absl::StrCat("no tenant '", args.positional[0], "'")));
      }
      PrintTenant(*tenant, (*snapshot)->AccountCount(tenant->id));
      return 0;
    }
    nlohmann::json list = nlohmann::json::array();
    if (!json_) {
      std::printf("%-24s %-8s %-10s %s\n", "NAME", "ACCOUNTS", "BASIC_AUTH", "DOMAINS");
    }
    for (const directory::Tenant& t : (*snapshot)->tenants()) {
      int64_t accounts = (*snapshot)->AccountCount(t.id);
      if (json_) {
        list.push_back(TenantJson(t, accounts));
      } else {
        std::printf("%-24s %-8lld %-10s %s\n", t.name.c_str(), static_cast<long long>(accounts),
                    t.basic_auth ? "on" : "off", absl::StrJoin(t.domains, ",").c_str());
      }
    }
    if (json_) {
      std::cout << list.dump(2) << "\n";
    }
    return 0;
  }
  if (verb == "set") {
    directory::TenantChange change;
    if (std::optional<std::string> basic = args.Get("--basic-auth")) {
      if (*basic != "on" && *basic != "off") {
        return Usage("--basic-auth takes on or off");
      }
      change.basic_auth = *basic == "on";
    }
    change.oauth_issuer = args.Get("--oauth-issuer");
    change.oauth_audience = args.Get("--oauth-audience");
    change.oauth_tenant_id = args.Get("--oauth-tenant-id");
    change.oauth_jwks_file = args.Get("--oauth-jwks");
    change.add_domains = args.All("--add-domain");
    change.remove_domains = args.All("--remove-domain");
    absl::StatusOr<directory::Tenant> tenant = store_->UpdateTenant(args.positional[0], change);
    if (!tenant.ok()) {
      return Fail(tenant.status());
    }
    PrintTenant(*tenant, -1);
    return 0;
  }
  if (verb == "remove") {
    absl::Status status = store_->RemoveTenant(args.positional[0], args.Has("--force"));
    if (!status.ok()) {
      return Fail(status);
    }
    if (json_) {
      std::cout << nlohmann::json{{"removed", args.positional[0]}}.dump(2) << "\n";
    } else {
      std::cout << "Removed tenant " << args.positional[0] << "\n";
    }
    return 0;
  }
  return Usage(absl::StrCat("unknown tenant subcommand '", verb, "'"));
}

int Cli::Account(const std::vector<std::string>& words) {
  if (words.size() < 2) {
    return Usage("account needs a subcommand: new, list, show, set, password, remove");
  }
  const std::string& verb = words[1];
  Args args;
  std::optional<UsageError> error = ParseArgs(
      words, 2, {"--password-stdin", "--yes"},
      {"--tenant", "--name", "--primary-smtp-address", "--display-name", "--add-alias",
       "--remove-alias"},
      &args);
  if (error) {
    return Usage(error->message);
  }
  if (verb == "new") {
    if (!args.positional.empty()) {
      return Usage("account new takes options only");
    }
    std::optional<std::string> tenant = args.Get("--tenant");
    std::optional<std::string> name = args.Get("--name");
    std::optional<std::string> address = args.Get("--primary-smtp-address");
    if (!name || !address) {
      return Usage("account new needs --name and --primary-smtp-address");
    }
    if (!tenant) {
      // The tenant is the one that owns the address's domain, as in Exchange Online.
      absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store_->LoadSnapshot();
      if (!snapshot.ok()) {
        return Fail(snapshot.status());
      }
      std::string domain = directory::ToLower(address->substr(address->rfind('@') + 1));
      for (const directory::Tenant& t : (*snapshot)->tenants()) {
        if ((*snapshot)->IsAcceptedDomain(t.id, domain)) {
          tenant = t.name;
        }
      }
      if (!tenant) {
        return Fail(absl::NotFoundError(
            absl::StrCat("no tenant has the domain of ", *address, "; give --tenant")));
      }
    }
    directory::NewAccount account{*tenant, *name, *address, ""};
    if (args.Has("--password-stdin")) {
      absl::StatusOr<std::string> hash = HashPasswordFromStdin();
      if (!hash.ok()) {
        return Fail(hash.status());
      }
      account.password_hash = *hash;
    }
    absl::StatusOr<directory::Account> created =
        store_->AddAccount(account, config_.limits.accounts_per_tenant);
    if (!created.ok()) {
      return Fail(created.status());
    }
    PrintAccount(*created);
    return 0;
  }
  if (verb == "list") {
    absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store_->LoadSnapshot();
    if (!snapshot.ok()) {
      return Fail(snapshot.status());
    }
    std::optional<std::string> tenant = args.Get("--tenant");
    if (tenant && (*snapshot)->FindTenantByName(*tenant) == nullptr) {
      return Fail(absl::NotFoundError(absl::StrCat("no tenant '", *tenant, "'")));
    }
    nlohmann::json list = nlohmann::json::array();
    if (!json_) {
      std::printf("%-36s %-28s %s\n", "PRIMARY_SMTP_ADDRESS", "DISPLAY_NAME", "TENANT");
    }
    for (const directory::Account& a : (*snapshot)->accounts()) {
      if (tenant && a.tenant_name != *tenant) {
        continue;
      }
      if (json_) {
        list.push_back(AccountJson(a));
      } else {
        std::printf("%-36s %-28s %s\n", a.primary_address.c_str(), a.display_name.c_str(),
                    a.tenant_name.c_str());
      }
    }
    if (json_) {
      std::cout << list.dump(2) << "\n";
    }
    return 0;
  }
  if (args.positional.size() != 1) {
    return Usage(absl::StrCat("account ", verb, " needs ID (address or display name)"));
  }
  const std::string& id = args.positional[0];
  if (verb == "show") {
    absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store_->LoadSnapshot();
    if (!snapshot.ok()) {
      return Fail(snapshot.status());
    }
    bool ambiguous = false;
    const directory::Account* account = (*snapshot)->FindAccountByIdentity(id, &ambiguous);
    if (account == nullptr) {
      return Fail(absl::NotFoundError(ambiguous ? absl::StrCat("'", id, "' names several accounts")
                                                : absl::StrCat("no account '", id, "'")));
    }
    PrintAccount(*account);
    return 0;
  }
  if (verb == "set" || verb == "password") {
    directory::AccountChange change;
    if (verb == "password") {
      if (!args.Has("--password-stdin")) {
        return Usage("account password needs --password-stdin");
      }
      absl::StatusOr<std::string> hash = HashPasswordFromStdin();
      if (!hash.ok()) {
        return Fail(hash.status());
      }
      change.password_hash = *hash;
    } else {
      change.display_name = args.Get("--display-name");
      change.primary_address = args.Get("--primary-smtp-address");
      change.add_aliases = args.All("--add-alias");
      change.remove_aliases = args.All("--remove-alias");
    }
    absl::StatusOr<directory::Account> updated = store_->UpdateAccount(id, change);
    if (!updated.ok()) {
      return Fail(updated.status());
    }
    PrintAccount(*updated);
    return 0;
  }
  if (verb == "remove") {
    if (!args.Has("--yes")) {
      if (!isatty(STDIN_FILENO)) {
        return Usage("account remove needs --yes when not run interactively");
      }
      std::cout << "Remove the account " << id << "? [y/N] " << std::flush;
      std::string answer;
      std::getline(std::cin, answer);
      if (answer != "y" && answer != "Y" && answer != "yes") {
        std::cerr << "chutectl: not removed\n";
        return 2;
      }
    }
    absl::Status status = store_->RemoveAccount(id);
    if (!status.ok()) {
      return Fail(status);
    }
    if (json_) {
      std::cout << nlohmann::json{{"removed", id}}.dump(2) << "\n";
    } else {
      std::cout << "Removed account " << id << "\n";
    }
    return 0;
  }
  return Usage(absl::StrCat("unknown account subcommand '", verb, "'"));
}

int Cli::Settings(const std::vector<std::string>& words) {
  Args args;
  if (std::optional<UsageError> error = ParseArgs(words, 2, {}, {"--reply-to"}, &args)) {
    return Usage(error->message);
  }
  if (words.size() < 2 || args.positional.size() != 1) {
    return Usage("settings get|set ID");
  }
  const std::string& id = args.positional[0];
  directory::AccountChange change;
  if (words[1] == "set") {
    change.reply_to = args.Get("--reply-to");
    if (!change.reply_to) {
      return Usage("settings set needs --reply-to ADDR (\"\" clears it)");
    }
  } else if (words[1] != "get") {
    return Usage("settings get|set ID");
  }
  absl::StatusOr<directory::Account> account = store_->UpdateAccount(id, change);
  if (!account.ok()) {
    return Fail(account.status());
  }
  if (json_) {
    std::cout << nlohmann::json{{"identity", account->primary_address},
                                {"reply_to", account->reply_to}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << "Identity: " << account->primary_address << "\nReplyTo:  " << account->reply_to
              << "\n";
  }
  return 0;
}

int Cli::AppAccess(const std::vector<std::string>& words) {
  Args args;
  if (std::optional<UsageError> error = ParseArgs(words, 2, {}, {"--app-id"}, &args)) {
    return Usage(error->message);
  }
  if (words.size() < 2 || (words[1] != "add" && words[1] != "remove")) {
    return Usage("app-access add|remove ID --app-id GUID...");
  }
  if (args.positional.empty()) {
    return Usage("app-access needs ID");
  }
  // "--app-id A B C": values after the first one arrive as positionals.
  std::vector<std::string> apps = args.All("--app-id");
  apps.insert(apps.end(), args.positional.begin() + 1, args.positional.end());
  if (apps.empty()) {
    return Usage("app-access needs --app-id GUID...");
  }
  directory::AccountChange change;
  (words[1] == "add" ? change.add_apps : change.remove_apps) = apps;
  absl::StatusOr<directory::Account> account = store_->UpdateAccount(args.positional[0], change);
  if (!account.ok()) {
    return Fail(account.status());
  }
  if (json_) {
    std::cout << nlohmann::json{{"identity", account->primary_address},
                                {"allowed_apps", account->allowed_apps}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << "Identity:    " << account->primary_address
              << "\nAllowedApps: " << absl::StrJoin(account->allowed_apps, ", ") << "\n";
  }
  return 0;
}

// TranslateCmdlet: the Exchange Online spellings of the HVE cmdlets, as Microsoft documents
// them, mapped onto chutectl's own commands ("New-MailUser -HVEAccount -Name X
// -PrimarySmtpAddress Y" is "account new --name X --primary-smtp-address Y"). Parameter names
// are case-insensitive, as in PowerShell; "-Confirm:$false" confirms a removal. Words that are
// not a cmdlet come back unchanged.
std::optional<UsageError> TranslateCmdlet(std::vector<std::string>* words) {
  if (words->empty() || (*words)[0].find('-') == std::string::npos ||
      absl::StartsWith((*words)[0], "-")) {
    return std::nullopt;
  }
  struct Cmdlet {
    const char* name;
    std::vector<std::string> command;  // the chutectl words
    bool needs_hve_switch;
  };
  static const Cmdlet kCmdlets[] = {
      {"new-mailuser", {"account", "new"}, true},
      {"get-mailuser", {"account", "list"}, true},
      {"set-mailuser", {"account", "set"}, true},
      {"remove-mailuser", {"account", "remove"}, false},
      {"get-hveaccountsettings", {"settings", "get"}, false},
      {"set-hveaccountsettings", {"settings", "set"}, false},
      {"add-hveappaccess", {"app-access", "add"}, false},
      {"remove-hveappaccess", {"app-access", "remove"}, false},
  };
  static const std::pair<const char*, const char*> kParameters[] = {
      {"-name", "--name"},
      {"-displayname", "--display-name"},
      {"-primarysmtpaddress", "--primary-smtp-address"},
      {"-replyto", "--reply-to"},
      {"-appid", "--app-id"},
  };
  std::string cmdlet = absl::AsciiStrToLower((*words)[0]);
  const Cmdlet* match = nullptr;
  for (const Cmdlet& candidate : kCmdlets) {
    if (cmdlet == candidate.name) {
      match = &candidate;
    }
  }
  if (match == nullptr) {
    return std::nullopt;
  }
  std::vector<std::string> out = match->command;
  std::optional<std::string> identity;
  bool hve = false;
  for (size_t i = 1; i < words->size(); ++i) {
    std::string word = (*words)[i];
    std::string lower = absl::AsciiStrToLower(word);
    if (lower == "-hveaccount") {
      hve = true;
    } else if (lower == "-confirm:$false" || lower == "-confirm:false") {
      out.push_back("--yes");
    } else if (lower == "-identity" && i + 1 < words->size()) {
      identity = (*words)[++i];
    } else if (lower == "-passwordstdin") {
      out.push_back("--password-stdin");
    } else if (absl::StartsWith(lower, "-") && !absl::StartsWith(lower, "--")) {
      const char* mapped = nullptr;
      for (const auto& [from, to] : kParameters) {
        if (lower == from) {
          mapped = to;
        }
      }
      if (mapped == nullptr || i + 1 >= words->size()) {
        return UsageError{absl::StrCat((*words)[0], ": unsupported parameter ", word)};
      }
      std::string value = (*words)[++i];
      if (std::string(mapped) != "--app-id") {
        out.push_back(mapped);
        out.push_back(value);
        continue;
      }
      // -AppId takes a comma-separated list in PowerShell.
      for (absl::string_view app : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        out.push_back(mapped);
        out.push_back(std::string(absl::StripAsciiWhitespace(app)));
      }
    } else {
      out.push_back(word);
    }
  }
  if (match->needs_hve_switch && !hve) {
    return UsageError{absl::StrCat((*words)[0], " manages HVE accounts only: add -HVEAccount")};
  }
  if (identity.has_value()) {
    if (out[1] == "list") {
      out[1] = "show";  // Get-MailUser -Identity X
    }
    out.insert(out.begin() + 2, *identity);
  }
  *words = std::move(out);
  return std::nullopt;
}

bool IsDay(absl::string_view text) {
  absl::Time time;
  std::string error;
  return text.size() == 10 &&
         absl::ParseTime("%Y-%m-%d", std::string(text), absl::UTCTimeZone(), &time, &error);
}

int Cli::Report(const std::vector<std::string>& words) {
  Args args;
  if (std::optional<UsageError> error = ParseArgs(
          words, 1, {"--csv"}, {"--tenant", "--account", "--days", "--from", "--to", "--volume"},
          &args)) {
    return Usage(error->message);
  }
  if (!args.positional.empty()) {
    return Usage("report takes options only");
  }
  std::string from;
  std::string to;
  std::optional<std::string> days = args.Get("--days");
  if (args.Has("--from") || args.Has("--to")) {
    if (days || !args.Has("--from") || !args.Has("--to")) {
      return Usage("give --from and --to together, or --days");
    }
    from = *args.Get("--from");
    to = *args.Get("--to");
    if (!IsDay(from) || !IsDay(to) || from > to) {
      return Usage("--from and --to are dates YYYY-MM-DD, --from not after --to");
    }
  } else {
    int count = 7;
    if (days && !(*days == "7" || *days == "30" || *days == "90")) {
      return Usage("--days is 7, 30 or 90");
    }
    if (days) {
      count = std::stoi(*days);
    }
    absl::Time now = absl::Now();
    to = absl::FormatTime("%Y-%m-%d", now, absl::UTCTimeZone());
    from = absl::FormatTime("%Y-%m-%d", now - absl::Hours(24 * (count - 1)), absl::UTCTimeZone());
  }
  std::string volume = args.Get("--volume").value_or("");
  if (!volume.empty() && volume != "messages" && volume != "recipients") {
    return Usage("--volume is messages or recipients");
  }
  std::string address;
  if (std::optional<std::string> id = args.Get("--account")) {
    absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store_->LoadSnapshot();
    if (!snapshot.ok()) {
      return Fail(snapshot.status());
    }
    bool ambiguous = false;
    const directory::Account* account = (*snapshot)->FindAccountByIdentity(*id, &ambiguous);
    address = account != nullptr ? account->primary_address : *id;  // a removed account too
  }
  std::string tenant = args.Get("--tenant").value_or("");
  absl::StatusOr<std::vector<directory::UsageRow>> rows =
      store_->QueryUsage(from, to, tenant, address);
  if (!rows.ok()) {
    return Fail(rows.status());
  }
  std::map<std::string, std::pair<int64_t, int64_t>> totals;  // tenant -> messages, recipients
  for (const directory::UsageRow& row : *rows) {
    totals[row.tenant].first += row.messages;
    totals[row.tenant].second += row.recipients;
  }
  bool show_messages = volume != "recipients";
  bool show_recipients = volume != "messages";
  if (json_) {
    nlohmann::json out{{"from", from}, {"to", to}, {"rows", nlohmann::json::array()},
                       {"tenants", nlohmann::json::array()}};
    for (const directory::UsageRow& row : *rows) {
      nlohmann::json item{{"day", row.day}, {"tenant", row.tenant}, {"account", row.address}};
      if (show_messages) {
        item["messages"] = row.messages;
      }
      if (show_recipients) {
        item["recipients"] = row.recipients;
      }
      out["rows"].push_back(item);
    }
    for (const auto& [name, total] : totals) {
      nlohmann::json item{{"tenant", name}};
      if (show_messages) {
        item["messages"] = total.first;
      }
      if (show_recipients) {
        item["recipients"] = total.second;
      }
      out["tenants"].push_back(item);
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (args.Has("--csv")) {
    std::cout << "day,tenant,account" << (show_messages ? ",messages" : "")
              << (show_recipients ? ",recipients" : "") << "\n";
    for (const directory::UsageRow& row : *rows) {
      std::cout << row.day << "," << row.tenant << "," << row.address;
      if (show_messages) {
        std::cout << "," << row.messages;
      }
      if (show_recipients) {
        std::cout << "," << row.recipients;
      }
      std::cout << "\n";
    }
    return 0;
  }
  std::cout << "Usage from " << from << " to " << to << " (UTC days)\n";
  std::printf("%-10s  %-20s  %-32s%s%s\n", "DAY", "TENANT", "ACCOUNT",
              show_messages ? "  MESSAGES" : "", show_recipients ? "  RECIPIENTS" : "");
  for (const directory::UsageRow& row : *rows) {
    std::printf("%-10s  %-20s  %-32s", row.day.c_str(), row.tenant.c_str(), row.address.c_str());
    if (show_messages) {
      std::printf("  %8lld", static_cast<long long>(row.messages));
    }
    if (show_recipients) {
      std::printf("  %10lld", static_cast<long long>(row.recipients));
    }
    std::printf("\n");
  }
  std::cout << "Tenant totals:\n";
  for (const auto& [name, total] : totals) {
    std::printf("  %-20s", name.c_str());
    if (show_messages) {
      std::printf("  messages %lld", static_cast<long long>(total.first));
    }
    if (show_recipients) {
      std::printf("  recipients %lld", static_cast<long long>(total.second));
    }
    std::printf("\n");
  }
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<std::string> words(argv + 1, argv + argc);
  std::string config_path;
  bool json = false;
  std::vector<std::string> rest;
  for (size_t i = 0; i < words.size(); ++i) {
    // Help only before the command word: after it, "-h" and "help" are arguments
    // (postsuper -h ID, account new --name help).
    if (rest.empty() && (words[i] == "--help" || words[i] == "-h" || words[i] == "help")) {
      std::cout << kUsage;
      return 0;
    }
    if (words[i] == "--json") {
      json = true;
    } else if (words[i] == "--config" && i + 1 < words.size()) {
      config_path = words[++i];
    } else if (absl::StartsWith(words[i], "--config=")) {
      config_path = words[i].substr(9);
    } else if (words[i] == "--config") {
      std::cerr << "chutectl: --config needs a value\n";
      return 1;
    } else {
      rest.push_back(words[i]);
    }
  }
  Config config;
  if (!config_path.empty() || access(kDefaultConfigPath, F_OK) == 0) {
    absl::StatusOr<Config> loaded = LoadConfig(config_path.empty() ? kDefaultConfigPath : config_path);
    if (!loaded.ok()) {
      std::cerr << "chutectl: " << loaded.status().message() << "\n";
      return 2;
    }
    config = std::move(*loaded);
  } else {
    absl::StatusOr<Config> defaults = ParseConfig("", "(built-in defaults)");
    config = std::move(*defaults);
  }
  if (rest.empty()) {
    std::cerr << kUsage;
    return 1;
  }
  if (IsQueueCommand(rest)) {
    return RunQueueCommand(config, json, rest);  // talks to chuted, not to the database
  }
  if (std::optional<UsageError> error = TranslateCmdlet(&rest)) {
    std::cerr << "chutectl: " << error->message << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<directory::Store>> store =
      directory::Store::Open(config.directory.database, true);
  if (!store.ok()) {
    std::cerr << "chutectl: " << store.status().message() << "\n";
    return 2;
  }
  Cli cli(std::move(*store), config, json);
  return cli.Run(rest);
}

}  // namespace
}  // namespace chute

int main(int argc, char** argv) { return chute::Main(argc, argv); }
