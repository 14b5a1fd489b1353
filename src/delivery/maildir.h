#pragma once

// MaildirBackend: the embedded default delivery backend (docs/architecture.md, Delivery). A copy
// per recipient goes to <root>/<domain>/<mailbox>/{tmp,new,cur}, the Maildir way: written to tmp/,
// made durable, renamed into new/, the rename made durable. Durability is per batch, not per file:
// every copy of the batch is in tmp/, then one syncfs() covers all their data, then all are
// renamed, then a second syncfs() covers the renames (measured on this kind of machine: one
// filesystem sync per batch delivers about four times as many files per second as an
// fdatasync per file). Only after that does the scheduler settle the spool record.
//
// One file per message, not per recipient: a message's first copy is written, and its other
// copies are hard links to it (linkat into each mailbox's tmp/, before the first syncfs, which
// makes the data and every link durable), each renamed into its own new/ like any copy; a 2 MB
// message to 50 recipients takes 2 MB of disk, not 100. This is sound because every copy is the
// same bytes: chute adds no per-recipient header to a copy (no Delivered-To:, no Return-Path:;
// the recipient is in the spool record, the log and the trace, and a single recipient is named
// in Received: for all copies alike), and Maildir files are never changed in place (a reader
// moves a file to cur/ and renames it for flags; Dovecot itself copies between folders with
// hard links). A mailbox on another filesystem (EXDEV), a file at its link maximum (EMLINK) or
// a filesystem without hard links (EPERM) gets a written copy instead.
//
// Nothing below the root is reached through a symbolic link: every folder is opened one path
// component at a time relative to its parent's descriptor with O_NOFOLLOW | O_DIRECTORY (a
// link where a domain, mailbox, tmp/, new/ or cur/ folder should be fails the copy with a
// transient 451 that names it), files are created with O_EXCL | O_NOFOLLOW in tmp/'s
// descriptor, renamed and removed relative to the folders' descriptors (renameat, unlinkat).
// A user who can write into a mailbox can therefore not make chute write, rename or delete
// anything outside it. The root itself is the operator's path and may be a link.
//
// Names are derived from the message (its received time, queue id and recipient index), so
// delivering the same message again renames over the same name in new/; a redelivery after a
// restart also looks in cur/ (where a mail reader moves what it has seen) and does not write a
// second copy. Mailbox folders are case-insensitive: the local part is lower-cased for the
// folder (Alice@ and alice@ are one mailbox), while the envelope keeps it byte for byte.
//
// Descriptors: a batch keeps at most kMailboxesOpenMax mailboxes' folders open (two
// descriptors each: tmp/ and new/), and opens again what it let go; with the root, the two
// folders open while a mailbox is reached, cur/ while a replay lists it, the file being
// written and the tmp/ folder of the message's original, one worker holds at most
// kMaildirDescriptorsMax (what chuted reserves per worker).
//
// Threads: one instance per delivery worker thread.

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "delivery/backend.h"

namespace chute::delivery {

inline constexpr size_t kMailboxesOpenMax = 4;
inline constexpr size_t kMaildirDescriptorsMax = 2 * kMailboxesOpenMax + 8;
static_assert(kMaildirDescriptorsMax >= 2 * kMailboxesOpenMax + 1 + 2 + 2 + 1 + 1);

class MaildirBackend : public Backend {
 public:
  // create_mailboxes: a recipient's mailbox folders are made by its first delivery; false
  // (verify_recipients): a recipient without a mailbox fails 550 5.1.1 (its tmp/, new/ and
  // cur/ are still made in a mailbox folder that exists).
  MaildirBackend(std::string root, std::string hostname, bool create_mailboxes = true);
  // Deliver: the batch, at once (blocking file I/O: its slot has a thread of its own).
  io::Task<void> Deliver(const std::vector<OutboundMessage*>& batch,
                         const MessageDone& done) override;

 private:
  void DeliverBatch(const std::vector<OutboundMessage*>& batch);
  struct Mailbox;
  struct Copy;
  // Original: a message's first copy written in this batch, which its other copies link to.
  struct Original;
  // The mailboxes a batch has open, by "<domain>/<local>" (at most kMailboxesOpenMax).
  using Mailboxes = absl::flat_hash_map<std::string, std::unique_ptr<Mailbox>>;
  Mailbox& OpenMailbox(int root_fd, int root_error, absl::string_view address,
                       Mailboxes* mailboxes);
  // WriteCopy: recipient i's copy into its mailbox's tmp/: a hard link to *original when the
  // message has one, else written (and then the original, when it is the first).
  RecipientResult WriteCopy(const OutboundMessage& message, size_t i, int root_fd, Mailbox& mailbox,
                            Original* original, Copy* copy);
  // AlreadyDelivered: whether a replayed copy `name` is in the mailbox's new/ or cur/.
  bool AlreadyDelivered(int root_fd, absl::string_view address, const Mailbox& mailbox,
                        const std::string& name);

  const std::string root_;
  const std::string hostname_;
  const bool create_mailboxes_;
};

BackendFactory MakeMaildirFactory(std::string root, std::string hostname,
                                  bool create_mailboxes = true);

// FindMailbox: whether the mailbox of `address` (MaildirPath) exists below `root`, looked up
// as delivery opens it (one component at a time, no link followed). kUnknown: it could not be
// told (a link, a permission problem); the caller accepts the recipient, and delivery says why.
enum class MailboxState : uint8_t { kExists, kMissing, kUnknown };
MailboxState FindMailbox(const std::string& root, absl::string_view address);

// CleanMaildirTmp: the Maildir convention's clean-up of tmp/ folders under `root` (two levels:
// domain, mailbox): chute's own files there (named as MaildirBackend names them, for
// `hostname`) are leftovers of a crash, since nothing is delivered while this runs; other
// files are removed when older than kForeignTmpAge. Only regular files are removed, relative
// to their folder's descriptor; a symbolic link where a domain, mailbox or tmp/ folder should
// be is not followed (a warning names it). Call before delivery starts. Returns how many
// files it removed.
inline constexpr absl::Duration kForeignTmpAge = absl::Hours(36);
size_t CleanMaildirTmp(const std::string& root, const std::string& hostname, absl::Time now);

// MaildirPath: <root>/<domain>/<local> for `address` (local@domain), the domain and the local
// part lower-cased, the local part made safe as a file name ('/', '%' and a leading '.' are
// %-escaped). The address's last '@' splits it.
std::string MaildirPath(absl::string_view root, absl::string_view address);

}  // namespace chute::delivery
