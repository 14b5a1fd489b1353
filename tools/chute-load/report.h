#pragma once

// Report: the run's summary, as text for a terminal or one JSON object (--json; the fields
// are listed in chute-load(1) and --help). Pure: formats what it is given.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "tools/chute-load/options.h"
#include "tools/chute-load/stats.h"

namespace chute::load {

struct MemoryReport {
  int server_pid = 0;
  uint64_t connections = 0;  // idle sessions held when measured
  uint64_t rss_before_bytes = 0;
  uint64_t rss_after_bytes = 0;
  uint64_t pss_before_bytes = 0;
  uint64_t pss_after_bytes = 0;
};

struct CapReport {
  int cap = 0;
  uint64_t attempted = 0;
  uint64_t accepted = 0;
  std::map<std::string, uint64_t> refused;  // "421 4.7.0" -> count
  bool exact = false;  // accepted == cap and every other attempt refused with the cap's code
};

struct RunReport {
  const Options* options = nullptr;
  double elapsed_s = 0;
  bool completed = true;
  Stats* stats = nullptr;
  std::optional<MemoryReport> memory;
  std::optional<CapReport> ip_cap;
  std::optional<CapReport> tenant_cap;
  int exit_code = 0;
};

std::string FormatText(const RunReport& report);
std::string FormatJson(const RunReport& report);

}  // namespace chute::load
