#pragma once

// The directory: tenants, their accepted domains and their HVE accounts
// (docs/architecture.md, Directory).
//
// SQLite (WAL) is the store and chutectl writes it through Store. chuted reads it as an
// immutable Snapshot, loaded whole and swapped atomically (shared_ptr) on SIGHUP or when
// SQLite's data version changes; a session keeps the snapshot it started with. Addresses are
// unique across all tenants, compared case-insensitively, and stored as given.
//
// Threads: a Store belongs to one thread. A Snapshot is immutable and may be read from any.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "directory/password_policy.h"

namespace chute::directory {

// Schema-enforced limits (the configured ones, like accounts_per_tenant, are passed in).
inline constexpr size_t kTenantNameBytesMax = 64;
inline constexpr size_t kDisplayNameBytesMax = 256;
inline constexpr size_t kDomainsPerTenantMax = 1000;
inline constexpr size_t kAliasesPerAccountMax = 100;
inline constexpr size_t kAllowedAppsPerAccountMax = 10;
inline constexpr size_t kUsageRowsMax = 1'000'000;  // a report of 100 accounts × 90 days is 9,000

// AppAccess: which applications an app-only XOAUTH2 token may come from, for an account whose
// AllowedApps list is empty (a non-empty list always decides alone).
enum class AppAccess {
  kAny,     // any application of the tenant, as Microsoft's HVE documents it (the default)
  kListed,  // none: every application must be in the account's AllowedApps
};

// ParseAppAccess: "any" or "listed". InvalidArgument otherwise.
absl::StatusOr<AppAccess> ParseAppAccess(absl::string_view text);
absl::string_view AppAccessName(AppAccess access);

// What a tenant's oauth_app_access is until it is set (the schema's column default too).
inline constexpr AppAccess kDefaultAppAccess = AppAccess::kAny;

struct Tenant {
  int64_t id = 0;
  std::string name;
  bool basic_auth = true;
  std::string oauth_issuer;
  std::string oauth_audience;
  std::string oauth_tenant_id;
  // oauth_jwks: where the signing keys come from: "" (none), a JWKS file's absolute path, a
  // JWKS https:// URL, or "discovery" (auth/key_store.h: ParseKeySource).
  std::string oauth_jwks;
  AppAccess oauth_app_access = kDefaultAppAccess;
  std::vector<std::string> domains;  // A-labels, lower-cased, sorted
  PasswordPolicy password_policy;
  // Where delivery failure reports about an account without a Reply-To go (an address in one
  // of the tenant's domains; "" = nowhere but the dead-letter area).
  std::string notification_address;
};

struct Account {
  int64_t id = 0;
  int64_t tenant_id = 0;
  std::string tenant_name;
  std::string display_name;
  std::string primary_address;
  std::vector<std::string> aliases;
  std::string password_hash;  // argon2id encoded; "" = no password set
  std::string reply_to;       // "" = none
  std::vector<std::string> allowed_apps;
  // basic_auth: the account's own authentication policy for AUTH PLAIN/LOGIN, overriding the
  // tenant's switch; nullopt = the tenant's (BasicAuthAllowed says which applies).
  std::optional<bool> basic_auth;
  // enabled: a disabled account authenticates by no mechanism and no trusted listener acts
  // as it; it is kept (addresses, usage, password history) until it is enabled again.
  bool enabled = true;
};

// BasicAuthAllowed: whether AUTH PLAIN/LOGIN may authenticate `account`: its own policy when
// it has one, else its tenant's switch.
bool BasicAuthAllowed(const Account& account, const Tenant& tenant);

class Snapshot {
 public:
  // FindAccount: the account whose primary address or alias is `address` (any case).
  const Account* FindAccount(absl::string_view address) const;
  // FindAccountByIdentity: by address, else by display name. nullptr when unknown or when a
  // display name is shared by several accounts (*ambiguous is then set).
  const Account* FindAccountByIdentity(absl::string_view identity, bool* ambiguous) const;
  const Tenant* FindTenant(int64_t id) const;
  const Tenant* FindTenantByName(absl::string_view name) const;
  // FindTenantByDomain: the tenant that owns `domain` (any case, U- or A-labels), or nullptr.
  const Tenant* FindTenantByDomain(absl::string_view domain) const;
  // IsAcceptedDomain: whether `domain` (any case) is an accepted domain of the tenant.
  bool IsAcceptedDomain(int64_t tenant_id, absl::string_view domain) const;

  const std::vector<Tenant>& tenants() const { return tenants_; }
  const std::vector<Account>& accounts() const { return accounts_; }
  int64_t AccountCount(int64_t tenant_id) const;

 private:
  friend class Store;
  std::vector<Tenant> tenants_;
  std::vector<Account> accounts_;
  absl::flat_hash_map<std::string, size_t> account_by_address_;  // lower-cased -> index
  absl::flat_hash_map<std::string, int64_t> tenant_by_domain_;   // lower-cased -> tenant id
};

struct TenantChange {
  std::optional<bool> basic_auth;
  std::optional<std::string> oauth_issuer;
  std::optional<std::string> oauth_audience;
  std::optional<std::string> oauth_tenant_id;
  std::optional<std::string> oauth_jwks;
  std::optional<AppAccess> oauth_app_access;
  std::vector<std::string> add_domains;
  std::vector<std::string> remove_domains;
  std::optional<int64_t> password_min_length;
  std::optional<PasswordComplexity> password_complexity;
  std::optional<int64_t> password_history;
  std::optional<std::string> notification_address;  // "" clears
};

struct NewAccount {
  std::string tenant;
  std::string display_name;
  std::string primary_address;
  std::string password_hash;  // may be "": the account cannot authenticate by password
};

struct AccountChange {
  std::optional<std::string> display_name;
  std::optional<std::string> primary_address;
  std::optional<std::string> password_hash;
  std::optional<std::string> reply_to;  // "" clears
  std::vector<std::string> add_aliases;
  std::vector<std::string> remove_aliases;
  std::vector<std::string> add_apps;
  std::vector<std::string> remove_apps;
  // basic_auth: set the account's policy; an inner nullopt = back to the tenant's.
  std::optional<std::optional<bool>> basic_auth;
  std::optional<bool> enabled;
};

// Store: the SQLite directory. Every write is one transaction and is checked against the
// rules above; errors are InvalidArgument (bad input), NotFound, AlreadyExists,
// FailedPrecondition (a rule such as the account cap) or Internal (the database).
// UsageRow: what one account sent on one UTC day, for the usage report
// (docs/architecture.md, Directory).
struct UsageRow {
  int64_t account_id = 0;
  std::string day;  // YYYY-MM-DD
  std::string address;
  std::string tenant;
  int64_t messages = 0;
  int64_t recipients = 0;
};

class Store {
 public:
  // Open: opens the database at `path`, creating it and its schema when `create`, and
  // migrating an older schema. NotFound when it does not exist and !create.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path, bool create);
  ~Store();

  absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot();
  // DataVersion: changes whenever another connection committed a change.
  absl::StatusOr<int64_t> DataVersion();

  absl::StatusOr<Tenant> AddTenant(absl::string_view name, const std::vector<std::string>& domains);
  absl::StatusOr<Tenant> UpdateTenant(absl::string_view name, const TenantChange& change);
  // RemoveTenant: FailedPrecondition when it has accounts, unless `force` (they go too).
  absl::Status RemoveTenant(absl::string_view name, bool force);

  // AddAccount: at most `accounts_max` accounts per tenant; the address must be in an
  // accepted domain of the tenant and unused anywhere.
  absl::StatusOr<Account> AddAccount(const NewAccount& account, int64_t accounts_max);
  absl::StatusOr<Account> UpdateAccount(absl::string_view identity, const AccountChange& change);
  absl::Status RemoveAccount(absl::string_view identity);

  // PasswordHashes: the account's current password hash (when it has one) followed by its
  // previous ones, newest first, at most `count` in all (count <= kPasswordHistoryMax): what a
  // new password is compared with to enforce the tenant's password history. A password change
  // (AccountChange::password_hash) keeps the replaced hash, up to kPasswordHistoryMax - 1
  // previous hashes per account; older ones are deleted.
  absl::StatusOr<std::vector<std::string>> PasswordHashes(int64_t account_id, int64_t count);

  // HasUsage: whether usage was ever recorded for `address` (a removed account's too).
  absl::StatusOr<bool> HasUsage(absl::string_view address);

  // RecordUsage: adds the rows' counts to what is stored for each (account, day).
  absl::Status RecordUsage(const std::vector<UsageRow>& rows);
  // QueryUsage: the rows for days in [from, to] (YYYY-MM-DD, inclusive), optionally of one
  // tenant and/or one account (by its primary address at the time), ordered by day, tenant,
  // address. Bounded by kUsageRowsMax.
  absl::StatusOr<std::vector<UsageRow>> QueryUsage(absl::string_view from, absl::string_view to,
                                                   absl::string_view tenant,
                                                   absl::string_view address);

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ToLower: ASCII lower-casing, as domains and address keys are compared.
std::string ToLower(absl::string_view text);

}  // namespace chute::directory
