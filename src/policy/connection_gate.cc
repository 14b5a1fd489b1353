// connection_gate.cc: the lock-free per-IP and per-tenant connection caps (CountingTable).

#include "policy/connection_gate.h"

#include <sys/random.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "base/check.h"

namespace chute::policy {
namespace {

constexpr uint64_t kIpv4Flag = uint64_t{1} << (CountingTable::kKeyBits - 1);

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser: spreads keys over the table
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

CountingTable::CountingTable(size_t slots)
    : words_(std::bit_ceil(std::max(slots, kProbeWindow))), mask_(words_.size() - 1) {
  for (std::atomic<uint64_t>& word : words_) {
    word.store(0, std::memory_order_relaxed);
  }
}

size_t CountingTable::Index(uint64_t key, size_t i) const {
  return (static_cast<size_t>(Mix(key)) + i) & mask_;
}

// Join: one more on the key's committed word, if it has one. True when settled (*result).
bool CountingTable::Join(uint64_t key, uint64_t cap, size_t* slot, Result* result) {
  for (size_t i = 0; i < kProbeWindow; ++i) {
    size_t index = Index(key, i);
    uint64_t word = words_[index].load(std::memory_order_acquire);
    while (KeyOf(word) == key && IsCommitted(word)) {
      if (CountOf(word) >= cap) {
        *result = Result::kOverCap;
        return true;
      }
      if (words_[index].compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) {
        *slot = index;
        *result = Result::kAcquired;
        return true;
      }
    }
  }
  return false;
}

// Claim: turns the first free word of the window (or one whose count is 0) into a pending
// claim for `key`. nullopt when there is none.
std::optional<size_t> CountingTable::Claim(uint64_t key) {
  for (size_t i = 0; i < kProbeWindow; ++i) {
    size_t index = Index(key, i);
    uint64_t word = words_[index].load(std::memory_order_acquire);
    bool claimable = StateOf(word) == kFree || (IsCommitted(word) && CountOf(word) == 0);
    if (claimable && words_[index].compare_exchange_strong(word, Pack(key, kPending, 1),
                                                           std::memory_order_acq_rel)) {
      return index;
    }
  }
  return std::nullopt;
}

// Settle: decides a pending claim. False (claim given back) when the key already has a
// committed word or an earlier pending claim; later pending claims are killed. True when the
// claim is now the key's committed word.
bool CountingTable::Settle(uint64_t key, size_t claimed) {
  uint64_t mine = Pack(key, kPending, 1);
  bool before = true;  // walking the words that come before `claimed` in the probe order
  for (size_t i = 0; i < kProbeWindow; ++i) {
    size_t index = Index(key, i);
    if (index == claimed) {
      before = false;
      continue;
    }
    uint64_t word = words_[index].load(std::memory_order_acquire);
    while (KeyOf(word) == key && StateOf(word) != kFree) {
      if (IsCommitted(word) || before) {
        uint64_t expected = mine;
        words_[claimed].compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
        return false;
      }
      // A later pending claim of the same key loses to ours.
      if (words_[index].compare_exchange_weak(word, 0, std::memory_order_acq_rel)) {
        break;
      }
    }
  }
  return words_[claimed].compare_exchange_strong(mine, Pack(key, kCommitted, 1),
                                                 std::memory_order_acq_rel);
}

CountingTable::Result CountingTable::Acquire(uint64_t key, uint64_t cap, size_t* slot) {
  DCHECK(key != 0 && key < (uint64_t{1} << kKeyBits));
  CHECK(cap >= 1 && cap <= kCountMax);
  while (true) {
    Result result;
    if (Join(key, cap, slot, &result)) {
      return result;
    }
    std::optional<size_t> claimed = Claim(key);
    if (!claimed.has_value()) {
      // One more look: the key may have been committed meanwhile.
      if (Join(key, cap, slot, &result)) {
        return result;
      }
      return Result::kTableFull;
    }
    if (Settle(key, *claimed)) {
      *slot = *claimed;
      return Result::kAcquired;
    }
  }
}

void CountingTable::Release(size_t slot) {
  uint64_t before = words_[slot].fetch_sub(1, std::memory_order_acq_rel);
  CHECK_MSG(IsCommitted(before) && CountOf(before) > 0,
            "a connection gate word released more often than acquired");
}

uint64_t CountingTable::Count(uint64_t key) const {
  for (size_t i = 0; i < kProbeWindow; ++i) {
    uint64_t word = words_[Index(key, i)].load(std::memory_order_acquire);
    if (KeyOf(word) == key && IsCommitted(word)) {
      return CountOf(word);
    }
  }
  return 0;
}

ConnectionGate::Handle& ConnectionGate::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Reset();
    table_ = other.table_;
    slot_ = other.slot_;
    other.table_ = nullptr;
  }
  return *this;
}

void ConnectionGate::Handle::Reset() {
  if (table_ != nullptr) {
    table_->Release(slot_);
    table_ = nullptr;
  }
}

ConnectionGate::ConnectionGate(Limits limits)
    : limits_(std::move(limits)),
      per_ip_cap_(limits_.per_ip),
      per_tenant_cap_(limits_.per_tenant),
      ips_(limits_.ip_slots),
      tenants_(limits_.tenant_slots) {
  SetCaps(limits_.per_ip, limits_.per_tenant);
  CHECK(limits_.ipv6_prefix_bits >= 1 && limits_.ipv6_prefix_bits <= 128);
  CHECK(getrandom(&hash_secret_, sizeof(hash_secret_), 0) == sizeof(hash_secret_));
}

void ConnectionGate::SetCaps(uint64_t per_ip, uint64_t per_tenant) {
  CHECK(per_ip >= 1 && per_ip <= CountingTable::kCountMax);
  CHECK(per_tenant >= 1 && per_tenant <= CountingTable::kCountMax);
  per_ip_cap_.store(per_ip, std::memory_order_relaxed);
  per_tenant_cap_.store(per_tenant, std::memory_order_relaxed);
}

uint64_t ConnectionGate::IpKey(const IpBytes& ip) const {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.data(), kMapped, sizeof(kMapped)) == 0) {
    uint32_t v4;
    std::memcpy(&v4, ip.data() + 12, 4);
    return kIpv4Flag | v4;
  }
  IpBytes prefix = ip;  // the host bits below the prefix cleared: one key per prefix
  int bits = limits_.ipv6_prefix_bits;
  for (size_t i = 0; i < prefix.size(); ++i) {
    int keep = std::clamp(bits - static_cast<int>(8 * i), 0, 8);
    prefix[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
  uint64_t hash =
      Mix(hash_secret_ ^ absl::HashOf(absl::string_view(
                             reinterpret_cast<const char*>(prefix.data()), prefix.size())));
  uint64_t key = hash & (kIpv4Flag - 1);
  return key == 0 ? 1 : key;
}

std::optional<IpBytes> ConnectionGate::KeyToIp(uint64_t key) {
  if ((key & kIpv4Flag) == 0) {
    return std::nullopt;
  }
  IpBytes ip{};
  ip[10] = 0xff;
  ip[11] = 0xff;
  uint32_t v4 = static_cast<uint32_t>(key);
  std::memcpy(ip.data() + 12, &v4, 4);
  return ip;
}

ConnectionGate::Verdict ConnectionGate::Admit(CountingTable& table, uint64_t key, uint64_t cap,
                                              std::atomic<uint64_t>& over, Handle* handle) {
  size_t slot = 0;
  switch (table.Acquire(key, cap, &slot)) {
    case CountingTable::Result::kAcquired:
      *handle = Handle(&table, slot);
      return Verdict::kAdmitted;
    case CountingTable::Result::kOverCap:
      over.fetch_add(1, std::memory_order_relaxed);
      return Verdict::kOverCap;
    case CountingTable::Result::kTableFull:
      refused_table_full.fetch_add(1, std::memory_order_relaxed);
      return Verdict::kTableFull;
  }
  return Verdict::kTableFull;
}

ConnectionGate::Verdict ConnectionGate::AdmitIp(const IpBytes& ip, Handle* handle) {
  for (const Cidr& cidr : limits_.per_ip_exempt) {
    if (cidr.Contains(ip)) {
      return Verdict::kExempt;
    }
  }
  return Admit(ips_, IpKey(ip), per_ip_cap_.load(std::memory_order_relaxed), refused_ip_cap,
               handle);
}

ConnectionGate::Verdict ConnectionGate::AdmitTenant(int64_t tenant_id, Handle* handle) {
  return Admit(tenants_, TenantKey(tenant_id), per_tenant_cap_.load(std::memory_order_relaxed),
               refused_tenant_cap, handle);
}

}  // namespace chute::policy
