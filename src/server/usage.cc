// usage.cc: counting what the shards accept and refuse: the usage log on its way to the
// directory database (and the per-tenant totals of /metrics), and the table of refusals.

#include <algorithm>
#include <mutex>

#include "server/server.h"

namespace chute::server {

void UsageLog::Merge(Map& rows) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, row] : rows) {
    Totals& tenant = tenant_totals_[row.tenant];
    tenant.messages += static_cast<uint64_t>(row.messages);
    tenant.recipients += static_cast<uint64_t>(row.recipients);
    directory::UsageRow& total = pending_[key];
    if (total.day.empty()) {
      total = row;
    } else {
      total.messages += row.messages;
      total.recipients += row.recipients;
    }
  }
  rows.clear();
}

std::vector<directory::UsageRow> UsageLog::Take() {
  Map taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(pending_);
  }
  std::vector<directory::UsageRow> rows;
  rows.reserve(taken.size());
  for (auto& [key, row] : taken) {
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::flat_hash_map<std::string, UsageLog::Totals> UsageLog::TenantTotals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tenant_totals_;
}

absl::Status Server::FlushUsage() {
  std::vector<directory::UsageRow> rows = shared_.usage.Take();
  absl::Status status = store_ == nullptr ? absl::OkStatus() : store_->RecordUsage(rows);
  if (!status.ok()) {
    // Put them back: counts are not dropped because the database was busy once.
    UsageLog::Map again;
    for (directory::UsageRow& row : rows) {
      again[{row.account_id, row.day}] = row;
    }
    shared_.usage.Merge(again);
  }
  return status;
}

void ReplyCounts::Count(uint16_t code, absl::string_view text) {
  // The enhanced status code: the reply text's first word when it looks like one (RFC 3463).
  absl::string_view enhanced = text.substr(0, text.find(' '));
  bool valid = enhanced.size() >= 5 && enhanced.size() <= kEnhancedBytesMax &&
               (enhanced[0] == '2' || enhanced[0] == '4' || enhanced[0] == '5') &&
               enhanced[1] == '.' && std::all_of(enhanced.begin(), enhanced.end(), [](char c) {
                 return c == '.' || (c >= '0' && c <= '9');
               });
  if (!valid) {
    enhanced = {};
  }
  size_t size = size_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < size; ++i) {
    Kind& kind = kinds_[i];
    if (kind.code == code && absl::string_view(kind.enhanced, kind.enhanced_bytes) == enhanced) {
      kind.count.Add(1);
      return;
    }
  }
  if (size == kKindsMax) {
    // The table is full: the last entry counts everything else.
    kinds_[kKindsMax - 1].count.Add(1);
    return;
  }
  Kind& kind = kinds_[size];
  kind.code = size + 1 == kKindsMax ? 0 : code;
  if (kind.code != 0) {
    std::copy(enhanced.begin(), enhanced.end(), kind.enhanced);
    kind.enhanced_bytes = static_cast<uint8_t>(enhanced.size());
  }
  kind.count.Add(1);
  size_.store(size + 1, std::memory_order_release);
}

}  // namespace chute::server
