// admission.cc: the verdict on a new connection: caps, allowed networks, the trusted account.

#include "policy/admission.h"

#include "policy/hve_policy.h"

namespace chute::policy {

AdmissionVerdict Admit(const AdmissionFacts& facts, const ListenerConfig& listener,
                       const directory::Snapshot& snapshot) {
  AdmissionVerdict verdict;
  if (!facts.under_connections_max) {
    verdict.refusal = smtp::kReplyConnectionsMax;
    return verdict;
  }
  switch (facts.ip) {
    case ConnectionGate::Verdict::kOverCap:
      verdict.refusal = smtp::kReplyIpCap;
      return verdict;
    case ConnectionGate::Verdict::kTableFull:
      verdict.refusal = smtp::kReplyIpTableFull;
      return verdict;
    case ConnectionGate::Verdict::kAdmitted:
    case ConnectionGate::Verdict::kExempt:
      break;
  }
  if (listener.tls != TlsMode::kNone) {
    return verdict;
  }
  if (!IsAllowedNetwork(listener.allowed_networks, facts.peer)) {
    verdict.refusal = smtp::kReplyNetworkNotAllowed;
    return verdict;
  }
  verdict.acting_as = snapshot.FindAccount(listener.authenticate_as);
  if (verdict.acting_as == nullptr) {
    verdict.refusal = smtp::kReplyListenerMisconfigured;
  } else if (!verdict.acting_as->enabled) {
    verdict.refusal = smtp::kReplyListenerAccountDisabled;
    verdict.acting_as = nullptr;
  }
  return verdict;
}

}  // namespace chute::policy
