#pragma once

// ConnectionGate: HVE's concurrency caps (docs/architecture.md, Caps and limits), exact under any
// load and shared by all shards without a lock: at most `connections_per_ip` connections per client
// address and at most `authenticated_connections_per_tenant` authenticated sessions per tenant.
//
// Each cap lives in a CountingTable: a fixed array of 64-bit atomic words, each packing a key,
// a state and a count, found by open addressing within a bounded probe window. The one rule
// everything rests on: a key has at most one COMMITTED word, and only a committed word is
// counted, by a CAS loop that never takes its count past the cap. A new key claims a free word
// (or one whose count fell to 0) as PENDING, then looks over the window: if the key already
// has a committed word, or a pending one earlier in the probe order, the claim is given back;
// later pending claims of the same key are killed (CAS to free). Only then is the claim
// committed, by a CAS that fails if it was killed meanwhile. So the table never evicts a live
// entry, a full window refuses the newcomer (counted as table_full), and Release is one atomic
// decrement of the word the handle remembers, exactly once, by the handle's destructor.
//
// Keys: an IPv4 address is its own key; an IPv6 address is counted by its first
// `ipv6_prefix_bits` (a /64 by default: a client given a /64 picks from 2^64 addresses at will,
// so counting whole addresses would cap nothing), as a keyed 45-bit hash of that prefix (two
// prefixes share a counter with probability 2^-45); a tenant is its id.
//
// Threads: any, concurrently. Handles are moved, never copied, and must not outlive the gate.

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/net_address.h"

namespace chute::policy {

class CountingTable {
 public:
  static constexpr uint64_t kCountBits = 16;
  static constexpr uint64_t kCountMax = (uint64_t{1} << kCountBits) - 1;  // a cap is ≤ this
  static constexpr uint64_t kKeyBits = 46;
  static constexpr size_t kProbeWindow = 32;

  // CountingTable: `slots` words (rounded up to a power of two, at least kProbeWindow).
  explicit CountingTable(size_t slots);

  enum class Result { kAcquired, kOverCap, kTableFull };
  // Acquire: one more for `key` (1 ≤ key < 2^46) unless it already has `cap` (≥ 1). On
  // kAcquired, *slot says which word to Release.
  Result Acquire(uint64_t key, uint64_t cap, size_t* slot);
  void Release(size_t slot);
  // Count: the committed count of `key` (a snapshot, for metrics and tests).
  uint64_t Count(uint64_t key) const;
  size_t capacity() const { return words_.size(); }
  // ForEach: f(key, count) for every committed word with a count (a snapshot, for metrics).
  template <typename F>
  void ForEach(F&& f) const {
    for (const std::atomic<uint64_t>& word : words_) {
      uint64_t value = word.load(std::memory_order_relaxed);
      if (IsCommitted(value) && CountOf(value) > 0) {
        f(KeyOf(value), CountOf(value));
      }
    }
  }

 private:
  static constexpr uint64_t kStateShift = kCountBits;
  static constexpr uint64_t kFree = 0;
  static constexpr uint64_t kPending = 1;
  static constexpr uint64_t kCommitted = 2;
  static uint64_t Pack(uint64_t key, uint64_t state, uint64_t count) {
    return (key << (kCountBits + 2)) | (state << kStateShift) | count;
  }
  static uint64_t KeyOf(uint64_t word) { return word >> (kCountBits + 2); }
  static uint64_t StateOf(uint64_t word) { return (word >> kStateShift) & 3; }
  static uint64_t CountOf(uint64_t word) { return word & kCountMax; }
  static bool IsCommitted(uint64_t word) { return StateOf(word) == kCommitted; }

  size_t Index(uint64_t key, size_t i) const;
  bool Join(uint64_t key, uint64_t cap, size_t* slot, Result* result);
  std::optional<size_t> Claim(uint64_t key);
  bool Settle(uint64_t key, size_t claimed);

  std::vector<std::atomic<uint64_t>> words_;
  size_t mask_;
};

class ConnectionGate {
 public:
  struct Limits {
    uint64_t per_ip = 100;
    std::vector<Cidr> per_ip_exempt;
    int ipv6_prefix_bits = 64;  // 1..128: the bits of an IPv6 address that are its key
    uint64_t per_tenant = 250;
    size_t ip_slots = 1 << 17;
    size_t tenant_slots = 1 << 12;
  };

  // Handle: one admitted connection (or session); gives it back when destroyed or Reset().
  class Handle {
   public:
    Handle() = default;
    Handle(Handle&& other) noexcept : table_(other.table_), slot_(other.slot_) {
      other.table_ = nullptr;
    }
    Handle& operator=(Handle&& other) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { Reset(); }
    void Reset();
    bool held() const { return table_ != nullptr; }

   private:
    friend class ConnectionGate;
    Handle(CountingTable* table, size_t slot) : table_(table), slot_(slot) {}
    CountingTable* table_ = nullptr;
    size_t slot_ = 0;
  };

  enum class Verdict { kAdmitted, kExempt, kOverCap, kTableFull };

  explicit ConnectionGate(Limits limits);

  // SetCaps: new caps for new admissions (a configuration reload). Lowering a cap evicts no
  // one: admissions are refused until the count is under the new cap. Any thread.
  void SetCaps(uint64_t per_ip, uint64_t per_tenant);

  // AdmitIp: a new connection from `ip`. kAdmitted fills *handle; kExempt admits uncounted.
  Verdict AdmitIp(const IpBytes& ip, Handle* handle);
  // AdmitTenant: a new authenticated session of `tenant_id`.
  Verdict AdmitTenant(int64_t tenant_id, Handle* handle);

  uint64_t IpCount(const IpBytes& ip) const { return ips_.Count(IpKey(ip)); }
  uint64_t TenantCount(int64_t tenant_id) const { return tenants_.Count(TenantKey(tenant_id)); }
  const CountingTable& ips() const { return ips_; }

  // Refusals by reason, for the metrics.
  std::atomic<uint64_t> refused_ip_cap{0};
  std::atomic<uint64_t> refused_tenant_cap{0};
  std::atomic<uint64_t> refused_table_full{0};
  // connections_max (and the descriptor budget's cap on it) is taken by the shards, which count
  // its refusals here beside the others.
  std::atomic<uint64_t> refused_connections_max{0};

  // IpKey: the table key of an address (exact for IPv4; for IPv6, of its first
  // ipv6_prefix_bits). KeyToIp: the address of an IPv4 key, or nullopt for a hashed IPv6 one.
  uint64_t IpKey(const IpBytes& ip) const;
  static std::optional<IpBytes> KeyToIp(uint64_t key);
  static uint64_t TenantKey(int64_t tenant_id) { return static_cast<uint64_t>(tenant_id) + 1; }

 private:
  Verdict Admit(CountingTable& table, uint64_t key, uint64_t cap, std::atomic<uint64_t>& over,
                Handle* handle);
  Limits limits_;
  std::atomic<uint64_t> per_ip_cap_;
  std::atomic<uint64_t> per_tenant_cap_;
  uint64_t hash_secret_ = 0;
  CountingTable ips_;
  CountingTable tenants_;
};

}  // namespace chute::policy
