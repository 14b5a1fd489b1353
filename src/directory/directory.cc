// directory.cc: the SQLite directory: schema, migrations, checked writes, immutable snapshots.

#include "directory/directory.h"

#include <algorithm>
#include <ctime>
#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "db/sqlite.h"
#include "directory/domain_name.h"
#include "smtp/address.h"

namespace chute::directory {
namespace {

using db::Database;
using db::Statement;

// Each entry migrates the schema from version i to i + 1. Never edit one that has shipped:
// append a new one.
constexpr absl::string_view kMigrations[] = {
    R"sql(
CREATE TABLE tenants (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  basic_auth INTEGER NOT NULL DEFAULT 1,
  oauth_issuer TEXT NOT NULL DEFAULT '',
  oauth_audience TEXT NOT NULL DEFAULT '',
  oauth_tenant_id TEXT NOT NULL DEFAULT '',
  oauth_jwks_file TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL
);
CREATE TABLE domains (
  domain TEXT PRIMARY KEY,           -- lower-cased; one tenant per domain
  tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE
);
CREATE TABLE accounts (
  id INTEGER PRIMARY KEY,
  tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  display_name TEXT NOT NULL,
  display_name_key TEXT NOT NULL UNIQUE,  -- lower-cased display name
  primary_address TEXT NOT NULL,
  password_hash TEXT NOT NULL DEFAULT '',
  reply_to TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL
);
CREATE TABLE addresses (
  address_key TEXT PRIMARY KEY,      -- lower-cased: unique across all tenants
  address TEXT NOT NULL,
  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  is_primary INTEGER NOT NULL
);
CREATE INDEX addresses_by_account ON addresses(account_id);
CREATE TABLE allowed_apps (
  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  app_id TEXT NOT NULL,
  PRIMARY KEY (account_id, app_id)
);
)sql",
    // 2: usage per account per UTC day. No foreign key: the history outlives the account.
    R"sql(
CREATE TABLE usage (
  account_id INTEGER NOT NULL,
  day TEXT NOT NULL,                 -- YYYY-MM-DD, UTC
  address TEXT NOT NULL,             -- the account's primary address at the time
  tenant TEXT NOT NULL,
  messages INTEGER NOT NULL DEFAULT 0,
  recipients INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, day)
);
)sql",
    // 3: the tenant's password policy, and each account's previous password hashes (for the
    // history rule; bounded by kPasswordHistoryMax in Store). Existing tenants get the
    // defaults of PasswordPolicy; existing passwords stay valid until they are changed.
    R"sql(
ALTER TABLE tenants ADD COLUMN password_min_length INTEGER NOT NULL DEFAULT 12;
ALTER TABLE tenants ADD COLUMN password_complexity TEXT NOT NULL DEFAULT '3-of-4';
ALTER TABLE tenants ADD COLUMN password_history INTEGER NOT NULL DEFAULT 5;
CREATE TABLE password_history (
  id INTEGER PRIMARY KEY,            -- increasing: newest has the largest id
  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  password_hash TEXT NOT NULL,       -- argon2id, never plaintext
  replaced_at INTEGER NOT NULL
);
CREATE INDEX password_history_by_account ON password_history(account_id, id);
)sql",
    // 4: each account's authentication policy (basic_auth: 1 allowed, 0 not, -1 = the tenant's)
    // and whether it is enabled. Existing accounts follow their tenant and stay enabled, as
    // before.
    R"sql(
ALTER TABLE accounts ADD COLUMN basic_auth INTEGER NOT NULL DEFAULT -1;
ALTER TABLE accounts ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
)sql",
    // 5: which applications an app-only XOAUTH2 token may come from when an account's
    // AllowedApps is empty. Existing tenants keep what they had: any application.
    R"sql(
ALTER TABLE tenants ADD COLUMN oauth_app_access TEXT NOT NULL DEFAULT 'any';
)sql",
    // 6: a tenant's OAuth keys may come from a file, a JWKS URL or OpenID discovery
    // (auth::ParseKeySource); the column says so. Existing values are file paths, which it
    // still takes.
    R"sql(
ALTER TABLE tenants RENAME COLUMN oauth_jwks_file TO oauth_jwks;
)sql",
    // 7: where delivery failure reports go for an account without a Reply-To. Existing
    // tenants have none, as before: their failures stay in the dead-letter area.
    R"sql(
ALTER TABLE tenants ADD COLUMN notification_address TEXT NOT NULL DEFAULT '';
)sql",
};

// The schema version from which domains are stored as A-labels (Impl::NormalizeStoredNames
// rewrites older rows when it is reached).
constexpr int64_t kSchemaALabels = 3;

static_assert(PasswordPolicy{}.min_length == 12 && PasswordPolicy{}.history == 5,
              "migration 3's column defaults are PasswordPolicy's");
// (Of the constant, not of Tenant{}: a Tenant has strings, which clang cannot make in a
// constant expression with this libstdc++; the tsan and fuzz presets build with clang.)
static_assert(kDefaultAppAccess == AppAccess::kAny, "migration 5's column default is Tenant's");

bool IsTenantName(absl::string_view name) {
  if (name.empty() || name.size() > kTenantNameBytesMax) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

// NormalizeTenantDomain: the A-label form of a domain a tenant may accept: valid, and not a
// single label ("localhost").
absl::StatusOr<std::string> NormalizeTenantDomain(absl::string_view domain) {
  ASSIGN_OR_RETURN(std::string normalized, NormalizeDomain(domain));
  if (IsSingleLabel(normalized)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", domain,
                     "' is a single-label domain: an accepted domain needs at least two "
                     "labels (like contoso.com)"));
  }
  return normalized;
}

bool IsAppId(absl::string_view id) {
  // A GUID: 8-4-4-4-12 hexadecimal digits.
  if (id.size() != 36) {
    return false;
  }
  for (size_t i = 0; i < id.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? id[i] != '-' : !absl::ascii_isxdigit(static_cast<unsigned char>(id[i]))) {
      return false;
    }
  }
  return true;
}

bool HasControl(absl::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 32 || c == 127; });
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// ResolveAccount: the account an ID (address or display name) names, or why there is none.
absl::StatusOr<const Account*> ResolveAccount(const Snapshot& snapshot,
                                              absl::string_view identity) {
  bool ambiguous = false;
  const Account* account = snapshot.FindAccountByIdentity(identity, &ambiguous);
  if (account == nullptr) {
    return ambiguous ? absl::InvalidArgumentError(
                           absl::StrCat("'", identity, "' names several accounts; use the address"))
                     : absl::NotFoundError(absl::StrCat("no account '", identity, "'"));
  }
  return account;
}

// ForEachRow: steps `statement` to its end, calling `row` for each row.
template <typename F>
absl::Status ForEachRow(Statement& statement, F&& row) {
  while (true) {
    absl::StatusOr<bool> has_row = statement.Step();
    if (!has_row.ok()) {
      return has_row.status();
    }
    if (!*has_row) {
      return absl::OkStatus();
    }
    row();
  }
}

// CheckReplyTo: an HVE account has no mailbox, so a Reply-To that is an HVE account's
// address (the account's own, or another's) would send every reply to a 550 5.1.10. Checked
// both ways: the Reply-To `change` sets (or keeps) against the directory and the addresses
// the change adds, and those addresses against every account's Reply-To.
absl::Status CheckReplyTo(const Snapshot& snapshot, const Account& account,
                          const AccountChange& change) {
  std::string reply_to = change.reply_to.value_or(account.reply_to);
  std::vector<std::string> added = change.add_aliases;
  if (change.primary_address.has_value()) {
    added.push_back(*change.primary_address);
  }
  if (!reply_to.empty()) {
    // Only a Reply-To being set is looked up: an account whose Reply-To an older chute let
    // become an HVE address can still be changed otherwise.
    const Account* owner = change.reply_to.has_value() ? snapshot.FindAccount(reply_to) : nullptr;
    if (owner != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Reply-To ", reply_to, " is an address of the HVE account ", owner->primary_address,
          ", which has no mailbox: replies would bounce (550 5.1.10); give a mailbox's address"));
    }
    for (const std::string& address : added) {
      if (AddressKey(address) == AddressKey(reply_to)) {
        return absl::InvalidArgumentError(
            absl::StrCat(address,
                         " is the account's Reply-To: as its own address it would have no mailbox, "
                         "and replies would bounce (550 5.1.10); change the Reply-To first"));
      }
    }
  }
  for (const Account& other : snapshot.accounts()) {
    for (const std::string& address : added) {
      if (other.id != account.id && !other.reply_to.empty() &&
          AddressKey(other.reply_to) == AddressKey(address)) {
        return absl::InvalidArgumentError(absl::StrCat(
            address, " is the Reply-To of ", other.primary_address,
            ": as an HVE account's address it would have no mailbox, and that account's "
            "replies would bounce (550 5.1.10)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ToLower(absl::string_view text) { return absl::AsciiStrToLower(text); }

absl::StatusOr<AppAccess> ParseAppAccess(absl::string_view text) {
  if (text == "any") {
    return AppAccess::kAny;
  }
  if (text == "listed") {
    return AppAccess::kListed;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not an app access (any or listed)"));
}

absl::string_view AppAccessName(AppAccess access) {
  return access == AppAccess::kListed ? "listed" : "any";
}

// --- Snapshot ---------------------------------------------------------------------------------

const Account* Snapshot::FindAccount(absl::string_view address) const {
  auto it = account_by_address_.find(AddressKey(address));
  return it == account_by_address_.end() ? nullptr : &accounts_[it->second];
}

const Account* Snapshot::FindAccountByIdentity(absl::string_view identity, bool* ambiguous) const {
  *ambiguous = false;
  if (const Account* account = FindAccount(identity)) {
    return account;
  }
  const Account* found = nullptr;
  for (const Account& account : accounts_) {
    if (absl::EqualsIgnoreCase(account.display_name, identity)) {
      if (found != nullptr) {
        *ambiguous = true;
        return nullptr;
      }
      found = &account;
    }
  }
  return found;
}

bool BasicAuthAllowed(const Account& account, const Tenant& tenant) {
  return account.basic_auth.value_or(tenant.basic_auth);
}

const Tenant* Snapshot::FindTenant(int64_t id) const {
  for (const Tenant& tenant : tenants_) {
    if (tenant.id == id) {
      return &tenant;
    }
  }
  return nullptr;
}

const Tenant* Snapshot::FindTenantByName(absl::string_view name) const {
  for (const Tenant& tenant : tenants_) {
    if (tenant.name == name) {
      return &tenant;
    }
  }
  return nullptr;
}

bool Snapshot::IsAcceptedDomain(int64_t tenant_id, absl::string_view domain) const {
  auto it = tenant_by_domain_.find(DomainKey(domain));
  return it != tenant_by_domain_.end() && it->second == tenant_id;
}

const Tenant* Snapshot::FindTenantByDomain(absl::string_view domain) const {
  auto it = tenant_by_domain_.find(DomainKey(domain));
  return it == tenant_by_domain_.end() ? nullptr : FindTenant(it->second);
}

int64_t Snapshot::AccountCount(int64_t tenant_id) const {
  return std::count_if(accounts_.begin(), accounts_.end(),
                       [&](const Account& a) { return a.tenant_id == tenant_id; });
}

// --- Store ------------------------------------------------------------------------------------

struct Store::Impl {
  std::unique_ptr<Database> db;

  bool writing = false;  // inside InTransaction: LoadSnapshot reads within it

  // InTransaction: BEGIN IMMEDIATE, `body`, COMMIT; ROLLBACK when `body` fails. Inside one
  // already (a write's checks and its statements are one transaction), just `body`.
  // BEGIN IMMEDIATE takes the database's write lock first, so that what the body reads to
  // check a rule cannot change before it writes: two chutectl processes (or two operators)
  // adding the 100th account at once are serialized, and the second sees the first's.
  absl::Status InTransaction(const std::function<absl::Status()>& body) {
    if (writing) {
      return body();
    }
    RETURN_IF_ERROR(db->Exec("BEGIN IMMEDIATE"));
    writing = true;
    absl::Status status = body();
    writing = false;
    if (!status.ok()) {
      db->Exec("ROLLBACK").IgnoreError();
      return status;
    }
    return db->Exec("COMMIT");
  }

  // Writing: InTransaction for a write that returns a value.
  template <typename T>
  absl::StatusOr<T> Writing(const std::function<absl::StatusOr<T>()>& body) {
    std::optional<absl::StatusOr<T>> result;
    absl::Status status = InTransaction([&]() -> absl::Status {
      result = body();
      return result->status();
    });
    if (!status.ok()) {
      return status;
    }
    return *std::move(result);
  }

  absl::Status Migrate() {
    RETURN_IF_ERROR(
        db->Exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
    ASSIGN_OR_RETURN(Statement select, db->Prepare("SELECT version FROM schema_version"));
    ASSIGN_OR_RETURN(bool has_row, select.Step());
    int64_t version = has_row ? select.Int(0) : 0;
    int64_t latest = static_cast<int64_t>(std::size(kMigrations));
    if (version > latest) {
      return absl::FailedPreconditionError(
          absl::StrCat("the directory database has schema version ", version,
                       ", newer than this build's ", latest, "; upgrade chute"));
    }
    for (int64_t v = version; v < latest; ++v) {
      RETURN_IF_ERROR(InTransaction([&]() -> absl::Status {
        RETURN_IF_ERROR(db->Exec(kMigrations[v]));
        if (v + 1 == kSchemaALabels) {
          RETURN_IF_ERROR(NormalizeStoredNames());
        }
        RETURN_IF_ERROR(db->Exec("DELETE FROM schema_version"));
        ASSIGN_OR_RETURN(Statement insert, db->Prepare("INSERT INTO schema_version VALUES (?)"));
        return insert.Bind(1, v + 1).Run();
      }));
    }
    return absl::OkStatus();
  }

  // NormalizeStoredNames (with migration kSchemaALabels): domains, and the domains of
  // addresses, stored before the directory kept them as A-labels are rewritten, so that the
  // look-ups (which use A-labels) still find them. A name whose other spelling is stored too
  // (the defect this fixes), or that does not normalize, is left as it was, with a warning.
  absl::Status NormalizeStoredNames() {
    std::vector<std::string> domains;
    ASSIGN_OR_RETURN(Statement select_domains, db->Prepare("SELECT domain FROM domains"));
    RETURN_IF_ERROR(ForEachRow(select_domains, [&] { domains.push_back(select_domains.Text(0)); }));
    for (const std::string& domain : domains) {
      absl::StatusOr<std::string> normalized = NormalizeDomain(domain);
      if (normalized.ok() && *normalized == domain) {
        continue;
      }
      ASSIGN_OR_RETURN(Statement update, db->Prepare("UPDATE OR IGNORE domains SET domain = ? "
                                                     "WHERE domain = ?"));
      if (!normalized.ok() || !update.Bind(1, *normalized).Bind(2, domain).Run().ok() ||
          db->Changes() == 0) {
        LOG_WARNING(
            "directory: the domain %s could not be stored as A-labels (another tenant "
            "has its other spelling, or it is not a domain name): remove one of them",
            domain);
      }
    }
    struct Row {
      std::string key;
      std::string address;
    };
    std::vector<Row> addresses;
    ASSIGN_OR_RETURN(Statement select_addresses,
                     db->Prepare("SELECT address_key, address FROM addresses"));
    RETURN_IF_ERROR(ForEachRow(select_addresses, [&] {
      addresses.push_back(Row{select_addresses.Text(0), select_addresses.Text(1)});
    }));
    for (const Row& row : addresses) {
      absl::StatusOr<std::string> normalized = NormalizeAddress(row.address);
      if (!normalized.ok() || *normalized == row.address) {
        continue;
      }
      ASSIGN_OR_RETURN(Statement update,
                       db->Prepare("UPDATE OR IGNORE addresses SET address_key = ?, address = ? "
                                   "WHERE address_key = ?"));
      RETURN_IF_ERROR(
          update.Bind(1, AddressKey(*normalized)).Bind(2, *normalized).Bind(3, row.key).Run());
      if (db->Changes() == 0) {
        LOG_WARNING("directory: the address %s is stored twice in two spellings: remove one",
                    row.address);
      }
    }
    for (const char* column : {"primary_address", "reply_to"}) {
      std::vector<std::pair<int64_t, std::string>> values;
      ASSIGN_OR_RETURN(Statement select,
                       db->Prepare(absl::StrCat("SELECT id, ", column, " FROM accounts")));
      RETURN_IF_ERROR(
          ForEachRow(select, [&] { values.emplace_back(select.Int(0), select.Text(1)); }));
      for (const auto& [id, value] : values) {
        absl::StatusOr<std::string> normalized = NormalizeAddress(value);
        if (value.empty() || !normalized.ok() || *normalized == value) {
          continue;
        }
        ASSIGN_OR_RETURN(Statement update, db->Prepare(absl::StrCat("UPDATE accounts SET ", column,
                                                                    " = ? WHERE id = ?")));
        RETURN_IF_ERROR(update.Bind(1, *normalized).Bind(2, id).Run());
      }
    }
    return absl::OkStatus();
  }

  // WriteTenantSettings: the tenant's columns that `change` sets (in the caller's
  // transaction).
  absl::Status WriteTenantSettings(int64_t id, const TenantChange& change) {
    auto set_column = [&](absl::string_view column, auto value) -> absl::Status {
      ASSIGN_OR_RETURN(Statement update, db->Prepare(absl::StrCat("UPDATE tenants SET ", column,
                                                                  " = ? WHERE id = ?")));
      return update.Bind(1, value).Bind(2, id).Run();
    };
    if (change.basic_auth.has_value()) {
      RETURN_IF_ERROR(set_column("basic_auth", int64_t{*change.basic_auth ? 1 : 0}));
    }
    const std::pair<const char*, const std::optional<std::string>*> texts[] = {
        {"oauth_issuer", &change.oauth_issuer},
        {"oauth_audience", &change.oauth_audience},
        {"oauth_tenant_id", &change.oauth_tenant_id},
        {"oauth_jwks", &change.oauth_jwks},
        {"notification_address", &change.notification_address}};
    for (const auto& [column, value] : texts) {
      if (value->has_value()) {
        RETURN_IF_ERROR(set_column(column, absl::string_view(**value)));
      }
    }
    if (change.oauth_app_access.has_value()) {
      RETURN_IF_ERROR(set_column("oauth_app_access", AppAccessName(*change.oauth_app_access)));
    }
    if (change.password_min_length.has_value()) {
      RETURN_IF_ERROR(set_column("password_min_length", *change.password_min_length));
    }
    if (change.password_complexity.has_value()) {
      RETURN_IF_ERROR(
          set_column("password_complexity", ComplexityName(*change.password_complexity)));
    }
    if (change.password_history.has_value()) {
      RETURN_IF_ERROR(set_column("password_history", *change.password_history));
    }
    return absl::OkStatus();
  }

  // KeepPreviousPassword: remembers a replaced password hash for the history rule, keeping at
  // most kPasswordHistoryMax - 1 previous hashes per account (with the current one, the
  // longest history a tenant may ask for).
  absl::Status KeepPreviousPassword(int64_t account_id, absl::string_view hash) {
    if (hash.empty()) {
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(Statement insert,
                     db->Prepare("INSERT INTO password_history (account_id, password_hash, "
                                 "replaced_at) VALUES (?, ?, ?)"));
    RETURN_IF_ERROR(insert.Bind(1, account_id).Bind(2, hash).Bind(3, Now()).Run());
    ASSIGN_OR_RETURN(Statement trim,
                     db->Prepare("DELETE FROM password_history WHERE account_id = ? AND id NOT "
                                 "IN (SELECT id FROM password_history WHERE account_id = ? "
                                 "ORDER BY id DESC LIMIT ?)"));
    return trim.Bind(1, account_id).Bind(2, account_id).Bind(3, kPasswordHistoryMax - 1).Run();
  }

  // WriteAccountPolicy: the account's basic_auth and enabled columns that `change` sets (in the
  // caller's transaction).
  absl::Status WriteAccountPolicy(int64_t id, const AccountChange& change) {
    if (change.basic_auth.has_value()) {
      ASSIGN_OR_RETURN(Statement update,
                       db->Prepare("UPDATE accounts SET basic_auth = ? WHERE id = ?"));
      int64_t value = !change.basic_auth->has_value() ? -1 : (**change.basic_auth ? 1 : 0);
      RETURN_IF_ERROR(update.Bind(1, value).Bind(2, id).Run());
    }
    if (change.enabled.has_value()) {
      ASSIGN_OR_RETURN(Statement update,
                       db->Prepare("UPDATE accounts SET enabled = ? WHERE id = ?"));
      RETURN_IF_ERROR(update.Bind(1, int64_t{*change.enabled ? 1 : 0}).Bind(2, id).Run());
    }
    return absl::OkStatus();
  }

  absl::Status InsertAddress(int64_t account_id, absl::string_view address, bool primary,
                             const Snapshot& snapshot) {
    if (const Account* owner = snapshot.FindAccount(address)) {
      return absl::AlreadyExistsError(
          absl::StrCat("the address ", address, " is already used by ", owner->primary_address));
    }
    ASSIGN_OR_RETURN(Statement insert,
                     db->Prepare("INSERT INTO addresses (address_key, address, account_id, "
                                 "is_primary) VALUES (?, ?, ?, ?)"));
    absl::Status status = insert.Bind(1, AddressKey(address))
                              .Bind(2, address)
                              .Bind(3, account_id)
                              .Bind(4, int64_t{primary ? 1 : 0})
                              .Run();
    if (absl::IsAlreadyExists(status)) {
      return absl::AlreadyExistsError(absl::StrCat("the address ", address, " is already used"));
    }
    return status;
  }
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path, bool create) {
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->db, Database::Open(path, create));
  RETURN_IF_ERROR(impl->Migrate());
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

absl::StatusOr<int64_t> Store::DataVersion() { return impl_->db->DataVersion(); }

absl::StatusOr<std::shared_ptr<const Snapshot>> Store::LoadSnapshot() {
  auto snapshot = std::make_shared<Snapshot>();
  Database& db = *impl_->db;
  // One read transaction, so the snapshot is consistent (inside a write: the write's).
  bool own_transaction = !impl_->writing;
  if (own_transaction) {
    RETURN_IF_ERROR(db.Exec("BEGIN"));
  }
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Statement tenants,
                     db.Prepare("SELECT id, name, basic_auth, oauth_issuer, oauth_audience, "
                                "oauth_tenant_id, oauth_jwks, password_min_length, "
                                "password_complexity, password_history, oauth_app_access, "
                                "notification_address FROM tenants ORDER BY name"));
    RETURN_IF_ERROR(ForEachRow(tenants, [&] {
      Tenant tenant;
      tenant.id = tenants.Int(0);
      tenant.name = tenants.Text(1);
      tenant.basic_auth = tenants.Int(2) != 0;
      tenant.oauth_issuer = tenants.Text(3);
      tenant.oauth_audience = tenants.Text(4);
      tenant.oauth_tenant_id = tenants.Text(5);
      tenant.oauth_jwks = tenants.Text(6);
      tenant.password_policy.min_length = tenants.Int(7);
      // An unknown spelling (a newer chutectl's) is read as the stricter rule.
      tenant.password_policy.complexity =
          ParseComplexity(tenants.Text(8)).value_or(PasswordComplexity::kThreeOfFour);
      tenant.password_policy.history = tenants.Int(9);
      tenant.oauth_app_access = ParseAppAccess(tenants.Text(10)).value_or(AppAccess::kListed);
      tenant.notification_address = tenants.Text(11);
      snapshot->tenants_.push_back(std::move(tenant));
    }));
    ASSIGN_OR_RETURN(Statement domains,
                     db.Prepare("SELECT domain, tenant_id FROM domains ORDER BY domain"));
    RETURN_IF_ERROR(ForEachRow(domains, [&] {
      snapshot->tenant_by_domain_[domains.Text(0)] = domains.Int(1);
      for (Tenant& tenant : snapshot->tenants_) {
        if (tenant.id == domains.Int(1)) {
          tenant.domains.push_back(domains.Text(0));
        }
      }
    }));
    ASSIGN_OR_RETURN(Statement accounts,
                     db.Prepare("SELECT a.id, a.tenant_id, t.name, a.display_name, "
                                "a.primary_address, a.password_hash, a.reply_to, a.basic_auth, "
                                "a.enabled FROM accounts a "
                                "JOIN tenants t ON t.id = a.tenant_id ORDER BY a.primary_address"));
    absl::flat_hash_map<int64_t, size_t> index_by_id;
    RETURN_IF_ERROR(ForEachRow(accounts, [&] {
      index_by_id[accounts.Int(0)] = snapshot->accounts_.size();
      snapshot->accounts_.push_back(
          Account{accounts.Int(0),
                  accounts.Int(1),
                  accounts.Text(2),
                  accounts.Text(3),
                  accounts.Text(4),
                  {},
                  accounts.Text(5),
                  accounts.Text(6),
                  {},
                  accounts.Int(7) < 0 ? std::nullopt : std::optional<bool>(accounts.Int(7) != 0),
                  accounts.Int(8) != 0});
    }));
    ASSIGN_OR_RETURN(Statement addresses,
                     db.Prepare("SELECT address_key, address, account_id, is_primary FROM "
                                "addresses ORDER BY address_key"));
    RETURN_IF_ERROR(ForEachRow(addresses, [&] {
      auto it = index_by_id.find(addresses.Int(2));
      if (it == index_by_id.end()) {
        return;
      }
      snapshot->account_by_address_[addresses.Text(0)] = it->second;
      if (addresses.Int(3) == 0) {
        snapshot->accounts_[it->second].aliases.push_back(addresses.Text(1));
      }
    }));
    ASSIGN_OR_RETURN(Statement apps, db.Prepare("SELECT account_id, app_id FROM allowed_apps "
                                                "ORDER BY app_id"));
    return ForEachRow(apps, [&] {
      auto it = index_by_id.find(apps.Int(0));
      if (it != index_by_id.end()) {
        snapshot->accounts_[it->second].allowed_apps.push_back(apps.Text(1));
      }
    });
  }();
  if (own_transaction) {
    db.Exec("COMMIT").IgnoreError();
  }
  RETURN_IF_ERROR(status);
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

absl::StatusOr<Tenant> Store::AddTenant(absl::string_view name,
                                        const std::vector<std::string>& domains) {
  return impl_->Writing<Tenant>([&]() -> absl::StatusOr<Tenant> {
    if (!IsTenantName(name)) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a tenant name (1..",
                                                     kTenantNameBytesMax,
                                                     " letters, digits, '.', '-', '_')"));
    }
    if (domains.empty()) {
      return absl::InvalidArgumentError("a tenant needs at least one accepted domain (--domain)");
    }
    TenantChange change;
    change.add_domains = domains;
    RETURN_IF_ERROR(impl_->InTransaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement insert,
                       impl_->db->Prepare("INSERT INTO tenants (name, created_at) VALUES (?, ?)"));
      absl::Status status = insert.Bind(1, name).Bind(2, Now()).Run();
      if (absl::IsAlreadyExists(status)) {
        return absl::AlreadyExistsError(absl::StrCat("tenant '", name, "' already exists"));
      }
      return status;
    }));
    absl::StatusOr<Tenant> tenant = UpdateTenant(name, change);
    if (!tenant.ok()) {
      RemoveTenant(name, true).IgnoreError();  // no tenant without its domains
    }
    return tenant;
  });
}

namespace {

// DomainsToAdd: `given` as A-labels, each a tenant domain that no tenant has yet.
absl::StatusOr<std::vector<std::string>> DomainsToAdd(const Snapshot& snapshot,
                                                      const Tenant& tenant,
                                                      const std::vector<std::string>& given) {
  std::vector<std::string> domains;
  for (const std::string& domain : given) {
    ASSIGN_OR_RETURN(std::string normalized, NormalizeTenantDomain(domain));
    if (const Tenant* owner = snapshot.FindTenantByDomain(normalized)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "the domain ", normalized, " already belongs to the tenant '", owner->name, "'"));
    }
    if (std::find(domains.begin(), domains.end(), normalized) == domains.end()) {
      domains.push_back(std::move(normalized));
    }
  }
  if (tenant.domains.size() + domains.size() > kDomainsPerTenantMax) {
    return absl::FailedPreconditionError(
        absl::StrCat("a tenant has at most ", kDomainsPerTenantMax, " domains"));
  }
  return domains;
}

// DomainsToRemove: `given` as A-labels, each a domain of the tenant that none of its
// accounts uses.
absl::StatusOr<std::vector<std::string>> DomainsToRemove(const Snapshot& snapshot,
                                                         const Tenant& tenant,
                                                         const std::vector<std::string>& given) {
  std::vector<std::string> domains;
  for (const std::string& name : given) {
    std::string domain = DomainKey(name);
    std::string suffix = absl::StrCat("@", domain);
    for (const Account& account : snapshot.accounts()) {
      bool uses = absl::EndsWithIgnoreCase(account.primary_address, suffix);
      for (const std::string& alias : account.aliases) {
        uses = uses || absl::EndsWithIgnoreCase(alias, suffix);
      }
      if (account.tenant_id == tenant.id && uses) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the domain ", domain, " is used by the account ", account.primary_address));
      }
    }
    if (!snapshot.IsAcceptedDomain(tenant.id, domain)) {
      return absl::NotFoundError(absl::StrCat("tenant '", tenant.name, "' has no domain ", name));
    }
    domains.push_back(std::move(domain));
  }
  return domains;
}

absl::Status CheckPolicyRanges(const TenantChange& change) {
  if (change.password_min_length.has_value() &&
      (*change.password_min_length < kPasswordMinLengthMin ||
       *change.password_min_length > kPasswordMinLengthMax)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the minimum password length is ", kPasswordMinLengthMin, "..", kPasswordMinLengthMax));
  }
  if (change.password_history.has_value() &&
      (*change.password_history < 0 || *change.password_history > kPasswordHistoryMax)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the password history is 0..", kPasswordHistoryMax, " passwords"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tenant> Store::UpdateTenant(absl::string_view name, const TenantChange& change) {
  return impl_->Writing<Tenant>([&]() -> absl::StatusOr<Tenant> {
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot, LoadSnapshot());
    const Tenant* tenant = snapshot->FindTenantByName(name);
    if (tenant == nullptr) {
      return absl::NotFoundError(absl::StrCat("no tenant '", name, "'"));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> add_domains,
                     DomainsToAdd(*snapshot, *tenant, change.add_domains));
    ASSIGN_OR_RETURN(std::vector<std::string> remove_domains,
                     DomainsToRemove(*snapshot, *tenant, change.remove_domains));
    RETURN_IF_ERROR(CheckPolicyRanges(change));
    TenantChange checked = change;
    if (checked.notification_address.has_value() && !checked.notification_address->empty()) {
      // Reports say who was not reached and why: they stay inside the organisation.
      ASSIGN_OR_RETURN(*checked.notification_address,
                       NormalizeAddress(*change.notification_address));
      absl::string_view domain = smtp::SplitAddress(*checked.notification_address).domain;
      bool accepted =
          std::find(tenant->domains.begin(), tenant->domains.end(), domain) !=
              tenant->domains.end() ||
          std::find(add_domains.begin(), add_domains.end(), domain) != add_domains.end();
      bool removed =
          std::find(remove_domains.begin(), remove_domains.end(), domain) != remove_domains.end();
      if (!accepted || removed) {
        return absl::InvalidArgumentError(
            absl::StrCat("the domain of ", *change.notification_address,
                         " is not an accepted domain of tenant '", name,
                         "' (failure reports stay inside the tenant)"));
      }
    }
    int64_t id = tenant->id;
    RETURN_IF_ERROR(impl_->InTransaction([&]() -> absl::Status {
      RETURN_IF_ERROR(impl_->WriteTenantSettings(id, checked));
      for (const std::string& domain : add_domains) {
        ASSIGN_OR_RETURN(
            Statement insert,
            impl_->db->Prepare("INSERT INTO domains (domain, tenant_id) VALUES (?, ?)"));
        absl::Status status = insert.Bind(1, domain).Bind(2, id).Run();
        if (absl::IsAlreadyExists(status)) {
          return absl::AlreadyExistsError(
              absl::StrCat("the domain ", domain, " already belongs to a tenant"));
        }
        RETURN_IF_ERROR(status);
      }
      for (const std::string& domain : remove_domains) {
        ASSIGN_OR_RETURN(
            Statement remove,
            impl_->db->Prepare("DELETE FROM domains WHERE domain = ? AND tenant_id = ?"));
        RETURN_IF_ERROR(remove.Bind(1, domain).Bind(2, id).Run());
      }
      return absl::OkStatus();
    }));
    ASSIGN_OR_RETURN(snapshot, LoadSnapshot());
    return *snapshot->FindTenant(id);
  });
}

absl::Status Store::RemoveTenant(absl::string_view name, bool force) {
  return impl_->InTransaction([&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot, LoadSnapshot());
    const Tenant* tenant = snapshot->FindTenantByName(name);
    if (tenant == nullptr) {
      return absl::NotFoundError(absl::StrCat("no tenant '", name, "'"));
    }
    int64_t accounts = snapshot->AccountCount(tenant->id);
    if (accounts > 0 && !force) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tenant '", name, "' has ", accounts, " account(s); remove them first or use --force"));
    }
    int64_t id = tenant->id;
    return impl_->InTransaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement remove, impl_->db->Prepare("DELETE FROM tenants WHERE id = ?"));
      return remove.Bind(1, id).Run();
    });
  });
}

absl::StatusOr<Account> Store::AddAccount(const NewAccount& given, int64_t accounts_max) {
  return impl_->Writing<Account>([&]() -> absl::StatusOr<Account> {
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot, LoadSnapshot());
    NewAccount account = given;
    ASSIGN_OR_RETURN(account.primary_address, NormalizeAddress(given.primary_address));
    const Tenant* tenant = snapshot->FindTenantByName(account.tenant);
    if (tenant == nullptr) {
      return absl::NotFoundError(absl::StrCat("no tenant '", account.tenant, "'"));
    }
    if (account.display_name.empty() || account.display_name.size() > kDisplayNameBytesMax ||
        HasControl(account.display_name)) {
      return absl::InvalidArgumentError(absl::StrCat("a display name is 1..", kDisplayNameBytesMax,
                                                     " bytes without control characters"));
    }
    smtp::AddressParts parts = smtp::SplitAddress(account.primary_address);
    if (!snapshot->IsAcceptedDomain(tenant->id, parts.domain)) {
      return absl::InvalidArgumentError(absl::StrCat("the domain of ", account.primary_address,
                                                     " is not an accepted domain of tenant '",
                                                     tenant->name, "'"));
    }
    if (snapshot->AccountCount(tenant->id) >= accounts_max) {
      return absl::FailedPreconditionError(absl::StrCat("tenant '", tenant->name, "' already has ",
                                                        accounts_max,
                                                        " accounts (limits.accounts_per_tenant)"));
    }
    for (const Account& other : snapshot->accounts()) {
      if (!other.reply_to.empty() &&
          AddressKey(other.reply_to) == AddressKey(account.primary_address)) {
        return absl::InvalidArgumentError(absl::StrCat(
            account.primary_address, " is the Reply-To of ", other.primary_address,
            ": as an HVE account's address it would have no mailbox, and that account's "
            "replies would bounce (550 5.1.10)"));
      }
    }
    bool ambiguous = false;
    if (snapshot->FindAccountByIdentity(account.display_name, &ambiguous) != nullptr || ambiguous) {
      return absl::AlreadyExistsError(
          absl::StrCat("an account named '", account.display_name, "' already exists"));
    }
    int64_t tenant_id = tenant->id;
    int64_t id = 0;
    RETURN_IF_ERROR(impl_->InTransaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement insert,
                       impl_->db->Prepare("INSERT INTO accounts (tenant_id, display_name, "
                                          "display_name_key, primary_address, password_hash, "
                                          "created_at) VALUES (?, ?, ?, ?, ?, ?)"));
      RETURN_IF_ERROR(insert.Bind(1, tenant_id)
                          .Bind(2, account.display_name)
                          .Bind(3, ToLower(account.display_name))
                          .Bind(4, account.primary_address)
                          .Bind(5, account.password_hash)
                          .Bind(6, Now())
                          .Run());
      id = impl_->db->LastInsertId();
      return impl_->InsertAddress(id, account.primary_address, true, *snapshot);
    }));
    ASSIGN_OR_RETURN(snapshot, LoadSnapshot());
    return *snapshot->FindAccount(account.primary_address);
  });
}

absl::StatusOr<Account> Store::UpdateAccount(absl::string_view identity,
                                             const AccountChange& given) {
  return impl_->Writing<Account>([&]() -> absl::StatusOr<Account> {
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot, LoadSnapshot());
    ASSIGN_OR_RETURN(const Account* account, ResolveAccount(*snapshot, identity));
    // Every address in the change must be in one of the tenant's domains; its domain is stored
    // as A-labels.
    auto in_tenant = [&](const std::string& address,
                         absl::string_view what) -> absl::StatusOr<std::string> {
      ASSIGN_OR_RETURN(std::string normalized, NormalizeAddress(address));
      if (!snapshot->IsAcceptedDomain(account->tenant_id, smtp::SplitAddress(normalized).domain)) {
        return absl::InvalidArgumentError(absl::StrCat("the domain of ", address,
                                                       " is not an accepted domain of tenant '",
                                                       account->tenant_name, "'", what));
      }
      return normalized;
    };
    AccountChange change = given;
    if (change.primary_address.has_value()) {
      ASSIGN_OR_RETURN(*change.primary_address, in_tenant(*given.primary_address, ""));
    }
    for (std::string& alias : change.add_aliases) {
      ASSIGN_OR_RETURN(alias, in_tenant(alias, ""));
    }
    if (account->aliases.size() + change.add_aliases.size() > kAliasesPerAccountMax) {
      return absl::FailedPreconditionError(
          absl::StrCat("an account has at most ", kAliasesPerAccountMax, " aliases"));
    }
    if (change.reply_to.has_value() && !change.reply_to->empty()) {
      // A Reply-To outside the organisation would send the answers to HVE mail elsewhere.
      ASSIGN_OR_RETURN(*change.reply_to,
                       in_tenant(*given.reply_to, " (a ReplyTo must be in one of them)"));
    }
    RETURN_IF_ERROR(CheckReplyTo(*snapshot, *account, change));
    // The old primary address stays as an alias (as Exchange keeps it as a proxy address), so
    // that devices still signing in or sending with it keep working; --remove-alias takes it
    // away. A new primary that is an alias already is promoted.
    bool keeps_old_primary = false;
    if (change.primary_address.has_value() &&
        AddressKey(*change.primary_address) != AddressKey(account->primary_address)) {
      bool promoted = std::any_of(account->aliases.begin(), account->aliases.end(),
                                  [&](const std::string& alias) {
                                    return AddressKey(alias) == AddressKey(*change.primary_address);
                                  });
      keeps_old_primary = true;
      if (!promoted &&
          account->aliases.size() + change.add_aliases.size() + 1 > kAliasesPerAccountMax) {
        return absl::FailedPreconditionError(
            absl::StrCat("the old primary address ", account->primary_address,
                         " would stay as an alias, and an account has at most ",
                         kAliasesPerAccountMax, " aliases: remove one first (--remove-alias)"));
      }
    }
    if (change.display_name.has_value() &&
        (change.display_name->empty() || change.display_name->size() > kDisplayNameBytesMax ||
         HasControl(*change.display_name))) {
      return absl::InvalidArgumentError(
          "a display name is 1..256 bytes without control characters");
    }
    std::vector<std::string> apps = account->allowed_apps;
    for (const std::string& app : change.add_apps) {
      if (!IsAppId(app)) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", app, "' is not an application id (GUID)"));
      }
      if (std::find(apps.begin(), apps.end(), ToLower(app)) == apps.end()) {
        apps.push_back(ToLower(app));
      }
    }
    for (const std::string& app : change.remove_apps) {
      auto it = std::find(apps.begin(), apps.end(), ToLower(app));
      if (it == apps.end()) {
        return absl::NotFoundError(
            absl::StrCat("application ", app, " is not allowed for ", account->primary_address));
      }
      apps.erase(it);
    }
    if (apps.size() > kAllowedAppsPerAccountMax) {
      return absl::FailedPreconditionError(
          absl::StrCat("an account allows at most ", kAllowedAppsPerAccountMax, " applications"));
    }
    int64_t id = account->id;
    std::string old_primary = account->primary_address;
    RETURN_IF_ERROR(impl_->InTransaction([&]() -> absl::Status {
      auto set_column = [&](absl::string_view column, absl::string_view value) -> absl::Status {
        ASSIGN_OR_RETURN(
            Statement update,
            impl_->db->Prepare(absl::StrCat("UPDATE accounts SET ", column, " = ? WHERE id = ?")));
        return update.Bind(1, value).Bind(2, id).Run();
      };
      if (change.display_name.has_value()) {
        RETURN_IF_ERROR(set_column("display_name", *change.display_name));
        absl::Status status = set_column("display_name_key", ToLower(*change.display_name));
        if (absl::IsAlreadyExists(status)) {
          return absl::AlreadyExistsError(
              absl::StrCat("an account named '", *change.display_name, "' already exists"));
        }
        RETURN_IF_ERROR(status);
      }
      if (change.password_hash.has_value()) {
        RETURN_IF_ERROR(impl_->KeepPreviousPassword(id, account->password_hash));
        RETURN_IF_ERROR(set_column("password_hash", *change.password_hash));
      }
      if (change.reply_to.has_value()) {
        RETURN_IF_ERROR(set_column("reply_to", *change.reply_to));
      }
      RETURN_IF_ERROR(impl_->WriteAccountPolicy(id, change));
      if (keeps_old_primary) {
        ASSIGN_OR_RETURN(Statement demote,
                         impl_->db->Prepare("UPDATE addresses SET is_primary = 0 WHERE "
                                            "address_key = ? AND account_id = ?"));
        RETURN_IF_ERROR(demote.Bind(1, AddressKey(old_primary)).Bind(2, id).Run());
        ASSIGN_OR_RETURN(Statement promote,
                         impl_->db->Prepare("UPDATE addresses SET is_primary = 1, address = ? "
                                            "WHERE address_key = ? AND account_id = ?"));
        RETURN_IF_ERROR(promote.Bind(1, *change.primary_address)
                            .Bind(2, AddressKey(*change.primary_address))
                            .Bind(3, id)
                            .Run());
        if (impl_->db->Changes() == 0) {
          RETURN_IF_ERROR(impl_->InsertAddress(id, *change.primary_address, true, *snapshot));
        }
        RETURN_IF_ERROR(set_column("primary_address", *change.primary_address));
      }
      for (const std::string& alias : change.remove_aliases) {
        ASSIGN_OR_RETURN(Statement remove,
                         impl_->db->Prepare("DELETE FROM addresses WHERE address_key = ? AND "
                                            "account_id = ? AND is_primary = 0"));
        RETURN_IF_ERROR(remove.Bind(1, AddressKey(alias)).Bind(2, id).Run());
        if (impl_->db->Changes() == 0) {
          return absl::NotFoundError(absl::StrCat(alias, " is not an alias of ", old_primary));
        }
      }
      for (const std::string& alias : change.add_aliases) {
        RETURN_IF_ERROR(impl_->InsertAddress(id, alias, false, *snapshot));
      }
      ASSIGN_OR_RETURN(Statement clear,
                       impl_->db->Prepare("DELETE FROM allowed_apps WHERE account_id = ?"));
      RETURN_IF_ERROR(clear.Bind(1, id).Run());
      for (const std::string& app : apps) {
        ASSIGN_OR_RETURN(
            Statement insert,
            impl_->db->Prepare("INSERT INTO allowed_apps (account_id, app_id) VALUES (?, ?)"));
        RETURN_IF_ERROR(insert.Bind(1, id).Bind(2, app).Run());
      }
      return absl::OkStatus();
    }));
    ASSIGN_OR_RETURN(snapshot, LoadSnapshot());
    for (const Account& updated : snapshot->accounts()) {
      if (updated.id == id) {
        return updated;
      }
    }
    return absl::InternalError("the updated account vanished");
  });
}

absl::Status Store::RecordUsage(const std::vector<UsageRow>& rows) {
  if (rows.empty()) {
    return absl::OkStatus();
  }
  return impl_->InTransaction([&]() -> absl::Status {
    for (const UsageRow& row : rows) {
      ASSIGN_OR_RETURN(
          Statement upsert,
          impl_->db->Prepare("INSERT INTO usage (account_id, day, address, tenant, messages, "
                             "recipients) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, day) "
                             "DO UPDATE SET messages = messages + excluded.messages, recipients = "
                             "recipients + excluded.recipients, address = excluded.address, "
                             "tenant = excluded.tenant"));
      RETURN_IF_ERROR(upsert.Bind(1, row.account_id)
                          .Bind(2, row.day)
                          .Bind(3, row.address)
                          .Bind(4, row.tenant)
                          .Bind(5, row.messages)
                          .Bind(6, row.recipients)
                          .Run());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<UsageRow>> Store::QueryUsage(absl::string_view from,
                                                        absl::string_view to,
                                                        absl::string_view tenant,
                                                        absl::string_view address) {
  ASSIGN_OR_RETURN(
      Statement query,
      impl_->db->Prepare("SELECT account_id, day, address, tenant, messages, recipients FROM usage "
                         "WHERE day >= ? AND day <= ? AND (? = '' OR tenant = ?) AND "
                         "(? = '' OR lower(address) = lower(?)) ORDER BY day, tenant, address "
                         "LIMIT ?"));
  query.Bind(1, from).Bind(2, to).Bind(3, tenant).Bind(4, tenant).Bind(5, address).Bind(6, address);
  query.Bind(7, static_cast<int64_t>(kUsageRowsMax));
  std::vector<UsageRow> rows;
  RETURN_IF_ERROR(ForEachRow(query, [&] {
    rows.push_back(UsageRow{query.Int(0), query.Text(1), query.Text(2), query.Text(3), query.Int(4),
                            query.Int(5)});
  }));
  return rows;
}

absl::Status Store::RemoveAccount(absl::string_view identity) {
  return impl_->InTransaction([&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snapshot, LoadSnapshot());
    ASSIGN_OR_RETURN(const Account* account, ResolveAccount(*snapshot, identity));
    int64_t id = account->id;
    return impl_->InTransaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement remove, impl_->db->Prepare("DELETE FROM accounts WHERE id = ?"));
      return remove.Bind(1, id).Run();
    });
  });
}

}  // namespace chute::directory

namespace chute::directory {

absl::StatusOr<std::vector<std::string>> Store::PasswordHashes(int64_t account_id, int64_t count) {
  std::vector<std::string> hashes;
  if (count <= 0) {
    return hashes;
  }
  ASSIGN_OR_RETURN(Statement current,
                   impl_->db->Prepare("SELECT password_hash FROM accounts WHERE id = ?"));
  current.Bind(1, account_id);
  RETURN_IF_ERROR(ForEachRow(current, [&] {
    if (!current.Text(0).empty()) {
      hashes.push_back(current.Text(0));
    }
  }));
  ASSIGN_OR_RETURN(Statement previous,
                   impl_->db->Prepare("SELECT password_hash FROM password_history WHERE "
                                      "account_id = ? ORDER BY id DESC LIMIT ?"));
  previous.Bind(1, account_id).Bind(2, std::min(count, kPasswordHistoryMax));
  RETURN_IF_ERROR(ForEachRow(previous, [&] { hashes.push_back(previous.Text(0)); }));
  if (static_cast<int64_t>(hashes.size()) > count) {
    hashes.resize(static_cast<size_t>(count));
  }
  return hashes;
}

absl::StatusOr<bool> Store::HasUsage(absl::string_view address) {
  ASSIGN_OR_RETURN(Statement query,
                   impl_->db->Prepare("SELECT 1 FROM usage WHERE lower(address) = lower(?) "
                                      "LIMIT 1"));
  query.Bind(1, address);
  return query.Step();
}

}  // namespace chute::directory
