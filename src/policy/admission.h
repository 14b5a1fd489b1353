#pragma once

// Admission: whether a new connection may have a session, as pure functions of what is known
// when it arrives (docs/architecture.md, Caps and limits): the caps' verdicts, the listener's
// rules and the client's address (the PROXY header's source when there is one). The shard
// takes the places in the caps (an atomic count and the ConnectionGate, whose Handles give
// them back) and asks these for the answer; no state, no clock, any thread.

#include <optional>

#include "base/config.h"
#include "base/net_address.h"
#include "directory/directory.h"
#include "policy/connection_gate.h"
#include "smtp/reply.h"

namespace chute::policy {

// AdmissionFacts: a new connection as admission sees it.
struct AdmissionFacts {
  IpBytes peer{};                     // the client (after PROXY)
  bool under_connections_max = true;  // a place in [limits] connections_max was taken
  ConnectionGate::Verdict ip = ConnectionGate::Verdict::kAdmitted;  // the per-IP cap's verdict
};

// AdmissionVerdict: refused with `refusal` (sent instead of the greeting, then the
// connection closes), or admitted; a trusted listener's session then acts as `acting_as`.
struct AdmissionVerdict {
  std::optional<smtp::Reply> refusal;
  const directory::Account* acting_as = nullptr;
};

// Admit: the caps first (connections_max, then the per-IP cap), then a trusted listener's
// rules (tls = "none": the client must be in allowed_networks, and authenticate_as must be an
// account of `snapshot`).
AdmissionVerdict Admit(const AdmissionFacts& facts, const ListenerConfig& listener,
                       const directory::Snapshot& snapshot);

}  // namespace chute::policy
