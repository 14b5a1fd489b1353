// chutectl tenant: tenants, their accepted domains, authentication and password policy.

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/jwt.h"
#include "auth/key_store.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr absl::string_view kHelp = R"(Tenants:
  tenant add NAME --domain D [--domain D]...     create a tenant with its accepted domains
  tenant list                                    all tenants
  tenant show NAME                               one tenant
  tenant set NAME [--basic-auth on|off] [--oauth-issuer https://...] [--oauth-audience AUD]
                  [--oauth-tenant-id ID] [--oauth-jwks FILE|URL|discovery]
                  [--oauth-app-access any|listed]
                  [--add-domain D]... [--remove-domain D]...
                  [--password-min-length N] [--password-complexity none|3-of-4]
                  [--password-history N] [--notification-address ADDR]
  tenant remove NAME [--force [--yes]]           --force also removes its accounts (listed;
                                                 asked on a terminal unless --yes)
  --oauth-jwks: where the keys that sign the tenant's tokens come from: a JWKS file (read
  again whenever it changes), an https:// URL of one, or "discovery": the jwks_uri of the
  issuer's /.well-known/openid-configuration. chuted fetches URLs itself, hourly ([oauth]
  refresh_s) and when a token names a key it has not seen; "" clears it.
  --notification-address: where a report goes when chute gives up delivering a message of
  an account that has no Reply-To (settings set --reply-to); an address in one of the
  tenant's domains; "" (the default) sends none: the failure is in the dead-letter area only.
  --oauth-app-access: which applications an app-only XOAUTH2 token may come from when an
  HVE account's AllowedApps is empty: any application of the tenant (the default, as in
  HVE), or none (listed: every application must be in the account's AllowedApps).
  Domains are stored as A-labels (an IDN and its xn-- form are one domain) and need at least
  two labels. Password policy defaults: 12 characters, 3-of-4 (three of lower-case, upper-case,
  digit, symbol), a history of 5 (the current and 4 previous passwords cannot be reused).
)";

nlohmann::json TenantJson(const directory::Tenant& t, int64_t accounts) {
  const directory::PasswordPolicy& p = t.password_policy;
  return nlohmann::json{
      {"name", t.name},
      {"domains", t.domains},
      {"accounts", accounts},
      {"basic_auth", t.basic_auth},
      {"oauth_issuer", t.oauth_issuer},
      {"oauth_audience", t.oauth_audience},
      {"oauth_tenant_id", t.oauth_tenant_id},
      {"oauth_jwks", t.oauth_jwks},
      // The name before URLs and discovery: a file's path, else "".
      {"oauth_jwks_file", absl::StartsWith(t.oauth_jwks, "/") ? t.oauth_jwks : ""},
      {"oauth_app_access", std::string(directory::AppAccessName(t.oauth_app_access))},
      {"notification_address", t.notification_address},
      {"password_policy",
       {{"min_length", p.min_length},
        {"complexity", std::string(directory::ComplexityName(p.complexity))},
        {"history", p.history}}}};
}

// JwksShown: the source as stored, and for discovery the URL it is read from.
std::string JwksShown(const directory::Tenant& t) {
  if (t.oauth_jwks == auth::kDiscoveryWord) {
    return absl::StrCat(t.oauth_jwks, " (", auth::DiscoveryUrl(t.oauth_issuer), ")");
  }
  return t.oauth_jwks;
}

void PrintTenant(const Context& context, const directory::Tenant& t, int64_t accounts) {
  if (context.json()) {
    PrintJson(TenantJson(t, accounts));
    return;
  }
  const directory::PasswordPolicy& p = t.password_policy;
  std::cout << "Name:                " << t.name << "\n"
            << "Domains:             " << absl::StrJoin(t.domains, ", ") << "\n"
            << "Accounts:            " << accounts << "\n"
            << "Basic auth:          " << (t.basic_auth ? "on" : "off") << "\n"
            << "OAuth issuer:        " << t.oauth_issuer << "\n"
            << "OAuth audience:      " << t.oauth_audience << "\n"
            << "OAuth tenant id:     " << t.oauth_tenant_id << "\n"
            << "OAuth JWKS:          " << JwksShown(t) << "\n"
            << "OAuth app access:    " << directory::AppAccessName(t.oauth_app_access) << "\n"
            << "Password min length: " << p.min_length << "\n"
            << "Password complexity: " << directory::ComplexityName(p.complexity) << "\n"
            << "Password history:    " << p.history << "\n"
            << "Notification addr.:  " << t.notification_address << "\n";
}

// ShowTenant: prints the tenant as it is now stored (with its account count).
int ShowTenant(Context& context, directory::Store& store, absl::string_view name) {
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
  if (!snapshot.ok()) {
    return context.Fail(snapshot.status());
  }
  const directory::Tenant* tenant = (*snapshot)->FindTenantByName(name);
  if (tenant == nullptr) {
    return context.Fail(absl::StrCat("no tenant '", name, "'"));
  }
  PrintTenant(context, *tenant, (*snapshot)->AccountCount(tenant->id));
  return kExitOk;
}

int List(Context& context, directory::Store& store) {
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
  if (!snapshot.ok()) {
    return context.Fail(snapshot.status());
  }
  nlohmann::json list = nlohmann::json::array();
  if (!context.json()) {
    Printf("%-24s %-8s %-10s %s\n", "NAME", "ACCOUNTS", "BASIC_AUTH", "DOMAINS");
  }
  // In natural order (bulk2 before bulk10), as people read the names.
  std::vector<const directory::Tenant*> tenants;
  for (const directory::Tenant& t : (*snapshot)->tenants()) {
    tenants.push_back(&t);
  }
  std::sort(tenants.begin(), tenants.end(),
            [](const directory::Tenant* x, const directory::Tenant* y) {
              return NaturalLess(x->name, y->name);
            });
  for (const directory::Tenant* tenant : tenants) {
    const directory::Tenant& t = *tenant;
    int64_t accounts = (*snapshot)->AccountCount(t.id);
    if (context.json()) {
      list.push_back(TenantJson(t, accounts));
    } else {
      Printf("%-24s %-8lld %-10s %s\n", t.name.c_str(), static_cast<long long>(accounts),
             t.basic_auth ? "on" : "off", absl::StrJoin(t.domains, ",").c_str());
    }
  }
  if (context.json()) {
    PrintJson(list);
  }
  return kExitOk;
}

// OAuthChange: --oauth-issuer must be an https URL (chuted compares it with the tokens' iss;
// anything else is a typo), --oauth-jwks a readable JWKS file (stored as an absolute path,
// since chuted runs from another directory), an https URL, or "discovery" with an issuer
// (this change's or the tenant's `current_issuer`). "" clears either. Returns an exit status on
// error.
std::optional<int> OAuthChange(const Context& context, const Args& args,
                               absl::string_view current_issuer, directory::TenantChange* change) {
  change->oauth_issuer = args.Get("--oauth-issuer");
  change->oauth_audience = args.Get("--oauth-audience");
  change->oauth_tenant_id = args.Get("--oauth-tenant-id");
  if (std::optional<std::string> access = args.Get("--oauth-app-access")) {
    absl::StatusOr<directory::AppAccess> parsed = directory::ParseAppAccess(*access);
    if (!parsed.ok()) {
      return context.Usage("--oauth-app-access is any or listed");
    }
    change->oauth_app_access = *parsed;
  }
  if (const std::optional<std::string>& issuer = change->oauth_issuer;
      issuer && !issuer->empty() &&
      (!absl::StartsWith(*issuer, "https://") || issuer->size() <= 8 || (*issuer)[8] == '/')) {
    return context.Usage(absl::StrCat("--oauth-issuer must be an https:// URL, not '", *issuer,
                                      "' (\"\" clears it)"));
  }
  std::optional<std::string> jwks = args.Get("--oauth-jwks");
  if (jwks && !jwks->empty() && *jwks != auth::kDiscoveryWord && !absl::StrContains(*jwks, "://")) {
    // A file: checked now, so that a typo is not found by the first token.
    absl::StatusOr<std::shared_ptr<const auth::Jwks>> loaded = auth::Jwks::Load(*jwks);
    if (!loaded.ok()) {
      return context.Fail(absl::StrCat("--oauth-jwks ", *jwks, ": ", loaded.status().message()));
    }
    char resolved[PATH_MAX];
    if (realpath(jwks->c_str(), resolved) != nullptr) {
      jwks = resolved;
    }
  }
  if (jwks) {
    std::string issuer = change->oauth_issuer.value_or(std::string(current_issuer));
    absl::StatusOr<auth::KeySource> source = auth::ParseKeySource(*jwks, issuer);
    if (!source.ok()) {
      return context.Usage(absl::StrCat("--oauth-jwks: ", source.status().message()));
    }
  }
  change->oauth_jwks = jwks;
  return std::nullopt;
}

// PolicyChange: the password policy options, checked for range.
std::optional<int> PolicyChange(const Context& context, const Args& args,
                                directory::TenantChange* change) {
  if (std::optional<std::string> text = args.Get("--password-min-length")) {
    change->password_min_length =
        ParseCount(*text, directory::kPasswordMinLengthMin, directory::kPasswordMinLengthMax);
    if (!change->password_min_length) {
      return context.Usage(absl::StrCat("--password-min-length is ",
                                        directory::kPasswordMinLengthMin, "..",
                                        directory::kPasswordMinLengthMax));
    }
  }
  if (std::optional<std::string> text = args.Get("--password-complexity")) {
    absl::StatusOr<directory::PasswordComplexity> complexity = directory::ParseComplexity(*text);
    if (!complexity.ok()) {
      return context.Usage("--password-complexity is none or 3-of-4");
    }
    change->password_complexity = *complexity;
  }
  if (std::optional<std::string> text = args.Get("--password-history")) {
    change->password_history = ParseCount(*text, 0, directory::kPasswordHistoryMax);
    if (!change->password_history) {
      return context.Usage(
          absl::StrCat("--password-history is 0..", directory::kPasswordHistoryMax));
    }
  }
  return std::nullopt;
}

int Set(Context& context, directory::Store& store, const Args& args) {
  directory::TenantChange change;
  if (std::optional<std::string> basic = args.Get("--basic-auth")) {
    if (*basic != "on" && *basic != "off") {
      return context.Usage("--basic-auth takes on or off");
    }
    change.basic_auth = *basic == "on";
  }
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
  if (!snapshot.ok()) {
    return context.Fail(snapshot.status());
  }
  const directory::Tenant* current = (*snapshot)->FindTenantByName(args.positional[0]);
  if (current == nullptr) {
    return context.Fail(absl::StrCat("no tenant '", args.positional[0], "'"));
  }
  if (std::optional<int> exit = OAuthChange(context, args, current->oauth_issuer, &change)) {
    return *exit;
  }
  if (std::optional<int> exit = PolicyChange(context, args, &change)) {
    return *exit;
  }
  change.add_domains = args.All("--add-domain");
  change.remove_domains = args.All("--remove-domain");
  change.notification_address = args.Get("--notification-address");
  absl::StatusOr<directory::Tenant> tenant = store.UpdateTenant(args.positional[0], change);
  if (!tenant.ok()) {
    return context.Fail(tenant.status());
  }
  return ShowTenant(context, store, tenant->name);
}

int Remove(Context& context, directory::Store& store, const Args& args) {
  const std::string& name = args.positional[0];
  std::vector<std::string> accounts;
  if (args.Has("--force")) {
    absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
    if (!snapshot.ok()) {
      return context.Fail(snapshot.status());
    }
    const directory::Tenant* tenant = (*snapshot)->FindTenantByName(name);
    if (tenant == nullptr) {
      return context.Fail(absl::StrCat("no tenant '", name, "'"));
    }
    for (const directory::Account& a : (*snapshot)->accounts()) {
      if (a.tenant_id == tenant->id) {
        accounts.push_back(a.primary_address);
      }
    }
    std::sort(accounts.begin(), accounts.end(),
              [](const std::string& x, const std::string& y) { return NaturalLess(x, y); });
    if (!accounts.empty()) {
      // Said before it happens, on stderr so that --json output stays one document.
      std::cerr << "Tenant " << name << " has " << accounts.size()
                << " account(s) that will be removed with it:\n";
      for (const std::string& address : accounts) {
        std::cerr << "  " << address << "\n";
      }
      if (IsTerminal() && !args.Has("--yes") &&
          !Confirm(
              absl::StrCat("Remove tenant ", name, " and its ", accounts.size(), " account(s)?"))) {
        return context.Declined(absl::StrCat("tenant ", name, " not removed"));
      }
    }
  }
  absl::Status status = store.RemoveTenant(name, args.Has("--force"));
  if (!status.ok()) {
    return context.Fail(status);
  }
  if (context.json()) {
    PrintJson(nlohmann::json{{"removed", name}, {"accounts_removed", accounts}});
  } else {
    std::cout << "Removed tenant " << name;
    if (!accounts.empty()) {
      std::cout << " and its " << accounts.size()
                << " account(s): " << absl::StrJoin(accounts, ", ");
    }
    std::cout << "\n";
  }
  return kExitOk;
}

int Run(Context& context, const std::vector<std::string>& words) {
  if (words.size() < 2) {
    return context.Usage("tenant needs a subcommand: add, list, show, set, remove");
  }
  const std::string& verb = words[1];
  Args args;
  if (std::optional<std::string> error =
          ParseArgs(words, 2, {"--force", "--yes"},
                    {"--domain", "--basic-auth", "--oauth-issuer", "--oauth-audience",
                     "--oauth-tenant-id", "--oauth-jwks", "--oauth-app-access", "--add-domain",
                     "--remove-domain", "--password-min-length", "--password-complexity",
                     "--password-history", "--notification-address"},
                    &args)) {
    return context.Usage(*error);
  }
  if (verb != "add" && verb != "list" && verb != "show" && verb != "set" && verb != "remove") {
    return context.Usage(absl::StrCat("unknown tenant subcommand '", verb, "'"));
  }
  size_t want_positional = verb == "list" ? 0 : 1;
  if (args.positional.size() != want_positional) {
    return context.Usage(
        absl::StrCat("tenant ", verb, verb == "list" ? " takes no name" : " needs NAME"));
  }
  if (verb == "add" && !args.Has("--domain")) {
    return context.Usage("tenant add needs at least one accepted domain (--domain D)");
  }
  directory::Store* store = context.Store();
  if (store == nullptr) {
    return kExitFailure;
  }
  if (verb == "add") {
    absl::StatusOr<directory::Tenant> tenant =
        store->AddTenant(args.positional[0], args.All("--domain"));
    if (!tenant.ok()) {
      return context.Fail(tenant.status());
    }
    PrintTenant(context, *tenant, 0);
    return kExitOk;
  }
  if (verb == "list") {
    return List(context, *store);
  }
  if (verb == "show") {
    return ShowTenant(context, *store, args.positional[0]);
  }
  if (verb == "set") {
    return Set(context, *store, args);
  }
  return Remove(context, *store, args);
}

}  // namespace

extern const CommandGroup kTenantGroup{"tenant", Run, kHelp};

}  // namespace chute::ctl
