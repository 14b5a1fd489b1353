#pragma once

// Crc32c: CRC-32C (Castagnoli), the checksum of spool records. Uses the SSE4.2 crc32
// instruction when the CPU has it (checked once), else a table. Pure; any thread.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace chute {

// Crc32cExtend: the CRC-32C of the bytes already summed as `crc`, followed by `data`.
// Start with 0: Crc32cExtend(0, "123456789") == 0xE3069283.
uint32_t Crc32cExtend(uint32_t crc, absl::string_view data);

}  // namespace chute
