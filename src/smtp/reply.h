#pragma once

// Every SMTP reply chute sends is named here, so that "where is this reply produced" is one
// grep away: search for the constant's name. Replies that Microsoft documents for High Volume
// Email use its codes and texts (docs/architecture.md, Replies); the rest follow RFC 5321 and RFC
// 3463 enhanced status codes. The greeting, the EHLO/HELO replies, 334 and 354 carry no enhanced
// code (RFC 2034 §3); every other reply does.

#include <cstdint>

#include "absl/strings/string_view.h"

namespace chute::smtp {

// Reply: a code and its text (the enhanced code first when it has one), without CRLF.
// The text of a Reply returned to the Session must stay valid until the call that returned or
// passed it ends: the session copies it into its output at once.
struct Reply {
  uint16_t code = 0;
  absl::string_view text;

  // IsPositive: 2xx (or 3xx): the command was accepted.
  constexpr bool IsPositive() const { return code >= 200 && code < 400; }
  // ClosesSession: 421 means the server closes the connection after sending it (RFC 5321).
  constexpr bool ClosesSession() const { return code == 421; }
};

// Positive replies.
inline constexpr Reply kReplyOk{250, "2.0.0 OK"};
inline constexpr Reply kReplyResetOk{250, "2.0.0 Reset OK"};
inline constexpr Reply kReplySenderOk{250, "2.1.0 Sender OK"};
inline constexpr Reply kReplyRecipientOk{250, "2.1.5 Recipient OK"};
inline constexpr Reply kReplyMessageAccepted{250, "2.0.0 Message accepted for delivery"};
inline constexpr Reply kReplyStartData{354, "Start mail input; end with <CRLF>.<CRLF>"};
inline constexpr Reply kReplyReadyForTls{220, "2.0.0 Ready to start TLS"};
inline constexpr Reply kReplyBye{221, "2.0.0 Bye"};
inline constexpr Reply kReplyVrfy{252,
                                  "2.5.0 Cannot VRFY user, but will accept message and attempt "
                                  "delivery"};
inline constexpr Reply kReplyHelp{214, "2.0.0 See RFC 5321; this is an authenticated relay"};
inline constexpr Reply kReplyAuthContinue{334, ""};
inline constexpr Reply kReplyAuthUsername{334, "VXNlcm5hbWU6"};  // base64 "Username:"
inline constexpr Reply kReplyAuthPassword{334, "UGFzc3dvcmQ6"};  // base64 "Password:"
inline constexpr Reply kReplyAuthOk{235, "2.7.0 Authentication successful"};

// TLS and authentication (docs/architecture.md, Replies).
inline constexpr Reply kReplyStartTlsFirst{530, "5.7.0 Must issue a STARTTLS command first"};
inline constexpr Reply kReplyNotAuthenticated{530, "5.7.57 Client not authenticated to send mail"};
inline constexpr Reply kReplyAuthFailed{535, "5.7.3 Authentication unsuccessful"};
inline constexpr Reply kReplyBasicAuthDisabled{
    535, "5.7.139 Authentication unsuccessful, basic authentication is disabled"};
inline constexpr Reply kReplyXoauth2Malformed{501, "5.5.124 Invalid XOAUTH2 auth data"};
inline constexpr Reply kReplyTokenExpired{535, "5.7.143 Expired token"};
inline constexpr Reply kReplyTokenNoPermission{
    535, "5.7.144 XOAUTH2 authentication failed. Invalid API permissions"};
inline constexpr Reply kReplyAppNotAllowed{
    550, "5.7.240 The application is not allowed for use with this High Volume Email account"};
inline constexpr Reply kReplyUnknownMechanism{504, "5.7.4 Unrecognized authentication type"};
inline constexpr Reply kReplyAuthCancelled{501, "5.7.0 Authentication cancelled"};
inline constexpr Reply kReplyAuthBadData{501, "5.5.2 Invalid base64 or malformed SASL data"};
inline constexpr Reply kReplyAlreadyAuthenticated{503, "5.5.1 Already authenticated"};
inline constexpr Reply kReplyAuthInTransaction{503,
                                               "5.5.1 AUTH not permitted during a transaction"};
inline constexpr Reply kReplyAuthNotOffered{502, "5.5.1 AUTH is not offered on this connection"};
inline constexpr Reply kReplyTlsAlreadyActive{503, "5.5.1 TLS already active"};
inline constexpr Reply kReplyTlsNotOffered{502, "5.5.1 STARTTLS is not offered on this listener"};

// Caps and resources (docs/architecture.md, Caps and limits).
inline constexpr Reply kReplyTenantCap{
    454, "4.7.0 Too many authenticated connections for this tenant, try again later"};
inline constexpr Reply kReplyIpCap{421, "4.7.0 Too many concurrent connections from this IP"};
inline constexpr Reply kReplyIpTableFull{421, "4.7.0 Too many concurrent clients, try again later"};
// A trusted-listener session counts as authenticated from its start, so its refusal closes.
// A trusted (tls = "none") session's first MAIL when its tenant is at its cap.
inline constexpr Reply kReplyTenantCapAtMail{
    451, "4.7.0 Too many authenticated connections for this tenant, try again later"};
inline constexpr Reply kReplyConnectionsMax{421, "4.7.0 Too many connections, try again later"};
inline constexpr Reply kReplyStorageFull{452, "4.3.1 Insufficient system storage"};
// limits.receiving_bytes_max: the bodies being received, all sessions together, are at their
// bound (at MAIL, or at the end of a body that could not be kept).
inline constexpr Reply kReplyReceivingFull{
    452, "4.3.1 Insufficient system storage: too many messages being received, try again later"};
inline constexpr Reply kReplyLocalError{451, "4.3.0 Local delivery failed, try again later"};
// The spool write or its fsync failed: the message is not stored; the client keeps it.
inline constexpr Reply kReplySpoolFailed{451, "4.3.0 Could not store the message, try again later"};
inline constexpr Reply kReplyNetworkNotAllowed{554, "5.7.1 Your address may not use this listener"};
inline constexpr Reply kReplyListenerMisconfigured{
    421, "4.3.5 This listener's account is missing from the directory, try again later"};
// A trusted listener's authenticate_as account is disabled (chutectl account disable): the
// client keeps its mail and retries; the operator may enable the account again.
inline constexpr Reply kReplyListenerAccountDisabled{
    421, "4.7.1 This listener's account is disabled, try again later"};
inline constexpr Reply kReplyAuthUnavailable{454, "4.7.0 Temporary authentication failure"};
// Too many failed AUTHs from this address (or for this account from an address that failed
// too): refused without checking until the failure window ends.
inline constexpr Reply kReplyAuthThrottled{
    550, "5.2.251 Too many failed authentication attempts, try again later"};
inline constexpr Reply kReplyTimeout{421, "4.4.2 Timeout exceeded"};
inline constexpr Reply kReplyShuttingDown{421, "4.3.2 Service shutting down"};
inline constexpr Reply kReplyTooManyErrors{421, "4.7.0 Too many errors"};
inline constexpr Reply kReplyHttpRefused{421, "4.7.0 HTTP is not spoken here, closing"};

// The HVE envelope rules (docs/architecture.md, Policy).
inline constexpr Reply kReplySendAsDenied{
    550, "5.7.60 Client does not have permissions to send as this sender"};
inline constexpr Reply kReplyRelayDenied{550,
                                         "5.7.54 Unable to relay recipient in non-accepted domain"};
inline constexpr Reply kReplyRecipientIsHve{
    550, "5.1.10 Recipient not found: HVE accounts have no mailbox"};
inline constexpr Reply kReplyTooManyRecipients{452, "4.5.3 Too many recipients"};

// Delivery routes and recipient verification (docs/architecture.md, Delivery routes).
// A domain the tenant accepts but no [[delivery.route]] serves (default_route = false).
inline constexpr Reply kReplyNoRoute{451, "4.3.5 No delivery route for this domain"};
// verify_recipients: a Maildir route has no mailbox for the recipient (LMTP/SMTP routes pass
// on the target's own refusal).
inline constexpr Reply kReplyNoSuchMailbox{550,
                                           "5.1.1 Recipient address rejected: no such mailbox"};
// verify_recipients with verify_unreachable = "defer": the target could not be asked.
inline constexpr Reply kReplyRecipientUnverified{
    450, "4.1.1 Recipient address cannot be verified now, try again later"};
// After the end of data: the header From: is not the account's address or an alias.
inline constexpr Reply kReplyFromMismatch{550,
                                          "5.6.241 From header does not match the sending account"};
inline constexpr Reply kReplyMessageTooBig{552,
                                           "5.3.4 Message size exceeds fixed maximum message size"};
inline constexpr Reply kReplyBareLineEnding{550,
                                            "5.5.2 Bare line feed or carriage return not allowed"};
inline constexpr Reply kReplyTextLineTooLong{554, "5.6.0 Message has a text line over 1000 octets"};
inline constexpr Reply kReplyNonAsciiAddress{553, "5.6.7 Non-ASCII address requires SMTPUTF8"};

// Protocol errors; each counts toward errors_per_session.
inline constexpr Reply kReplyCommandUnrecognized{500, "5.5.2 Command unrecognized"};
inline constexpr Reply kReplyLineTooLong{500, "5.5.2 Line too long"};
inline constexpr Reply kReplySyntax{501, "5.5.4 Syntax error in parameters or arguments"};
inline constexpr Reply kReplyControlInParameter{501, "5.5.2 Control character in parameter"};
inline constexpr Reply kReplyHeloSyntax{501, "5.5.4 Syntax: EHLO hostname"};
inline constexpr Reply kReplyBadSenderSyntax{501, "5.1.7 Bad sender address syntax"};
inline constexpr Reply kReplyBadRecipientSyntax{501, "5.1.3 Bad recipient address syntax"};
inline constexpr Reply kReplyParameterUnsupported{555, "5.5.4 Unsupported parameter"};
inline constexpr Reply kReplyNotImplemented{502, "5.5.1 Command not implemented"};
inline constexpr Reply kReplyHeloFirst{503, "5.5.1 Send EHLO or HELO first"};
inline constexpr Reply kReplyNestedMail{503, "5.5.1 Sender already specified"};
inline constexpr Reply kReplyNeedMail{503, "5.5.1 Need MAIL command"};
inline constexpr Reply kReplyNeedRcpt{503, "5.5.1 Need RCPT command"};
inline constexpr Reply kReplyNoValidRecipients{554, "5.5.1 No valid recipients"};
inline constexpr Reply kReplyBadSequence{503, "5.5.1 Bad sequence of commands"};
inline constexpr Reply kReplyDataAfterBdat{503, "5.5.1 DATA not permitted after BDAT"};

}  // namespace chute::smtp
