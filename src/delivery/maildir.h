#pragma once

// MaildirBackend: the embedded default delivery backend (docs/architecture.md, Delivery). A copy
// per recipient goes to <root>/<domain>/<mailbox>/{tmp,new,cur}, the Maildir way: written to tmp/,
// made durable, renamed into new/, the rename made durable. Durability is per batch, not per file:
// every copy of the batch is written, then one syncfs() covers all their data, then all are
// renamed, then a second syncfs() covers the renames (measured on this kind of machine: one
// filesystem sync per batch delivers about four times as many files per second as an
// fdatasync per file). Only after that does the scheduler settle the spool record.
//
// Names are derived from the message (its received time, queue id and recipient index), so
// delivering the same message again renames over the same name in new/; a redelivery after a
// restart also looks in cur/ (where a mail reader moves what it has seen) and does not write a
// second copy. Mailbox folders are case-insensitive: the local part is lower-cased for the
// folder (Alice@ and alice@ are one mailbox), while the envelope keeps it byte for byte.
//
// Threads: one instance per delivery worker thread.

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "delivery/backend.h"

namespace chute::delivery {

class MaildirBackend : public Backend {
 public:
  MaildirBackend(std::string root, std::string hostname);
  void Deliver(const std::vector<OutboundMessage*>& batch,
               const MessageDone& done = nullptr) override;

 private:
  struct Copy;
  RecipientResult WriteCopy(const OutboundMessage& message, size_t i, Copy* copy);

  const std::string root_;
  const std::string hostname_;
};

BackendFactory MakeMaildirFactory(std::string root, std::string hostname);

// CleanMaildirTmp: the Maildir convention's clean-up of tmp/ folders under `root` (two levels:
// domain, mailbox): chute's own files there (named as MaildirBackend names them, for
// `hostname`) are leftovers of a crash, since nothing is delivered while this runs; other
// files are removed when older than kForeignTmpAge. Call before delivery starts. Returns how
// many files it removed.
inline constexpr absl::Duration kForeignTmpAge = absl::Hours(36);
size_t CleanMaildirTmp(const std::string& root, const std::string& hostname, absl::Time now);

// MaildirPath: <root>/<domain>/<local> for `address` (local@domain), the domain and the local
// part lower-cased, the local part made safe as a file name ('/', '%' and a leading '.' are
// %-escaped). The address's last '@' splits it.
std::string MaildirPath(absl::string_view root, absl::string_view address);

}  // namespace chute::delivery
